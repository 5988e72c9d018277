/* control.c - lock, state file, status/restart/stop, daemon mode. */
#include "control.h"
#include "log.h"
#include "notify.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#define STATE_MAX 8192

char *
control_runtime_dir(const char *opt)
{
	const char *rd = getenv("RUNTIME_DIRECTORY"), *xdg = getenv("XDG_RUNTIME_DIR");

	if (opt != NULL)
		return xstrdup(opt);
	if (rd != NULL && *rd != '\0')
		return xstrndup(rd, strcspn(rd, ":"));
	if (xdg != NULL && *xdg != '\0')
		return xasprintf("%s/hermes", xdg);
	if (geteuid() == 0)
		return xstrdup("/run/hermes");
	return NULL;
}

/* Waits with short naps (a client command or startup, not the supervisor's loop). */
static void
nap(void)
{
	struct timespec ts = { 0, 20 * 1000000 };

	nanosleep(&ts, NULL);
}

/* flock() that gives up after usec: returns 0, or -1 (errno EWOULDBLOCK on timeout). */
static int
flock_wait(int fd, int op, uint64_t usec)
{
	uint64_t deadline = mono_usec() + usec;

	while (flock(fd, op | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK || mono_usec() >= deadline)
			return -1;
		nap();
	}
	return 0;
}

/* The pid recorded in the lock file by its holder, or 0. */
static pid_t
lock_holder(const char *path)
{
	char *s = read_file(path, 64, NULL);
	uint64_t pid = 0;

	if (s != NULL) {
		s[strcspn(s, "\n")] = '\0';
		if (parse_u64(s, 4194304, &pid) < 0)
			pid = 0;
	}
	free(s);
	return (pid_t)pid;
}

int
control_lock(const char *dir, int replace, uint64_t wait_usec)
{
	char *path = xasprintf("%s/lock", dir), buf[32];
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
	pid_t holder;

	if (fd < 0)
		fatal("cannot open %s", path);
	/* A short wait tolerates a `status` probe holding a shared lock. */
	if (flock_wait(fd, LOCK_EX, 200000) < 0) {
		holder = lock_holder(path);
		if (!replace)
			fatal_status(1, "another hermes-supervisor (pid %ld) is running in %s; "
			    "stop it first or use --replace", (long)holder, dir);
		log_info("replacing the supervisor (pid %ld) running in %s", (long)holder, dir);
		if (holder > 1)
			kill(holder, SIGTERM);
		if (flock_wait(fd, LOCK_EX, wait_usec) < 0)
			fatal_status(1, "the supervisor (pid %ld) in %s did not stop in time",
			    (long)holder, dir);
	}
	snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, buf, strlen(buf), 0) < 0)
		log_warn("cannot write %s", path);
	free(path);
	return fd;
}

void
control_write_state(const char *dir, const struct control_state *st)
{
	char *path = xasprintf("%s/state", dir);
	char *s = xasprintf("supervisor_pid: %ld\nworker_pid: %ld\nstate: %s\ngeneration: %u\n"
	    "started: %lld\nworker_started: %lld\nrestarts: %lu\nlast_exit: %s\n"
	    "worker_status: %s\nstop_timeout_usec: %llu\n",
	    (long)getpid(), (long)st->worker_pid, st->state, st->generation,
	    (long long)st->started, (long long)st->worker_started, st->restarts,
	    st->last_exit, st->worker_status, (unsigned long long)st->stop_timeout);

	/*
	 * Readers never see it torn (temp file and rename), but it is not
	 * synced: it lives in the runtime directory, which does not outlive a
	 * reboot, and is rewritten at every change anyway.
	 */
	if (write_file_replace(path, s, strlen(s), 0644) < 0)
		log_warn("cannot write %s", path);
	free(s);
	free(path);
}

/* Finds "key: value" in a state file; returns the value (borrowed, trimmed) or "". */
static const char *
state_get(char *buf, const char *key, char *out, size_t outsz)
{
	size_t klen = strlen(key);
	char *p = buf;

	out[0] = '\0';
	while (p != NULL && *p != '\0') {
		if (strncmp(p, key, klen) == 0 && p[klen] == ':' && p[klen + 1] == ' ') {
			snprintf(out, outsz, "%.*s", (int)strcspn(p + klen + 2, "\n"), p + klen + 2);
			break;
		}
		p = strchr(p, '\n');
		p = p != NULL ? p + 1 : NULL;
	}
	return out;
}

/* 1 when a supervisor holds the lock of dir. */
static int
is_running(const char *dir)
{
	char *path = xasprintf("%s/lock", dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC), running = 0;

	free(path);
	if (fd < 0)
		return 0;
	if (flock(fd, LOCK_SH | LOCK_NB) < 0)
		running = errno == EWOULDBLOCK;
	close(fd);
	return running;
}

/* Reads the state file; NULL when there is none. */
static char *
read_state(const char *dir)
{
	char *path = xasprintf("%s/state", dir);
	char *s = read_file(path, STATE_MAX, NULL);

	free(path);
	return s;
}

static long long
state_num(char *s, const char *key)
{
	char v[32];

	return strtoll(state_get(s, key, v, sizeof(v)), NULL, 10);
}

/* Prints "key: value" with the state file's value, or with value when it is not NULL. */
static void
show(char *state, const char *key, const char *value)
{
	char v[NOTIFY_MAX_STATUS + 64];

	printf("%s: %s\n", key, value != NULL ? value : state_get(state, key, v, sizeof(v)));
}

/* The state file's fields; a stopped supervisor leaves no worker and no uptime. */
int
control_status(const char *dir)
{
	int running = is_running(dir);
	char *s = read_state(dir);

	if (s == NULL) {
		printf("state: %s\n", running ? "starting" : "stopped");
		return running ? 0 : 3;
	}
	show(s, "supervisor_pid", NULL);
	show(s, "worker_pid", running ? NULL : "0");
	show(s, "state", running ? NULL : "stopped");
	show(s, "generation", NULL);
	printf("uptime: %llds\n", running ? (long long)time(NULL) - state_num(s, "started") : 0LL);
	show(s, "restarts", NULL);
	show(s, "last_exit", NULL);
	show(s, "worker_status", NULL);
	free(s);
	return running ? 0 : 3;
}

/*
 * Sends sig to the supervisor running in dir.  Returns its pid, with the
 * generation and stop timeout its state file records, or 0 (and a
 * message) when no supervisor runs there.
 */
static pid_t
signal_supervisor(const char *dir, int sig, long long *gen, uint64_t *stop_timeout)
{
	char *s = read_state(dir);
	pid_t pid = (pid_t)state_num(s, "supervisor_pid");

	*gen = state_num(s, "generation");
	*stop_timeout = (uint64_t)state_num(s, "stop_timeout_usec");
	free(s);
	if (!is_running(dir) || pid <= 0 || kill(pid, sig) < 0) {
		fprintf(stderr, "hermes-supervisor is not running in %s\n", dir);
		return 0;
	}
	return pid;
}

int
control_restart(const char *dir)
{
	char *s, v[64];
	long long gen;
	uint64_t deadline;

	if (signal_supervisor(dir, SIGHUP, &gen, &deadline) == 0)
		return 3;
	deadline += mono_usec() + 60000000ull;
	while (mono_usec() < deadline && is_running(dir)) {
		s = read_state(dir);
		if (s != NULL && state_num(s, "generation") > gen &&
		    strcmp(state_get(s, "state", v, sizeof(v)), "ready") == 0) {
			printf("worker %lld ready (generation %lld)\n", state_num(s, "worker_pid"),
			    state_num(s, "generation"));
			free(s);
			return 0;
		}
		free(s);
		nap();
	}
	fprintf(stderr, "the new worker did not become ready\n");
	return 1;
}

int
control_stop(const char *dir)
{
	long long gen;
	uint64_t deadline;
	pid_t pid = signal_supervisor(dir, SIGTERM, &gen, &deadline);

	if (pid == 0)
		return 3;
	deadline += mono_usec() + 10000000ull;
	while (is_running(dir)) {
		if (mono_usec() >= deadline) {
			fprintf(stderr, "hermes-supervisor (pid %ld) did not stop in time\n",
			    (long)pid);
			return 1;
		}
		nap();
	}
	return 0;
}

void
control_redirect_output(const char *logpath)
{
	int fd = open(logpath, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);

	if (fd < 0) {
		log_warn("cannot open %s", logpath);
		return;
	}
	dup2(fd, STDOUT_FILENO);
	dup2(fd, STDERR_FILENO);
	close(fd);
}
