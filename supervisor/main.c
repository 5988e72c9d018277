/* main.c - hermes-supervisor: sequences the setup steps, then runs the loop. */
#include "args.h"
#include "control.h"
#include "listen.h"
#include "log.h"
#include "policy.h"
#include "sup.h"
#include "util.h"

#include "install.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION "0.1.0"

/* The default worker: hermes-worker beside this program, given --config FILE. */
static char **
default_worker(const char *config)
{
	static char path[PATH_MAX + 16];
	static char *argv[] = { path, NULL, NULL, NULL };
	ssize_t n = readlink("/proc/self/exe", path, PATH_MAX - 1);

	if (n <= 0)
		fatal("cannot find my own path in /proc/self/exe");
	path[n] = '\0';
	strcpy(strrchr(path, '/'), "/hermes-worker");
	if (config != NULL) {
		argv[1] = "--config";
		argv[2] = (char *)config;
	}
	return argv;
}

static void
open_listeners(const struct sup_args *a, struct listen_set *ls)
{
	char err[256];
	size_t i;

	for (i = 0; i < a->nlisten; i++)
		if (listen_open(ls, a->listen[i], err, sizeof(err)) < 0)
			fatalx("%s", err);
}

/* Opens /dev/null on any of fds 0-2 that is closed, so no socket of ours lands there. */
static void
sanitize_stdio(void)
{
	int fd;

	for (fd = 0; fd < 3; fd++)
		if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd)
			fatal("cannot open /dev/null");
}

/*
 * Forks; the parent waits until the child calls detach_done(), then exits
 * 0 (or with the child's status if it died first), so the shell learns
 * about a failed start.  The child becomes a session leader.  Returns the
 * fd to pass to detach_done().
 */
static int
detach_start(void)
{
	int p[2], status;
	pid_t pid;
	char c;

	if (pipe2(p, O_CLOEXEC) < 0 || (pid = fork()) < 0)
		fatal("cannot detach");
	if (pid > 0) {
		ssize_t n;

		close(p[1]);
		while ((n = read(p[0], &c, 1)) < 0 && errno == EINTR)
			;
		if (n == 1)
			_exit(0);
		if (waitpid(pid, &status, 0) == pid && WIFEXITED(status))
			_exit(WEXITSTATUS(status));
		_exit(1);
	}
	close(p[0]);
	if (setsid() < 0)
		fatal("setsid");
	return p[1];
}

/* Points stdin at /dev/null, stdout/stderr at logpath, and releases the waiting parent. */
static void
detach_done(int fd, const char *logpath)
{
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);

	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		close(null);
	}
	control_redirect_output(logpath);
	(void)!write(fd, "", 1);
	close(fd);
}

static void
write_pidfile(const char *path)
{
	char buf[32];

	snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
	if (write_file_atomic(path, buf, strlen(buf), 0644) < 0)
		fatal("cannot write %s", path);
}

/* Runs the supervisor proper; returns its exit status. */
static int
run(const struct sup_args *a, const char *rundir)
{
	struct listen_set ls = { NULL, 0 };
	char **argv = a->worker_argv, *logpath = NULL, *pidfile = NULL, err[256];
	int detach = !a->foreground && getpid() != 1, dfd = -1, code;
	struct sup *s;

	listen_inherit(&ls);            /* before any fork: LISTEN_PID is our pid */
	sup_upstream_init();
	if (argv == NULL)
		argv = default_worker(a->config);
	/* A runtime directory that cannot be made or written is a configuration error. */
	if (dir_ensure(rundir, 0755, 0, err, sizeof(err)) < 0)
		fatal_status(EXIT_CONFIG, "runtime directory %s: %s", rundir, err);
	if (detach)
		dfd = detach_start();
	(void)control_lock(rundir, a->replace, a->stop_timeout + 5000000);
	open_listeners(a, &ls);         /* after the lock: a replaced one frees its ports */
	if (detach) {
		logpath = xasprintf("%s/supervisor.log", rundir);
		log_init("hermes-supervisor", logpath);
	}
	if (a->pidfile != NULL || detach)
		pidfile = a->pidfile ? xstrdup(a->pidfile) : xasprintf("%s/supervisor.pid", rundir);
	if (pidfile != NULL)
		write_pidfile(pidfile);
	s = sup_new(a, argv, rundir, &ls, logpath);
	if (detach)
		detach_done(dfd, logpath);
	code = sup_run(s);
	sup_free(s);
	if (pidfile != NULL)
		unlink(pidfile);
	listen_close(&ls);
	free(pidfile);
	free(logpath);
	return code;
}

int
main(int argc, char **argv)
{
	struct sup_args a;
	char err[256], *rundir;
	int code;

	sanitize_stdio();
	log_init("hermes-supervisor", NULL);
	if (args_parse(&a, argc, argv, err, sizeof(err)) < 0) {
		fprintf(stderr, "hermes-supervisor: %s\n%s", err, args_usage());
		return 2;
	}
	if (a.cmd == CMD_HELP || a.cmd == CMD_VERSION) {
		fputs(a.cmd == CMD_HELP ? args_usage() : "hermes-supervisor " VERSION "\n", stdout);
		return 0;
	}
	if (a.cmd == CMD_INSTALL || a.cmd == CMD_UNINSTALL)
		return install_service_main(argc - 1, argv + 1);
	rundir = control_runtime_dir(a.runtime_dir);
	if (rundir == NULL)
		fatal_status(2, "no runtime directory: set RUNTIME_DIRECTORY or XDG_RUNTIME_DIR, "
		    "or pass --runtime-dir");
	if (a.cmd == CMD_STATUS)
		code = control_status(rundir);
	else if (a.cmd == CMD_RESTART)
		code = control_restart(rundir);
	else if (a.cmd == CMD_STOP)
		code = control_stop(rundir);
	else
		code = run(&a, rundir);
	free(rundir);
	args_free(&a);
	return code;
}
