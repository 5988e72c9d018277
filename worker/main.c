/*
 * main.c - hermes-worker: sequences the set-up of the gateway's event loop,
 * config, TLS, agent, hub and platforms, and leaves with _exit() after the
 * hub's teardown (0 stop, 75 restart, 78 bad config, 1 failure).
 */
#include "agent.h"
#include "config.h"
#include "hub.h"
#include "log.h"
#include "net/tls.h"
#include "platform.h"
#include "platforms/weixin_login.h"
#include "restart.h"
#include "retention.h"
#include "util.h"
#include "wnotify.h"

#include <event2/dns.h>
#include <event2/event.h>

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define WORKER_VERSION "0.1.0"
#define EXIT_RESTART 75
#define EXIT_CONFIG 78
/* Slack on top of the teardown's own bounds before the hard deadline kills us. */
#define DEADLINE_SLACK_SEC 5

struct worker {
	const char *config_path;
	int check_only;
	char **argv;
	struct config *cfg;
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct agent *agent;
	struct hub *hub;
	struct wnotify *wn;
	struct event *sigs[4];
	struct event *retention_ev;
	struct retention_policy retention;
	char *sessions_dir;
	long supervisor_pid;
	unsigned long generation;
	int exit_code;
};

/* The code the hard deadline leaves with; set when teardown begins. */
static volatile sig_atomic_t deadline_code = 1;

static void
usage(FILE *f)
{
	fprintf(f, "usage: hermes-worker [-c|--config FILE] [--check-config] [-v|--verbose]\n"
	    "       hermes-worker login weixin [-c FILE]\n"
	    "       hermes-worker --help | --version\n"
	    "The config defaults to $HERMES_HOME/gateway.json (HERMES_HOME defaults to ~/.hermes);\n"
	    "without one, the console on 127.0.0.1:8642 with the echo agent is run.\n");
}

static void
parse_args(struct worker *w, int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 'C' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int ch;

	while ((ch = getopt_long(argc, argv, "c:vh", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			w->config_path = optarg;
			break;
		case 'C':
			w->check_only = 1;
			break;
		case 'v':
			log_set_verbose(1);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("hermes-worker %s\n", WORKER_VERSION);
			exit(0);
		default:
			usage(stderr);
			exit(EXIT_CONFIG);
		}
	}
	if (optind != argc) {
		usage(stderr);
		exit(EXIT_CONFIG);
	}
}

/* What the supervisor (if any) told us through the environment. */
static void
read_supervisor_env(struct worker *w)
{
	const char *s = getenv("HERMES_SUPERVISOR_PID");
	uint64_t v;

	if (s != NULL && parse_u64(s, (uint64_t)INT32_MAX, &v) == 0 && v > 0)
		w->supervisor_pid = (long)v;
	s = getenv("HERMES_GENERATION");
	if (s != NULL && parse_u64(s, UINT32_MAX, &v) == 0)
		w->generation = (unsigned long)v;
}

/* The socket passed under name in LISTEN_FDS/LISTEN_FDNAMES, or -1. */
static int
listen_fd_for(const char *name)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	uint64_t p, n, i = 0;
	const char *s;

	if (pid == NULL || fds == NULL || names == NULL ||
	    parse_u64(pid, UINT32_MAX, &p) < 0 || p != (uint64_t)getpid() ||
	    parse_u64(fds, 1024, &n) < 0)
		return -1;
	for (s = names; i < n; i++) {
		size_t len = strcspn(s, ":");

		if (len == strlen(name) && strncmp(s, name, len) == 0)
			return (int)(3 + i);
		if (s[len] == '\0')
			break;
		s += len + 1;
	}
	return -1;
}

static void
config_fail(struct worker *w, const char *section, const char *err)
{
	const char *file = w->cfg->path != NULL ? w->cfg->path : "embedded default";

	/* Most messages already start with the key they are about. */
	if (strncmp(err, section, strlen(section)) == 0)
		fatal_status(EXIT_CONFIG, "%s: %s", file, err);
	fatal_status(EXIT_CONFIG, "%s: %s: %s", file, section, err);
}

/*
 * Whether anything configured makes client TLS connections.  The TLS
 * context costs about 4 MiB of resident libcrypto pages, so a gateway that
 * runs only the local console (plain HTTP on loopback) with the echo or
 * exec agent does without it.
 */
static int
needs_tls(const struct config *c)
{
	const cJSON *b = c->agent != NULL ? cJSON_GetObjectItemCaseSensitive(c->agent, "backend") :
	    NULL;
	size_t i;

	if (c->ca_file != NULL)
		return 1;
	if (cJSON_IsString(b) && strcmp(b->valuestring, "echo") != 0 &&
	    strcmp(b->valuestring, "exec") != 0)
		return 1;
	for (i = 0; i < c->nplatforms; i++)
		if (c->platforms[i].enabled && strcmp(c->platforms[i].name, "console") != 0)
			return 1;
	return 0;
}

static void
setup_loop(struct worker *w)
{
	char err[512];

	w->base = event_base_new();
	if (w->base == NULL)
		fatalx("event_base_new failed");
	w->dns = evdns_base_new(w->base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (w->dns == NULL) {
		log_warnx("no DNS resolver configuration; names will not resolve");
		w->dns = evdns_base_new(w->base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (w->dns == NULL)
			fatalx("evdns_base_new failed");
	}
	if (needs_tls(w->cfg))
		w->tls = tls_ctx_new(w->cfg->ca_file, err, sizeof(err));
	else
		log_debug("no client TLS needed");
	if (w->tls == NULL && needs_tls(w->cfg)) {
		if (w->cfg->ca_file != NULL)
			config_fail(w, "tls.ca_file", err);
		fatalx("TLS: %s", err);
	}
	w->agent = agent_new(w->base, w->dns, w->tls, w->cfg->agent, err, sizeof(err));
	if (w->agent == NULL)
		config_fail(w, "agent", err);
}

/*
 * Makes sure the state directory and its sessions/ are ours, private and
 * writable.  Any of that failing is the configuration's fault (a wrong
 * path, owner, mode or a read-only mount): exit 78, so that neither the
 * supervisor nor systemd retries it in a loop.
 */
static void
create_state_dir(struct worker *w)
{
	char err[256];

	w->sessions_dir = xasprintf("%s/sessions", w->cfg->state_dir);
	if (dir_ensure(w->cfg->state_dir, 0700, 1, err, sizeof(err)) < 0)
		fatal_status(EXIT_CONFIG, "state directory %s: %s", w->cfg->state_dir, err);
	if (dir_ensure(w->sessions_dir, 0700, 1, err, sizeof(err)) < 0)
		fatal_status(EXIT_CONFIG, "state directory %s: %s", w->sessions_dir, err);
}

/* Applies the sessions' disk retention policy; then again after its interval. */
static void
retention_run(evutil_socket_t fd, short ev, void *arg)
{
	struct worker *w = arg;
	struct timeval tv = { (time_t)retention_interval_sec(&w->retention), 0 };

	(void)fd;
	(void)ev;
	if (retention_apply(w->sessions_dir, &w->retention, time(NULL), NULL) < 0)
		log_warn("sessions: cannot apply the retention policy to %s", w->sessions_dir);
	if (event_add(w->retention_ev, &tv) < 0)
		fatalx("cannot arm the retention timer");
}

/* Applies the retention policy now, before any session is loaded, and arms its timer. */
static void
setup_retention(struct worker *w)
{
	w->retention.max_age_sec = w->cfg->sessions.max_age_sec;
	w->retention.max_count = w->cfg->sessions.max_count;
	w->retention.max_bytes = w->cfg->sessions.max_bytes;
	w->retention_ev = evtimer_new(w->base, retention_run, w);
	if (w->retention_ev == NULL)
		fatalx("evtimer_new failed");
	retention_run(-1, 0, w);
}

static void on_status(void *arg, const char *line);
static void on_stopping(void *arg, int code);
static void on_finished(void *arg, int code);

/* Creates the hub and every enabled platform from the registry. */
static void
setup_hub(struct worker *w)
{
	struct hub_opts o;
	size_t i, enabled = 0;

	memset(&o, 0, sizeof(o));
	o.base = w->base;
	o.agent = w->agent;
	o.cfg = w->cfg;
	o.supervisor_pid = w->supervisor_pid;
	o.generation = w->generation;
	o.session_idle_ms = w->cfg->sessions.idle_usec / 1000;
	o.cb.status = on_status;
	o.cb.stopping = on_stopping;
	o.cb.finished = on_finished;
	o.cb.arg = w;
	w->hub = hub_new(&o);
	for (i = 0; i < w->cfg->nplatforms; i++) {
		const struct config_platform *pc = &w->cfg->platforms[i];
		struct plat_env env;
		char err[512], section[256];
		void *self;

		if (!pc->enabled)
			continue;
		memset(&env, 0, sizeof(env));
		env.base = w->base;
		env.dns = w->dns;
		env.tls = w->tls;
		env.hub = w->hub;
		env.name = pc->name;
		env.state_dir = w->cfg->state_dir;
		env.conf = pc->section;
		env.listen_fd = listen_fd_for(pc->name);
		err[0] = '\0';
		self = pc->ops->create(&env, err, sizeof(err));
		if (self == NULL) {
			snprintf(section, sizeof(section), "platforms.%s", pc->name);
			config_fail(w, section, err[0] != '\0' ? err : "invalid");
		}
		hub_add_platform(w->hub, pc, pc->ops, self);
		enabled++;
	}
	if (enabled == 0)
		log_warnx("no platform is enabled: the gateway will not hear from anyone");
}

static void
on_status(void *arg, const char *line)
{
	struct worker *w = arg;

	if (w->wn != NULL)
		wnotify_status(w->wn, line);
}

static void
deadline_hit(int sig)
{
	(void)sig;
	_exit(deadline_code);
}

static void
on_stopping(void *arg, int code)
{
	struct worker *w = arg;
	struct sigaction sa;
	uint64_t bound = w->cfg->drain_usec + HUB_SEND_WAIT_USEC + HUB_STOP_WAIT_USEC;

	wnotify_stopping(w->wn);
	/* The hard deadline: teardown ends even if something in it blocks. */
	deadline_code = code;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = deadline_hit;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	alarm((unsigned)(bound / 1000000) + DEADLINE_SLACK_SEC);
}

static void
on_finished(void *arg, int code)
{
	struct worker *w = arg;

	w->exit_code = code;
	event_base_loopbreak(w->base);
}

static void
on_signal(evutil_socket_t sig, short ev, void *arg)
{
	struct worker *w = arg;

	(void)ev;
	switch (sig) {
	case SIGTERM:
	case SIGINT:
		log_info("signal %d: stopping", (int)sig);
		hub_shutdown(w->hub, 0);
		break;
	case SIGUSR1:
		hub_restart(w->hub);
		break;
	case SIGHUP:
		log_reopen();
		break;
	default:
		break;
	}
}

static void
setup_signals(struct worker *w)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGUSR1, SIGHUP };
	size_t i;

	for (i = 0; i < ARRAY_LEN(sigs); i++) {
		w->sigs[i] = evsignal_new(w->base, sigs[i], on_signal, w);
		if (w->sigs[i] == NULL || event_add(w->sigs[i], NULL) < 0)
			fatalx("cannot watch signal %d", sigs[i]);
	}
}

/* Leaves after teardown: re-exec in place when restarting without a supervisor. */
static void __attribute__((noreturn))
leave(struct worker *w)
{
	if (w->exit_code == EXIT_RESTART && w->supervisor_pid == 0) {
		log_info("no supervisor: restarting in place");
		alarm(0);
		restart_reexec(w->argv);
	}
	log_info("exit %d", w->exit_code);
	_exit(w->exit_code);
}

int
main(int argc, char **argv)
{
	struct worker w;
	char err[1024];

	memset(&w, 0, sizeof(w));
	w.argv = argv;
	w.exit_code = 1;
	log_init("hermes-worker", NULL);
	if (argc >= 3 && strcmp(argv[1], "login") == 0 && strcmp(argv[2], "weixin") == 0)
		return weixin_login_main(argc - 2, argv + 2);
	parse_args(&w, argc, argv);
	signal(SIGPIPE, SIG_IGN);
	read_supervisor_env(&w);
	w.cfg = config_load(w.config_path, err, sizeof(err));
	if (w.cfg == NULL)
		fatal_status(EXIT_CONFIG, "%s", err);
	setup_loop(&w);
	if (!w.check_only)
		create_state_dir(&w);
	setup_hub(&w);
	if (w.check_only) {
		printf("configuration OK: %s\n", w.cfg->path != NULL ? w.cfg->path :
		    "embedded default");
		fflush(stdout);
		_exit(0);
	}
	setup_retention(&w);
	w.wn = wnotify_new(w.base);
	setup_signals(&w);
	log_info("hermes-worker %s starting (generation %lu, agent %s)", WORKER_VERSION,
	    w.generation, agent_backend(w.agent));
	hub_start(w.hub);
	/* Every enabled platform has started (connected or retrying). */
	wnotify_ready(w.wn);
	if (event_base_dispatch(w.base) < 0)
		fatalx("event loop failed");
	leave(&w);
}
