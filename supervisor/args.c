/* args.c - command line parsing with getopt_long. */
#include "args.h"
#include "util.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEC (86400ull * 365 * 1000000)

static const char usage[] =
"usage: hermes-supervisor [--foreground] [-c|--config FILE] [--runtime-dir DIR]\n"
"                         [--pidfile FILE] [--stop-timeout SEC] [--watchdog SEC]\n"
"                         [--backoff-max SEC] [--crash-limit N/SEC]\n"
"                         [--listen NAME=ADDR:PORT]... [--replace] [-- WORKER [ARG...]]\n"
"       hermes-supervisor status | restart | stop   [--runtime-dir DIR]\n"
"       hermes-supervisor --help | --version\n"
"\n"
"Runs WORKER (default: hermes-worker beside this program, with --config FILE)\n"
"and keeps it alive: exit 75 respawns it at once, 0 stops, 78 stops with 78,\n"
"anything else respawns after a capped exponential backoff until the crash\n"
"limit is reached.  With --watchdog the worker must send WATCHDOG=1 at\n"
"least every SEC from its start, else its process group is killed.\n"
"Defaults: --stop-timeout 30 --backoff-max 30 --crash-limit 5/60, no\n"
"watchdog (systemd's WatchdogSec, if any).  SEC accepts fractions (0.5).\n";

const char *
args_usage(void)
{
	return usage;
}

/* Parses "N/SEC" for --crash-limit. */
static int
parse_crash_limit(struct sup_args *a, const char *v)
{
	const char *slash = strchr(v, '/');
	char num[16];
	uint64_t n;

	if (slash == NULL || (size_t)(slash - v) >= sizeof(num))
		return -1;
	memcpy(num, v, (size_t)(slash - v));
	num[slash - v] = '\0';
	if (parse_u64(num, 100000, &n) < 0 || n == 0)
		return -1;
	if (parse_seconds(slash + 1, MAX_SEC, &a->crash_window) < 0 || a->crash_window == 0)
		return -1;
	a->crash_limit = (unsigned)n;
	return 0;
}

/* Applies one option; returns 0, or -1 on a bad value. */
static int
apply(struct sup_args *a, int c, const char *v)
{
	switch (c) {
	case 'f': a->foreground = 1; break;
	case 'R': a->replace = 1; break;
	case 'h': a->cmd = CMD_HELP; break;
	case 'V': a->cmd = CMD_VERSION; break;
	case 'c': a->config = v; break;
	case 'd': a->runtime_dir = v; break;
	case 'p': a->pidfile = v; break;
	case 's': return parse_seconds(v, MAX_SEC, &a->stop_timeout);
	case 'b': return parse_seconds(v, MAX_SEC, &a->backoff_max);
	case 'l': return parse_crash_limit(a, v);
	case 'w':
		return parse_seconds(v, MAX_SEC, &a->watchdog) < 0 || a->watchdog < 1000 ? -1 : 0;
	case 'L':
		a->listen = xrealloc(a->listen, (a->nlisten + 1) * sizeof(*a->listen));
		a->listen[a->nlisten++] = v;
		break;
	}
	return 0;
}

static const struct option options[] = {
	{ "foreground", no_argument, NULL, 'f' }, { "replace", no_argument, NULL, 'R' },
	{ "help", no_argument, NULL, 'h' }, { "version", no_argument, NULL, 'V' },
	{ "config", required_argument, NULL, 'c' },
	{ "runtime-dir", required_argument, NULL, 'd' },
	{ "pidfile", required_argument, NULL, 'p' },
	{ "stop-timeout", required_argument, NULL, 's' },
	{ "watchdog", required_argument, NULL, 'w' },
	{ "backoff-max", required_argument, NULL, 'b' },
	{ "crash-limit", required_argument, NULL, 'l' },
	{ "listen", required_argument, NULL, 'L' },
	{ NULL, 0, NULL, 0 },
};

/* Recognises the leading subcommand word, if any. */
static int
parse_command(struct sup_args *a, const char *w)
{
	static const struct { const char *name; enum sup_cmd cmd; } cmds[] = {
		{ "status", CMD_STATUS }, { "restart", CMD_RESTART }, { "stop", CMD_STOP },
		{ "install-service", CMD_INSTALL }, { "uninstall-service", CMD_UNINSTALL },
	};
	size_t i;

	for (i = 0; i < ARRAY_LEN(cmds); i++)
		if (strcmp(w, cmds[i].name) == 0) {
			a->cmd = cmds[i].cmd;
			return 1;
		}
	return 0;
}

static void
set_defaults(struct sup_args *a)
{
	memset(a, 0, sizeof(*a));
	a->cmd = CMD_RUN;
	a->stop_timeout = 30 * 1000000ull;
	a->backoff_max = 30 * 1000000ull;
	a->crash_limit = 5;
	a->crash_window = 60 * 1000000ull;
}

/* What follows the options: nothing, or "--" and the worker command. */
static int
parse_rest(struct sup_args *a, int argc, char **argv, char *err, size_t errsz)
{
	if (optind >= argc && strcmp(argv[optind - 1], "--") != 0)
		return 0;
	if (strcmp(argv[optind - 1], "--") != 0) {
		snprintf(err, errsz, "unexpected argument: %s", argv[optind]);
		return -1;
	}
	if (a->cmd != CMD_RUN || optind >= argc) {
		snprintf(err, errsz, "-- must be followed by a worker command");
		return -1;
	}
	a->worker_argv = argv + optind;
	return 0;
}

int
args_parse(struct sup_args *a, int argc, char **argv, char *err, size_t errsz)
{
	int c, li = 0, first = 1;

	set_defaults(a);
	if (argc > 1 && parse_command(a, argv[1])) {
		if (a->cmd == CMD_INSTALL || a->cmd == CMD_UNINSTALL)
			return 0;       /* the installer parses its own options */
		first = 2;
	}
	optind = 0;             /* a full reset of getopt, also for repeated calls */
	opterr = 0;
	argv += first - 1;
	argc -= first - 1;
	while ((c = getopt_long(argc, argv, "+:c:", options, &li)) != -1) {
		if (c == '?' || c == ':') {
			snprintf(err, errsz, c == '?' ? "unknown option: %s" :
			    "option %s needs a value", argv[optind - 1]);
			return -1;
		}
		if (apply(a, c, optarg) < 0) {
			snprintf(err, errsz, "bad value for --%s: %s", options[li].name, optarg);
			return -1;
		}
	}
	return parse_rest(a, argc, argv, err, errsz);
}

void
args_free(struct sup_args *a)
{
	free(a->listen);
	a->listen = NULL;
	a->nlisten = 0;
}
