/*
 * util.h - small helpers shared by the supervisor and the worker (libc only).
 *
 * Allocation failure is fatal: the x* wrappers never return NULL.
 */
#ifndef HERMES_UTIL_H
#define HERMES_UTIL_H

#include <stddef.h>
#include <stdint.h>

#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* Returns a newly allocated formatted string. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* CLOCK_MONOTONIC in microseconds / milliseconds. */
uint64_t mono_usec(void);
uint64_t mono_msec(void);

/*
 * Parses a non-negative number of seconds with an optional fraction
 * ("30", "0.5", "1.25") into microseconds.  Returns 0, or -1 when s is
 * not such a number or exceeds max_usec.
 */
int parse_seconds(const char *s, uint64_t max_usec, uint64_t *usec);

/*
 * Parses a decimal unsigned integer that must span the whole string.
 * Returns 0, or -1 on any junk, sign or overflow beyond max.
 */
int parse_u64(const char *s, uint64_t max, uint64_t *out);

/*
 * Writes len bytes to path atomically: a temporary file in the same
 * directory, fsync, rename, then fsync of the directory.  mode is the
 * new file's permission.  The temporary file has an unpredictable name
 * and is created with O_EXCL | O_NOFOLLOW, and rename() replaces a link
 * at path instead of following it: nothing planted in the directory can
 * redirect the write.  Returns 0, or -1 with errno set.
 */
int write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);
/*
 * The same without the fsyncs: readers never see a torn file, but the
 * newest content may be lost in a power cut.  For state saved often on
 * the event loop, made durable at teardown by sync_dir().
 */
int write_file_replace(const char *path, const void *data, size_t len, unsigned mode);
/* Flushes the file system holding dir to disk (syncfs).  Returns 0 or -1. */
int sync_dir(const char *dir);

/*
 * Appends n bytes to the growable NUL-terminated buffer *buf of length
 * *len and capacity *cap, never letting it exceed max bytes.  Returns 0,
 * or -1 (nothing appended) when it would.
 */
int buf_append(char **buf, size_t *len, size_t *cap, size_t max, const char *s, size_t n);

/*
 * Reads a whole file of at most max bytes into a NUL-terminated buffer
 * the caller frees.  Returns NULL with errno set (EFBIG when too large).
 */
char *read_file(const char *path, size_t max, size_t *len);
/*
 * The same for files in a state directory: a symbolic link (ELOOP) or
 * anything but a regular file (EINVAL) is refused, never followed or
 * waited on.
 */
char *read_file_nofollow(const char *path, size_t max, size_t *len);

/* Creates dir and its parents with mode (like mkdir -p).  Returns 0 or -1. */
int mkdir_p(const char *dir, unsigned mode);
/*
 * Makes sure dir exists (created with its parents and mode when missing),
 * is a directory and can be written in.  With private set, also that this
 * user owns it and neither group nor others may write it.  Returns 0, or
 * -1 with the reason (one phrase, no path) in err.
 */
int dir_ensure(const char *dir, unsigned mode, int private, char *err, size_t errlen);

/* Returns freed heap memory to the system (malloc_trim on glibc; else nothing). */
void heap_trim(void);

int fd_set_cloexec(int fd, int on);
int fd_set_nonblock(int fd, int on);

#endif
