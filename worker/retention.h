/*
 * retention.h - how long saved session histories stay on disk.
 *
 * The session files (<dir>/NAME.json) are kept within a policy: removed when
 * unchanged for longer than max_age, then the oldest first while more
 * than max_count files or max_bytes of them remain.  Kept apart from the
 * session store itself so that a different store can reuse the policy.
 */
#ifndef HERMES_RETENTION_H
#define HERMES_RETENTION_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct retention_policy {
	uint64_t max_age_sec;           /* 0: no limit */
	uint64_t max_count;             /* 0: no limit */
	uint64_t max_bytes;             /* 0: no limit */
};

struct retention_result {
	size_t kept, removed;
	uint64_t kept_bytes, removed_bytes;
};

/* A temporary file left by an interrupted save is removed after this long. */
#define RETENTION_TMP_AGE_SEC 3600

/*
 * Applies p to the session files of dir as of now (wall-clock seconds,
 * compared with their modification times).  Leftover temporary files
 * older than RETENTION_TMP_AGE_SEC go too.  Links and anything but
 * regular files are neither followed nor removed.  Fills r (may be NULL).
 * Returns 0, or -1 with errno set when dir cannot be read.
 */
int retention_apply(const char *dir, const struct retention_policy *p, time_t now,
    struct retention_result *r);

/*
 * How often the policy should be applied: hourly, or at half of max_age
 * when that is shorter (at least every second), in seconds.
 */
unsigned retention_interval_sec(const struct retention_policy *p);

#endif
