/* log.c - stderr/file logging with journald priority prefixes. */
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *log_prog = "hermes";
static char log_path[4096];
static int log_fd = STDERR_FILENO;
static int log_journal;
static int log_tagged = 1;
static int log_verbose;

void
log_init(const char *progname, const char *path)
{
	log_prog = progname;
	log_journal = getenv("JOURNAL_STREAM") != NULL && path == NULL;
	/*
	 * journald tags a stream with the name and pid of the process that
	 * opened it: the service's main process.  Its own lines need no tag;
	 * a supervised worker writing to the same stream keeps its own.
	 */
	log_tagged = !log_journal || getenv("HERMES_SUPERVISOR_PID") != NULL;
	if (getenv("HERMES_DEBUG") != NULL)
		log_verbose = 1;
	if (path == NULL) {
		log_path[0] = '\0';
		log_fd = STDERR_FILENO;
		return;
	}
	snprintf(log_path, sizeof(log_path), "%s", path);
	log_reopen();
}

void
log_reopen(void)
{
	int fd;

	if (log_path[0] == '\0')
		return;
	fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
	if (fd < 0)
		return;
	if (log_fd != STDERR_FILENO)
		close(log_fd);
	log_fd = fd;
}

void
log_set_verbose(int verbose)
{
	log_verbose = verbose;
}

/* Formats one line and writes it with a single write(2), so lines never interleave. */
static void
log_vemit(int prio, int with_errno, int saved, const char *fmt, va_list ap)
{
	char line[2048];
	size_t n = 0;
	int r;

	if (log_journal) {
		r = snprintf(line, sizeof(line), "<%d>", prio);
		n = r > 0 ? (size_t)r : 0;
	} else if (log_fd != STDERR_FILENO) {
		struct timespec ts;
		struct tm tm;

		clock_gettime(CLOCK_REALTIME, &ts);
		localtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S ", &tm);
	}
	if (log_tagged) {
		r = snprintf(line + n, sizeof(line) - n, "%s[%ld]: ", log_prog, (long)getpid());
		if (r > 0)
			n += (size_t)r;
	}
	if (n < sizeof(line)) {
		r = vsnprintf(line + n, sizeof(line) - n, fmt, ap);
		if (r > 0)
			n += (size_t)r;
	}
	if (with_errno && n < sizeof(line)) {
		r = snprintf(line + n, sizeof(line) - n, ": %s", strerror(saved));
		if (r > 0)
			n += (size_t)r;
	}
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	while (write(log_fd, line, n) < 0 && errno == EINTR)
		;
}

#define LOG_BODY(prio, with_errno)                      \
	do {                                            \
		int saved = errno;                      \
		va_list ap;                             \
		va_start(ap, fmt);                      \
		log_vemit(prio, with_errno, saved, fmt, ap); \
		va_end(ap);                             \
		errno = saved;                          \
	} while (0)

void log_warn(const char *fmt, ...) { LOG_BODY(LOG_WARNING, 1); }
void log_warnx(const char *fmt, ...) { LOG_BODY(LOG_WARNING, 0); }
void log_info(const char *fmt, ...) { LOG_BODY(LOG_INFO, 0); }

void
log_debug(const char *fmt, ...)
{
	if (log_verbose)
		LOG_BODY(LOG_DEBUG, 0);
}

void
fatal(const char *fmt, ...)
{
	LOG_BODY(LOG_CRIT, 1);
	exit(1);
}

void
fatalx(const char *fmt, ...)
{
	LOG_BODY(LOG_CRIT, 0);
	exit(1);
}

void
fatal_status(int status, const char *fmt, ...)
{
	LOG_BODY(LOG_CRIT, 0);
	exit(status);
}

char *
log_escape(char *dst, size_t dstsz, const char *src, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	size_t i, o = 0;

	if (dstsz == 0)
		return dst;
	for (i = 0; i < len && src != NULL; i++) {
		unsigned char c = (unsigned char)src[i];

		if (c >= 0x20 && c < 0x7f && c != '\\') {
			if (o + 1 >= dstsz)
				break;
			dst[o++] = (char)c;
		} else {
			if (o + 4 >= dstsz)
				break;
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		}
	}
	dst[o] = '\0';
	return dst;
}
