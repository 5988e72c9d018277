/* discord.c - the Discord platform on the kit (see discord.h). */
#include "platforms/discord.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "json.h"
#include "kit.h"
#include "log.h"
#include "net/http.h"
#include "net/ws.h"
#include "util.h"

#define DC_DEFAULT_API  "https://discord.com/api/v10"
#define DC_MAX_TEXT     2000
#define DC_USER_AGENT   "User-Agent: DiscordBot (https://github.com/hermes-gateway, 1)"
/* GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT */
#define DC_INTENTS      ((1 << 0) | (1 << 9) | (1 << 12) | (1 << 15))
#define DC_CLOSE_KEEP   4000            /* a close code that keeps the session resumable */

enum dc_phase {
	DC_IDLE = 0,                    /* no connection */
	DC_DISCOVER,                    /* GET /gateway/bot */
	DC_HELLO,                       /* connected, waiting for HELLO */
	DC_HANDSHAKE,                   /* IDENTIFY or RESUME sent */
	DC_READY,                       /* dispatches flowing */
	DC_CLOSING,                     /* ws_close sent */
};

struct dc {
	struct kit *kit;                /* first: the kit's vtable entries find it */
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct http_client *http;
	char *name, *api_url, *auth;
	int require_mention;

	struct ws *ws;
	enum dc_phase phase;
	char *gateway_url;              /* from /gateway/bot */
	struct dc_session sess;         /* as committed */
	int64_t seq_rx;                 /* the last sequence number received */
	int journal_failed;             /* ignore this connection's dispatches */
	int sess_loaded;                /* the journal's session has been read */
	int resumed;                    /* this connection RESUMEd (not IDENTIFY) */
	uint64_t hb_usec;
	int hb_acked;
	struct event *hb_ev;
	struct http_call *discover;
};

/* ---- pure helpers ------------------------------------------------------- */

int
dc_session_parse(const char *cursor, struct dc_session *s)
{
	char id[128], self[32], url[512];
	long long seq;

	memset(s, 0, sizeof(*s));
	if (cursor == NULL || sscanf(cursor, "v1 %127s %lld %31s %511s", id, &seq, self, url) != 4 ||
	    seq < 0)
		return -1;
	snprintf(s->id, sizeof(s->id), "%s", strcmp(id, "-") == 0 ? "" : id);
	s->seq = seq;
	snprintf(s->self_id, sizeof(s->self_id), "%s", strcmp(self, "-") == 0 ? "" : self);
	snprintf(s->resume_url, sizeof(s->resume_url), "%s", strcmp(url, "-") == 0 ? "" : url);
	return 0;
}

void
dc_session_format(const struct dc_session *s, char *buf, size_t len)
{
	snprintf(buf, len, "v1 %s %" PRId64 " %s %s", s->id[0] ? s->id : "-", s->seq,
	    s->self_id[0] ? s->self_id : "-", s->resume_url[0] ? s->resume_url : "-");
}

int
dc_close_ends_session(int code)
{
	return code == 1000 || code == 1001 || code == 4007 || code == 4009 || code == 4004 ||
	    (code >= 4010 && code <= 4014);
}

void
dc_nonce(const char *key, char out[26])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0, i;

	if (EVP_Digest(key, strlen(key), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 13)
		fatalx("%s: sha256 failed", __func__);
	for (i = 0; i < 12; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	out[24] = '\0';
}

/* Removes every "<@self>" and "<@!self>" from text, then leading blanks. */
static void
dc_strip_mention(char *text, const char *self)
{
	char pat1[40], pat2[40], *p;
	size_t l1, l2;

	snprintf(pat1, sizeof(pat1), "<@%s>", self);
	snprintf(pat2, sizeof(pat2), "<@!%s>", self);
	l1 = strlen(pat1);
	l2 = strlen(pat2);
	while ((p = strstr(text, pat1)) != NULL)
		memmove(p, p + l1, strlen(p + l1) + 1);
	while ((p = strstr(text, pat2)) != NULL)
		memmove(p, p + l2, strlen(p + l2) + 1);
	p = text + strspn(text, " \t\n");
	memmove(text, p, strlen(p) + 1);
}

/* 1 when the message mentions us or replies to one of ours. */
static int
dc_addresses_us(const cJSON *d, const char *self)
{
	const cJSON *mentions = json_arr(d, "mentions"), *u, *ref;
	const char *id;

	cJSON_ArrayForEach(u, mentions)
		if ((id = json_str(u, "id")) != NULL && strcmp(id, self) == 0)
			return 1;
	ref = json_obj(d, "referenced_message");
	id = json_str(json_obj(ref, "author"), "id");
	return id != NULL && strcmp(id, self) == 0;
}

int
dc_message_parse(const cJSON *d, const char *self_id, int require_mention, struct dc_msg *m,
    const char **why)
{
	const cJSON *author = json_obj(d, "author");
	const char *content = json_str(d, "content");
	int64_t type = 0;

	memset(m, 0, sizeof(*m));
	m->id = json_str(d, "id");
	m->channel_id = json_str(d, "channel_id");
	m->author_id = json_str(author, "id");
	m->author_name = json_str(author, "username");
	if (m->id == NULL || m->channel_id == NULL || m->author_id == NULL || content == NULL)
		return -1;
	if (strcmp(m->author_id, self_id) == 0) {
		*why = "our own message";
		return 0;
	}
	if (json_bool(author, "bot") == 1) {
		*why = "a bot's message";
		return 0;
	}
	if (json_i64(d, "type", 0, 1000, &type) == 0 && type != 0 && type != 19) {
		*why = "a system message";
		return 0;
	}
	m->dm = json_str(d, "guild_id") == NULL;
	m->addressed = m->dm || !require_mention || content[0] == '/' ||
	    dc_addresses_us(d, self_id);
	m->text = xstrdup(content);
	dc_strip_mention(m->text, self_id);
	return 1;
}

/* ---- the gateway ---------------------------------------------------------- */

static void dc_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg);

/* Sends one gateway payload {"op": op, "d": d} (d consumed). */
static void
dc_gw_send(struct dc *dc, int op, cJSON *d)
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
	if (dc->ws != NULL && ws_send_text(dc->ws, s, strlen(s)) < 0)
		log_debug("%s: gateway payload op %d not sent: connection closing", dc->name, op);
	free(s);
}

static void
dc_heartbeat(struct dc *dc)
{
	dc_gw_send(dc, 1, dc->seq_rx > 0 ? cJSON_CreateNumber((double)dc->seq_rx) : NULL);
}

/* Drops the connection (no close frame: the session stays resumable). */
static void
dc_drop(struct dc *dc)
{
	evtimer_del(dc->hb_ev);
	ws_free(dc->ws);
	dc->ws = NULL;
	dc->phase = DC_IDLE;
}

/* The connection failed: drop it and let the link schedule the next attempt. */
static void
dc_fail(struct dc *dc, enum link_fail kind, const char *why)
{
	dc_drop(dc);
	if (kit_stopping(dc->kit)) {
		kit_closed(dc->kit);
		return;
	}
	link_fail(kit_link(dc->kit), kind, 0, why);
}

static void
dc_hb_cb(evutil_socket_t fd, short what, void *arg)
{
	struct dc *dc = arg;
	struct timeval tv = { (time_t)(dc->hb_usec / 1000000), (suseconds_t)(dc->hb_usec % 1000000) };

	(void)fd;
	(void)what;
	if (!dc->hb_acked) {
		dc_fail(dc, LINK_TRANSIENT, "no heartbeat ACK: the connection is dead");
		return;
	}
	dc->hb_acked = 0;
	dc_heartbeat(dc);
	evtimer_add(dc->hb_ev, &tv);
}

/* HELLO: heartbeats start (the first one jittered), then RESUME or IDENTIFY. */
static void
dc_hello(struct dc *dc, const cJSON *d)
{
	double interval = 0;
	uint64_t first;
	struct timeval tv;
	cJSON *p = cJSON_CreateObject(), *props;

	if (json_num(d, "heartbeat_interval", &interval) < 0 || interval < 100 || interval > 600000) {
		cJSON_Delete(p);
		dc_fail(dc, LINK_TRANSIENT, "HELLO without a usable heartbeat_interval");
		return;
	}
	dc->hb_usec = (uint64_t)(interval * 1000);
	dc->hb_acked = 1;
	first = (uint64_t)((double)dc->hb_usec * ((double)arc4random() / 4294967296.0));
	tv.tv_sec = (time_t)(first / 1000000);
	tv.tv_usec = (suseconds_t)(first % 1000000);
	evtimer_add(dc->hb_ev, &tv);
	dc->phase = DC_HANDSHAKE;
	if (p == NULL || !cJSON_AddStringToObject(p, "token", dc->auth + 4))
		fatalx("%s: out of memory", __func__);
	if (dc->sess.id[0] != '\0') {
		dc->resumed = 1;
		if (!cJSON_AddStringToObject(p, "session_id", dc->sess.id) ||
		    !cJSON_AddNumberToObject(p, "seq", (double)dc->sess.seq))
			fatalx("%s: out of memory", __func__);
		dc_gw_send(dc, 6, p);
		return;
	}
	dc->resumed = 0;
	dc->seq_rx = dc->sess.seq = 0;          /* a new session counts from 1 */
	props = cJSON_AddObjectToObject(p, "properties");
	if (props == NULL || !cJSON_AddNumberToObject(p, "intents", DC_INTENTS) ||
	    !cJSON_AddStringToObject(props, "os", "linux") ||
	    !cJSON_AddStringToObject(props, "browser", "hermes") ||
	    !cJSON_AddStringToObject(props, "device", "hermes"))
		fatalx("%s: out of memory", __func__);
	dc_gw_send(dc, 2, p);
}

struct dc_commit {
	struct dc *dc;
	struct ws *ws;                  /* the connection the events came on */
};

/* A commit failed: this connection's events are forgotten; resume from the journal's seq. */
static void
dc_committed(void *arg, int ok)
{
	struct dc_commit *c = arg;
	struct dc *dc = c->dc;

	if (!ok && c->ws == dc->ws && dc->ws != NULL && !dc->journal_failed) {
		dc->journal_failed = 1;
		log_warnx("%s: the journal cannot be written; reconnecting to resume from the last "
		    "event it holds", dc->name);
		dc_fail(dc, LINK_TRANSIENT, intake_error(kit_intake(dc->kit)) != NULL ?
		    intake_error(kit_intake(dc->kit)) : "the journal cannot be written");
	}
	free(c);
}

/* Commits the session at the current sequence number. */
static void
dc_commit(struct dc *dc)
{
	struct dc_commit *c = xcalloc(1, sizeof(*c));
	char cursor[800];

	c->dc = dc;
	c->ws = dc->ws;
	dc->sess.seq = dc->seq_rx;
	dc_session_format(&dc->sess, cursor, sizeof(cursor));
	kit_commit(dc->kit, cursor, dc_committed, c);
}

static void
dc_typing_done(void *arg, const struct http_response *r)
{
	(void)arg;
	(void)r;                        /* best effort */
}

/* Shows "typing" in the channel (Discord shows it about 10 s; the hub refreshes it). */
static void
dc_typing(void *self, const char *channel, const char *thread)
{
	struct dc *dc = self;
	const char *headers[] = { DC_USER_AGENT, NULL };
	struct http_req req = { .method = "POST", .authorization = dc->auth, .timeout = 10,
		.max_body = 4096, .headers = headers, .content_type = "application/json",
		.body = "{}", .body_len = 2 };
	char *url = xasprintf("%s/channels/%s/typing", dc->api_url, channel);

	(void)thread;
	req.url = url;
	(void)http_request(dc->http, &req, dc_typing_done, NULL);
	free(url);
}

static void
dc_message(struct dc *dc, const cJSON *d)
{
	struct dc_msg m;
	struct inbound in;
	const char *why = "";
	enum intake_add r;
	int pr = dc_message_parse(d, dc->sess.self_id, dc->require_mention, &m, &why);

	if (pr <= 0) {
		if (pr < 0)
			log_warnx("%s: a MESSAGE_CREATE without id, channel, author or content; "
			    "skipped", dc->name);
		else
			log_debug("%s: skipped %s", dc->name, why);
		return;
	}
	memset(&in, 0, sizeof(in));
	in.chat_id = m.channel_id;
	in.chat_type = m.dm ? CHAT_DM : CHAT_GROUP;
	in.user_id = m.author_id;
	in.user_name = m.author_name;
	in.message_id = m.id;
	in.text = m.text;
	in.time = time(NULL);
	in.addressed = m.addressed;
	r = kit_inbound(dc->kit, &in);
	if (r == INTAKE_INVALID)
		log_warnx("%s: a message with an unusable id; skipped", dc->name);
	free(m.text);
}

/* READY: a new session; its id, our user and the resume URL are the cursor. */
static void
dc_ready(struct dc *dc, const cJSON *d)
{
	const char *sid = json_str(d, "session_id"), *url = json_str(d, "resume_gateway_url");
	const char *self = json_str(json_obj(d, "user"), "id");

	if (sid == NULL || self == NULL || strlen(sid) >= sizeof(dc->sess.id) ||
	    strchr(sid, ' ') != NULL || strlen(self) >= sizeof(dc->sess.self_id)) {
		dc_fail(dc, LINK_TRANSIENT, "READY without a usable session_id or user");
		return;
	}
	snprintf(dc->sess.id, sizeof(dc->sess.id), "%s", sid);
	snprintf(dc->sess.self_id, sizeof(dc->sess.self_id), "%s", self);
	snprintf(dc->sess.resume_url, sizeof(dc->sess.resume_url), "%s",
	    url != NULL && strncmp(url, "ws", 2) == 0 && strchr(url, ' ') == NULL ? url :
	    dc->gateway_url != NULL ? dc->gateway_url : "-");
	dc->phase = DC_READY;
	link_up(kit_link(dc->kit));
}

static void
dc_dispatch(struct dc *dc, const char *t, const cJSON *d, int64_t s)
{
	if (s > 0)
		dc->seq_rx = s;
	if (t == NULL)
		return;
	if (strcmp(t, "READY") == 0)
		dc_ready(dc, d);
	else if (strcmp(t, "RESUMED") == 0) {
		dc->phase = DC_READY;
		log_info("%s: gateway session resumed", dc->name);
		link_up(kit_link(dc->kit));
	} else if (strcmp(t, "MESSAGE_CREATE") == 0 && dc->phase == DC_READY)
		dc_message(dc, d);
	else if (strcmp(t, "MESSAGE_CREATE") == 0 && dc->resumed)
		dc_message(dc, d);      /* replayed before RESUMED */
	if (dc->ws != NULL && dc->phase != DC_IDLE)
		dc_commit(dc);
}

/* Op 9: the session is gone (d false) or may be resumed (true), after a pause. */
static void
dc_invalid_session(struct dc *dc, int resumable)
{
	if (!resumable && dc->sess.id[0] != '\0') {
		log_warnx("%s: the gateway session cannot be resumed; identifying anew "
		    "(messages sent while disconnected are not replayed)", dc->name);
		dc->sess.id[0] = '\0';
	}
	dc_fail(dc, LINK_TRANSIENT, resumable ? "invalid session (resumable)" :
	    "invalid session: a new one is started");
}

static void
dc_gw_message(struct dc *dc, const char *data, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(data, len);
	int64_t op = -1, s = 0;

	if (o == NULL || json_i64(o, "op", 0, 100, &op) < 0) {
		cJSON_Delete(o);
		dc_fail(dc, LINK_TRANSIENT, "a gateway payload that is not JSON with an op");
		return;
	}
	(void)json_i64(o, "s", 0, INT64_MAX, &s);
	switch (op) {
	case 0:
		if (!dc->journal_failed)
			dc_dispatch(dc, json_str(o, "t"), json_obj(o, "d"), s);
		break;
	case 1:
		dc_heartbeat(dc);
		break;
	case 7:
		log_info("%s: the gateway asks for a reconnect", dc->name);
		dc_fail(dc, LINK_TRANSIENT, "reconnect requested by the gateway");
		break;
	case 9:
		dc_invalid_session(dc, json_bool(o, "d") == 1);
		break;
	case 10:
		dc_hello(dc, json_obj(o, "d"));
		break;
	case 11:
		dc->hb_acked = 1;
		break;
	}
	cJSON_Delete(o);
}

/* The gateway closed the connection with code: decide how to go on. */
static void
dc_gw_closed(struct dc *dc, int code, const char *reason)
{
	char why[200];

	if (dc->phase == DC_CLOSING || kit_stopping(dc->kit)) {
		dc_drop(dc);
		kit_closed(dc->kit);
		return;
	}
	if (dc_close_ends_session(code))
		dc->sess.id[0] = '\0';
	snprintf(why, sizeof(why), "gateway closed %d%s%.120s", code, reason[0] ? ": " : "",
	    reason);
	if (code == 4004)
		dc_fail(dc, LINK_UNAUTHORIZED_FAIL, "authentication failed (check the bot token)");
	else if (code == 4014)
		dc_fail(dc, LINK_UNAUTHORIZED_FAIL, "the Message Content intent is not enabled "
		    "(Developer Portal, Bot, Privileged Gateway Intents)");
	else if (code >= 4010 && code <= 4013)
		dc_fail(dc, LINK_FATAL, why);
	else
		dc_fail(dc, LINK_TRANSIENT, why);
}

static void
dc_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg)
{
	struct dc *dc = arg;

	if (ws != dc->ws)
		return;
	switch (ev->type) {
	case WS_EV_OPEN:
		dc->phase = DC_HELLO;
		break;
	case WS_EV_TEXT:
		dc_gw_message(dc, ev->data, ev->len);
		break;
	case WS_EV_BINARY:
		dc_fail(dc, LINK_TRANSIENT, "a binary gateway frame (compression is not asked for)");
		break;
	case WS_EV_CLOSE:
		dc_gw_closed(dc, ev->code, ev->reason);
		break;
	case WS_EV_ERROR:
		if (kit_stopping(dc->kit))
			dc_gw_closed(dc, ev->code, ev->reason);
		else
			dc_fail(dc, LINK_TRANSIENT, ev->reason);
		break;
	}
}

static void
dc_open(struct dc *dc, const char *base_url)
{
	const char *headers[] = { DC_USER_AGENT, NULL };
	struct ws_opts o = { .headers = headers, .max_message = 8u << 20, .idle_timeout = 0 };
	char *url = xasprintf("%s%s?v=10&encoding=json", base_url,
	    base_url[strlen(base_url) - 1] == '/' ? "" : "/");

	dc->journal_failed = 0;
	dc->seq_rx = dc->sess.seq;
	dc->ws = ws_new(dc->base, dc->dns, dc->tls, url, &o, dc_ws_cb, dc);
	free(url);
	if (dc->ws == NULL) {
		dc_fail(dc, LINK_FATAL, "the gateway URL is not usable");
		return;
	}
	dc->phase = DC_HELLO;
}

static void
dc_discovered(void *arg, const struct http_response *r)
{
	struct dc *dc = arg;
	cJSON *o = r->status == 200 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
	const char *url = json_str(o, "url");
	char why[160];

	dc->discover = NULL;
	if (url != NULL && strncmp(url, "ws", 2) == 0) {
		free(dc->gateway_url);
		dc->gateway_url = xstrdup(url);
		dc_open(dc, url);
	} else if (r->status == 401)
		dc_fail(dc, LINK_UNAUTHORIZED_FAIL, "GET /gateway/bot: 401 (check the bot token)");
	else {
		snprintf(why, sizeof(why), "GET /gateway/bot: %s", r->status == 0 ? r->error :
		    r->status == 200 ? "no gateway url" : "HTTP error");
		if (r->status != 0 && r->status != 200)
			snprintf(why, sizeof(why), "GET /gateway/bot: HTTP %d", r->status);
		dc_fail(dc, LINK_TRANSIENT, why);
	}
	cJSON_Delete(o);
}

/* One connection attempt: resume where the session was, else discover and identify. */
static void
dc_connect(void *plat)
{
	struct dc *dc = plat;
	const char *headers[] = { DC_USER_AGENT, NULL };
	struct http_req req = { .method = "GET", .authorization = dc->auth, .timeout = 30,
		.max_body = 65536, .headers = headers };
	char *url;

	dc_drop(dc);
	if (!dc->sess_loaded) {
		dc->sess_loaded = 1;
		if (dc_session_parse(kit_cursor(dc->kit), &dc->sess) == 0 && dc->sess.id[0] != '\0')
			log_info("%s: resuming the gateway session at sequence %" PRId64, dc->name,
			    dc->sess.seq);
	}
	if (dc->sess.id[0] != '\0' && strncmp(dc->sess.resume_url, "ws", 2) == 0) {
		dc_open(dc, dc->sess.resume_url);
		return;
	}
	if (dc->gateway_url != NULL) {
		dc_open(dc, dc->gateway_url);
		return;
	}
	url = xasprintf("%s/gateway/bot", dc->api_url);
	req.url = url;
	dc->phase = DC_DISCOVER;
	dc->discover = http_request(dc->http, &req, dc_discovered, dc);
	free(url);
	if (dc->discover == NULL)
		dc_fail(dc, LINK_FATAL, "api_url is not a usable URL");
}

/* ---- sending ---------------------------------------------------------------- */

struct dc_send {
	struct dc *dc;
	struct outq_attempt *a;
	char *chat;
};

/* Honors a route's bucket that ran dry (X-RateLimit-Remaining: 0). */
static void
dc_bucket(struct dc *dc, const struct http_response *r, const char *chat)
{
	const char *rem = http_response_header(r, "X-RateLimit-Remaining");
	const char *after = http_response_header(r, "X-RateLimit-Reset-After");

	if (rem != NULL && strcmp(rem, "0") == 0 && after != NULL)
		outq_pause_chat(kit_outq(dc->kit), chat, NULL, strtod(after, NULL));
}

static void
dc_sent(void *arg, const struct http_response *r)
{
	struct dc_send *s = arg;
	cJSON *o = r->status != 0 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
	double ra = 1;
	int64_t code = 0;
	char why[200];

	(void)json_i64(o, "code", 0, INT32_MAX, &code);
	snprintf(why, sizeof(why), "POST /channels/%s/messages: HTTP %d%s%.100s", s->chat,
	    r->status, json_str(o, "message") ? ": " : "", json_str(o, "message") ?
	    json_str(o, "message") : "");
	if (r->status == 0)
		snprintf(why, sizeof(why), "POST /channels/%s/messages: %s", s->chat, r->error);
	dc_bucket(s->dc, r, s->chat);
	if (r->status == 200 || r->status == 201)
		outq_result(s->a, OUTQ_OK, 0, NULL);
	else if (r->status == 429) {
		(void)json_num(o, "retry_after", &ra);
		if (json_bool(o, "global") == 1)
			outq_pause(kit_outq(s->dc->kit), ra);
		outq_result(s->a, OUTQ_RETRY_AFTER, ra, why);
	} else if (r->status == 401)
		outq_result(s->a, OUTQ_UNAUTHORIZED, 0, why);
	else if (r->status == 400 && (code == 50035 || code == 10008))
		outq_result(s->a, OUTQ_VARIANT, 0, why);        /* next: without the reference */
	else if (r->status >= 400 && r->status < 500)
		outq_result(s->a, OUTQ_REJECTED, 0, why);
	else
		outq_result(s->a, OUTQ_TRANSIENT, 0, why);
	cJSON_Delete(o);
	free(s->chat);
	free(s);
}

static cJSON *
dc_send_body(const struct outq_piece *p)
{
	cJSON *o = cJSON_CreateObject(), *ref, *am;
	char nonce[26];

	dc_nonce(p->key, nonce);
	if (o == NULL || !cJSON_AddStringToObject(o, "content", p->text) ||
	    !cJSON_AddStringToObject(o, "nonce", nonce) ||
	    !cJSON_AddTrueToObject(o, "enforce_nonce") ||
	    (am = cJSON_AddObjectToObject(o, "allowed_mentions")) == NULL ||
	    !cJSON_AddItemToObject(am, "parse", cJSON_CreateArray()))
		fatalx("%s: out of memory", __func__);
	if (p->reply_to != NULL && p->variant == 0) {
		ref = cJSON_AddObjectToObject(o, "message_reference");
		if (ref == NULL || !cJSON_AddStringToObject(ref, "message_id", p->reply_to) ||
		    !cJSON_AddFalseToObject(ref, "fail_if_not_exists"))
			fatalx("%s: out of memory", __func__);
	}
	return o;
}

static void
dc_send(void *plat, const struct outq_piece *p, struct outq_attempt *a)
{
	struct dc *dc = plat;
	const char *headers[] = { DC_USER_AGENT, NULL };
	struct http_req req = { .method = "POST", .content_type = "application/json",
		.authorization = dc->auth, .timeout = 30, .max_body = 1 << 20, .headers = headers };
	struct dc_send *s = xcalloc(1, sizeof(*s));
	cJSON *body = dc_send_body(p);
	char *js = cJSON_PrintUnformatted(body), *url;

	cJSON_Delete(body);
	if (js == NULL)
		fatalx("%s: out of memory", __func__);
	url = xasprintf("%s/channels/%s/messages", dc->api_url, p->chat_id);
	s->dc = dc;
	s->a = a;
	s->chat = xstrdup(p->chat_id);
	req.url = url;
	req.body = js;
	req.body_len = strlen(js);
	if (http_request(dc->http, &req, dc_sent, s) == NULL) {
		outq_result(a, OUTQ_REJECTED, 0, "not a usable channel URL");
		free(s->chat);
		free(s);
	}
	free(url);
	free(js);
}

/* ---- the platform ------------------------------------------------------------ */

static void
dc_close(void *plat)
{
	struct dc *dc = plat;

	if (dc->discover != NULL) {
		http_cancel(dc->discover);
		dc->discover = NULL;
	}
	if (dc->ws == NULL || dc->phase == DC_IDLE ||
	    ws_close(dc->ws, DC_CLOSE_KEEP, "restarting") < 0) {
		dc_drop(dc);
		kit_closed(dc->kit);
		return;
	}
	dc->phase = DC_CLOSING;
	evtimer_del(dc->hb_ev);
}

static const struct kit_ops dc_kit_ops = {
	.connect = dc_connect,
	.send = dc_send,
	.close = dc_close,
	.limits = { .max_text = DC_MAX_TEXT, .chat_rate = 5, .chat_burst = 5,
		.global_rate = 50, .global_burst = 50, .inflight = 8, .variants = 2 },
	.link = { .backoff_min_usec = 1000000, .backoff_max_usec = 60000000 },
};

static const char *const dc_keys[] = { "token", "api_url", "require_mention", "limits", NULL };

static void dc_free(void *self);

static void *
dc_create(const struct plat_env *env, char *err, size_t errlen)
{
	struct dc *dc = xcalloc(1, sizeof(*dc));
	char *token = NULL;

	dc->require_mention = 1;
	if (kit_conf_secret(env, "token", "DISCORD_BOT_TOKEN", &token, err, errlen) < 0 ||
	    kit_conf_url(env, "api_url", DC_DEFAULT_API, &dc->api_url, err, errlen) < 0 ||
	    kit_conf_bool(env, "require_mention", &dc->require_mention, err, errlen) < 0) {
		free(token);
		free(dc->api_url);
		free(dc);
		return NULL;
	}
	dc->auth = xasprintf("Bot %s", token);
	explicit_bzero(token, strlen(token));
	free(token);
	dc->base = env->base;
	dc->dns = env->dns;
	dc->tls = env->tls;
	dc->name = xstrdup(env->name);
	dc->http = http_client_new(env->base, env->dns, env->tls);
	dc->hb_ev = evtimer_new(env->base, dc_hb_cb, dc);
	if (dc->hb_ev == NULL)
		fatalx("%s: out of memory", __func__);
	dc->kit = kit_new(env, &dc_kit_ops, dc);
	if (kit_conf_limits(env, dc->kit, err, errlen) < 0) {
		dc_free(dc);
		return NULL;
	}
	return dc;
}

static void
dc_free(void *self)
{
	struct dc *dc = self;

	if (dc == NULL)
		return;
	kit_free(dc->kit);
	ws_free(dc->ws);
	if (dc->discover != NULL)
		http_cancel(dc->discover);
	http_client_free(dc->http);
	event_free(dc->hb_ev);
	free(dc->gateway_url);
	free(dc->name);
	free(dc->api_url);
	explicit_bzero(dc->auth, strlen(dc->auth));
	free(dc->auth);
	free(dc);
}

const struct platform_ops discord_ops = {
	.name = "discord",
	.max_text = DC_MAX_TEXT,
	.keys = dc_keys,
	.create = dc_create,
	.start = kit_vt_start,
	.send = kit_vt_send,
	.stop = kit_vt_stop,
	.free = dc_free,
	.typing = dc_typing,
	.typing_every_ms = 8000,
};
