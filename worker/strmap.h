/*
 * strmap.h - a hash map from NUL-terminated strings to pointers.
 *
 * Keys are copied and owned by the map; values are borrowed (the caller
 * frees them, or passes a destructor to strmap_free).  Open addressing
 * with linear probing; lookups, inserts and deletes are O(1) on average.
 */
#ifndef HERMES_STRMAP_H
#define HERMES_STRMAP_H

#include <stddef.h>

struct strmap;

struct strmap *strmap_new(void);
/* Frees the map; free_val (may be NULL) is called on every value.  NULL is a no-op. */
void strmap_free(struct strmap *m, void (*free_val)(void *));
/* The value stored under key, or NULL. */
void *strmap_get(const struct strmap *m, const char *key);
/* Stores val (not NULL) under key; returns the value it replaced, or NULL. */
void *strmap_put(struct strmap *m, const char *key, void *val);
/* Removes key; returns its value, or NULL when absent. */
void *strmap_del(struct strmap *m, const char *key);
size_t strmap_count(const struct strmap *m);

#endif
