/*
 * log.h - the one logging API of both processes.
 *
 * Messages go to stderr (with "<N>" syslog priority prefixes when
 * JOURNAL_STREAM is set, so journald files them at the right level) or to
 * a log file.  Every function saves and restores errno.  log_warn() and
 * fatal() append strerror(errno).  Never pass a secret; pass untrusted
 * bytes through log_escape() first.
 */
#ifndef HERMES_LOG_H
#define HERMES_LOG_H

#include <stddef.h>

#define LOG_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* Sets the program name and the destination: stderr when path is NULL. */
void log_init(const char *progname, const char *path);
/* Reopens the log file (after rotation); a no-op when logging to stderr. */
void log_reopen(void);
/* 1 enables debug messages. */
void log_set_verbose(int verbose);

void log_warn(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_warnx(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_info(const char *fmt, ...) LOG_PRINTF(1, 2);
void log_debug(const char *fmt, ...) LOG_PRINTF(1, 2);
/* Logs, then exits with status 1. */
void fatal(const char *fmt, ...) LOG_PRINTF(1, 2) __attribute__((noreturn));
void fatalx(const char *fmt, ...) LOG_PRINTF(1, 2) __attribute__((noreturn));
/* Logs, then exits with the given status (e.g. 78 for a configuration error). */
void fatal_status(int status, const char *fmt, ...) LOG_PRINTF(2, 3)
	__attribute__((noreturn));

/*
 * Copies at most len bytes of untrusted src into dst (size dstsz) with
 * control and non-ASCII bytes shown as \xNN; always NUL-terminates.
 * Returns dst, for use inside a log call.
 */
char *log_escape(char *dst, size_t dstsz, const char *src, size_t len);

#endif
