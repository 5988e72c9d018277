/* spawn.c - fork/exec of the worker, process-group and orphan cleanup. */
#include "spawn.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

extern char **environ;

#define PID_SLOT "                    "     /* room for a pid, filled in the child */

/* Variables the supervisor sets for the worker; inherited copies are dropped. */
static const char *const own_vars[] = {
	"NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID=", "LISTEN_PID=", "LISTEN_FDS=",
	"LISTEN_FDNAMES=", "HERMES_SUPERVISOR_PID=", "HERMES_GENERATION=",
};

static int
is_own_var(const char *e)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(own_vars); i++)
		if (strncmp(e, own_vars[i], strlen(own_vars[i])) == 0)
			return 1;
	return 0;
}

/* Builds the worker's environment: ours plus what we set.  Caller frees the strings. */
static char **
build_env(const struct spawn_opts *o, char **listen_pid, char **wd_pid)
{
	size_t n = 0, k = 0, i;
	char **env;

	while (environ[n] != NULL)
		n++;
	env = xcalloc(n + 9, sizeof(*env));
	for (i = 0; i < n; i++)
		if (!is_own_var(environ[i]))
			env[k++] = xstrdup(environ[i]);
	env[k++] = xasprintf("NOTIFY_SOCKET=%s", o->notify_socket);
	env[k++] = xasprintf("HERMES_SUPERVISOR_PID=%ld", (long)getpid());
	env[k++] = xasprintf("HERMES_GENERATION=%u", o->generation);
	*wd_pid = *listen_pid = NULL;
	if (o->watchdog_usec > 0) {
		env[k++] = xasprintf("WATCHDOG_USEC=%llu", (unsigned long long)o->watchdog_usec);
		env[k++] = *wd_pid = xstrdup("WATCHDOG_PID=" PID_SLOT);
	}
	if (o->listen->n > 0) {
		char *names = listen_names(o->listen);

		env[k++] = xasprintf("LISTEN_FDS=%zu", o->listen->n);
		env[k++] = xasprintf("LISTEN_FDNAMES=%s", names);
		env[k++] = *listen_pid = xstrdup("LISTEN_PID=" PID_SLOT);
		free(names);
	}
	env[k] = NULL;
	return env;
}

static void
free_env(char **env)
{
	size_t i;

	for (i = 0; env[i] != NULL; i++)
		free(env[i]);
	free(env);
}

/* Writes pid in decimal after the '=' of a PID_SLOT variable (async-signal-safe). */
static void
fill_pid(char *var, pid_t pid)
{
	char tmp[24], *p = strchr(var, '=') + 1;
	int n = 0;
	unsigned long v = (unsigned long)pid;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	while (n > 0)
		*p++ = tmp[--n];
	*p = '\0';
}

/* Closes fds in [lo, hi]: close_range when the kernel has it, else /proc/self/fd. */
static void
close_from(unsigned lo, unsigned hi)
{
	DIR *d;
	struct dirent *de;

#ifdef SYS_close_range
	if (lo > hi || syscall(SYS_close_range, lo, hi, 0) == 0)
		return;
#endif
	d = opendir("/proc/self/fd");
	if (d == NULL) {
		long max = sysconf(_SC_OPEN_MAX);

		for (; lo <= hi && (long)lo < (max > 0 ? max : 1024); lo++)
			close((int)lo);
		return;
	}
	while ((de = readdir(d)) != NULL) {
		int fd = atoi(de->d_name);

		if (de->d_name[0] != '.' && fd != dirfd(d) && (unsigned)fd >= lo && (unsigned)fd <= hi)
			close(fd);
	}
	closedir(d);
}

/*
 * In the child: listen sockets to 3.., errfd moved out of the way, all
 * else but 0-2 closed (main() made sure those are open, on /dev/null if
 * need be).
 */
static int
child_fds(const struct listen_set *ls, int errfd)
{
	unsigned base = 3 + (unsigned)ls->n, i;
	int tmp[ls->n + 1];

	errfd = fcntl(errfd, F_DUPFD_CLOEXEC, (int)base);
	for (i = 0; i < ls->n; i++)
		if ((tmp[i] = fcntl(ls->v[i].fd, F_DUPFD_CLOEXEC, (int)base)) < 0)
			return -1;
	for (i = 0; i < ls->n; i++)
		if (dup2(tmp[i], (int)(3 + i)) < 0)
			return -1;
	if (errfd < 0)
		return -1;
	close_from(base, (unsigned)errfd - 1);
	close_from((unsigned)errfd + 1, ~0u);
	return errfd;
}

/*
 * The signals ignored in the supervisor (SIGPIPE, and any its own parent
 * left ignored): the only dispositions exec keeps, so the only ones the
 * child must reset.  The supervisor installs no handlers (it reads a
 * signalfd), so nothing else needs resetting before exec.
 */
static sigset_t ignored;
static int ignored_known;

void
spawn_note_signals(void)
{
	struct sigaction sa;
	int sig;

	sigemptyset(&ignored);
	for (sig = 1; sig < NSIG; sig++)
		if (sigaction(sig, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN)
			sigaddset(&ignored, sig);
	ignored_known = 1;
}

/* In the child: resets the signal state inherited from the supervisor. */
static void
child_signals(void)
{
	sigset_t none;
	int sig;

	for (sig = 1; sig < NSIG; sig++)
		if (!ignored_known || sigismember(&ignored, sig) == 1)
			signal(sig, SIG_DFL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* The child's side of the fork; never returns. */
static void
child_exec(const struct spawn_opts *o, char **env, char *lpid, char *wpid, int errfd,
    pid_t parent)
{
	int err;

	setpgid(0, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(127);
	child_signals();
	errfd = child_fds(o->listen, errfd);
	if (lpid != NULL)
		fill_pid(lpid, getpid());
	if (wpid != NULL)
		fill_pid(wpid, getpid());
	if (errfd >= 0)
		execvpe(o->argv[0], o->argv, env);
	err = errno;
	if (errfd >= 0)
		(void)!write(errfd, &err, sizeof(err));
	_exit(127);
}

pid_t
spawn_worker(const struct spawn_opts *o, int *errfd)
{
	char *lpid, *wpid;
	char **env = build_env(o, &lpid, &wpid);
	pid_t parent = getpid(), pid;
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0) {
		free_env(env);
		return -1;
	}
	pid = fork();
	if (pid == 0)
		child_exec(o, env, lpid, wpid, p[1], parent);
	close(p[1]);
	free_env(env);
	if (pid < 0) {
		close(p[0]);
		return -1;
	}
	setpgid(pid, pid);      /* also here, so the group exists before we may kill it */
	fd_set_nonblock(p[0], 1);
	*errfd = p[0];
	return pid;
}

int
spawn_exec_error(int errfd)
{
	int err = 0;

	if (errfd < 0)
		return 0;
	if (read(errfd, &err, sizeof(err)) != (ssize_t)sizeof(err))
		err = 0;
	close(errfd);
	return err;
}

void
spawn_kill_group(pid_t pgid)
{
	if (pgid > 1 && kill(-pgid, SIGKILL) == 0)
		log_debug("killed what was left in process group %ld", (long)pgid);
}

/* Reads the parent pid and state from /proc/PID/stat; -1 if gone or a zombie. */
static long
proc_ppid(long pid)
{
	char path[64], buf[512], *rp, state;
	ssize_t n;
	long ppid = -1;
	int fd;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	rp = strrchr(buf, ')');         /* the command name may hold anything */
	if (rp == NULL || sscanf(rp + 1, " %c %ld", &state, &ppid) != 2 || state == 'Z')
		return -1;
	return ppid;
}

/* Kills pid unless it is `except`; returns 1 when a live one was signalled. */
static unsigned
kill_leftover(long pid, pid_t except)
{
	if (pid <= 0 || pid == (long)except || proc_ppid(pid) < 0 || kill((pid_t)pid, SIGKILL) < 0)
		return 0;
	log_info("killed leftover process %ld", pid);
	return 1;
}

/* The slow way, when /proc/PID/task/TID/children is missing (before Linux 3.5). */
static unsigned
kill_orphans_scan(pid_t except)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	long self = (long)getpid();
	unsigned n = 0;

	if (d == NULL)
		return 0;
	while ((de = readdir(d)) != NULL)
		if (atol(de->d_name) > 0 && proc_ppid(atol(de->d_name)) == self)
			n += kill_leftover(atol(de->d_name), except);
	closedir(d);
	return n;
}

unsigned
spawn_kill_orphans(pid_t except)
{
	char path[64], buf[4096], *p, *end;
	unsigned n = 0;
	ssize_t len;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/task/%ld/children", (long)getpid());
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return kill_orphans_scan(except);
	len = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (len < 0)
		return kill_orphans_scan(except);
	buf[len] = '\0';
	for (p = buf; *p != '\0'; p = end) {
		long pid = strtol(p, &end, 10);

		if (end == p)
			break;
		n += kill_leftover(pid, except);
	}
	return n;
}
