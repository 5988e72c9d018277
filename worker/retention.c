/* retention.c - the disk retention policy of saved session histories. */
#include "retention.h"
#include "log.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define RETENTION_HOURLY 3600u

struct retention_file {
	char *name;
	struct timespec mtime;
	uint64_t size;
};

struct retention_scan {
	int dfd;
	struct retention_file *v;
	size_t n, cap;
};

/* 1 when name ends with suffix. */
static int
retention_ends_with(const char *name, const char *suffix)
{
	size_t n = strlen(name), k = strlen(suffix);

	return n > k && strcmp(name + n - k, suffix) == 0;
}

/* Removes name from the directory; a failure is logged and the file counted as kept. */
static int
retention_unlink(struct retention_scan *sc, const char *name)
{
	if (unlinkat(sc->dfd, name, 0) == 0 || errno == ENOENT)
		return 0;
	log_warn("sessions: cannot remove %s", name);
	return -1;
}

/* Looks at one directory entry: a session file is recorded, a stale temporary removed. */
static void
retention_consider(struct retention_scan *sc, const char *name, time_t now)
{
	struct stat st;

	if (name[0] == '.' || fstatat(sc->dfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
	    !S_ISREG(st.st_mode))
		return;
	if (strstr(name, ".json.tmp.") != NULL) {
		if (now - st.st_mtim.tv_sec > RETENTION_TMP_AGE_SEC)
			(void)retention_unlink(sc, name);
		return;
	}
	if (!retention_ends_with(name, ".json"))
		return;
	if (sc->n == sc->cap) {
		sc->cap = sc->cap ? sc->cap * 2 : 64;
		sc->v = xrealloc(sc->v, sc->cap * sizeof(*sc->v));
	}
	sc->v[sc->n].name = xstrdup(name);
	sc->v[sc->n].mtime = st.st_mtim;
	sc->v[sc->n].size = (uint64_t)st.st_size;
	sc->n++;
}

/* Oldest first; the name breaks ties so the order never depends on readdir. */
static int
retention_cmp_age(const void *a, const void *b)
{
	const struct retention_file *x = a, *y = b;

	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Reads the directory into sc (which owns dfd afterwards).  Returns 0 or -1. */
static int
retention_scan_dir(struct retention_scan *sc, const char *dir, time_t now)
{
	struct dirent *e;
	DIR *d;
	int fd;

	memset(sc, 0, sizeof(*sc));
	sc->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (sc->dfd < 0)
		return -1;
	fd = dup(sc->dfd);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		if (fd >= 0)
			close(fd);
		close(sc->dfd);
		return -1;
	}
	while ((e = readdir(d)) != NULL)
		retention_consider(sc, e->d_name, now);
	closedir(d);
	if (sc->n > 0)
		qsort(sc->v, sc->n, sizeof(*sc->v), retention_cmp_age);
	return 0;
}

/* 1 when f must go under p, left files of left_bytes being kept so far. */
static int
retention_must_go(const struct retention_policy *p, const struct retention_file *f,
    time_t now, size_t left, uint64_t left_bytes)
{
	if (p->max_age_sec > 0 && now > f->mtime.tv_sec &&
	    (uint64_t)(now - f->mtime.tv_sec) > p->max_age_sec)
		return 1;
	if (p->max_count > 0 && left > p->max_count)
		return 1;
	return p->max_bytes > 0 && left_bytes > p->max_bytes;
}

int
retention_apply(const char *dir, const struct retention_policy *p, time_t now,
    struct retention_result *r)
{
	struct retention_result res = { 0, 0, 0, 0 };
	struct retention_scan sc;
	size_t i;

	if (retention_scan_dir(&sc, dir, now) < 0)
		return -1;
	for (i = 0; i < sc.n; i++)
		res.kept_bytes += sc.v[i].size;
	res.kept = sc.n;
	/* Oldest first, so the age limit and the size limits remove in one pass. */
	for (i = 0; i < sc.n; i++) {
		struct retention_file *f = &sc.v[i];

		if (retention_must_go(p, f, now, res.kept, res.kept_bytes) &&
		    retention_unlink(&sc, f->name) == 0) {
			log_debug("sessions: removed %s (%llu bytes)", f->name,
			    (unsigned long long)f->size);
			res.kept--;
			res.kept_bytes -= f->size;
			res.removed++;
			res.removed_bytes += f->size;
		}
		free(f->name);
	}
	free(sc.v);
	close(sc.dfd);
	if (res.removed > 0)
		log_info("sessions: removed %zu saved histories (%llu bytes) by the retention "
		    "policy; %zu kept (%llu bytes)", res.removed,
		    (unsigned long long)res.removed_bytes, res.kept,
		    (unsigned long long)res.kept_bytes);
	if (r != NULL)
		*r = res;
	return 0;
}

unsigned
retention_interval_sec(const struct retention_policy *p)
{
	if (p->max_age_sec > 0 && p->max_age_sec / 2 < RETENTION_HOURLY)
		return p->max_age_sec / 2 > 0 ? (unsigned)(p->max_age_sec / 2) : 1;
	return RETENTION_HOURLY;
}
