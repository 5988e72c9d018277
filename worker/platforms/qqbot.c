/* qqbot.c - the QQ Bot platform on the kit (see qqbot.h). */
#include "platforms/qqbot.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "json.h"
#include "kit.h"
#include "log.h"
#include "net/http.h"
#include "net/ws.h"
#include "util.h"

#define QQ_DEFAULT_API  "https://api.sgroup.qq.com"
#define QQ_SANDBOX_API  "https://sandbox.api.sgroup.qq.com"
#define QQ_TOKEN_URL    "https://bots.qq.com/app/getAppAccessToken"
#define QQ_MAX_TEXT     4000            /* hermes' chunk size; bytes <= characters */
/* GROUP_AND_C2C_EVENT | PUBLIC_GUILD_MESSAGES | DIRECT_MESSAGE */
#define QQ_INTENTS      ((1 << 25) | (1 << 30) | (1 << 12))
#define QQ_CLOSE_KEEP   4000            /* our close at a stop: the session stays resumable */
#define QQ_HANDLES_CAP  4096            /* chats whose reply handle is kept */
#define QQ_HANDLES_MAX  (4u << 20)      /* bytes of the replies file read back */
#define QQ_DUP_CODE     40054005        /* "message deduplicated": this msg_seq was sent */

/* The protocol's timings. */
static const struct {
	double beat_share;              /* heartbeats every this share of heartbeat_interval */
	int64_t renew_before;           /* s before expiry the token is renewed (QQ issues a
					 * new one only in the old one's last 60 s) */
	double too_fast_pause;          /* s of pause after close 4008 */
	int64_t handle_keep;            /* s a chat's reply handle is remembered */
} qq_policy = { 0.8, 50, 10, 86400 };

/* Per chat kind: the id prefix, the send path, the event, the reply window. */
static const struct {
	const char *prefix, *path, *event;
	int v2;                         /* msg_type and msg_seq in the body */
	int64_t window;
	enum chat_type type;
} qq_kinds[] = {
	[QQ_C2C] = { "c2c:", "/v2/users/", "C2C_MESSAGE_CREATE", 1, 3600, CHAT_DM },
	[QQ_GROUP] = { "group:", "/v2/groups/", "GROUP_AT_MESSAGE_CREATE", 1, 300, CHAT_GROUP },
	[QQ_GUILD] = { "guild:", "/channels/", "AT_MESSAGE_CREATE", 0, 300, CHAT_GROUP },
	[QQ_DM] = { "dm:", "/dms/", "DIRECT_MESSAGE_CREATE", 0, 300, CHAT_DM },
};

enum qq_phase {
	QQ_IDLE = 0,                    /* no connection */
	QQ_TOKEN,                       /* waiting for an access token */
	QQ_DISCOVER,                    /* GET /gateway */
	QQ_HELLO,                       /* connected, waiting for Hello */
	QQ_HANDSHAKE,                   /* Identify or Resume sent */
	QQ_READY,                       /* dispatches flowing */
	QQ_CLOSING,                     /* ws_close sent */
};

struct qq_chat {
	char chat[300];
	struct qq_handle h;
};

/* Where the replies file stands against memory. */
enum qq_handles_state { QQ_HANDLES_SYNCED = 0, QQ_HANDLES_DIRTY, QQ_HANDLES_WRITTEN };

struct qq {
	struct kit *kit;                /* first: the kit's vtable entries find it */
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct http_client *http;
	char *name, *api_url, *token_url, *app_id, *secret;
	char *auth;                     /* "QQBot <access token>", or NULL */
	uint64_t token_until;           /* mono_usec when it expires */
	struct http_call *token_call, *discover;
	struct event *token_ev;         /* renews the token */

	struct ws *ws;
	enum qq_phase phase;
	struct qq_session sess;         /* as committed */
	int64_t seq_rx;                 /* the last sequence number received */
	int journal_failed, sess_loaded, resumed;
	uint64_t hb_usec;
	int hb_acked;
	struct event *hb_ev;

	struct qq_chat *chats;          /* reply handles, oldest first */
	size_t nchats;
	char *handles_path;
	enum qq_handles_state handles_state;
};

/* ---- pure helpers ------------------------------------------------------- */

int
qq_session_parse(const char *cursor, struct qq_session *s)
{
	char id[128], self[64];
	long long seq;

	memset(s, 0, sizeof(*s));
	if (cursor == NULL || sscanf(cursor, "q1 %127s %lld %63s", id, &seq, self) != 3 || seq < 0)
		return -1;
	snprintf(s->id, sizeof(s->id), "%s", strcmp(id, "-") == 0 ? "" : id);
	s->seq = seq;
	snprintf(s->self_id, sizeof(s->self_id), "%s", strcmp(self, "-") == 0 ? "" : self);
	return 0;
}

void
qq_session_format(const struct qq_session *s, char *buf, size_t len)
{
	snprintf(buf, len, "q1 %s %" PRId64 " %s", s->id[0] ? s->id : "-", s->seq,
	    s->self_id[0] ? s->self_id : "-");
}

int
qq_chat_parse(const char *chat_id, const char **target)
{
	size_t i, n;

	for (i = 0; i < ARRAY_LEN(qq_kinds); i++) {
		n = strlen(qq_kinds[i].prefix);
		if (strncmp(chat_id, qq_kinds[i].prefix, n) == 0 && chat_id[n] != '\0' &&
		    strcspn(chat_id + n, "/?#% \t\r\n") == strlen(chat_id + n)) {
			*target = chat_id + n;
			return (int)i;
		}
	}
	return -1;
}

const char *
qq_api_default(int sandbox)
{
	return sandbox ? QQ_SANDBOX_API : QQ_DEFAULT_API;
}

int64_t
qq_reply_window(enum qq_kind kind)
{
	return qq_kinds[kind].window;
}

int
qq_event_kind(const char *t)
{
	size_t i;

	for (i = 0; t != NULL && i < ARRAY_LEN(qq_kinds); i++)
		if (strcmp(t, qq_kinds[i].event) == 0)
			return (int)i;
	return -1;
}

int
qq_time_parse(const char *s, time_t *out)
{
	struct tm tm;
	int n = 0, oh = 0, om = 0, sign;
	const char *p;
	time_t t;

	memset(&tm, 0, sizeof(tm));
	if (s == NULL || sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon,
	    &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6)
		return -1;
	p = s + n;
	if (*p == '.')
		for (p++; isdigit((unsigned char)*p); p++)
			;
	sign = *p == '-' ? -1 : 1;
	if (*p == 'Z' && p[1] == '\0')
		oh = om = 0;
	else if ((*p != '+' && *p != '-') || sscanf(p + 1, "%2d:%2d%n", &oh, &om, &n) != 2 ||
	    p[1 + n] != '\0' || oh > 14 || om > 59)
		return -1;
	if (tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 ||
	    tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || tm.tm_year < 1970)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	if ((t = timegm(&tm)) == (time_t)-1)
		return -1;
	*out = t - sign * (oh * 3600 + om * 60);
	return 0;
}

/* Removes every "<@self>" and "<@!self>" from text, then blanks around it. */
static void
qq_strip_mention(char *text, const char *self)
{
	char pat[2][80], *p;
	size_t i, l, n;

	snprintf(pat[0], sizeof(pat[0]), "<@%s>", self);
	snprintf(pat[1], sizeof(pat[1]), "<@!%s>", self);
	for (i = 0; i < 2 && self[0] != '\0'; i++) {
		l = strlen(pat[i]);
		while ((p = strstr(text, pat[i])) != NULL)
			memmove(p, p + l, strlen(p + l) + 1);
	}
	p = text + strspn(text, " \t\r\n");
	memmove(text, p, strlen(p) + 1);
	for (n = strlen(text); n > 0 && strchr(" \t\r\n", text[n - 1]) != NULL; n--)
		text[n - 1] = '\0';
}

int
qq_message_parse(const char *t, const cJSON *d, const char *self_id, time_t now,
    struct qq_msg *m, const char **why)
{
	const cJSON *author = json_obj(d, "author");
	const char *content = json_str(d, "content"), *ts = json_str(d, "timestamp");
	const char *chat = NULL;
	int kind = qq_event_kind(t);

	memset(m, 0, sizeof(*m));
	if (kind < 0)
		return -1;
	m->kind = (enum qq_kind)kind;
	m->id = json_str(d, "id");
	m->user = json_str(author, kind == QQ_C2C ? "user_openid" : kind == QQ_GROUP ?
	    "member_openid" : "id");
	chat = kind == QQ_C2C ? m->user : json_str(d, kind == QQ_GROUP ? "group_openid" :
	    kind == QQ_GUILD ? "channel_id" : "guild_id");
	if (m->id == NULL || m->user == NULL || chat == NULL || chat[0] == '\0' ||
	    strlen(chat) >= sizeof(m->chat) - 8 || strpbrk(chat, "/?#% \t\r\n") != NULL)
		return -1;
	if (json_bool(author, "bot") == 1 || (self_id[0] != '\0' && strcmp(m->user, self_id) == 0)) {
		*why = "a bot's message";
		return 0;
	}
	m->user_name = json_str(author, "username");
	snprintf(m->chat, sizeof(m->chat), "%s%s", qq_kinds[kind].prefix, chat);
	m->text = xstrdup(content != NULL ? content : "");
	qq_strip_mention(m->text, self_id);
	if (m->text[0] == '\0') {
		free(m->text);
		m->text = NULL;
		*why = "a message without text (attachments are not handled)";
		return 0;
	}
	if (qq_time_parse(ts, &m->time) < 0 || m->time > now)
		m->time = now;
	return 1;
}

/* The close codes (bot-docs error-trace/websocket.md; 4004 as hermes treats it). */
static const struct {
	int lo, hi;
	enum qq_close act;
	const char *why;
} qq_closes[] = {
	{ 4001, 4001, QQ_CLOSE_IDENTIFY, "invalid opcode" },
	{ 4002, 4002, QQ_CLOSE_IDENTIFY, "invalid payload" },
	{ 4004, 4004, QQ_CLOSE_REFRESH, "invalid token" },
	{ 4006, 4006, QQ_CLOSE_IDENTIFY, "invalid session" },
	{ 4007, 4007, QQ_CLOSE_IDENTIFY, "invalid seq" },
	{ 4008, 4008, QQ_CLOSE_BACKOFF, "payloads sent too fast" },
	{ 4009, 4009, QQ_CLOSE_RESUME, "connection expired" },
	{ 4010, 4010, QQ_CLOSE_STOP, "invalid shard" },
	{ 4011, 4011, QQ_CLOSE_STOP, "too many guilds for one shard" },
	{ 4012, 4012, QQ_CLOSE_STOP, "invalid version" },
	{ 4013, 4013, QQ_CLOSE_STOP, "invalid intent" },
	{ 4014, 4014, QQ_CLOSE_UNAUTHORIZED, "intent not permitted (apply for it in the "
	    "QQ bot console)" },
	{ 4900, 4913, QQ_CLOSE_IDENTIFY, "internal error" },
	{ 4914, 4914, QQ_CLOSE_STOP, "the bot is delisted: only the sandbox may connect" },
	{ 4915, 4915, QQ_CLOSE_STOP, "the bot is banned" },
};

static int
qq_close_find(int code)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(qq_closes); i++)
		if (code >= qq_closes[i].lo && code <= qq_closes[i].hi)
			return (int)i;
	return -1;
}

enum qq_close
qq_close_action(int code)
{
	int i = qq_close_find(code);

	return i < 0 ? QQ_CLOSE_RESUME : qq_closes[i].act;
}

const char *
qq_close_reason(int code)
{
	int i = qq_close_find(code);

	return i < 0 ? "" : qq_closes[i].why;
}

uint32_t
qq_msg_seq(const char *key)
{
	uint64_t h = 14695981039346656037ULL;   /* FNV-1a */

	for (; *key != '\0'; key++)
		h = (h ^ (unsigned char)*key) * 1099511628211ULL;
	return (uint32_t)(h % 999999999ULL) + 1;
}

int
qq_token_parse(const cJSON *o, char *token, size_t len, int64_t *expires_in)
{
	const char *t = json_str(o, "access_token");

	if (t == NULL || t[0] == '\0' || strlen(t) >= len || strpbrk(t, " \t\r\n") != NULL ||
	    json_i64(o, "expires_in", 1, 10 * 86400, expires_in) < 0)
		return -1;
	memcpy(token, t, strlen(t) + 1);
	return 0;
}

enum outq_result
qq_send_classify(int status, int64_t code, const char **why)
{
	*why = "";
	if (code == QQ_DUP_CODE) {
		*why = "sent before (QQ saw this msg_seq)";
		return OUTQ_OK;
	}
	if (code == 304026 || code == 304027) {
		*why = "the message replied to is unknown or past its reply window";
		return OUTQ_REJECTED;
	}
	if (code == 22009) {
		*why = "no more replies to that message (QQ takes 5)";
		return OUTQ_REJECTED;
	}
	if (code == 304018) {
		*why = "the bot is not connected to the gateway";
		return OUTQ_TRANSIENT;
	}
	if (status == 401 || (code >= 11241 && code <= 11244)) {
		*why = "the access token was refused; renewing it";
		return OUTQ_TRANSIENT;
	}
	if (status == 429)
		return OUTQ_RETRY_AFTER;
	if (status >= 200 && status < 300 && code == 0)
		return OUTQ_OK;
	return status == 0 || status >= 500 ? OUTQ_TRANSIENT : OUTQ_REJECTED;
}

int
qq_handle_usable(enum qq_kind kind, const struct qq_handle *h, time_t now, char *why,
    size_t len)
{
	int64_t age = (int64_t)now - h->time;

	if (age > qq_kinds[kind].window) {
		snprintf(why, len, "past its reply window: the newest message in this chat is "
		    "%" PRId64 " min old, QQ takes replies for %" PRId64 " min", age / 60,
		    qq_kinds[kind].window / 60);
		return 0;
	}
	if (h->used >= QQ_MAX_REPLIES) {
		snprintf(why, len, "the newest message in this chat has had its %d replies; "
		    "QQ takes no more until a new one arrives", QQ_MAX_REPLIES);
		return 0;
	}
	return 1;
}

int
qq_handle_line_parse(const char *line, char *chat, size_t chatlen, struct qq_handle *h)
{
	char c[300], id[128];
	long long t;
	unsigned used;
	const char *target;
	int n = 0;

	memset(h, 0, sizeof(*h));
	if (sscanf(line, "%299s %127s %lld %u%n", c, id, &t, &used, &n) != 4 ||
	    line[n] != '\0' || t < 0 || t > 4000000000000LL || used > 100 ||
	    qq_chat_parse(c, &target) < 0 || strlen(c) >= chatlen)
		return -1;
	snprintf(chat, chatlen, "%s", c);
	snprintf(h->msg_id, sizeof(h->msg_id), "%s", id);
	h->time = t;
	h->used = used;
	return 0;
}

/* ---- reply handles: one per chat, kept in <name>.replies ------------------------ */
/* (Every passive-reply platform needs this: a candidate for the kit.) */

static struct qq_chat *
qq_chat_find(struct qq *qq, const char *chat)
{
	size_t i;

	for (i = qq->nchats; i-- > 0;)
		if (strcmp(qq->chats[i].chat, chat) == 0)
			return &qq->chats[i];
	return NULL;
}

/* Makes msg_id (of time t) the chat's handle unless it is, or a newer one is; NULL then. */
static struct qq_chat *
qq_handle_note(struct qq *qq, const char *chat, const char *msg_id, int64_t t)
{
	struct qq_chat *c = qq_chat_find(qq, chat);

	if (strlen(msg_id) >= sizeof(c->h.msg_id) || strlen(chat) >= sizeof(c->chat) ||
	    (c != NULL && (c->h.time > t || strcmp(c->h.msg_id, msg_id) == 0)))
		return NULL;
	if (c == NULL) {
		if (qq->nchats == QQ_HANDLES_CAP)       /* forget the oldest chat */
			memmove(qq->chats, qq->chats + 1, --qq->nchats * sizeof(*qq->chats));
		qq->chats = xrealloc(qq->chats, (qq->nchats + 1) * sizeof(*qq->chats));
		c = &qq->chats[qq->nchats++];
		snprintf(c->chat, sizeof(c->chat), "%s", chat);
	}
	snprintf(c->h.msg_id, sizeof(c->h.msg_id), "%s", msg_id);
	c->h.time = t;
	c->h.used = 0;
	qq->handles_state = QQ_HANDLES_DIRTY;
	return c;
}

/* Writes the handles when they changed: durable (fsync'ed) for a stop, else a plain
 * atomic replace (it survives a crash of the worker, not one of the machine). */
static void
qq_handles_save(struct qq *qq, int durable)
{
	char *buf = NULL, line[512];
	size_t len = 0, cap = 0, i;
	int n, r;

	if (qq->handles_state == QQ_HANDLES_SYNCED ||
	    (qq->handles_state == QQ_HANDLES_WRITTEN && !durable))
		return;
	(void)buf_append(&buf, &len, &cap, QQ_HANDLES_MAX, "qqbot-replies 1\n", 16);
	for (i = 0; i < qq->nchats; i++) {
		n = snprintf(line, sizeof(line), "%s %s %" PRId64 " %u\n", qq->chats[i].chat,
		    qq->chats[i].h.msg_id, qq->chats[i].h.time, qq->chats[i].h.used);
		if (n > 0 && (size_t)n < sizeof(line))
			(void)buf_append(&buf, &len, &cap, QQ_HANDLES_MAX, line, (size_t)n);
	}
	r = durable ? write_file_atomic(qq->handles_path, buf, len, 0600) :
	    write_file_replace(qq->handles_path, buf, len, 0600);
	if (r < 0)
		log_warn("%s: writing %s (replies after a restart may not go out)", qq->name,
		    qq->handles_path);
	else
		qq->handles_state = durable ? QQ_HANDLES_SYNCED : QQ_HANDLES_WRITTEN;
	free(buf);
}

static void
qq_handles_load(struct qq *qq)
{
	size_t len, bad = 0;
	char *buf = read_file(qq->handles_path, QQ_HANDLES_MAX, &len), *line, *save = NULL;
	char chat[300];
	struct qq_handle h;
	struct qq_chat *c;
	time_t now = time(NULL);

	if (buf == NULL) {
		if (errno != ENOENT)
			log_warn("%s: reading %s; earlier chats cannot be answered", qq->name,
			    qq->handles_path);
		return;
	}
	line = strtok_r(buf, "\n", &save);
	if (line == NULL || strcmp(line, "qqbot-replies 1") != 0) {
		log_warnx("%s: %s is not a replies file; ignored", qq->name, qq->handles_path);
		free(buf);
		return;
	}
	while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
		if (qq_handle_line_parse(line, chat, sizeof(chat), &h) < 0)
			bad++;
		else if (now - h.time <= qq_policy.handle_keep &&
		    (c = qq_handle_note(qq, chat, h.msg_id, h.time)) != NULL)
			c->h.used = h.used;
	}
	if (bad > 0)
		log_warnx("%s: %zu damaged line(s) in %s skipped", qq->name, bad, qq->handles_path);
	qq->handles_state = QQ_HANDLES_SYNCED;
	free(buf);
}

/* ---- the access token ------------------------------------------------------ */

static void qq_discover(struct qq *qq);
static void qq_fail(struct qq *qq, enum link_fail kind, double ra, const char *why);

static int
qq_token_valid(const struct qq *qq)
{
	return qq->auth != NULL && mono_usec() + 5000000 < qq->token_until;
}

static void
qq_token_drop(struct qq *qq)
{
	if (qq->auth != NULL)
		explicit_bzero(qq->auth, strlen(qq->auth));
	free(qq->auth);
	qq->auth = NULL;
	qq->token_until = 0;
}

/* Keeps a new token and schedules its renewal shortly before it expires. */
static void
qq_token_set(struct qq *qq, const char *token, int64_t expires_in)
{
	int64_t renew = expires_in > 2 * qq_policy.renew_before ?
	    expires_in - qq_policy.renew_before : expires_in / 2;
	struct timeval tv = { (time_t)(renew > 0 ? renew : 1), 0 };

	qq_token_drop(qq);
	qq->auth = xasprintf("QQBot %s", token);
	qq->token_until = mono_usec() + (uint64_t)expires_in * 1000000;
	evtimer_add(qq->token_ev, &tv);
	log_debug("%s: access token valid for %" PRId64 " s", qq->name, expires_in);
}

static void
qq_token_done(void *arg, const struct http_response *r)
{
	struct qq *qq = arg;
	cJSON *o = r->status != 0 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
	char tok[1024], why[200];
	int64_t exp = 0, code = 0;
	struct timeval tv = { 5, 0 };
	enum link_fail kind = LINK_TRANSIENT;

	qq->token_call = NULL;
	if (r->status == 200 && qq_token_parse(o, tok, sizeof(tok), &exp) == 0) {
		qq_token_set(qq, tok, exp);
		explicit_bzero(tok, sizeof(tok));
		cJSON_Delete(o);
		if (qq->phase == QQ_TOKEN)
			qq_discover(qq);
		return;
	}
	(void)json_i64(o, "code", INT32_MIN, INT64_MAX, &code);
	if (r->status == 0)
		snprintf(why, sizeof(why), "access token: %s", r->error);
	else if (code != 0 || r->status == 401 || r->status == 403) {
		snprintf(why, sizeof(why), "access token refused (HTTP %d, code %" PRId64 "): "
		    "check app_id and client_secret", r->status, code);
		kind = LINK_UNAUTHORIZED_FAIL;
	} else
		snprintf(why, sizeof(why), "access token: HTTP %d without a usable token",
		    r->status);
	cJSON_Delete(o);
	if (qq->phase == QQ_TOKEN)
		qq_fail(qq, kind, 0, why);
	else if (!kit_stopping(qq->kit)) {
		log_warnx("%s: renewing the access token failed: %s; retrying in 5 s", qq->name,
		    why);
		evtimer_add(qq->token_ev, &tv);
	}
}

/* Asks for an access token unless a request is out already. */
static void
qq_token_fetch(struct qq *qq)
{
	struct http_req req = { .method = "POST", .url = qq->token_url, .timeout = 30,
		.content_type = "application/json", .max_body = 65536 };
	cJSON *o = cJSON_CreateObject();
	char *body;

	if (qq->token_call != NULL)
		return;
	if (o == NULL || !cJSON_AddStringToObject(o, "appId", qq->app_id) ||
	    !cJSON_AddStringToObject(o, "clientSecret", qq->secret) ||
	    (body = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	req.body = body;
	req.body_len = strlen(body);
	qq->token_call = http_request(qq->http, &req, qq_token_done, qq);
	explicit_bzero(body, strlen(body));
	free(body);
	if (qq->token_call == NULL && qq->phase == QQ_TOKEN)
		qq_fail(qq, LINK_FATAL, 0, "token_url is not a usable URL");
}

static void
qq_token_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	qq_token_fetch(arg);
}

/* ---- the gateway ---------------------------------------------------------- */

/* Sends one gateway payload {"op": op, "d": d} (d consumed). */
static void
qq_gw_send(struct qq *qq, int op, cJSON *d)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (o == NULL || !cJSON_AddNumberToObject(o, "op", op))
		fatalx("%s: out of memory", __func__);
	cJSON_AddItemToObject(o, "d", d != NULL ? d : cJSON_CreateNull());
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (s == NULL)
		fatalx("%s: out of memory", __func__);
	if (qq->ws != NULL && ws_send_text(qq->ws, s, strlen(s)) < 0)
		log_debug("%s: gateway payload op %d not sent: connection closing", qq->name, op);
	explicit_bzero(s, strlen(s));           /* Identify and Resume carry the token */
	free(s);
}

/* Drops the connection (no close frame: the session stays resumable). */
static void
qq_drop(struct qq *qq)
{
	evtimer_del(qq->hb_ev);
	ws_free(qq->ws);
	qq->ws = NULL;
	qq->phase = QQ_IDLE;
}

/* The connection failed: drop it and let the link schedule the next attempt. */
static void
qq_fail(struct qq *qq, enum link_fail kind, double ra, const char *why)
{
	qq_drop(qq);
	if (kit_stopping(qq->kit)) {
		kit_closed(qq->kit);
		return;
	}
	link_fail(kit_link(qq->kit), kind, ra, why);
}

static void
qq_beat_arm(struct qq *qq)
{
	struct timeval tv = { (time_t)(qq->hb_usec / 1000000),
		(suseconds_t)(qq->hb_usec % 1000000) };

	evtimer_add(qq->hb_ev, &tv);
}

static void
qq_hb_cb(evutil_socket_t fd, short what, void *arg)
{
	struct qq *qq = arg;

	(void)fd;
	(void)what;
	if (!qq->hb_acked) {
		qq_fail(qq, LINK_TRANSIENT, 0, "no heartbeat ACK: the connection is dead");
		return;
	}
	qq->hb_acked = 0;
	qq_gw_send(qq, 1, qq->seq_rx > 0 ? cJSON_CreateNumber((double)qq->seq_rx) : NULL);
	qq_beat_arm(qq);
}

/* Hello: heartbeats start, then Resume (a session to go on with) or Identify. */
static void
qq_hello(struct qq *qq, const cJSON *d)
{
	double interval = 0;
	cJSON *p = cJSON_CreateObject(), *props, *shard;

	if (json_num(d, "heartbeat_interval", &interval) < 0 || interval < 100 ||
	    interval > 600000) {
		cJSON_Delete(p);
		qq_fail(qq, LINK_TRANSIENT, 0, "Hello without a usable heartbeat_interval");
		return;
	}
	qq->hb_usec = (uint64_t)(interval * 1000 * qq_policy.beat_share);
	qq->hb_acked = 1;
	qq_beat_arm(qq);
	qq->phase = QQ_HANDSHAKE;
	if (p == NULL || !cJSON_AddStringToObject(p, "token", qq->auth))
		fatalx("%s: out of memory", __func__);
	if (qq->sess.id[0] != '\0') {
		qq->resumed = 1;
		if (!cJSON_AddStringToObject(p, "session_id", qq->sess.id) ||
		    !cJSON_AddNumberToObject(p, "seq", (double)qq->sess.seq))
			fatalx("%s: out of memory", __func__);
		qq_gw_send(qq, 6, p);
		return;
	}
	qq->resumed = 0;
	qq->seq_rx = qq->sess.seq = 0;          /* a new session counts from 1 */
	shard = cJSON_AddArrayToObject(p, "shard");
	props = cJSON_AddObjectToObject(p, "properties");
	if (shard == NULL || props == NULL || !cJSON_AddNumberToObject(p, "intents", QQ_INTENTS) ||
	    !cJSON_AddItemToArray(shard, cJSON_CreateNumber(0)) ||
	    !cJSON_AddItemToArray(shard, cJSON_CreateNumber(1)) ||
	    !cJSON_AddStringToObject(props, "$os", "linux") ||
	    !cJSON_AddStringToObject(props, "$browser", "hermes") ||
	    !cJSON_AddStringToObject(props, "$device", "hermes"))
		fatalx("%s: out of memory", __func__);
	qq_gw_send(qq, 2, p);
}

struct qq_commit {
	struct qq *qq;
	struct ws *ws;                  /* the connection the events came on */
};

/* The batch is durable (or not): keep the reply handles; on failure, resume anew. */
static void
qq_committed(void *arg, int ok)
{
	struct qq_commit *c = arg;
	struct qq *qq = c->qq;

	qq_handles_save(qq, 0);
	if (!ok && c->ws == qq->ws && qq->ws != NULL && !qq->journal_failed) {
		qq->journal_failed = 1;
		log_warnx("%s: the journal cannot be written; reconnecting to resume from the last "
		    "event it holds", qq->name);
		qq_fail(qq, LINK_TRANSIENT, 0, intake_error(kit_intake(qq->kit)) != NULL ?
		    intake_error(kit_intake(qq->kit)) : "the journal cannot be written");
	}
	free(c);
}

static void
qq_commit(struct qq *qq)
{
	struct qq_commit *c = xcalloc(1, sizeof(*c));
	char cursor[300];

	c->qq = qq;
	c->ws = qq->ws;
	qq->sess.seq = qq->seq_rx;
	qq_session_format(&qq->sess, cursor, sizeof(cursor));
	kit_commit(qq->kit, cursor, qq_committed, c);
}

static void
qq_message(struct qq *qq, const char *t, const cJSON *d)
{
	struct qq_msg m;
	struct inbound in;
	const char *why = "";
	enum intake_add r;
	int pr = qq_message_parse(t, d, qq->sess.self_id, time(NULL), &m, &why);

	if (pr <= 0) {
		if (pr < 0)
			log_warnx("%s: a %s without id, author or chat; skipped", qq->name, t);
		else
			log_debug("%s: skipped %s", qq->name, why);
		return;
	}
	memset(&in, 0, sizeof(in));
	in.chat_id = m.chat;
	in.chat_type = qq_kinds[m.kind].type;
	in.user_id = m.user;
	in.user_name = m.user_name;
	in.message_id = m.id;
	in.text = m.text;
	in.time = m.time;
	in.addressed = 1;               /* QQ pushes group and guild messages only when @-ed */
	r = kit_inbound(qq->kit, &in);
	if (r == INTAKE_INVALID)
		log_warnx("%s: a message with an unusable id; skipped", qq->name);
	else if (r == INTAKE_DUP)
		log_debug("%s: message pushed again; dropped", qq->name);
	else
		qq_handle_note(qq, m.chat, m.id, (int64_t)m.time);
	free(m.text);
}

/* READY: a new session; its id and our user are the cursor. */
static void
qq_ready(struct qq *qq, const cJSON *d)
{
	const char *sid = json_str(d, "session_id"), *self = json_str(json_obj(d, "user"), "id");

	if (sid == NULL || sid[0] == '\0' || strlen(sid) >= sizeof(qq->sess.id) ||
	    strpbrk(sid, " \t\r\n") != NULL || (self != NULL && (strlen(self) >=
	    sizeof(qq->sess.self_id) || strpbrk(self, " \t\r\n") != NULL))) {
		qq_fail(qq, LINK_TRANSIENT, 0, "READY without a usable session_id");
		return;
	}
	snprintf(qq->sess.id, sizeof(qq->sess.id), "%s", sid);
	snprintf(qq->sess.self_id, sizeof(qq->sess.self_id), "%s", self != NULL ? self : "");
	qq->phase = QQ_READY;
	link_up(kit_link(qq->kit));
}

static void
qq_dispatch(struct qq *qq, const char *t, const cJSON *d, int64_t s)
{
	if (s > 0)
		qq->seq_rx = s;
	if (t == NULL)
		return;
	if (strcmp(t, "READY") == 0)
		qq_ready(qq, d);
	else if (strcmp(t, "RESUMED") == 0) {
		qq->phase = QQ_READY;
		log_info("%s: gateway session resumed", qq->name);
		link_up(kit_link(qq->kit));
	} else if (qq_event_kind(t) >= 0 && (qq->phase == QQ_READY || qq->resumed))
		qq_message(qq, t, d);   /* (replayed ones come before RESUMED) */
	if (qq->ws != NULL && qq->phase != QQ_IDLE)
		qq_commit(qq);
}

/* Op 9: the session is gone (d false) or may be resumed (true). */
static void
qq_invalid_session(struct qq *qq, int resumable)
{
	if (!resumable && qq->sess.id[0] != '\0') {
		log_warnx("%s: the gateway session cannot be resumed; identifying anew "
		    "(messages sent while disconnected are not replayed)", qq->name);
		qq->sess.id[0] = '\0';
	}
	qq_fail(qq, LINK_TRANSIENT, 0, resumable ? "invalid session (resumable)" :
	    "invalid session: a new one is started");
}

static void
qq_gw_message(struct qq *qq, const char *data, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(data, len);
	int64_t op = -1, s = 0;

	if (o == NULL || json_i64(o, "op", 0, 100, &op) < 0) {
		cJSON_Delete(o);
		qq_fail(qq, LINK_TRANSIENT, 0, "a gateway payload that is not JSON with an op");
		return;
	}
	(void)json_i64(o, "s", 0, INT64_MAX, &s);
	if (op == 0 && !qq->journal_failed)
		qq_dispatch(qq, json_str(o, "t"), json_obj(o, "d"), s);
	else if (op == 7) {
		log_info("%s: the gateway asks for a reconnect", qq->name);
		qq_fail(qq, LINK_TRANSIENT, 0, "reconnect requested by the gateway");
	} else if (op == 9)
		qq_invalid_session(qq, json_bool(o, "d") == 1);
	else if (op == 10)
		qq_hello(qq, json_obj(o, "d"));
	else if (op == 11)
		qq->hb_acked = 1;
	cJSON_Delete(o);
}

/* The gateway closed the connection with code: decide how to go on. */
static void
qq_gw_closed(struct qq *qq, int code, const char *reason)
{
	char why[240], esc[100];
	enum qq_close act = qq_close_action(code);

	if (qq->phase == QQ_CLOSING || kit_stopping(qq->kit)) {
		qq_drop(qq);
		kit_closed(qq->kit);
		return;
	}
	snprintf(why, sizeof(why), "gateway closed %d (%s)", code, qq_close_reason(code)[0] ?
	    qq_close_reason(code) : log_escape(esc, sizeof(esc), reason, strlen(reason)));
	if (act != QQ_CLOSE_RESUME && act != QQ_CLOSE_BACKOFF)
		qq->sess.id[0] = '\0';
	if (act == QQ_CLOSE_REFRESH)
		qq_token_drop(qq);
	if (act == QQ_CLOSE_STOP)
		qq_fail(qq, LINK_FATAL, 0, why);
	else if (act == QQ_CLOSE_UNAUTHORIZED)
		qq_fail(qq, LINK_UNAUTHORIZED_FAIL, 0, why);
	else
		qq_fail(qq, act == QQ_CLOSE_BACKOFF ? LINK_RETRY_AFTER : LINK_TRANSIENT,
		    act == QQ_CLOSE_BACKOFF ? qq_policy.too_fast_pause : 0, why);
}

static void
qq_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg)
{
	struct qq *qq = arg;

	if (ws != qq->ws)
		return;
	switch (ev->type) {
	case WS_EV_OPEN:
		qq->phase = QQ_HELLO;
		break;
	case WS_EV_TEXT:
		qq_gw_message(qq, ev->data, ev->len);
		break;
	case WS_EV_BINARY:
		qq_fail(qq, LINK_TRANSIENT, 0, "a binary gateway frame");
		break;
	case WS_EV_CLOSE:
		qq_gw_closed(qq, ev->code, ev->reason);
		break;
	case WS_EV_ERROR:
		if (kit_stopping(qq->kit))
			qq_gw_closed(qq, ev->code, ev->reason);
		else
			qq_fail(qq, LINK_TRANSIENT, 0, ev->reason);
		break;
	}
}

static void
qq_discovered(void *arg, const struct http_response *r)
{
	struct qq *qq = arg;
	cJSON *o = r->status == 200 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
	const char *url = json_str(o, "url");
	struct ws_opts wo = { .max_message = 8u << 20 };
	char why[160];

	qq->discover = NULL;
	if (url != NULL && strncmp(url, "ws", 2) == 0) {
		qq->journal_failed = 0;
		qq->seq_rx = qq->sess.seq;
		qq->phase = QQ_HELLO;
		qq->ws = ws_new(qq->base, qq->dns, qq->tls, url, &wo, qq_ws_cb, qq);
		if (qq->ws == NULL)
			qq_fail(qq, LINK_TRANSIENT, 0, "GET /gateway: the url is not usable");
	} else {
		if (r->status == 401)
			qq_token_drop(qq);
		snprintf(why, sizeof(why), "GET /gateway: %s", r->status == 0 ? r->error :
		    r->status == 401 ? "401 (the access token was refused; renewing it)" :
		    r->status == 200 ? "no gateway url" : "HTTP error");
		if (r->status != 0 && r->status != 200 && r->status != 401)
			snprintf(why, sizeof(why), "GET /gateway: HTTP %d", r->status);
		qq_fail(qq, LINK_TRANSIENT, 0, why);
	}
	cJSON_Delete(o);
}

static void
qq_discover(struct qq *qq)
{
	struct http_req req = { .method = "GET", .authorization = qq->auth, .timeout = 30,
		.max_body = 65536 };
	char *url = xasprintf("%s/gateway", qq->api_url);

	req.url = url;
	qq->phase = QQ_DISCOVER;
	qq->discover = http_request(qq->http, &req, qq_discovered, qq);
	free(url);
	if (qq->discover == NULL)
		qq_fail(qq, LINK_FATAL, 0, "api_url is not a usable URL");
}

/* One connection attempt: a token when there is none, the gateway URL, then connect. */
static void
qq_connect(void *plat)
{
	struct qq *qq = plat;

	qq_drop(qq);
	if (!qq->sess_loaded) {
		qq->sess_loaded = 1;
		if (qq_session_parse(kit_cursor(qq->kit), &qq->sess) == 0 && qq->sess.id[0] != '\0')
			log_info("%s: resuming the gateway session at sequence %" PRId64, qq->name,
			    qq->sess.seq);
	}
	if (qq_token_valid(qq)) {
		qq_discover(qq);
		return;
	}
	qq->phase = QQ_TOKEN;
	qq_token_fetch(qq);
}

/* ---- sending ---------------------------------------------------------------- */

struct qq_send {
	struct qq *qq;
	struct outq_attempt *a;
	char *chat, *msg_id;
	int other_left;                 /* variant 1 would reply to another message */
};

static void
qq_send_free(struct qq_send *s)
{
	free(s->chat);
	free(s->msg_id);
	free(s);
}

static void
qq_sent(void *arg, const struct http_response *r)
{
	struct qq_send *s = arg;
	cJSON *o = r->status != 0 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
	const char *what, *msg = json_str(o, "message");
	int64_t code = 0;
	enum outq_result res;
	struct qq_chat *c;
	char why[300], esc[120];

	(void)json_i64(o, "code", INT32_MIN, INT64_MAX, &code);
	res = qq_send_classify(r->status, code, &what);
	snprintf(why, sizeof(why), "send to %s: HTTP %d, code %" PRId64 " %s%s%s", s->chat,
	    r->status, code, msg != NULL ? log_escape(esc, sizeof(esc), msg, strlen(msg)) : "",
	    what[0] ? ": " : "", what);
	if (r->status == 0)
		snprintf(why, sizeof(why), "send to %s: %s", s->chat, r->error);
	if (r->status == 401 || (code >= 11241 && code <= 11244))
		qq_token_drop(s->qq);
	if (res == OUTQ_OK && code == 0 && (c = qq_chat_find(s->qq, s->chat)) != NULL &&
	    strcmp(c->h.msg_id, s->msg_id) == 0) {
		c->h.used++;
		s->qq->handles_state = QQ_HANDLES_DIRTY;
		qq_handles_save(s->qq, 0);
	}
	if (res == OUTQ_REJECTED && (code == 304026 || code == 304027) && s->other_left)
		res = OUTQ_VARIANT;     /* next: reply to the chat's newest message */
	outq_result(s->a, res, 1, res == OUTQ_OK && code == 0 ? NULL : why);
	cJSON_Delete(o);
	qq_send_free(s);
}

static char *
qq_send_body(const struct outq_piece *p, int kind, const char *msg_id)
{
	cJSON *o = cJSON_CreateObject();
	char *js;

	if (o == NULL || !cJSON_AddStringToObject(o, "content", p->text) ||
	    !cJSON_AddStringToObject(o, "msg_id", msg_id) || (qq_kinds[kind].v2 &&
	    (!cJSON_AddNumberToObject(o, "msg_type", 0) ||
	    !cJSON_AddNumberToObject(o, "msg_seq", qq_msg_seq(p->key)))) ||
	    (js = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	return js;
}

/* One attempt: reply to the piece's message, else to the chat's newest one. */
static void
qq_send(void *plat, const struct outq_piece *p, struct outq_attempt *a)
{
	struct qq *qq = plat;
	struct http_req req = { .method = "POST", .content_type = "application/json",
		.timeout = 30, .max_body = 1 << 20 };
	struct qq_chat *c = qq_chat_find(qq, p->chat_id);
	struct qq_send *s;
	const char *target, *msg_id;
	char why[240], *js, *url;
	int kind = qq_chat_parse(p->chat_id, &target);

	if (kind < 0) {
		outq_result(a, OUTQ_REJECTED, 0, "not a QQ chat id (c2c:, group:, guild: or dm: "
		    "and an id)");
		return;
	}
	if (qq->phase != QQ_READY || !qq_token_valid(qq)) {
		/* QQ takes replies only from a bot on the gateway (else 304018) */
		if (link_state(kit_link(qq->kit)) == LINK_STOPPED)
			outq_result(a, OUTQ_REJECTED, 0, link_detail(kit_link(qq->kit)));
		else
			outq_result(a, OUTQ_RETRY_AFTER, 0.1, qq->phase != QQ_READY ?
			    "waiting for the gateway" : "waiting for an access token");
		if (qq->phase == QQ_READY)
			qq_token_fetch(qq);
		return;
	}
	msg_id = p->reply_to != NULL && p->variant == 0 ? p->reply_to : c != NULL ?
	    c->h.msg_id : NULL;
	if (msg_id == NULL) {
		outq_result(a, OUTQ_REJECTED, 0, "no message in this chat to reply to "
		    "(QQ takes no proactive messages)");
		return;
	}
	if (c != NULL && strcmp(c->h.msg_id, msg_id) == 0 &&
	    !qq_handle_usable((enum qq_kind)kind, &c->h, time(NULL), why, sizeof(why))) {
		outq_result(a, OUTQ_REJECTED, 0, why);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	s->qq = qq;
	s->a = a;
	s->chat = xstrdup(p->chat_id);
	s->msg_id = xstrdup(msg_id);
	s->other_left = c != NULL && strcmp(c->h.msg_id, msg_id) != 0;
	js = qq_send_body(p, kind, msg_id);
	url = xasprintf("%s%s%s/messages", qq->api_url, qq_kinds[kind].path, target);
	req.url = url;
	req.authorization = qq->auth;
	req.body = js;
	req.body_len = strlen(js);
	if (http_request(qq->http, &req, qq_sent, s) == NULL) {
		outq_result(a, OUTQ_REJECTED, 0, "not a usable chat URL");
		qq_send_free(s);
	}
	free(url);
	free(js);
}

/* ---- the platform ------------------------------------------------------------ */

static void
qq_close(void *plat)
{
	struct qq *qq = plat;

	qq_handles_save(qq, 1);
	evtimer_del(qq->token_ev);
	http_cancel(qq->token_call);
	http_cancel(qq->discover);
	qq->token_call = qq->discover = NULL;
	if (qq->ws == NULL || qq->phase < QQ_HELLO ||
	    ws_close(qq->ws, QQ_CLOSE_KEEP, "restarting") < 0) {
		qq_drop(qq);
		kit_closed(qq->kit);
		return;
	}
	qq->phase = QQ_CLOSING;
	evtimer_del(qq->hb_ev);
}

static const struct kit_ops qq_kit_ops = {
	.connect = qq_connect,
	.send = qq_send,
	.close = qq_close,
	.limits = { .max_text = QQ_MAX_TEXT, .chat_rate = 5, .chat_burst = 5,
		.global_rate = 20, .global_burst = 20, .inflight = 8, .variants = 2 },
	.link = { .backoff_min_usec = 1000000, .backoff_max_usec = 60000000 },
};

static const char *const qq_keys[] = { "app_id", "client_secret", "api_url", "token_url",
	"sandbox", "limits", NULL };

static void qq_free(void *self);

/* Reads the reply handles an earlier worker left, then starts the kit. */
static void
qq_start(void *self)
{
	struct qq *qq = self;

	qq_handles_load(qq);
	kit_start(qq->kit);
}

static void *
qq_create(const struct plat_env *env, char *err, size_t errlen)
{
	struct qq *qq = xcalloc(1, sizeof(*qq));
	int sandbox = 0;

	qq->name = xstrdup(env->name);
	if (kit_conf_secret(env, "app_id", "QQ_APP_ID", &qq->app_id, err, errlen) < 0 ||
	    kit_conf_secret(env, "client_secret", "QQ_CLIENT_SECRET", &qq->secret, err,
	    errlen) < 0 || kit_conf_bool(env, "sandbox", &sandbox, err, errlen) < 0 ||
	    kit_conf_url(env, "api_url", qq_api_default(sandbox),
	    &qq->api_url, err, errlen) < 0 ||
	    kit_conf_url(env, "token_url", QQ_TOKEN_URL, &qq->token_url, err, errlen) < 0) {
		qq_free(qq);
		return NULL;
	}
	qq->base = env->base;
	qq->dns = env->dns;
	qq->tls = env->tls;
	qq->http = http_client_new(env->base, env->dns, env->tls);
	qq->hb_ev = evtimer_new(env->base, qq_hb_cb, qq);
	qq->token_ev = evtimer_new(env->base, qq_token_cb, qq);
	if (qq->hb_ev == NULL || qq->token_ev == NULL)
		fatalx("%s: out of memory", __func__);
	qq->handles_path = xasprintf("%s/%s.replies", env->state_dir, env->name);
	qq->kit = kit_new(env, &qq_kit_ops, qq);
	if (kit_conf_limits(env, qq->kit, err, errlen) < 0) {
		qq_free(qq);
		return NULL;
	}
	return qq;
}

static void
qq_free(void *self)
{
	struct qq *qq = self;

	if (qq == NULL)
		return;
	kit_free(qq->kit);
	ws_free(qq->ws);
	http_cancel(qq->token_call);
	http_cancel(qq->discover);
	http_client_free(qq->http);
	if (qq->hb_ev != NULL)
		event_free(qq->hb_ev);
	if (qq->token_ev != NULL)
		event_free(qq->token_ev);
	qq_token_drop(qq);
	if (qq->secret != NULL)
		explicit_bzero(qq->secret, strlen(qq->secret));
	free(qq->secret);
	free(qq->app_id);
	free(qq->api_url);
	free(qq->token_url);
	free(qq->handles_path);
	free(qq->chats);
	free(qq->name);
	free(qq);
}

const struct platform_ops qqbot_ops = {
	.name = "qqbot",
	.max_text = QQ_MAX_TEXT,
	.keys = qq_keys,
	.create = qq_create,
	.start = qq_start,
	.send = kit_vt_send,
	.stop = kit_vt_stop,
	.free = qq_free,
	.users_env = "QQ",
};
