/* session.c - session keys and persisted, bounded conversation histories. */
#include "session.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct session {
	char *key;
	char *path;
	cJSON *history;
	size_t count;                   /* entries (cJSON counts by walking the list) */
	size_t bytes;                   /* sum of the content lengths */
	int dirty;
};

char *
session_key(const char *platform, const struct inbound *m)
{
	switch (m->chat_type) {
	case CHAT_GROUP:
		return xasprintf("%s:%s:u:%s", platform, m->chat_id, m->user_id);
	case CHAT_THREAD:
		return xasprintf("%s:%s:t:%s", platform, m->chat_id,
		    m->thread_id != NULL ? m->thread_id : "");
	case CHAT_DM:
	default:
		return xasprintf("%s:%s", platform, m->chat_id);
	}
}

char *
session_file_name(const char *key)
{
	static const char hex[] = "0123456789abcdef";
	size_t n = strlen(key), i, o = 0;
	char *out = xmalloc(n * 3 + 6);

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)key[i];

		if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		    c == '-' || c == '_' || c == ':' || (c == '.' && i > 0))
			out[o++] = (char)c;
		else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	if (o > 200) {
		/* Too long for a file name: a hash of the key stands in. */
		uint64_t h = 1469598103934665603ULL;

		for (i = 0; i < n; i++) {
			h ^= (unsigned char)key[i];
			h *= 1099511628211ULL;
		}
		snprintf(out, n * 3 + 6, "h%016llx", (unsigned long long)h);
		o = strlen(out);
	}
	memcpy(out + o, ".json", 6);
	return out;
}

static size_t
entry_bytes(const cJSON *e)
{
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");

	return cJSON_IsString(c) ? strlen(c->valuestring) : 0;
}

/* Drops the oldest entries while the history is over its bounds. */
static void
trim(struct session *s)
{
	while (s->count > 1 && (s->count > SESSION_MAX_ENTRIES || s->bytes > SESSION_MAX_BYTES)) {
		cJSON *old = cJSON_DetachItemFromArray(s->history, 0);

		s->bytes -= entry_bytes(old);
		s->count--;
		cJSON_Delete(old);
	}
}

/* Keeps only well-formed {"role","content"} string entries of a loaded file. */
static void
load(struct session *s)
{
	char *text = read_file_nofollow(s->path, SESSION_MAX_BYTES * 2 + 4096, NULL);
	cJSON *arr, *e;

	if (text == NULL) {
		if (errno == ELOOP || errno == EINVAL)
			log_warnx("%s: a link or not a regular file: ignored, never followed; "
			    "the next save replaces it", s->path);
		else if (errno != ENOENT)
			log_warn("%s: history not loaded", s->path);
		return;
	}
	arr = cJSON_Parse(text);
	free(text);
	if (!cJSON_IsArray(arr)) {
		log_warnx("%s: damaged history ignored", s->path);
		cJSON_Delete(arr);
		return;
	}
	cJSON_ArrayForEach(e, arr) {
		const cJSON *r = cJSON_GetObjectItemCaseSensitive(e, "role");
		const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");

		if (cJSON_IsString(r) && cJSON_IsString(c))
			session_append(s, r->valuestring, c->valuestring);
	}
	cJSON_Delete(arr);
	s->dirty = 0;
}

struct session *
session_open(const char *dir, const char *key)
{
	struct session *s = xcalloc(1, sizeof(*s));
	char *name = session_file_name(key);

	s->key = xstrdup(key);
	s->path = xasprintf("%s/%s", dir, name);
	free(name);
	s->history = cJSON_CreateArray();
	if (s->history == NULL)
		fatalx("out of memory");
	load(s);
	return s;
}

void
session_free(struct session *s)
{
	if (s == NULL)
		return;
	cJSON_Delete(s->history);
	free(s->key);
	free(s->path);
	free(s);
}

const char *
session_get_key(const struct session *s)
{
	return s->key;
}

const cJSON *
session_history(const struct session *s)
{
	return s->history;
}

size_t
session_length(const struct session *s)
{
	return s->count;
}

void
session_append(struct session *s, const char *role, const char *content)
{
	cJSON *e = cJSON_CreateObject();

	if (e == NULL || cJSON_AddStringToObject(e, "role", role) == NULL ||
	    cJSON_AddStringToObject(e, "content", content) == NULL ||
	    !cJSON_AddItemToArray(s->history, e))
		fatalx("out of memory");
	s->bytes += strlen(content);
	s->count++;
	s->dirty = 1;
	trim(s);
}

void
session_reset(struct session *s)
{
	cJSON_Delete(s->history);
	s->history = cJSON_CreateArray();
	if (s->history == NULL)
		fatalx("out of memory");
	s->bytes = 0;
	s->count = 0;
	s->dirty = 0;
	if (unlink(s->path) < 0 && errno != ENOENT)
		log_warn("%s", s->path);
}

int
session_dirty(const struct session *s)
{
	return s->dirty;
}

int
session_save(struct session *s)
{
	char *text;
	int r;

	if (!s->dirty)
		return 0;
	text = cJSON_PrintUnformatted(s->history);
	if (text == NULL)
		fatalx("out of memory");
	/*
	 * Atomic but not fsynced: histories are saved often from the event
	 * loop, and the hub makes them durable once, at teardown.
	 */
	r = write_file_replace(s->path, text, strlen(text), 0600);
	free(text);
	if (r == 0)
		s->dirty = 0;
	return r;
}
