/* args.c - command line parsing (hand-written, so it is easy to unit test). */
#include "args.h"
#include "util.h"

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

/* Applies one option that takes a value.  Returns 0, or -1 on a bad value. */
static int
apply_value(struct sup_args *a, const char *opt, const char *v)
{
	if (strcmp(opt, "-c") == 0 || strcmp(opt, "--config") == 0)
		a->config = v;
	else if (strcmp(opt, "--runtime-dir") == 0)
		a->runtime_dir = v;
	else if (strcmp(opt, "--pidfile") == 0)
		a->pidfile = v;
	else if (strcmp(opt, "--stop-timeout") == 0)
		return parse_seconds(v, MAX_SEC, &a->stop_timeout);
	else if (strcmp(opt, "--watchdog") == 0)
		return parse_seconds(v, MAX_SEC, &a->watchdog) < 0 || a->watchdog < 1000 ? -1 : 0;
	else if (strcmp(opt, "--backoff-max") == 0)
		return parse_seconds(v, MAX_SEC, &a->backoff_max);
	else if (strcmp(opt, "--crash-limit") == 0)
		return parse_crash_limit(a, v);
	else if (strcmp(opt, "--listen") == 0) {
		a->listen = xrealloc(a->listen, (a->nlisten + 1) * sizeof(*a->listen));
		a->listen[a->nlisten++] = v;
	}
	return 0;
}

static int
takes_value(const char *opt)
{
	static const char *const with_value[] = {
		"-c", "--config", "--runtime-dir", "--pidfile", "--stop-timeout",
		"--watchdog", "--backoff-max", "--crash-limit", "--listen",
	};
	size_t i;

	for (i = 0; i < ARRAY_LEN(with_value); i++)
		if (strcmp(opt, with_value[i]) == 0)
			return 1;
	return 0;
}

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

/* Handles one option word at argv[*i]; returns 0, or -1 with err set. */
static int
parse_option(struct sup_args *a, int argc, char **argv, int *i, char *err, size_t errsz)
{
	char opt[32];
	const char *arg = argv[*i], *eq = strchr(arg, '='), *v;

	if (strcmp(arg, "--foreground") == 0)
		a->foreground = 1;
	else if (strcmp(arg, "--replace") == 0)
		a->replace = 1;
	else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0)
		a->cmd = CMD_HELP;
	else if (strcmp(arg, "--version") == 0)
		a->cmd = CMD_VERSION;
	else {
		size_t n = (arg[0] == '-' && arg[1] == '-' && eq != NULL) ? (size_t)(eq - arg)
		    : strlen(arg);

		snprintf(opt, sizeof(opt), "%.*s", (int)n, arg);
		if (n >= sizeof(opt) || !takes_value(opt)) {
			snprintf(err, errsz, "unknown option: %s", arg);
			return -1;
		}
		if (n < strlen(arg))
			v = arg + n + 1;
		else if (*i + 1 < argc)
			v = argv[++*i];
		else {
			snprintf(err, errsz, "option %s needs a value", opt);
			return -1;
		}
		if (apply_value(a, opt, v) < 0) {
			snprintf(err, errsz, "bad value for %s: %s", opt, v);
			return -1;
		}
	}
	return 0;
}

int
args_parse(struct sup_args *a, int argc, char **argv, char *err, size_t errsz)
{
	int i = 1;

	set_defaults(a);
	if (argc > 1 && parse_command(a, argv[1])) {
		if (a->cmd == CMD_INSTALL || a->cmd == CMD_UNINSTALL)
			return 0;       /* the installer parses its own options */
		i = 2;
	}
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			if (a->cmd != CMD_RUN || i + 1 >= argc) {
				snprintf(err, errsz, "-- must be followed by a worker command");
				return -1;
			}
			a->worker_argv = argv + i + 1;
			return 0;
		}
		if (argv[i][0] != '-') {
			snprintf(err, errsz, "unexpected argument: %s", argv[i]);
			return -1;
		}
		if (parse_option(a, argc, argv, &i, err, errsz) < 0)
			return -1;
	}
	return 0;
}

void
args_free(struct sup_args *a)
{
	free(a->listen);
	a->listen = NULL;
	a->nlisten = 0;
}
