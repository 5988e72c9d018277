/*
 * sup.h - the supervisor proper: one poll loop driving the worker's state
 * machine (stopped / starting / ready / stopping / backing-off), with
 * signals from a signalfd and every time limit a deadline in that loop.
 */
#ifndef HERMES_SUP_SUP_H
#define HERMES_SUP_SUP_H

#include "args.h"
#include "listen.h"

struct sup;

/*
 * Takes systemd's NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID: call it
 * before detaching, while WATCHDOG_PID can still name us.  (The worker
 * never sees systemd's values: spawn sets its own.)
 */
void sup_upstream_init(void);

/*
 * Sets up signals, the worker's notify socket and the subreaper flag.
 * worker_argv is the worker command (borrowed, like everything else
 * passed here); logpath is the log file in daemon mode, or NULL.
 */
struct sup *sup_new(const struct sup_args *a, char **worker_argv, const char *rundir,
    const struct listen_set *ls, const char *logpath);

/* Runs until the policy says stop; returns the exit status for the process. */
int sup_run(struct sup *s);

void sup_free(struct sup *s);

#endif
