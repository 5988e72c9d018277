/*
 * control.h - the runtime directory: the single-instance lock, the state
 * file read by `status`, the status/restart/stop commands, and the log
 * file the supervisor's (and so the worker's) stdout/stderr point at.
 */
#ifndef HERMES_SUP_CONTROL_H
#define HERMES_SUP_CONTROL_H

#include <stdint.h>
#include <sys/types.h>
#include <time.h>

/* What the state file records (rewritten atomically on every change). */
struct control_state {
	pid_t worker_pid;               /* 0 when none */
	const char *state;              /* stopped/starting/ready/stopping/backing-off */
	unsigned generation;
	unsigned long restarts;
	const char *last_exit;          /* e.g. "exit 75 (restart requested)" */
	const char *worker_status;      /* the worker's STATUS= text */
	time_t started;                 /* supervisor start, wall clock */
	time_t worker_started;
	uint64_t stop_timeout;          /* so stop/restart know how long to wait */
};

/*
 * The runtime directory: opt, else $RUNTIME_DIRECTORY, else
 * $XDG_RUNTIME_DIR/hermes, else /run/hermes for root.  NULL when none
 * applies.  The caller frees it.
 */
char *control_runtime_dir(const char *opt);

/*
 * Takes the lock DIR/lock, so only one supervisor runs per directory.
 * With replace, the holder is sent SIGTERM and awaited up to wait_usec.
 * Returns the lock fd (kept open for life); fatal when refused.
 */
int control_lock(const char *dir, int replace, uint64_t wait_usec);

/* Rewrites DIR/state; logs and carries on when it cannot. */
void control_write_state(const char *dir, const struct control_state *st);

/* The subcommands; each returns the process exit status. */
int control_status(const char *dir);
int control_restart(const char *dir);
int control_stop(const char *dir);

/* Re-points stdout/stderr at logpath (after rotation). */
void control_redirect_output(const char *logpath);

#endif
