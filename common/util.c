/* util.c - allocation, time, number parsing and file helpers. */
#include "util.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		fatalx("out of memory (%zu bytes)", n);
	return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

	if (p == NULL)
		fatalx("out of memory (%zu x %zu bytes)", nmemb, size);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		fatalx("out of memory (%zu bytes)", n);
	return q;
}

char *
xstrdup(const char *s)
{
	return xstrndup(s, strlen(s));
}

char *
xstrndup(const char *s, size_t n)
{
	size_t len = strnlen(s, n);
	char *p = xmalloc(len + 1);

	memcpy(p, s, len);
	p[len] = '\0';
	return p;
}

char *
xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *p;
	int r;

	va_start(ap, fmt);
	r = vasprintf(&p, fmt, ap);
	va_end(ap);
	if (r < 0)
		fatalx("out of memory formatting a string");
	return p;
}

uint64_t
mono_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t
mono_msec(void)
{
	return mono_usec() / 1000u;
}

int
parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (s == NULL || *s == '\0')
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		if (v > (max - (uint64_t)(*s - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(*s - '0');
	}
	*out = v;
	return 0;
}

int
parse_seconds(const char *s, uint64_t max_usec, uint64_t *usec)
{
	uint64_t whole = 0, frac = 0, scale = 1000000;
	const char *p = s;

	if (s == NULL || *s == '\0' || *s == '.')
		return -1;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (whole > UINT64_MAX / 10 - 10)
			return -1;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (*p == '.') {
		p++;
		if (*p == '\0')
			return -1;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (scale > 1) {
				scale /= 10;
				frac += (uint64_t)(*p - '0') * scale;
			}
		}
	}
	if (*p != '\0' || whole > max_usec / 1000000)
		return -1;
	whole = whole * 1000000 + frac;
	if (whole > max_usec)
		return -1;
	*usec = whole;
	return 0;
}

/* Writes all of buf to fd, retrying on EINTR and short writes. */
static int
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(fd, buf, len);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* fsyncs the directory holding path, so a rename in it is durable. */
static void
fsync_parent(const char *path)
{
	char dir[PATH_MAX];
	char *slash;
	int fd;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash == NULL)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

/* 64 unpredictable bits (getrandom, else the clock and a counter). */
static uint64_t
util_random64(void)
{
	static uint64_t counter;
	uint64_t v;

	if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == (ssize_t)sizeof(v))
		return v;
	return (mono_usec() * 6364136223846793005ULL) ^ (uint64_t)getpid() << 32 ^ ++counter;
}

/*
 * Creates a new temporary file beside path, never opening anything that
 * was already there (O_EXCL, O_NOFOLLOW): a link planted at a guessable
 * name cannot redirect the write.  Its name goes to tmp.  Returns the fd or -1.
 */
static int
util_tmp_create(const char *path, unsigned mode, char *tmp, size_t tmplen)
{
	int attempt, fd;

	for (attempt = 0; attempt < 16; attempt++) {
		if (snprintf(tmp, tmplen, "%s.tmp.%ld.%016llx", path, (long)getpid(),
		    (unsigned long long)util_random64()) >= (int)tmplen) {
			errno = ENAMETOOLONG;
			return -1;
		}
		fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)mode);
		if (fd >= 0 || errno != EEXIST)
			return fd;
	}
	return -1;
}

/*
 * Writes a temporary file and renames it over path; fsyncs both when
 * durable.  rename() replaces whatever path names (a planted link
 * included) without following it.
 */
static int
replace_file(const char *path, const void *data, size_t len, unsigned mode, int durable)
{
	char tmp[PATH_MAX];
	int fd, saved;

	fd = util_tmp_create(path, mode, tmp, sizeof(tmp));
	if (fd < 0)
		return -1;
	if (write_all(fd, data, len) < 0 || (durable && fsync(fd) < 0))
		goto fail;
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	if (rename(tmp, path) < 0) {
		fd = -1;
		goto fail;
	}
	if (durable)
		fsync_parent(path);
	return 0;
fail:
	saved = errno;
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	errno = saved;
	return -1;
}

int
write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	return replace_file(path, data, len, mode, 1);
}

int
write_file_replace(const char *path, const void *data, size_t len, unsigned mode)
{
	return replace_file(path, data, len, mode, 0);
}

int
sync_dir(const char *dir)
{
	int fd, r, saved;

	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	r = syncfs(fd);
	saved = errno;
	close(fd);
	errno = saved;
	return r;
}

int
buf_append(char **buf, size_t *len, size_t *cap, size_t max, const char *s, size_t n)
{
	if (n > max || *len > max - n)
		return -1;
	if (*len + n + 1 > *cap) {
		size_t ncap = *cap ? *cap : 256;

		while (ncap < *len + n + 1)
			ncap *= 2;
		*buf = xrealloc(*buf, ncap);
		*cap = ncap;
	}
	memcpy(*buf + *len, s, n);
	*len += n;
	(*buf)[*len] = '\0';
	return 0;
}

/* Reads all of fd (at most max bytes) into a NUL-terminated buffer; closes fd. */
static char *
read_fd(int fd, size_t max, size_t *lenp)
{
	size_t len = 0, cap = 4096;
	char *buf = xmalloc(cap);
	int saved;

	for (;;) {
		ssize_t n;

		if (len + 1 >= cap) {
			if (cap > max + 1) {
				errno = EFBIG;
				goto fail;
			}
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		n = read(fd, buf + len, cap - len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > max) {
			errno = EFBIG;
			goto fail;
		}
	}
	close(fd);
	buf[len] = '\0';
	if (lenp != NULL)
		*lenp = len;
	return buf;
fail:
	saved = errno;
	close(fd);
	free(buf);
	errno = saved;
	return NULL;
}

char *
read_file(const char *path, size_t max, size_t *lenp)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	return fd < 0 ? NULL : read_fd(fd, max, lenp);
}

char *
read_file_nofollow(const char *path, size_t max, size_t *lenp)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	struct stat st;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		errno = EINVAL;
		return NULL;
	}
	return read_fd(fd, max, lenp);
}

int
mkdir_p(const char *dir, unsigned mode)
{
	char buf[PATH_MAX];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", dir) >= (int)sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (p = buf + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
			return -1;
		*p = '/';
	}
	if (mkdir(buf, (mode_t)mode) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* Creates and removes a file in dir, to learn whether it can be written. */
static int
dir_probe_write(const char *dir)
{
	char *probe = xasprintf("%s/.probe", dir), tmp[PATH_MAX];
	int fd = util_tmp_create(probe, 0600, tmp, sizeof(tmp)), saved;

	saved = errno;
	free(probe);
	if (fd < 0) {
		errno = saved;
		return -1;
	}
	close(fd);
	unlink(tmp);
	return 0;
}

/* The mode and owner rules of a private directory; 0 or -1 with why in err. */
static int
dir_check_private(const struct stat *st, char *err, size_t errlen)
{
	if (st->st_uid != geteuid()) {
		snprintf(err, errlen, "owned by uid %ld, not by this user (uid %ld)",
		    (long)st->st_uid, (long)geteuid());
		return -1;
	}
	if ((st->st_mode & 022) != 0) {
		snprintf(err, errlen, "writable by group or others (mode %04o); chmod 700 it",
		    (unsigned)(st->st_mode & 07777));
		return -1;
	}
	return 0;
}

int
dir_ensure(const char *dir, unsigned mode, int private, char *err, size_t errlen)
{
	struct stat st;

	if (mkdir_p(dir, mode) < 0) {
		snprintf(err, errlen, "cannot create it: %s", strerror(errno));
		return -1;
	}
	if (stat(dir, &st) < 0) {
		snprintf(err, errlen, "cannot examine it: %s", strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "not a directory (a file is in the way)");
		return -1;
	}
	if (private && dir_check_private(&st, err, errlen) < 0)
		return -1;
	if (dir_probe_write(dir) < 0) {
		snprintf(err, errlen, "cannot write in it: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void
heap_trim(void)
{
#ifdef __GLIBC__
	malloc_trim(0);
#endif
}

int
fd_set_cloexec(int fd, int on)
{
	int fl = fcntl(fd, F_GETFD);

	if (fl < 0)
		return -1;
	fl = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
	return fcntl(fd, F_SETFD, fl);
}

int
fd_set_nonblock(int fd, int on)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0)
		return -1;
	fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
	return fcntl(fd, F_SETFL, fl);
}
