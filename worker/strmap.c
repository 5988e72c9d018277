/* strmap.c - string-keyed hash map, open addressing with tombstones. */
#include "strmap.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

struct strmap_slot {
	char *key;                      /* NULL: empty; STRMAP_DEAD: removed */
	void *val;
	uint32_t hash;
};

struct strmap {
	struct strmap_slot *slots;
	size_t cap;                     /* a power of two */
	size_t count;                   /* live keys */
	size_t used;                    /* live keys + tombstones */
};

static char strmap_dead_key;
#define STRMAP_DEAD (&strmap_dead_key)

/* FNV-1a. */
static uint32_t
strmap_hash(const char *s)
{
	uint32_t h = 2166136261u;

	while (*s != '\0')
		h = (h ^ (unsigned char)*s++) * 16777619u;
	return h;
}

struct strmap *
strmap_new(void)
{
	struct strmap *m = xcalloc(1, sizeof(*m));

	m->cap = 16;
	m->slots = xcalloc(m->cap, sizeof(*m->slots));
	return m;
}

void
strmap_free(struct strmap *m, void (*free_val)(void *))
{
	size_t i;

	if (m == NULL)
		return;
	for (i = 0; i < m->cap; i++) {
		if (m->slots[i].key == NULL || m->slots[i].key == STRMAP_DEAD)
			continue;
		if (free_val != NULL)
			free_val(m->slots[i].val);
		free(m->slots[i].key);
	}
	free(m->slots);
	free(m);
}

/* The slot holding key, or NULL. */
static struct strmap_slot *
strmap_find(const struct strmap *m, const char *key, uint32_t h)
{
	size_t i = h & (m->cap - 1);
	struct strmap_slot *s;

	for (;;) {
		s = &m->slots[i];
		if (s->key == NULL)
			return NULL;
		if (s->key != STRMAP_DEAD && s->hash == h && strcmp(s->key, key) == 0)
			return s;
		i = (i + 1) & (m->cap - 1);
	}
}

/* Rehashes into a table of ncap slots, dropping tombstones. */
static void
strmap_resize(struct strmap *m, size_t ncap)
{
	struct strmap_slot *old = m->slots, *s;
	size_t ocap = m->cap, i, j;

	m->slots = xcalloc(ncap, sizeof(*m->slots));
	m->cap = ncap;
	m->used = m->count;
	for (i = 0; i < ocap; i++) {
		if (old[i].key == NULL || old[i].key == STRMAP_DEAD)
			continue;
		for (j = old[i].hash & (ncap - 1); m->slots[j].key != NULL; j = (j + 1) & (ncap - 1))
			;
		s = &m->slots[j];
		*s = old[i];
	}
	free(old);
}

void *
strmap_get(const struct strmap *m, const char *key)
{
	struct strmap_slot *s = strmap_find(m, key, strmap_hash(key));

	return s != NULL ? s->val : NULL;
}

void *
strmap_put(struct strmap *m, const char *key, void *val)
{
	uint32_t h = strmap_hash(key);
	struct strmap_slot *s = strmap_find(m, key, h);
	void *prev;
	size_t i;

	if (s != NULL) {
		prev = s->val;
		s->val = val;
		return prev;
	}
	if ((m->used + 1) * 4 > m->cap * 3)
		strmap_resize(m, m->count * 2 + 2 > m->cap / 2 ? m->cap * 2 : m->cap);
	for (i = h & (m->cap - 1); m->slots[i].key != NULL && m->slots[i].key != STRMAP_DEAD;
	    i = (i + 1) & (m->cap - 1))
		;
	if (m->slots[i].key == NULL)
		m->used++;
	m->slots[i].key = xstrdup(key);
	m->slots[i].val = val;
	m->slots[i].hash = h;
	m->count++;
	return NULL;
}

void *
strmap_del(struct strmap *m, const char *key)
{
	struct strmap_slot *s = strmap_find(m, key, strmap_hash(key));
	void *val;

	if (s == NULL)
		return NULL;
	val = s->val;
	free(s->key);
	s->key = STRMAP_DEAD;
	s->val = NULL;
	m->count--;
	return val;
}

size_t
strmap_count(const struct strmap *m)
{
	return m->count;
}
