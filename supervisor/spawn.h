/*
 * spawn.h - starting the worker and cleaning up after it.
 *
 * The worker runs in its own process group with PR_SET_PDEATHSIG, a clean
 * signal state, and only fds 0-2 plus the listen sockets (as 3..).
 */
#ifndef HERMES_SUP_SPAWN_H
#define HERMES_SUP_SPAWN_H

#include <stdint.h>
#include <sys/types.h>

#include "listen.h"

struct spawn_opts {
	char *const *argv;              /* argv[0] is searched in PATH without a '/' */
	const char *notify_socket;      /* the worker's NOTIFY_SOCKET */
	unsigned generation;
	uint64_t watchdog_usec;         /* 0: no WATCHDOG_USEC */
	const struct listen_set *listen;
};

/*
 * Forks and execs the worker.  Returns its pid and, in *errfd, the read
 * end of a pipe on which the child reports an exec failure; -1 when fork
 * itself failed.
 */
pid_t spawn_worker(const struct spawn_opts *o, int *errfd);
/* Records which signals are ignored, once signal dispositions are set up (the
 * child resets just those). */
void spawn_note_signals(void);

/*
 * Returns the errno of a failed exec reported on errfd (0 if the exec
 * happened) and closes errfd.  Call it once the child has ended.
 */
int spawn_exec_error(int errfd);

/* SIGKILLs every process left in the process group pgid. */
void spawn_kill_group(pid_t pgid);

/*
 * SIGKILLs every child of ours except `except`: orphans reparented to the
 * subreaper, e.g. a grandchild that called setsid().  Returns how many.
 */
unsigned spawn_kill_orphans(pid_t except);

#endif
