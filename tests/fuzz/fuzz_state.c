/*
 * fuzz_state.c - the state files a worker reads back at start: the restart
 * marker (worker/restart.c), the handled message ids (worker/dedup.c) and
 * the session histories (worker/session.c).
 *
 * Input: one byte choosing the file, one byte of parameters, then data.
 * restart  data is restart.json.  Invariants: a marker read is complete
 *          (platform and chat) and, written back and read again, is equal;
 *          a damaged marker is removed.  With the parameter's low bit set,
 *          a marker is built from the data instead: written then read back
 *          it is equal.
 * dedup    data is the ids file, then "\n%%\n" and ids to add.  Invariant:
 *          the set equals a model (recordable ids only, lines holding a NUL
 *          left out, no duplicates, the oldest forgotten beyond the
 *          capacity) after loading and after
 *          adding; saved and loaded again, it is the same set.
 * session  data is an inbound message's chat, user and thread (each up to a
 *          NUL), the content of an entry to append, and the history file.
 *          Invariants: the session key has its documented form; its file
 *          name is safe (no '/', no leading '.',
 *          bounded) and decodes back to the key; the history loaded equals
 *          a model (well-formed entries only, bounded in count and bytes);
 *          with one entry appended, saved and opened again it is equal.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "dedup.h"
#include "fz_util.h"
#include "restart.h"
#include "session.h"
#include "util.h"

static char *fz_state;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_setup();
	fz_state = fz_subdir("state");
	return 0;
}

static int
file_exists(const char *dir, const char *name)
{
	char *p = xasprintf("%s/%s", dir, name);
	int r = access(p, F_OK) == 0;

	free(p);
	return r;
}

/* ---- restart marker ------------------------------------------------ */

static int
str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void
marker_same(const struct restart_marker *a, const struct restart_marker *b)
{
	FZ_CHECK(str_eq(a->platform, b->platform) && str_eq(a->chat_id, b->chat_id) &&
	    str_eq(a->thread_id, b->thread_id) && str_eq(a->message_id, b->message_id),
	    "marker strings changed");
	FZ_CHECK(a->wall_ms == b->wall_ms && a->mono_us == b->mono_us &&
	    a->generation == b->generation, "marker numbers changed");
	FZ_CHECK(strcmp(a->boot_id, b->boot_id) == 0, "boot id changed");
}

/* Writes m, reads it back: the same marker. */
static void
marker_round_trip(const struct restart_marker *m)
{
	struct restart_marker *back;

	FZ_CHECK(restart_marker_write(fz_state, m) == 0, "write: %s", strerror(errno));
	back = restart_marker_read(fz_state);
	FZ_CHECK(back != NULL, "a marker just written was not read back");
	marker_same(m, back);
	restart_marker_free(back);
}

static void
check_marker_file(const uint8_t *data, size_t len)
{
	struct restart_marker *m;

	fz_write(fz_state, "restart.json", data, len, 0);
	m = restart_marker_read(fz_state);
	if (m == NULL) {
		FZ_CHECK(len > 16 * 1024 || !file_exists(fz_state, "restart.json"),
		    "a damaged marker was left in place");
		return;
	}
	FZ_CHECK(m->platform != NULL && m->chat_id != NULL, "an incomplete marker was read");
	FZ_CHECK(memchr(m->boot_id, '\0', sizeof(m->boot_id)) != NULL, "boot id unterminated");
	(void)restart_marker_elapsed_ms(m);
	marker_round_trip(m);
	FZ_CHECK(restart_marker_delete(fz_state) == 0 && !file_exists(fz_state, "restart.json"),
	    "delete");
	restart_marker_free(m);
}

/* A marker made of the data's strings and numbers (below 2^53, as a double holds). */
static void
check_marker_built(struct fz_in *in)
{
	struct restart_marker m;
	char *boot;

	memset(&m, 0, sizeof(m));
	m.wall_ms = fz_u32(in) * (uint64_t)fz_u16(in);
	m.mono_us = fz_u32(in) * (uint64_t)fz_u16(in);
	m.generation = fz_u32(in);
	m.platform = fz_str(in, fz_u8(in) % 32);
	m.chat_id = fz_str(in, fz_u8(in) % 64);
	m.thread_id = fz_u8(in) & 1 ? fz_str(in, fz_u8(in) % 32) : NULL;
	m.message_id = fz_u8(in) & 1 ? fz_str(in, fz_u8(in) % 32) : NULL;
	boot = fz_str(in, sizeof(m.boot_id) - 1);
	memcpy(m.boot_id, boot, strlen(boot) + 1);
	free(boot);
	marker_round_trip(&m);
	free(m.platform);
	free(m.chat_id);
	free(m.thread_id);
	free(m.message_id);
}

/* ---- handled ids ------------------------------------------------------ */

static int
recordable(const char *id)
{
	size_t n = strlen(id), i;

	if (n == 0 || n > DEDUP_MAX_ID)
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)id[i] < 0x20)
			return 0;
	return 1;
}

/* The model of dedup_add(): recordable ids only, the oldest forgotten beyond cap. */
static int
model_add(struct fz_set *m, const char *id)
{
	return recordable(id) && fz_set_add(m, id);
}

/* The lines of text as NUL-separated strings (text is modified); empty lines skipped. */
static size_t
lines(char *text, char **out, size_t max)
{
	char *save = NULL, *l;
	size_t n = 0;

	for (l = strtok_r(text, "\n", &save); l != NULL && n < max; l = strtok_r(NULL, "\n", &save))
		out[n++] = l;
	return n;
}

/*
 * The lines of a saved ids file (text is modified): split by length, so a
 * line holding a NUL is damaged and left out, not cut short.
 */
static size_t
file_lines(char *text, size_t len, char **out, size_t max)
{
	size_t off = 0, n = 0;

	while (off < len && n < max) {
		char *nl = memchr(text + off, '\n', len - off);
		size_t k = nl != NULL ? (size_t)(nl - (text + off)) : len - off;

		text[off + k] = '\0';
		if (k > 0 && strlen(text + off) == k)
			out[n++] = text + off;
		off += k + 1;
	}
	return n;
}

static void
dedup_same(const struct dedup *d, const struct fz_set *m, char **probe, size_t nprobe,
    const char *when)
{
	size_t i;

	FZ_CHECK(dedup_count(d) == m->n, "%s: %zu ids, model %zu", when, dedup_count(d), m->n);
	for (i = 0; i < m->n; i++)
		FZ_CHECK(dedup_has(d, m->v[i]), "%s: id %zu \"%.40s\" missing", when, i, m->v[i]);
	for (i = 0; i < nprobe; i++)
		FZ_CHECK(dedup_has(d, probe[i]) == fz_set_has(m, probe[i]),
		    "%s: \"%.40s\" is %s", when, probe[i], fz_set_has(m, probe[i]) ? "lost" :
		    "invented");
}

static void
check_dedup(struct fz_in *in, size_t cap)
{
	const uint8_t *part[2];
	size_t len[2], nfile, nadd, i;
	char *file, *add, *fl[4096], *al[4096];
	char *path = xasprintf("%s/ids", fz_state);
	struct fz_set m = { .cap = cap };
	struct dedup *d, *again;
	int added = 0;

	fz_split(in, part, len, 2);
	fz_write(fz_state, "ids", part[0], len[0], 0);
	file = xmalloc(len[0] + 1);
	memcpy(file, part[0], len[0]);
	file[len[0]] = '\0';
	add = xstrndup((const char *)part[1], len[1]);
	nfile = len[0] <= cap * (DEDUP_MAX_ID + 1) + 1 ? file_lines(file, len[0], fl,
	    ARRAY_LEN(fl)) : 0;
	nadd = lines(add, al, ARRAY_LEN(al));
	for (i = 0; i < nfile; i++)
		model_add(&m, fl[i]);
	d = dedup_new(path, cap);
	dedup_same(d, &m, fl, nfile, "loaded");
	FZ_CHECK(!dedup_dirty(d), "dirty right after loading");
	for (i = 0; i < nadd; i++) {
		added |= model_add(&m, al[i]);
		dedup_add(d, al[i]);
	}
	dedup_same(d, &m, al, nadd, "added");
	FZ_CHECK(dedup_dirty(d) == added, "dirty %d after adding (model %d)", dedup_dirty(d), added);
	FZ_CHECK(dedup_save(d) == 0 && !dedup_dirty(d), "save");
	again = dedup_new(path, cap);
	dedup_same(again, &m, al, nadd, "saved and loaded");
	dedup_free(again);
	dedup_free(d);
	fz_set_free(&m);
	free(file);
	free(add);
	free(path);
}

/* ---- sessions ---------------------------------------------------------- */

/* Undoes session_file_name()'s escaping; NULL for a hashed name. */
static char *
unescape_name(const char *name)
{
	size_t n = strlen(name) - 5, i, o = 0;
	char *out = xmalloc(n + 1);

	for (i = 0; i < n; i++) {
		if (name[i] == '%' && i + 2 < n && isxdigit((unsigned char)name[i + 1]) &&
		    isxdigit((unsigned char)name[i + 2])) {
			char hex[3] = { name[i + 1], name[i + 2], '\0' };

			out[o++] = (char)strtol(hex, NULL, 16);
			i += 2;
		} else
			out[o++] = name[i];
	}
	out[o] = '\0';
	return out;
}

/* The length of key escaped as session.c does (bytes outside [A-Za-z0-9:_-.] become %XX). */
static size_t
escaped_len(const char *key)
{
	size_t i, n = 0;

	for (i = 0; key[i] != '\0'; i++)
		n += isalnum((unsigned char)key[i]) && (unsigned char)key[i] < 0x80 ? 1 :
		    strchr("-_:", key[i]) != NULL || (key[i] == '.' && i > 0) ? 1 : 3;
	return n;
}

static void
check_file_name(const char *key, const char *name)
{
	size_t n = strlen(name), i;
	char *back;

	FZ_CHECK(n > 5 && n <= 205 && strcmp(name + n - 5, ".json") == 0, "name \"%s\"", name);
	FZ_CHECK(strchr(name, '/') == NULL && name[0] != '.', "unsafe name \"%s\"", name);
	if (escaped_len(key) > 200) {
		FZ_CHECK(n == 22 && name[0] == 'h', "a long key is not hashed: \"%s\"", name);
		for (i = 1; i < 17; i++)
			FZ_CHECK(isxdigit((unsigned char)name[i]), "hashed name \"%s\"", name);
		return;
	}
	back = unescape_name(name);
	FZ_CHECK(strcmp(back, key) == 0, "name \"%s\" does not decode to its key", name);
	free(back);
}

/* What session.c keeps of a history file: its well-formed entries, bounded. */
static cJSON *
model_history(const char *text)
{
	cJSON *doc = cJSON_Parse(text), *model = cJSON_CreateArray(), *e;
	cJSON *arr = cJSON_IsArray(doc) ? doc : NULL;
	size_t count = 0, bytes = 0;

	cJSON_ArrayForEach(e, arr) {
		const cJSON *r = cJSON_GetObjectItemCaseSensitive(e, "role");
		const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
		cJSON *o;

		if (!cJSON_IsString(r) || !cJSON_IsString(c))
			continue;
		o = cJSON_CreateObject();
		cJSON_AddStringToObject(o, "role", r->valuestring);
		cJSON_AddStringToObject(o, "content", c->valuestring);
		cJSON_AddItemToArray(model, o);
		count++;
		bytes += strlen(c->valuestring);
		while (count > 1 && (count > SESSION_MAX_ENTRIES || bytes > SESSION_MAX_BYTES)) {
			cJSON *old = cJSON_DetachItemFromArray(model, 0);

			bytes -= strlen(cJSON_GetObjectItemCaseSensitive(old, "content")->valuestring);
			count--;
			cJSON_Delete(old);
		}
	}
	cJSON_Delete(doc);
	return model;
}

static void
history_same(const cJSON *want, const struct session *s, const char *when)
{
	FZ_CHECK(cJSON_Compare(want, session_history(s), 1), "%s: history differs", when);
	FZ_CHECK((size_t)cJSON_GetArraySize(want) == session_length(s), "%s: length %zu", when,
	    session_length(s));
}

/* The session key of an inbound message made of the data; checks its form. */
static char *
key_from(struct fz_in *in, unsigned param)
{
	static const char *const plats[] = { "console", "telegram", "x" };
	const char *plat = plats[(param >> 2) % ARRAY_LEN(plats)];
	char *chat = fz_str(in, 80), *user = fz_str(in, 16), *thread = fz_str(in, 16), *key, *want;
	struct inbound m = {
		.chat_id = chat, .user_id = user, .chat_type = (enum chat_type)(param % 3),
		.thread_id = (param & 0x80) ? NULL : thread,
	};

	key = session_key(plat, &m);
	want = m.chat_type == CHAT_GROUP ? xasprintf("%s:%s:u:%s", plat, chat, user) :
	    m.chat_type == CHAT_THREAD ? xasprintf("%s:%s:t:%s", plat, chat,
	    m.thread_id != NULL ? thread : "") : xasprintf("%s:%s", plat, chat);
	FZ_CHECK(strcmp(key, want) == 0, "key \"%s\", expected \"%s\"", key, want);
	free(want);
	free(chat);
	free(user);
	free(thread);
	return key;
}

static void
check_session(struct fz_in *in, unsigned param)
{
	char *key = key_from(in, param), *name = session_file_name(key), *text, *content;
	struct session *s, *again;
	cJSON *want;

	check_file_name(key, name);
	content = fz_str(in, fz_u8(in));
	text = fz_rest_str(in, NULL);
	fz_clear_dir(fz_state);
	fz_write(fz_state, name, text, strlen(text), 0);
	s = session_open(fz_state, key);
	FZ_CHECK(strcmp(session_get_key(s), key) == 0, "key");
	want = model_history(text);
	history_same(want, s, "loaded");
	FZ_CHECK(!session_dirty(s), "dirty right after loading");
	session_append(s, "user", content);
	FZ_CHECK(session_dirty(s), "not dirty after an append");
	FZ_CHECK(session_length(s) >= 1 && session_length(s) <= SESSION_MAX_ENTRIES, "bounds");
	FZ_CHECK(session_save(s) == 0 && !session_dirty(s), "save: %s", strerror(errno));
	again = session_open(fz_state, key);
	history_same(session_history(s), again, "saved and opened again");
	session_reset(again);
	FZ_CHECK(session_length(again) == 0 && !file_exists(fz_state, name), "reset");
	session_free(again);
	session_free(s);
	cJSON_Delete(want);
	free(text);
	free(content);
	free(name);
	free(key);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t mode = fz_u8(&in), param = fz_u8(&in);

	switch (mode % 3) {
	case 0:
		if (param & 1)
			check_marker_built(&in);
		else
			check_marker_file(in.p, in.n);
		break;
	case 1:
		fz_clear_dir(fz_state);
		check_dedup(&in, 1 + param % 64);
		break;
	default:
		check_session(&in, param);
		break;
	}
	return 0;
}
