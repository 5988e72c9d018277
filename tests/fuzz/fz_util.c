/* fz_util.c - helpers shared by the fuzz targets. */
#include "fz_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"

/* The default set-up; a harness needing more defines its own (this one is weak). */
__attribute__((weak)) int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_setup();
	return 0;
}

void
fz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "\n==== invariant broken at %s:%d: (%s) ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	abort();
}

uint8_t
fz_u8(struct fz_in *in)
{
	uint8_t v = 0;

	if (in->n > 0) {
		v = in->p[0];
		in->p++;
		in->n--;
	}
	return v;
}

uint16_t
fz_u16(struct fz_in *in)
{
	uint16_t hi = fz_u8(in);

	return (uint16_t)(hi << 8 | fz_u8(in));
}

uint32_t
fz_u32(struct fz_in *in)
{
	uint32_t hi = fz_u16(in);

	return hi << 16 | fz_u16(in);
}

const uint8_t *
fz_take(struct fz_in *in, size_t max, size_t *len)
{
	const uint8_t *p = in->p;

	*len = max < in->n ? max : in->n;
	in->p += *len;
	in->n -= *len;
	return p;
}

char *
fz_str(struct fz_in *in, size_t max)
{
	size_t len;
	const uint8_t *p = fz_take(in, max, &len);

	return xstrndup((const char *)p, len);
}

char *
fz_rest_str(struct fz_in *in, size_t *len)
{
	char *s = fz_str(in, in->n);

	if (len != NULL)
		*len = strlen(s);
	return s;
}

size_t
fz_split(struct fz_in *in, const uint8_t **part, size_t *len, size_t n)
{
	static const char sep[] = "\n%%\n";
	const uint8_t *p = in->p, *end = in->p + in->n;
	size_t i, found = 0;

	for (i = 0; i < n; i++) {
		part[i] = (const uint8_t *)"";
		len[i] = 0;
	}
	for (i = 0; i < n && p <= end; i++) {
		const uint8_t *q = i + 1 < n ? memmem(p, (size_t)(end - p), sep, 4) : NULL;

		part[i] = p;
		len[i] = (size_t)((q != NULL ? q : end) - p);
		found++;
		if (q == NULL)
			break;
		p = q + 4;
	}
	in->p = end;
	in->n = 0;
	return found;
}

uint64_t
fz_seed(const uint8_t *data, size_t size)
{
	uint64_t h = 1469598103934665603ULL;
	size_t i;

	for (i = 0; i < size; i++) {
		h ^= data[i];
		h *= 1099511628211ULL;
	}
	return h != 0 ? h : 1;
}

uint64_t
fz_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 2685821657736338717ULL;
}

static char fz_dir[256];

/* Removes the files in dir; with tree, its subdirectories and dir itself too. */
static void
fz_remove(const char *dir, int tree)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char path[1024];
	struct stat st;

	if (d == NULL)
		return;
	while ((e = readdir(d)) != NULL) {
		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
			if (tree)
				fz_remove(path, 1);
		} else {
			unlink(path);
		}
	}
	closedir(d);
	if (tree)
		rmdir(dir);
}

static void
fz_tmpdir_remove(void)
{
	if (fz_dir[0] != '\0')
		fz_remove(fz_dir, 1);
}

const char *
fz_tmpdir(void)
{
	struct stat st;

	if (fz_dir[0] != '\0')
		return fz_dir;
	snprintf(fz_dir, sizeof(fz_dir), "%s/hermes-fuzz-XXXXXX",
	    stat("/dev/shm", &st) == 0 && access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
	if (mkdtemp(fz_dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	atexit(fz_tmpdir_remove);
	return fz_dir;
}

char *
fz_subdir(const char *name)
{
	char *d = xasprintf("%s/%s", fz_tmpdir(), name);

	if (mkdir(d, 0700) < 0 && errno != EEXIST) {
		perror(d);
		abort();
	}
	return d;
}

void
fz_clear_dir(const char *dir)
{
	fz_remove(dir, 0);
}

void
fz_write(const char *dir, const char *name, const void *data, size_t len, unsigned mode)
{
	char path[1024];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode != 0 ? mode : 0600);
	if (fd < 0 || (len > 0 && write(fd, data, len) != (ssize_t)len)) {
		perror(path);
		abort();
	}
	fchmod(fd, mode != 0 ? mode : 0600);
	close(fd);
}

char *
fz_read(const char *dir, const char *name, size_t *len)
{
	char path[1024];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return read_file(path, 256u << 20, len);
}

void
fz_setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	if (getenv("FUZZ_LOG") == NULL)
		log_init("fuzz", "/dev/null");
}

void
fz_trace(const char *fmt, ...)
{
	static int on = -1;
	va_list ap;

	if (on < 0)
		on = getenv("FUZZ_TRACE") != NULL;
	if (!on)
		return;
	fprintf(stderr, "[%llu ms] ", (unsigned long long)mono_msec());
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int
fz_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned char c = s[i];
		size_t n, k;
		uint32_t cp;

		if (c == 0)
			return 0;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 2;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 3;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 4;
			cp = c & 0x07;
		} else
			return 0;
		if (len - i < n)
			return 0;
		for (k = 1; k < n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = cp << 6 | (s[i + k] & 0x3f);
		}
		if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n;
	}
	return 1;
}

int
fz_set_has(const struct fz_set *s, const char *id)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		if (strcmp(s->v[i], id) == 0)
			return 1;
	return 0;
}

int
fz_set_add(struct fz_set *s, const char *id)
{
	if (fz_set_has(s, id))
		return 0;
	if (s->cap > 0 && s->n == s->cap) {
		free(s->v[0]);
		memmove(s->v, s->v + 1, (s->n - 1) * sizeof(char *));
		s->n--;
	}
	s->v = xrealloc(s->v, (s->n + 1) * sizeof(char *));
	s->v[s->n++] = xstrdup(id);
	return 1;
}

void
fz_set_free(struct fz_set *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->v[i]);
	free(s->v);
	s->v = NULL;
	s->n = 0;
}

int
fz_is_int(const char *s)
{
	char *end;

	if (*s == '\0')
		return 0;
	(void)strtoll(s, &end, 10);
	return *end == '\0';
}

int
fz_is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}
