/*
 * bare_respawn.c - the floor for the supervisor's respawn latency: the
 * least a supervisor can do, fork, exec the worker, wait for it, again.
 * No policy, no notify socket, no state.  tests/bench/respawn.py runs it
 * beside hermes-supervisor, built against the same libc, in the same run.
 *
 *   bare_respawn WORKER [ARGS...]      (runs until killed)
 */
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

int
main(int argc, char **argv)
{
	pid_t pid;
	int status;

	if (argc < 2) {
		fprintf(stderr, "usage: bare_respawn WORKER [ARGS...]\n");
		return 2;
	}
	for (;;) {
		pid = fork();
		if (pid == 0) {
			execv(argv[1], argv + 1);
			_exit(127);
		}
		if (pid < 0 || waitpid(pid, &status, 0) < 0)
			return 1;
		if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
			return 1;
	}
}
