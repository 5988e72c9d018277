/*
 * dedup.h - the bounded set of handled message ids of one platform,
 * persisted in the state dir so that a message redelivered after a
 * restart is answered once.  The oldest ids are forgotten first.
 */
#ifndef HERMES_DEDUP_H
#define HERMES_DEDUP_H

#include <stddef.h>

struct dedup;

/* Longest id kept; longer ids (or ids with control bytes) are never recorded. */
#define DEDUP_MAX_ID 256

/* Loads path if it exists (a missing or damaged file gives an empty set). */
struct dedup *dedup_new(const char *path, size_t cap);
void dedup_free(struct dedup *d);
int dedup_has(const struct dedup *d, const char *id);
/* Records id (a no-op when present or not recordable). */
void dedup_add(struct dedup *d, const char *id);
size_t dedup_count(const struct dedup *d);
/* 1 when ids were added since the last save. */
int dedup_dirty(const struct dedup *d);
/* Writes the set atomically when dirty.  Returns 0, or -1 with errno set. */
int dedup_save(struct dedup *d);

#endif
