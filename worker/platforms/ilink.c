/* ilink.c - the iLink bot API's common parts (see ilink.h). */
#include "platforms/ilink.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "config.h"
#include "json.h"
#include "log.h"
#include "net/http.h"
#include "util.h"

#define ILINK_CHANNEL_VER  "2.2.0"
#define ILINK_CLIENT_VER   "131584"     /* 2.2.0 as 0x00MMNNPP, in decimal */
#define ILINK_MAX_FILE     (4u << 20)

void
ilink_headers(struct ilink_hdrs *h)
{
	char dec[16];
	unsigned char b64[32];

	snprintf(dec, sizeof(dec), "%u", arc4random());
	EVP_EncodeBlock(b64, (const unsigned char *)dec, (int)strlen(dec));
	snprintf(h->uin, sizeof(h->uin), "X-WECHAT-UIN: %s", b64);
	h->v[0] = "AuthorizationType: ilink_bot_token";
	h->v[1] = h->uin;
	h->v[2] = "iLink-App-Id: bot";
	h->v[3] = "iLink-App-ClientVersion: " ILINK_CLIENT_VER;
	h->v[4] = NULL;
}

cJSON *
ilink_base_info(void)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL || !cJSON_AddStringToObject(o, "channel_version", ILINK_CHANNEL_VER))
		fatalx("%s: out of memory", __func__);
	return o;
}

char *
ilink_body(cJSON *o)
{
	char *s;

	if (o == NULL || !cJSON_AddItemToObject(o, "base_info", ilink_base_info()) ||
	    (s = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	return s;
}

enum ilink_err
ilink_answer(const char *what, const struct http_response *r, cJSON **out, char *why,
    size_t len)
{
	int64_t ret = 0, code = 0;
	const char *msg;
	char esc[160];
	cJSON *o;

	*out = NULL;
	if (r->status == 0) {
		snprintf(why, len, "%s: %s", what, r->error != NULL ? r->error : "failed");
		return ILINK_FAILED;
	}
	if (r->status != 200) {
		snprintf(why, len, "%s: HTTP %d", what, r->status);
		return r->status == 401 || r->status == 403 ? ILINK_EXPIRED : r->status >= 500 ||
		    r->status == 429 ? ILINK_FAILED : ILINK_REFUSED;
	}
	o = cJSON_ParseWithLength(r->body, r->body_len);
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		snprintf(why, len, "%s: the answer is not a JSON object", what);
		return ILINK_FAILED;
	}
	(void)json_i64(o, "ret", INT32_MIN, INT32_MAX, &ret);
	(void)json_i64(o, "errcode", INT32_MIN, INT32_MAX, &code);
	if (ret == 0 && code == 0) {
		*out = o;
		return ILINK_OK;
	}
	msg = json_str(o, "errmsg");
	log_escape(esc, sizeof(esc), msg != NULL ? msg : "", msg != NULL ? strlen(msg) : 0);
	snprintf(why, len, "%s: %sret %" PRId64 ", errcode %" PRId64 "%s%s%s", what,
	    ret == -14 || code == -14 ? "session expired (log in again: hermes-worker login "
	    "weixin): " : ret == -2 || code == -2 ? "rate limited or a stale context_token: " : "",
	    ret, code, esc[0] ? " (" : "", esc, esc[0] ? ")" : "");
	cJSON_Delete(o);
	if (ret == -14 || code == -14)
		return ILINK_EXPIRED;
	return ret == -2 || code == -2 ? ILINK_LIMITED : ILINK_REFUSED;
}

char *
ilink_cursor_format(const char *buf)
{
	const unsigned char *p;
	char *out;
	size_t i = 4;

	for (p = (const unsigned char *)buf; *p >= 0x20 && *p < 0x7f; p++)
		;
	if (*p == '\0')
		return xasprintf("w1 %s", buf);
	out = xmalloc(5 + 2 * strlen(buf));
	memcpy(out, "w1x ", 4);
	for (p = (const unsigned char *)buf; *p != '\0'; p++, i += 2)
		snprintf(out + i, 3, "%02x", *p);
	return out;
}

char *
ilink_cursor_parse(const char *c)
{
	size_t n, i;
	unsigned v;
	char *out;

	if (c != NULL && strncmp(c, "w1 ", 3) == 0)
		return xstrdup(c + 3);
	if (c == NULL || strncmp(c, "w1x ", 4) != 0 || (n = strlen(c + 4)) % 2 != 0 ||
	    strspn(c + 4, "0123456789abcdef") != n)
		return NULL;
	out = xmalloc(n / 2 + 1);
	for (i = 0; i < n / 2; i++) {
		if (sscanf(c + 4 + 2 * i, "%2x", &v) != 1 || v == 0) {
			free(out);
			return NULL;
		}
		out[i] = (char)v;
	}
	out[n / 2] = '\0';
	return out;
}

/* The first text item, else a voice transcript, else what kind of media it was. */
static char *
ilink_text(const cJSON *items)
{
	static const char *const kinds[] = { NULL, NULL, "[image]", "[voice]", "[file]",
		"[video]" };
	const cJSON *it;
	const char *t, *kind = NULL;
	int64_t type;

	cJSON_ArrayForEach(it, items)
		if (json_i64(it, "type", 0, 100, &type) == 0 && type == 1 &&
		    (t = json_str(json_obj(it, "text_item"), "text")) != NULL && t[0] != '\0')
			return xstrdup(t);
	cJSON_ArrayForEach(it, items) {
		if (json_i64(it, "type", 0, 100, &type) < 0)
			continue;
		if (type == 3 && (t = json_str(json_obj(it, "voice_item"), "text")) != NULL &&
		    t[0] != '\0')
			return xasprintf("[voice, transcribed by Weixin] %s", t);
		if (type < (int64_t)ARRAY_LEN(kinds) && kind == NULL)
			kind = kinds[type];
	}
	return kind != NULL ? xstrdup(kind) : NULL;
}

int
ilink_msg_parse(const cJSON *o, const char *self, enum ilink_groups groups,
    struct ilink_msg *m, const char **why)
{
	int64_t type = 1, state = 0, n = 0;
	const char *gid = json_str(o, "group_id"), *cid = json_str(o, "client_id");

	memset(m, 0, sizeof(*m));
	m->from = json_str(o, "from_user_id");
	if (m->from == NULL || m->from[0] == '\0')
		return -1;
	if (json_i64(o, "message_id", 1, INT64_MAX, &n) == 0)
		snprintf(m->id, sizeof(m->id), "%" PRId64, n);
	else if (json_i64(o, "seq", 0, INT64_MAX, &n) == 0)
		snprintf(m->id, sizeof(m->id), "seq:%" PRId64, n);
	else if (cid != NULL && cid[0] != '\0' && strlen(cid) < sizeof(m->id) - 2)
		snprintf(m->id, sizeof(m->id), "c:%s", cid);
	else
		return -1;
	(void)json_i64(o, "message_type", 0, 100, &type);
	(void)json_i64(o, "message_state", 0, 100, &state);
	m->group = gid != NULL && gid[0] != '\0';
	*why = strcmp(m->from, self) == 0 ? "our own message" : type == 2 ? "a bot's message" :
	    state == 1 ? "a message still being generated" : m->group && groups ==
	    ILINK_GROUPS_DISABLED ? "a group message (group_policy is disabled)" : NULL;
	if (*why == NULL && (m->text = ilink_text(json_arr(o, "item_list"))) == NULL)
		*why = "a message without text";
	if (*why != NULL)
		return 0;
	m->chat = m->group ? gid : m->from;
	m->addressed = !m->group || groups == ILINK_GROUPS_ALL || m->text[0] == '/';
	m->context_token = json_str(o, "context_token");
	m->time = json_i64(o, "create_time_ms", 1, INT64_MAX, &n) == 0 ? (time_t)(n / 1000) :
	    time(NULL);
	return 1;
}

void
ilink_client_id(const char *key, char out[48])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned n = 0, i;

	if (EVP_Digest(key, strlen(key), md, &n, EVP_sha256(), NULL) != 1 || n < 16)
		fatalx("%s: sha256 failed", __func__);
	memcpy(out, "hermes-", 7);
	for (i = 0; i < 16; i++)
		snprintf(out + 7 + 2 * i, 3, "%02x", md[i]);
}

char *
ilink_send_body(const char *to, const char *key, const char *text, const char *token)
{
	cJSON *o = cJSON_CreateObject(), *msg = cJSON_AddObjectToObject(o, "msg"), *items, *it;
	char cid[48];

	ilink_client_id(key, cid);
	if (msg == NULL || !cJSON_AddStringToObject(msg, "from_user_id", "") ||
	    !cJSON_AddStringToObject(msg, "to_user_id", to) ||
	    !cJSON_AddStringToObject(msg, "client_id", cid) ||
	    !cJSON_AddNumberToObject(msg, "message_type", 2) ||
	    !cJSON_AddNumberToObject(msg, "message_state", 2) ||
	    (items = cJSON_AddArrayToObject(msg, "item_list")) == NULL ||
	    (it = cJSON_CreateObject()) == NULL || !cJSON_AddItemToArray(items, it) ||
	    !cJSON_AddNumberToObject(it, "type", 1) ||
	    !cJSON_AddStringToObject(cJSON_AddObjectToObject(it, "text_item"), "text", text) ||
	    (token != NULL && !cJSON_AddStringToObject(msg, "context_token", token)))
		fatalx("%s: out of memory", __func__);
	return ilink_body(o);
}

/* ---- the account and tokens files ------------------------------------------ */

char *
ilink_account_path(const char *home, const char *account, const char *suffix)
{
	const unsigned char *p;

	if (account == NULL || account[0] == '\0' || account[0] == '.' || strlen(account) > 128)
		return NULL;
	for (p = (const unsigned char *)account; *p != '\0'; p++)
		if (*p <= 0x20 || *p >= 0x7f || *p == '/' || *p == '\\')
			return NULL;
	return xasprintf("%s/weixin/accounts/%s%s", home, account, suffix);
}

cJSON *
ilink_read_json(const char *path)
{
	size_t len = 0;
	char *text = read_file_nofollow(path, ILINK_MAX_FILE, &len);
	cJSON *o;

	if (text == NULL)
		return NULL;
	o = cJSON_Parse(len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0 ? text + 3 : text);
	explicit_bzero(text, len);
	free(text);
	if (!cJSON_IsObject(o)) {
		cJSON_Delete(o);
		errno = EINVAL;
		return NULL;
	}
	return o;
}

int
ilink_account_load(const char *path, struct ilink_account *a, char *err, size_t errlen)
{
	cJSON *o = ilink_read_json(path), *t;
	const char *b, *u;

	memset(a, 0, sizeof(*a));
	t = cJSON_GetObjectItemCaseSensitive(o, "token");
	if (o == NULL || !cJSON_IsString(t) || t->valuestring[0] == '\0') {
		snprintf(err, errlen, "%s: %s", path, o == NULL ? (errno == EINVAL ?
		    "not a JSON object" : strerror(errno)) : "holds no token");
		cJSON_Delete(o);
		return -1;
	}
	a->token = xstrdup(t->valuestring);
	explicit_bzero(t->valuestring, strlen(t->valuestring));
	if ((b = json_str(o, "base_url")) != NULL && b[0] != '\0')
		a->base_url = xstrdup(b);
	if ((u = json_str(o, "user_id")) != NULL)
		a->user_id = xstrdup(u);
	cJSON_Delete(o);
	return 0;
}

int
ilink_account_save(const char *path, const char *token, const char *base_url,
    const char *user_id, char *err, size_t errlen)
{
	cJSON *o = cJSON_CreateObject();
	char when[32], *dir = xstrdup(path), *s;
	time_t now = time(NULL);
	struct tm tm;
	int r;

	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
	if (o == NULL || !cJSON_AddStringToObject(o, "token", token) ||
	    !cJSON_AddStringToObject(o, "base_url", base_url != NULL ? base_url : "") ||
	    !cJSON_AddStringToObject(o, "user_id", user_id != NULL ? user_id : "") ||
	    !cJSON_AddStringToObject(o, "saved_at", when) || (s = cJSON_Print(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	*strrchr(dir, '/') = '\0';
	r = mkdir_p(dir, 0700) < 0 ? -1 : write_file_atomic(path, s, strlen(s), 0600);
	if (r < 0)
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
	explicit_bzero(s, strlen(s));
	free(s);
	free(dir);
	return r;
}

void
ilink_account_clear(struct ilink_account *a)
{
	if (a->token != NULL)
		explicit_bzero(a->token, strlen(a->token));
	free(a->token);
	free(a->base_url);
	free(a->user_id);
	memset(a, 0, sizeof(*a));
}

cJSON *
ilink_tokens_load(const char *path)
{
	cJSON *o = ilink_read_json(path), *it, *next;

	if (o == NULL && errno != ENOENT)
		log_warnx("%s: unusable (%s); no context token restored from it", path,
		    errno == EINVAL ? "not a JSON object" : strerror(errno));
	if (o == NULL && (o = cJSON_CreateObject()) == NULL)
		fatalx("%s: out of memory", __func__);
	for (it = o->child; it != NULL; it = next) {
		next = it->next;
		if (!cJSON_IsString(it) || it->valuestring[0] == '\0')
			cJSON_Delete(cJSON_DetachItemViaPointer(o, it));
	}
	return o;
}

int
ilink_tokens_set(cJSON *t, const char *peer, const char *token)
{
	cJSON *old = cJSON_GetObjectItemCaseSensitive(t, peer), *v;

	if (token == NULL || token[0] == '\0' || (cJSON_IsString(old) &&
	    strcmp(old->valuestring, token) == 0))
		return 0;
	if (old != NULL)
		cJSON_Delete(cJSON_DetachItemViaPointer(t, old));
	else if (cJSON_GetArraySize(t) >= ILINK_MAX_PEERS)
		cJSON_DeleteItemFromArray(t, 0);        /* the least recently refreshed */
	if ((v = cJSON_CreateString(token)) == NULL || !cJSON_AddItemToObject(t, peer, v))
		fatalx("%s: out of memory", __func__);
	return 1;
}

int
ilink_tokens_save(const char *path, const cJSON *tokens)
{
	char *s = cJSON_PrintUnformatted(tokens);
	int r;

	if (s == NULL)
		fatalx("%s: out of memory", __func__);
	r = write_file_atomic(path, s, strlen(s), 0600);
	free(s);
	return r;
}

cJSON *
ilink_python_state(const char *account, char **cursor)
{
	char *home = config_hermes_home();
	char *tp = ilink_account_path(home, account, ".context-tokens.json");
	char *sp = ilink_account_path(home, account, ".sync.json");
	cJSON *tokens = ilink_tokens_load(tp), *sync = ilink_read_json(sp);
	const char *b = json_str(sync, "get_updates_buf");

	*cursor = b != NULL && b[0] != '\0' ? xstrdup(b) : NULL;
	cJSON_Delete(sync);
	free(tp);
	free(sp);
	free(home);
	return tokens;
}
