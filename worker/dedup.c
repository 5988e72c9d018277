/* dedup.c - a ring of recent message ids with a hash index, saved as lines. */
#include "dedup.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct dd_ent {
	char *id;
	struct dd_ent *next;            /* in its bucket */
};

struct dedup {
	char *path;
	size_t cap, count, head;        /* ring: head is the oldest */
	struct dd_ent *ring;
	struct dd_ent **buckets;
	size_t nbuckets;                /* a power of two */
	int dirty;
};

static uint32_t
dd_hash(const char *s)
{
	uint32_t h = 2166136261u;       /* FNV-1a */

	for (; *s != '\0'; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

static int
recordable(const char *id)
{
	size_t n = 0;

	if (id == NULL || *id == '\0')
		return 0;
	for (; id[n] != '\0'; n++)
		if ((unsigned char)id[n] < 0x20 || n >= DEDUP_MAX_ID)
			return 0;
	return 1;
}

static void
unlink_ent(struct dedup *d, struct dd_ent *e)
{
	struct dd_ent **pp = &d->buckets[dd_hash(e->id) & (d->nbuckets - 1)];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->next;
	if (*pp == e)
		*pp = e->next;
	free(e->id);
	e->id = NULL;
	e->next = NULL;
}

/* Adds without marking dirty (used when loading); 1 when added. */
static int
add_ent(struct dedup *d, const char *id)
{
	struct dd_ent *e;
	size_t b;

	if (!recordable(id) || dedup_has(d, id))
		return 0;
	if (d->count == d->cap) {
		unlink_ent(d, &d->ring[d->head]);
		d->head = (d->head + 1) % d->cap;
		d->count--;
	}
	e = &d->ring[(d->head + d->count) % d->cap];
	e->id = xstrdup(id);
	b = dd_hash(id) & (d->nbuckets - 1);
	e->next = d->buckets[b];
	d->buckets[b] = e;
	d->count++;
	return 1;
}

/*
 * Loads the saved ids, one a line, oldest first.  The text is split by
 * its length, not as a C string: a NUL in a damaged file would otherwise
 * hide every line after it, the newest ids.  Unusable lines (too long,
 * control bytes) are skipped and reported.
 */
static void
load(struct dedup *d)
{
	size_t len = 0, off = 0, skipped = 0;
	char *text = read_file(d->path, d->cap * (DEDUP_MAX_ID + 1) + 1, &len);

	if (text == NULL) {
		if (errno != ENOENT)
			log_warn("%s: cannot read handled message ids", d->path);
		return;
	}
	while (off < len) {
		char *nl = memchr(text + off, '\n', len - off);
		size_t n = nl != NULL ? (size_t)(nl - (text + off)) : len - off;

		text[off + n] = '\0';
		if (n > 0 && (strlen(text + off) != n || !recordable(text + off)))
			skipped++;
		else if (n > 0)
			(void)add_ent(d, text + off);
		off += n + 1;
	}
	if (skipped > 0)
		log_warnx("%s: %zu damaged line(s) of handled message ids ignored", d->path,
		    skipped);
	free(text);
}

struct dedup *
dedup_new(const char *path, size_t cap)
{
	struct dedup *d = xcalloc(1, sizeof(*d));

	d->path = xstrdup(path);
	d->cap = cap > 0 ? cap : 1;
	d->ring = xcalloc(d->cap, sizeof(*d->ring));
	for (d->nbuckets = 16; d->nbuckets < d->cap * 2; d->nbuckets *= 2)
		;
	d->buckets = xcalloc(d->nbuckets, sizeof(*d->buckets));
	load(d);
	return d;
}

void
dedup_free(struct dedup *d)
{
	size_t i;

	if (d == NULL)
		return;
	for (i = 0; i < d->cap; i++)
		free(d->ring[i].id);
	free(d->ring);
	free(d->buckets);
	free(d->path);
	free(d);
}

int
dedup_has(const struct dedup *d, const char *id)
{
	const struct dd_ent *e;

	if (id == NULL)
		return 0;
	for (e = d->buckets[dd_hash(id) & (d->nbuckets - 1)]; e != NULL; e = e->next)
		if (strcmp(e->id, id) == 0)
			return 1;
	return 0;
}

void
dedup_add(struct dedup *d, const char *id)
{
	if (add_ent(d, id))
		d->dirty = 1;
}

size_t
dedup_count(const struct dedup *d)
{
	return d->count;
}

int
dedup_dirty(const struct dedup *d)
{
	return d->dirty;
}

int
dedup_save(struct dedup *d)
{
	size_t i, len = 0, cap = 4096;
	char *buf;
	int r;

	if (!d->dirty)
		return 0;
	buf = xmalloc(cap);
	for (i = 0; i < d->count; i++) {
		const char *id = d->ring[(d->head + i) % d->cap].id;
		size_t n = strlen(id);

		while (len + n + 2 > cap) {
			cap *= 2;
			buf = xrealloc(buf, cap);
		}
		memcpy(buf + len, id, n);
		len += n;
		buf[len++] = '\n';
	}
	r = write_file_atomic(d->path, buf, len, 0600);
	free(buf);
	if (r == 0)
		d->dirty = 0;
	return r;
}
