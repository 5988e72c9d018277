/* sup.c - the worker's state machine and the supervisor's one poll loop. */
#include "sup.h"
#include "control.h"
#include "log.h"
#include "notify.h"
#include "policy.h"
#include "spawn.h"
#include "util.h"
#include "inbox.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_SET_CHILD_SUBREAPER
#define PR_SET_CHILD_SUBREAPER 36       /* Linux 3.4; older headers lack it */
#endif

enum state { ST_STOPPED, ST_STARTING, ST_READY, ST_STOPPING, ST_BACKOFF };

static const char *const state_names[] = {
	"stopped", "starting", "ready", "stopping", "backing-off",
};

struct sup {
	const struct sup_args *args;
	char **argv;
	const char *rundir, *logpath;
	const struct listen_set *listen;
	char notify_spec[128];
	int nfd, sigfd, errfd;
	enum state state;
	pid_t worker;                   /* 0 when none */
	unsigned spawns;                /* HERMES_GENERATION of the next worker */
	int was_ready;                  /* the current worker sent READY=1 */
	int told_ready;                 /* systemd was told READY=1 */
	int recycle;                    /* respawn at once when the worker ends */
	int quitting, done, exit_code;
	int dirty;                      /* the state file needs rewriting */
	int sweeping;                   /* killing what an ended worker left behind */
	const char *kill_cause;         /* why we SIGKILLed the worker, or NULL */
	uint64_t wd_usec, up_wd_usec, reset_usec;
	uint64_t ready_at;
	uint64_t wd_deadline, stop_deadline, respawn_at, up_wd_at;  /* 0: unarmed */
	unsigned failures;              /* consecutive, for the backoff */
	struct crashwin crash;
	time_t started, worker_started;
	char status[NOTIFY_MAX_STATUS + 1];
	char last_exit[160];
};

/* systemd's NOTIFY_SOCKET (NULL when none) and its watchdog period for us. */
static char *up_spec;
static uint64_t up_watchdog;

void
sup_upstream_init(void)
{
	const char *spec = getenv("NOTIFY_SOCKET"), *wd = getenv("WATCHDOG_USEC");
	const char *wpid = getenv("WATCHDOG_PID");
	uint64_t v, p;

	if (spec == NULL || *spec == '\0')
		return;
	up_spec = xstrdup(spec);
	if (wd != NULL && parse_u64(wd, UINT64_MAX, &v) == 0 && v > 0 &&
	    (wpid == NULL || (parse_u64(wpid, 4194304, &p) == 0 && (pid_t)p == getpid())))
		up_watchdog = v;
}

/* Sends one sd_notify message to systemd, if it gave us a socket. */
static void __attribute__((format(printf, 1, 2)))
upstream_send(const char *fmt, ...)
{
	static int warned;
	char msg[1024];
	va_list ap;

	if (up_spec == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (notify_send_to(up_spec, msg) < 0 && !warned) {
		log_warn("cannot notify %s", up_spec);
		warned = 1;
	}
}

static void sup_spawn(struct sup *s);

static void
set_state(struct sup *s, enum state st)
{
	if (s->state != st)
		log_debug("state %s -> %s", state_names[s->state], state_names[st]);
	s->state = st;
}

/* The current (or last) worker's generation; also the number of restarts. */
static unsigned
generation(const struct sup *s)
{
	return s->spawns > 0 ? s->spawns - 1 : 0;
}

/* Rewrites the state file (once per loop turn, so bursts of changes coalesce). */
static void
save_state(struct sup *s)
{
	struct control_state cs = {
		s->worker, state_names[s->state], generation(s), generation(s), s->last_exit,
		s->status, s->started, s->worker_started, s->args->stop_timeout,
	};

	control_write_state(s->rundir, &cs);
	s->dirty = 0;
}

/* Marks the state file stale and tells systemd where we are. */
static void
publish(struct sup *s)
{
	s->dirty = 1;
	upstream_send("STATUS=%s: worker %ld, generation %u%s%s", state_names[s->state],
	    (long)s->worker, generation(s), s->status[0] ? ": " : "", s->status);
}

/* Ends the supervisor with code once nothing is left running. */
static void
finish(struct sup *s, int code)
{
	if (!s->quitting)
		upstream_send("STOPPING=1");
	s->quitting = 1;
	s->done = 1;
	s->exit_code = code;
	s->respawn_at = s->wd_deadline = s->stop_deadline = 0;
	set_state(s, ST_STOPPED);
	publish(s);
}

/* Sends RELOADING=1 when systemd believes a worker is ready: it is being replaced. */
static void
tell_reloading(struct sup *s)
{
	if (!s->told_ready)
		return;
	upstream_send("RELOADING=1\nMONOTONIC_USEC=%llu", (unsigned long long)mono_usec());
	s->told_ready = 0;
}

/* starting -> ready */
static void
on_ready(struct sup *s)
{
	set_state(s, ST_READY);
	s->was_ready = 1;
	s->ready_at = mono_usec();
	log_info("worker %ld (generation %u) is ready", (long)s->worker, s->spawns - 1);
	upstream_send("READY=1");
	s->told_ready = 1;
	publish(s);
}

/* ready/starting -> stopping: a deadline after which the group is killed. */
static void
begin_stop(struct sup *s, int send_term)
{
	if (send_term && s->worker > 0)
		kill(s->worker, SIGTERM);
	if (s->state != ST_STOPPING) {
		set_state(s, ST_STOPPING);
		s->stop_deadline = mono_usec() + s->args->stop_timeout;
		if (s->stop_deadline == 0)
			s->stop_deadline = 1;
		s->wd_deadline = 0;
		publish(s);
	}
}

/* Kills the worker's whole process group now; its end is then a failure. */
static void
kill_worker(struct sup *s, const char *cause)
{
	if (s->worker <= 0)
		return;
	log_warnx("worker %ld: %s; killing its process group", (long)s->worker, cause);
	s->kill_cause = cause;
	kill(-s->worker, SIGKILL);
	set_state(s, ST_STOPPING);
	s->wd_deadline = s->stop_deadline = 0;
}

/* A failure: give up at the crash limit, else back off. */
static void
failure(struct sup *s)
{
	uint64_t now = mono_usec(), delay;

	if (s->was_ready && now - s->ready_at >= s->reset_usec)
		s->failures = 0;
	if (crashwin_add(&s->crash, now)) {
		log_warnx("%u failures within %.1f s: giving up", s->args->crash_limit,
		    (double)s->args->crash_window / 1e6);
		finish(s, 1);
		return;
	}
	delay = policy_backoff(++s->failures, s->args->backoff_max);
	log_info("respawning in %llu ms (failure %u)", (unsigned long long)delay / 1000,
	    s->failures);
	set_state(s, ST_BACKOFF);
	s->respawn_at = now + delay;
	publish(s);
}

/* Describes how the worker ended, for the log and `status`. */
static void
describe_exit(struct sup *s, int status, int exec_err)
{
	char how[64];

	if (exec_err != 0)
		snprintf(how, sizeof(how), "exec failed: %s", strerror(exec_err));
	else if (WIFEXITED(status))
		snprintf(how, sizeof(how), "exit %d%s", WEXITSTATUS(status),
		    WEXITSTATUS(status) == EXIT_RESTART ? " (restart requested)" :
		    WEXITSTATUS(status) == EXIT_CONFIG ? " (bad configuration)" : "");
	else
		snprintf(how, sizeof(how), "signal %d (%s)", WTERMSIG(status),
		    strsignal(WTERMSIG(status)));
	snprintf(s->last_exit, sizeof(s->last_exit), "%s%s%s", how,
	    s->kill_cause ? " after " : "", s->kill_cause ? s->kill_cause : "");
	log_info("worker %ld (generation %u) ended: %s", (long)s->worker, s->spawns - 1,
	    s->last_exit);
}

static void drain_notify(struct sup *s);

/*
 * Kills the orphans an ended worker left to us (the subreaper): e.g. a
 * grandchild that called setsid() escapes the group kill.  Killing one can
 * reparent its own children to us, so this repeats on every reap until a
 * pass finds nothing; a live worker's own helpers are left alone otherwise.
 */
static void
sweep(struct sup *s)
{
	if (s->sweeping && spawn_kill_orphans(s->worker) == 0)
		s->sweeping = 0;
}

/* The worker's main process ended: clean up its group, then apply the policy. */
static void
worker_ended(struct sup *s, int status)
{
	int exec_err, was_ready;

	drain_notify(s);        /* a READY=1 sent just before exiting counts */
	spawn_kill_group(s->worker);
	exec_err = spawn_exec_error(s->errfd);
	s->errfd = -1;
	describe_exit(s, status, exec_err);
	was_ready = s->was_ready && exec_err == 0;
	s->worker = 0;
	s->wd_deadline = s->stop_deadline = 0;
	s->sweeping = 1;
	sweep(s);
	if (s->quitting) {
		finish(s, s->exit_code);
	} else if (s->recycle) {
		s->recycle = 0;
		sup_spawn(s);
	} else {
		switch (policy_classify(status, was_ready, s->kill_cause != NULL || exec_err)) {
		case ACT_RESPAWN:
			sup_spawn(s);
			break;
		case ACT_EXIT_OK:
			finish(s, 0);
			break;
		case ACT_EXIT_CONFIG:
			log_warnx("the worker reported a configuration error: not respawning");
			finish(s, EXIT_CONFIG);
			break;
		case ACT_BACKOFF:
			failure(s);
			break;
		}
	}
}

/* Starts a new worker generation. */
static void
sup_spawn(struct sup *s)
{
	struct spawn_opts o = {
		s->argv, s->notify_spec, s->spawns, s->wd_usec, s->listen,
	};
	uint64_t now = mono_usec();
	pid_t pid;

	tell_reloading(s);
	s->respawn_at = 0;
	pid = spawn_worker(&o, &s->errfd);
	if (pid < 0) {
		log_warn("cannot fork the worker");
		s->was_ready = 0;
		failure(s);
		return;
	}
	s->worker = pid;
	s->spawns++;
	s->was_ready = 0;
	s->kill_cause = NULL;
	s->status[0] = '\0';
	s->worker_started = time(NULL);
	s->wd_deadline = s->wd_usec > 0 ? now + s->wd_usec : 0;
	set_state(s, ST_STARTING);
	log_info("started worker %ld (generation %u): %s", (long)pid, s->spawns - 1, s->argv[0]);
	publish(s);
}

/* Applies one accepted message from the worker. */
static void
handle_msg(struct sup *s, const struct notify_msg *m)
{
	uint64_t now = mono_usec();

	if (m->watchdog && s->wd_deadline != 0)
		s->wd_deadline = now + s->wd_usec;
	if (m->has_errno)
		log_info("worker %ld reports errno %d", (long)s->worker, m->errno_val);
	if (m->has_status)
		memcpy(s->status, m->status, sizeof(s->status));
	if (m->reloading && s->state == ST_READY) {
		set_state(s, ST_STARTING);
		tell_reloading(s);
	}
	if (m->ready && s->state == ST_STARTING)
		on_ready(s);
	if (m->stopping && (s->state == ST_STARTING || s->state == ST_READY)) {
		log_info("worker %ld is stopping", (long)s->worker);
		begin_stop(s, 0);
	}
	if (m->has_extend && s->stop_deadline != 0 && m->extend_usec < UINT64_MAX - now &&
	    now + m->extend_usec > s->stop_deadline)
		s->stop_deadline = now + m->extend_usec;
	if (m->watchdog_trigger && s->state != ST_STOPPING)
		kill_worker(s, "watchdog triggered by the worker");
	if (m->has_status || m->reloading)
		publish(s);
}

/* Reads what the worker said; a bounded batch, so a flood cannot starve the loop. */
static void
drain_notify(struct sup *s)
{
	struct notify_msg m;
	int r, n = 0;

	while (n++ < 256 && (r = inbox_recv(s->nfd, s->worker, &m)) >= 0)
		if (r == 1)
			handle_msg(s, &m);
}

/* TERM/INT: stop the worker within the stop timeout, then exit 0. */
static void
on_stop_signal(struct sup *s, int sig)
{
	if (s->quitting)
		return;
	log_info("%s: stopping", strsignal(sig));
	upstream_send("STOPPING=1");
	s->quitting = 1;
	s->exit_code = 0;
	if (s->worker > 0)
		begin_stop(s, 1);
	else
		finish(s, 0);
}

/* HUP: recycle the worker (a new generation), as systemd's ExecReload. */
static void
on_hup(struct sup *s)
{
	if (s->quitting)
		return;
	log_info("hangup: recycling the worker");
	if (s->worker > 0) {
		s->recycle = 1;
		tell_reloading(s);
		begin_stop(s, 1);
	} else if (s->state == ST_BACKOFF) {
		sup_spawn(s);
	}
}

/* Reaps every child: the worker, and orphans reparented to the subreaper. */
static void
reap(struct sup *s)
{
	pid_t pid;
	int status;

	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid == s->worker) {
			worker_ended(s, status);
		} else {
			log_debug("reaped process %ld", (long)pid);
			sweep(s);
		}
	}
}

static void
read_signals(struct sup *s)
{
	struct signalfd_siginfo si;

	while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap(s);
			break;
		case SIGTERM:
		case SIGINT:
			on_stop_signal(s, (int)si.ssi_signo);
			break;
		case SIGHUP:
			on_hup(s);
			break;
		case SIGUSR1:
			log_reopen();
			if (s->logpath != NULL)
				control_redirect_output(s->logpath);
			break;
		}
	}
}

/* The upstream watchdog ping: only while the worker keeps its own deadline. */
static void
ping_upstream(struct sup *s, uint64_t now)
{
	if (s->wd_deadline == 0 || now < s->wd_deadline)
		upstream_send("WATCHDOG=1");
	s->up_wd_at = now + s->up_wd_usec / 2;
}

static void
check_deadlines(struct sup *s)
{
	uint64_t now = mono_usec();

	if (s->up_wd_at != 0 && now >= s->up_wd_at)
		ping_upstream(s, now);
	if (s->wd_deadline != 0 && now >= s->wd_deadline)
		kill_worker(s, "watchdog timeout (no WATCHDOG=1)");
	if (s->stop_deadline != 0 && now >= s->stop_deadline)
		kill_worker(s, "stop timeout");
	if (s->respawn_at != 0 && now >= s->respawn_at)
		sup_spawn(s);
}

/* Milliseconds until the nearest armed deadline; -1 (sleep forever) when none. */
static int
next_timeout(const struct sup *s)
{
	uint64_t d[] = { s->wd_deadline, s->stop_deadline, s->respawn_at, s->up_wd_at };
	uint64_t now = mono_usec(), best = 0;
	size_t i;

	for (i = 0; i < ARRAY_LEN(d); i++)
		if (d[i] != 0 && (best == 0 || d[i] < best))
			best = d[i];
	if (best == 0)
		return -1;
	if (best <= now)
		return 0;
	best = (best - now + 999) / 1000;       /* round up, so we never wake early */
	return best > 86400000 ? 86400000 : (int)best;
}

int
sup_run(struct sup *s)
{
	s->started = time(NULL);
	if (s->up_wd_usec > 0)
		s->up_wd_at = mono_usec() + s->up_wd_usec / 2;
	sup_spawn(s);
	while (!s->done) {
		struct pollfd pf[2] = { { s->nfd, POLLIN, 0 }, { s->sigfd, POLLIN, 0 } };
		int r;

		if (s->dirty)
			save_state(s);
		r = poll(pf, 2, next_timeout(s));

		if (r < 0 && errno != EINTR)
			fatal("poll");
		if (r > 0 && pf[0].revents != 0)
			drain_notify(s);
		if (r > 0 && pf[1].revents != 0)
			read_signals(s);
		check_deadlines(s);
	}
	spawn_kill_orphans(0);
	save_state(s);
	log_info("exiting with status %d", s->exit_code);
	return s->exit_code;
}

/* Blocks the signals we handle and reads them from a signalfd. */
static int
signals_open(void)
{
	sigset_t set;
	int fd;

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		fatal("sigprocmask");
	fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (fd < 0)
		fatal("signalfd");
	return fd;
}

/* The backoff reset period: 60 s, or HERMES_SUPERVISOR_BACKOFF_RESET (tests). */
static uint64_t
reset_period(void)
{
	const char *e = getenv("HERMES_SUPERVISOR_BACKOFF_RESET");
	uint64_t v;

	if (e != NULL && parse_seconds(e, POLICY_RESET_USEC, &v) == 0)
		return v;
	return POLICY_RESET_USEC;
}

struct sup *
sup_new(const struct sup_args *a, char **worker_argv, const char *rundir,
    const struct listen_set *ls, const char *logpath)
{
	struct sup *s = xcalloc(1, sizeof(*s));

	s->args = a;
	s->argv = worker_argv;
	s->rundir = rundir;
	s->logpath = logpath;
	s->listen = ls;
	s->errfd = -1;
	s->sigfd = signals_open();
	spawn_note_signals();
	s->nfd = inbox_open(rundir, s->notify_spec, sizeof(s->notify_spec));
	if (s->nfd < 0)
		fatal("cannot create the worker's notify socket %s", s->notify_spec);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1) < 0)
		log_warn("cannot become a child subreaper");
	s->up_wd_usec = up_watchdog;
	s->wd_usec = a->watchdog > 0 ? a->watchdog : s->up_wd_usec;
	s->reset_usec = reset_period();
	crashwin_init(&s->crash, a->crash_limit, a->crash_window);
	snprintf(s->last_exit, sizeof(s->last_exit), "none");
	return s;
}

void
sup_free(struct sup *s)
{
	if (s == NULL)
		return;
	inbox_close(s->nfd, s->notify_spec);
	if (s->sigfd >= 0)
		close(s->sigfd);
	if (s->errfd >= 0)
		close(s->errfd);
	crashwin_free(&s->crash);
	free(s);
}
