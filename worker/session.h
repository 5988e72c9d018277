/*
 * session.h - one conversation's history, persisted in the state dir.
 *
 * Sessions are keyed by where a conversation happens: a DM is one session
 * per chat, a group one per user in that chat, a thread one per thread.
 * The history is a JSON array of {"role","content"} kept bounded (entries
 * and bytes) and saved atomically (write, rename; not fsynced) to
 * <dir>/<escaped key>.json.
 */
#ifndef HERMES_SESSION_H
#define HERMES_SESSION_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "platform.h"

struct session;

/* Bounds of one history. */
#define SESSION_MAX_ENTRIES 200
#define SESSION_MAX_BYTES (256 * 1024)

/* The session key of an inbound message on platform; newly allocated. */
char *session_key(const char *platform, const struct inbound *m);
/* The file name (no directory) a key is saved under; newly allocated. */
char *session_file_name(const char *key);

/* Opens the session key kept in dir, loading its history if saved. */
struct session *session_open(const char *dir, const char *key);
void session_free(struct session *s);
const char *session_get_key(const struct session *s);
/* The history, oldest first (borrowed; valid until the next change). */
const cJSON *session_history(const struct session *s);
size_t session_length(const struct session *s);
/* Appends one entry, dropping the oldest beyond the bounds. */
void session_append(struct session *s, const char *role, const char *content);
/* Forgets the history and removes its file. */
void session_reset(struct session *s);
int session_dirty(const struct session *s);
/* Saves the history when changed.  Returns 0, or -1 with errno set. */
int session_save(struct session *s);

#endif
