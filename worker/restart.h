/*
 * restart.h - the restart marker and the re-exec used without a supervisor.
 *
 * The marker (state_dir/restart.json, written atomically) records where a
 * /restart came from, so the next worker can say "Gateway online" in that
 * chat and thread, and when, so it can say how long the restart took.
 */
#ifndef HERMES_RESTART_H
#define HERMES_RESTART_H

#include <stdint.h>

struct restart_marker {
	char *platform;
	char *chat_id;
	char *thread_id;                /* NULL when none */
	char *message_id;               /* the /restart message, NULL when from a signal */
	uint64_t wall_ms;               /* CLOCK_REALTIME when written */
	uint64_t mono_us;               /* CLOCK_MONOTONIC when written */
	char boot_id[40];               /* the kernel's boot id: monotonic times compare within one boot */
	unsigned long generation;       /* of the worker that wrote it */
};

/* Fills the times and boot id of m with the current ones. */
void restart_marker_stamp(struct restart_marker *m);
/* Writes state_dir/restart.json atomically.  Returns 0, or -1 with errno set. */
int restart_marker_write(const char *state_dir, const struct restart_marker *m);
/* Reads the marker; NULL when there is none (a damaged one is logged and removed). */
struct restart_marker *restart_marker_read(const char *state_dir);
void restart_marker_free(struct restart_marker *m);
int restart_marker_delete(const char *state_dir);
/* Milliseconds since the marker was written (monotonic within one boot, else wall clock). */
uint64_t restart_marker_elapsed_ms(const struct restart_marker *m);

/*
 * Replaces the process image with /proc/self/exe and argv, with
 * HERMES_GENERATION + 1 and LISTEN_PID kept valid.  Returns only on failure.
 */
void restart_reexec(char *const argv[]);

#endif
