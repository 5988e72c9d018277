/* slack.c - the Slack platform on the kit (see slack.h). */
#include "platforms/slack.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "json.h"
#include "kit.h"
#include "log.h"
#include "net/http.h"
#include "net/ws.h"
#include "util.h"

#define SL_DEFAULT_API  "https://slack.com/api"
#define SL_MAX_TEXT     4000
#define SL_CONNS        3               /* a live one, one retiring, one opening */
#define SL_ID_MAX       64

enum sl_cstate {
	SLC_FREE = 0,
	SLC_OPENING,                    /* upgraded or upgrading, waiting for hello */
	SLC_LIVE,                       /* hello received: events flow */
	SLC_RETIRING,                   /* disconnect received: still delivers until replaced */
	SLC_CLOSING,                    /* ws_close sent */
};

struct sl;

struct sl_conn {
	struct sl *sl;
	struct ws *ws;
	enum sl_cstate st;
	unsigned gen;                   /* names it to the commits under way */
	unsigned pending;               /* commits whose ack is still due */
	unsigned ticks;                 /* ping ticks spent in this state */
};

struct sl {
	struct kit *kit;                /* first: the kit's vtable entries find it */
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct http_client *http;
	char *name, *api_url, *bot_auth, *app_auth;
	int require_mention;
	double ping_interval;
	char self_id[SL_ID_MAX];        /* our user id, from auth.test */
	struct sl_conn conns[SL_CONNS];
	unsigned gen;
	struct http_call *call;         /* auth.test or apps.connections.open */
	int journal_failed;             /* stop acknowledging until the next attempt */
	int closing;                    /* ops.close was called */
	struct event *tick_ev;
};

/* ---- pure helpers ------------------------------------------------------- */

/* Removes every "<@self>" and "<@self|name>" from text, then leading blanks; returns how many. */
static int
sl_strip_mention(char *text, const char *self)
{
	char pat[SL_ID_MAX + 4], *p = text, *end;
	size_t n = (size_t)snprintf(pat, sizeof(pat), "<@%s", self);
	int found = 0;

	while ((p = strstr(p, pat)) != NULL) {
		if ((p[n] != '>' && p[n] != '|') || (end = strchr(p + n, '>')) == NULL) {
			p += n;
			continue;
		}
		memmove(p, end + 1, strlen(end + 1) + 1);
		found++;
	}
	p = text + strspn(text, " \t\n");
	memmove(text, p, strlen(p) + 1);
	return found;
}

void
sl_unescape(char *text)
{
	static const char *const ent[] = { "&amp;", "&", "&lt;", "<", "&gt;", ">" };
	char *r = text, *w = text;
	size_t i, n;

	while (*r != '\0') {
		for (i = 0; i < ARRAY_LEN(ent); i += 2)
			if (strncmp(r, ent[i], (n = strlen(ent[i]))) == 0)
				break;
		if (i < ARRAY_LEN(ent)) {
			*w++ = ent[i + 1][0];
			r += n;
		} else
			*w++ = *r++;
	}
	*w = '\0';
}

char *
sl_escape(const char *text)
{
	size_t n = 1;
	const char *p;
	char *out, *w;

	for (p = text; *p != '\0'; p++)
		n += *p == '&' ? 5 : *p == '<' || *p == '>' ? 4 : 1;
	out = w = xmalloc(n);
	for (p = text; *p != '\0'; p++) {
		if (*p == '&') {
			memcpy(w, "&amp;", 5);
			w += 5;
		} else if (*p == '<' || *p == '>') {
			memcpy(w, *p == '<' ? "&lt;" : "&gt;", 4);
			w += 4;
		} else
			*w++ = *p;
	}
	*w = '\0';
	return out;
}

double
sl_retry_after(const char *header, double dflt)
{
	char *end;
	double v;

	if (header == NULL)
		return dflt;
	v = strtod(header, &end);
	if (end == header || *end != '\0' || !(v >= 0))
		return dflt;
	return v > 3600 ? 3600 : v;
}

/* 1 when s is a usable id: 1..SL_ID_MAX-1 bytes of letters, digits, '.', '-' and '_'. */
static int
sl_id_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n == 0 || n >= SL_ID_MAX)
		return 0;
	return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == n;
}

enum outq_result
sl_error_class(const char *e)
{
	static const char *const unauth[] = { "not_authed", "invalid_auth", "account_inactive",
		"token_revoked", "token_expired", "not_allowed_token_type", "missing_scope",
		"team_access_not_granted", "no_permission", NULL };
	static const char *const transient[] = { "internal_error", "fatal_error",
		"service_unavailable", "request_timeout", "team_added_to_org", NULL };
	size_t i;

	if (e == NULL)
		return OUTQ_TRANSIENT;
	if (strcmp(e, "ratelimited") == 0 || strcmp(e, "rate_limited") == 0)
		return OUTQ_RETRY_AFTER;
	for (i = 0; unauth[i] != NULL; i++)
		if (strcmp(e, unauth[i]) == 0)
			return OUTQ_UNAUTHORIZED;
	for (i = 0; transient[i] != NULL; i++)
		if (strcmp(e, transient[i]) == 0)
			return OUTQ_TRANSIENT;
	return OUTQ_REJECTED;           /* channel_not_found, not_in_channel, msg_too_long... */
}

/* 1 when the event is one we skip; why says which. */
static int
sl_skipped(const cJSON *ev, const char *type, const char *self_id, const char **why)
{
	const char *sub = json_str(ev, "subtype"), *user = json_str(ev, "user");

	if (type == NULL || (strcmp(type, "message") != 0 && strcmp(type, "app_mention") != 0))
		*why = "an event that is not a message";
	else if (sub != NULL && strcmp(sub, "thread_broadcast") != 0 &&
	    strcmp(sub, "file_share") != 0)
		*why = "a message edit, deletion or system message";
	else if (user != NULL && strcmp(user, self_id) == 0)
		*why = "our own message";
	else if (json_str(ev, "bot_id") != NULL || json_obj(ev, "bot_profile") != NULL)
		*why = "a bot's message";
	else
		return 0;
	return 1;
}

int
sl_event_parse(const cJSON *ev, const char *self_id, int require_mention, struct sl_msg *m,
    const char **why)
{
	const char *type = json_str(ev, "type"), *ctype = json_str(ev, "channel_type");
	const char *text = json_str(ev, "text");
	int mentioned;

	memset(m, 0, sizeof(*m));
	if (sl_skipped(ev, type, self_id, why))
		return 0;
	m->channel = json_str(ev, "channel");
	m->user = json_str(ev, "user");
	m->ts = json_str(ev, "ts");
	m->thread_ts = json_str(ev, "thread_ts");
	if (!sl_id_ok(m->channel) || !sl_id_ok(m->user) || !sl_id_ok(m->ts) || text == NULL ||
	    (m->thread_ts != NULL && !sl_id_ok(m->thread_ts)))
		return -1;
	snprintf(m->id, sizeof(m->id), "%s:%s", m->channel, m->ts);
	m->dm = ctype != NULL ? strcmp(ctype, "im") == 0 || strcmp(ctype, "mpim") == 0 :
	    m->channel[0] == 'D';
	m->text = xstrdup(text);
	mentioned = sl_strip_mention(m->text, self_id) > 0 || strcmp(type, "app_mention") == 0;
	sl_unescape(m->text);
	if (m->text[0] == '!' && isalpha((unsigned char)m->text[1]))
		m->text[0] = '/';       /* Slack keeps "/" for its own commands */
	m->addressed = m->dm || !require_mention || mentioned;
	return 1;
}

/* ---- Web API calls -------------------------------------------------------- */

/* POSTs a JSON body (NULL: {}) to method with auth; NULL when the URL is not usable. */
static struct http_call *
sl_api(struct sl *sl, const char *method, const char *auth, const char *json, http_done_fn cb,
    void *arg)
{
	struct http_req req = { .method = "POST", .authorization = auth, .timeout = 30,
		.max_body = 1 << 20, .content_type = "application/json; charset=utf-8" };
	struct http_call *c;
	char *url = xasprintf("%s/%s", sl->api_url, method);

	req.url = url;
	req.body = json != NULL ? json : "{}";
	req.body_len = strlen(req.body);
	c = http_request(sl->http, &req, cb, arg);
	free(url);
	return c;
}

/*
 * Classifies a Web API answer: OUTQ_OK with the parsed body in *out (the
 * caller deletes it), else the class, *retry_after and a reason.
 */
static enum outq_result
sl_answer(const struct http_response *r, const char *method, cJSON **out, double *retry_after,
    char *why, size_t len)
{
	cJSON *o;
	char esc[80];
	enum outq_result cls;

	*out = NULL;
	*retry_after = sl_retry_after(r->status != 0 ? http_response_header(r, "Retry-After") :
	    NULL, 30);
	if (r->status == 0) {
		snprintf(why, len, "%s: %s", method, r->error);
		return OUTQ_TRANSIENT;
	}
	if (r->status != 200) {
		snprintf(why, len, "%s: HTTP %d", method, r->status);
		return r->status == 429 ? OUTQ_RETRY_AFTER : r->status >= 500 || r->status == 408 ?
		    OUTQ_TRANSIENT : r->status == 401 || r->status == 403 ? OUTQ_UNAUTHORIZED :
		    OUTQ_REJECTED;
	}
	if ((o = cJSON_ParseWithLength(r->body, r->body_len)) == NULL) {
		snprintf(why, len, "%s: an answer that is not JSON", method);
		return OUTQ_TRANSIENT;
	}
	if (json_bool(o, "ok") == 1) {
		*out = o;
		return OUTQ_OK;
	}
	cls = sl_error_class(json_str(o, "error"));
	snprintf(why, len, "%s: %s", method, json_str(o, "error") == NULL ? "ok false" :
	    log_escape(esc, sizeof(esc), json_str(o, "error"), strlen(json_str(o, "error"))));
	cJSON_Delete(o);
	return cls;
}

/* ---- connections ------------------------------------------------------------ */

static void sl_open_url(struct sl *sl);
static void sl_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg);

static int
sl_count(const struct sl *sl, enum sl_cstate st)
{
	int i, n = 0;

	for (i = 0; i < SL_CONNS; i++)
		n += sl->conns[i].st == st;
	return n;
}

/* 1 while a connection delivers or one is on its way (not counting retiring ones). */
static int
sl_usable(const struct sl *sl)
{
	return sl->call != NULL || sl_count(sl, SLC_OPENING) > 0 || sl_count(sl, SLC_LIVE) > 0;
}

/* The stop asked for a close and nothing is left open: tell the kit. */
static void
sl_maybe_closed(struct sl *sl)
{
	if (sl->closing && sl->call == NULL && sl_count(sl, SLC_FREE) == SL_CONNS)
		kit_closed(sl->kit);
}

static void
sl_conn_drop(struct sl_conn *c)
{
	ws_free(c->ws);                 /* safe inside its own callback */
	c->ws = NULL;
	c->st = SLC_FREE;
	c->pending = 0;
}

/* Drops every connection and lets the link schedule the next attempt. */
static void
sl_fail_all(struct sl *sl, enum link_fail kind, double retry_after, const char *why)
{
	int i;

	for (i = 0; i < SL_CONNS; i++)
		sl_conn_drop(&sl->conns[i]);
	link_fail(kit_link(sl->kit), kind, retry_after, why);
}

/* A connection ended: go on with the others, or reconnect when none is left. */
static void
sl_conn_gone(struct sl_conn *c, const char *why)
{
	struct sl *sl = c->sl;
	int was_closing = c->st == SLC_CLOSING;

	sl_conn_drop(c);
	if (kit_stopping(sl->kit)) {
		sl_maybe_closed(sl);
		return;
	}
	if (was_closing)
		log_debug("%s: a replaced connection closed", sl->name);
	else if (!sl_usable(sl))
		link_fail(kit_link(sl->kit), LINK_TRANSIENT, 0, why);
	else
		log_info("%s: one of the connections ended (%s); the others go on", sl->name, why);
}

/* An attempt (auth.test, apps.connections.open) failed. */
static void
sl_attempt_failed(struct sl *sl, enum outq_result cls, double retry_after, const char *why)
{
	if (kit_stopping(sl->kit)) {
		sl_maybe_closed(sl);
		return;
	}
	if (sl_usable(sl)) {
		log_warnx("%s: no replacement connection: %s", sl->name, why);
		return;
	}
	link_fail(kit_link(sl->kit), cls == OUTQ_RETRY_AFTER ? LINK_RETRY_AFTER :
	    cls == OUTQ_TRANSIENT ? LINK_TRANSIENT : LINK_UNAUTHORIZED_FAIL, retry_after, why);
}

/* Opens a WebSocket on the single-use URL Slack gave. */
static void
sl_conn_new(struct sl *sl, const char *url)
{
	struct ws_opts o = { .max_message = 4u << 20, .handshake_timeout = 15,
		.idle_timeout = sl->ping_interval * 3 };
	struct sl_conn *c = NULL;
	int i;

	for (i = 0; i < SL_CONNS && c == NULL; i++)
		if (sl->conns[i].st == SLC_FREE)
			c = &sl->conns[i];
	for (i = 0; i < SL_CONNS && c == NULL; i++)
		if (sl->conns[i].st == SLC_RETIRING || sl->conns[i].st == SLC_CLOSING) {
			c = &sl->conns[i];      /* no room: the oldest way out goes now */
			sl_conn_drop(c);
		}
	if (c == NULL) {
		log_warnx("%s: no room for another connection", sl->name);
		return;
	}
	c->sl = sl;
	c->gen = ++sl->gen;
	c->ticks = 0;
	c->ws = ws_new(sl->base, sl->dns, sl->tls, url, &o, sl_ws_cb, c);
	c->st = c->ws != NULL ? SLC_OPENING : SLC_FREE;
	if (c->ws == NULL)
		sl_attempt_failed(sl, OUTQ_TRANSIENT, 0,
		    "apps.connections.open: the URL given is not a usable wss:// URL");
}

static void
sl_opened(void *arg, const struct http_response *r)
{
	struct sl *sl = arg;
	cJSON *o;
	double ra;
	char why[200];
	enum outq_result cls = sl_answer(r, "apps.connections.open", &o, &ra, why, sizeof(why));
	const char *url = json_str(o, "url");

	sl->call = NULL;
	if (cls == OUTQ_OK && (url == NULL || strncmp(url, "wss://", 6) != 0)) {
		cls = OUTQ_TRANSIENT;
		snprintf(why, sizeof(why), "apps.connections.open: no wss:// url in the answer");
	}
	if (cls == OUTQ_OK && !kit_stopping(sl->kit))
		sl_conn_new(sl, url);
	else if (cls == OUTQ_OK)
		sl_maybe_closed(sl);
	else {
		if (cls == OUTQ_UNAUTHORIZED)
			strncat(why, " (check app_token: an app-level xapp- token with "
			    "connections:write)", sizeof(why) - strlen(why) - 1);
		sl_attempt_failed(sl, cls, ra, why);
	}
	cJSON_Delete(o);
}

/* Asks for a fresh single-use URL (a ticket is never used twice). */
static void
sl_open_url(struct sl *sl)
{
	if (sl->call != NULL)
		return;
	sl->call = sl_api(sl, "apps.connections.open", sl->app_auth, NULL, sl_opened, sl);
	if (sl->call == NULL)
		link_fail(kit_link(sl->kit), LINK_FATAL, 0, "api_url is not a usable URL");
}

static void
sl_authed(void *arg, const struct http_response *r)
{
	struct sl *sl = arg;
	cJSON *o;
	double ra;
	char why[200];
	enum outq_result cls = sl_answer(r, "auth.test", &o, &ra, why, sizeof(why));
	const char *uid = json_str(o, "user_id");

	sl->call = NULL;
	if (cls == OUTQ_OK && !sl_id_ok(uid)) {
		cls = OUTQ_TRANSIENT;
		snprintf(why, sizeof(why), "auth.test: no usable user_id in the answer");
	}
	if (cls == OUTQ_OK) {
		if (strcmp(sl->self_id, uid) != 0)
			log_info("%s: signed in as user %s", sl->name, uid);
		snprintf(sl->self_id, sizeof(sl->self_id), "%s", uid);
		if (kit_stopping(sl->kit))
			sl_maybe_closed(sl);
		else
			sl_open_url(sl);
	} else {
		if (cls == OUTQ_UNAUTHORIZED)
			strncat(why, " (check bot_token)", sizeof(why) - strlen(why) - 1);
		sl_attempt_failed(sl, cls, ra, why);
	}
	cJSON_Delete(o);
}

/* One attempt of the link: auth.test (the bot token works, our user id), then a URL. */
static void
sl_connect(void *plat)
{
	struct sl *sl = plat;

	sl->journal_failed = 0;
	if (sl->call != NULL)
		return;                 /* a replacement is on its way: it reports */
	sl->call = sl_api(sl, "auth.test", sl->bot_auth, NULL, sl_authed, sl);
	if (sl->call == NULL)
		link_fail(kit_link(sl->kit), LINK_FATAL, 0, "api_url is not a usable URL");
}

/* ---- envelopes ------------------------------------------------------------------ */

struct sl_commit {
	struct sl *sl;
	unsigned gen;                   /* the connection the envelope came on */
	char envelope_id[100];
};

static struct sl_conn *
sl_conn_by_gen(struct sl *sl, unsigned gen)
{
	int i;

	for (i = 0; i < SL_CONNS; i++)
		if (sl->conns[i].st != SLC_FREE && sl->conns[i].gen == gen)
			return &sl->conns[i];
	return NULL;
}

static void
sl_ack(struct sl_conn *c, const char *envelope_id)
{
	char buf[160];
	int n = snprintf(buf, sizeof(buf), "{\"envelope_id\":\"%s\"}", envelope_id);

	if (c->ws == NULL || c->st == SLC_CLOSING || ws_send_text(c->ws, buf, (size_t)n) < 0)
		log_debug("%s: envelope %s not acknowledged: the connection is going; Slack "
		    "delivers it again", c->sl->name, envelope_id);
}

/* The journal holds the envelope's event (ok): acknowledge it on its connection. */
static void
sl_committed(void *arg, int ok)
{
	struct sl_commit *k = arg;
	struct sl *sl = k->sl;
	struct sl_conn *c = sl_conn_by_gen(sl, k->gen);
	const char *err;

	if (c != NULL && c->pending > 0)
		c->pending--;
	if (ok && c != NULL)
		sl_ack(c, k->envelope_id);
	else if (!ok && !sl->journal_failed && !kit_stopping(sl->kit)) {
		sl->journal_failed = 1;
		err = intake_error(kit_intake(sl->kit));
		log_warnx("%s: the journal cannot be written; events are not acknowledged (Slack "
		    "delivers them again)", sl->name);
		sl_fail_all(sl, LINK_TRANSIENT, 0, err != NULL ? err :
		    "the journal cannot be written");
	}
	free(k);
}

/* Hands the envelope's message (if any) to the kit, then commits; the ack follows. */
static void
sl_envelope(struct sl_conn *c, const cJSON *o, const char *envelope_id)
{
	struct sl *sl = c->sl;
	const cJSON *payload = json_obj(o, "payload");
	struct sl_commit *k;
	struct sl_msg m;
	struct inbound in;
	const char *why = "";
	int64_t attempt = 0;
	int pr = sl_event_parse(json_obj(payload, "event"), sl->self_id, sl->require_mention,
	    &m, &why);

	if (json_i64(o, "retry_attempt", 0, 100, &attempt) == 0 && attempt > 0)
		log_debug("%s: an event delivered again (attempt %d)", sl->name, (int)attempt);
	if (pr < 0)
		log_warnx("%s: a message event without channel, user, ts or text; skipped",
		    sl->name);
	else if (pr == 0)
		log_debug("%s: skipped %s", sl->name, why);
	else {
		memset(&in, 0, sizeof(in));
		in.chat_id = m.channel;
		in.chat_type = m.dm ? CHAT_DM : m.thread_ts != NULL ? CHAT_THREAD : CHAT_GROUP;
		in.thread_id = m.thread_ts;
		in.user_id = m.user;
		in.message_id = m.id;
		in.text = m.text;
		in.time = time(NULL);
		in.addressed = m.addressed;
		if (kit_inbound(sl->kit, &in) == INTAKE_INVALID)
			log_warnx("%s: a message the journal cannot hold; skipped", sl->name);
		free(m.text);
	}
	/* a duplicate is acknowledged too, once the commit that holds it is on disk */
	k = xcalloc(1, sizeof(*k));
	k->sl = sl;
	k->gen = c->gen;
	snprintf(k->envelope_id, sizeof(k->envelope_id), "%s", envelope_id);
	c->pending++;
	kit_commit(sl->kit, NULL, sl_committed, k);
}

/* hello: this connection delivers; any it replaces closes at a later tick. */
static void
sl_hello(struct sl_conn *c)
{
	c->st = SLC_LIVE;
	c->ticks = 0;
	log_debug("%s: connection %u up", c->sl->name, c->gen);
	link_up(kit_link(c->sl->kit));
}

/* disconnect: open the replacement now, while this one still delivers. */
static void
sl_disconnect(struct sl_conn *c, const char *reason)
{
	char esc[64];

	log_info("%s: Slack asks for a new connection (%s)", c->sl->name,
	    reason != NULL ? log_escape(esc, sizeof(esc), reason, strlen(reason)) : "no reason");
	c->st = SLC_RETIRING;
	c->ticks = 0;
	if (!sl_usable(c->sl))
		sl_open_url(c->sl);
}

static void
sl_frame(struct sl_conn *c, const char *data, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(data, len);
	const char *type = json_str(o, "type"), *eid = json_str(o, "envelope_id");

	if (type == NULL) {
		log_warnx("%s: a Socket Mode frame that is not JSON with a type; ignored",
		    c->sl->name);
	} else if (strcmp(type, "hello") == 0 && c->st == SLC_OPENING)
		sl_hello(c);
	else if (strcmp(type, "disconnect") == 0 && c->st != SLC_CLOSING)
		sl_disconnect(c, json_str(o, "reason"));
	else if (eid != NULL && !sl_id_ok(eid))
		log_warnx("%s: an envelope with an unusable envelope_id; ignored", c->sl->name);
	else if (eid != NULL && strcmp(type, "events_api") == 0) {
		if (!c->sl->journal_failed)
			sl_envelope(c, o, eid);
	} else if (eid != NULL) {
		log_debug("%s: %s envelope not handled; acknowledged", c->sl->name,
		    strcmp(type, "slash_commands") == 0 ? "a slash command" : "an");
		sl_ack(c, eid);
	}
	cJSON_Delete(o);
}

static void
sl_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg)
{
	struct sl_conn *c = arg;
	char why[200];

	if (ws != c->ws)
		return;
	switch (ev->type) {
	case WS_EV_OPEN:
		break;
	case WS_EV_TEXT:
		sl_frame(c, ev->data, ev->len);
		break;
	case WS_EV_BINARY:
		log_debug("%s: a binary frame ignored", c->sl->name);
		break;
	case WS_EV_CLOSE:
		snprintf(why, sizeof(why), "Slack closed the connection (%d)", ev->code);
		sl_conn_gone(c, why);
		break;
	case WS_EV_ERROR:
		if (ev->status != 0)
			snprintf(why, sizeof(why), "the Socket Mode URL was refused (HTTP %d)",
			    ev->status);
		else
			snprintf(why, sizeof(why), "%s", ev->reason);
		sl_conn_gone(c, why);
		break;
	}
}

/*
 * Every ping_interval: pings each connection (no byte for three intervals
 * ends it), ends one that never said hello, and closes a retiring one
 * once a live connection has replaced it for a tick and its acks are out.
 */
static void
sl_tick(evutil_socket_t fd, short what, void *arg)
{
	struct sl *sl = arg;
	struct sl_conn *c;
	int i, live = sl_count(sl, SLC_LIVE);

	(void)fd;
	(void)what;
	for (i = 0; i < SL_CONNS; i++) {
		c = &sl->conns[i];
		if (c->st == SLC_FREE || c->st == SLC_CLOSING)
			continue;
		(void)ws_ping(c->ws, "hermes", 6);
		c->ticks++;
		if (c->st == SLC_OPENING && c->ticks >= 3)
			sl_conn_gone(c, "no hello from Slack");
		else if (c->st == SLC_RETIRING && live > 0 && c->ticks >= 2 && c->pending == 0) {
			if (ws_close(c->ws, 1000, "replaced") == 0)
				c->st = SLC_CLOSING;
			else
				sl_conn_gone(c, "closing a replaced connection");
		}
	}
}

/* ---- sending ---------------------------------------------------------------------- */

struct sl_send {
	struct outq_attempt *a;
};

static void
sl_sent(void *arg, const struct http_response *r)
{
	struct sl_send *s = arg;
	cJSON *o;
	double ra;
	char why[200];
	enum outq_result cls = sl_answer(r, "chat.postMessage", &o, &ra, why, sizeof(why));

	outq_result(s->a, cls, ra, cls == OUTQ_OK ? NULL : why);
	cJSON_Delete(o);
	free(s);
}

/* One attempt: chat.postMessage in the chat (thread), text escaped, mrkdwn on. */
static void
sl_send(void *plat, const struct outq_piece *p, struct outq_attempt *a)
{
	struct sl *sl = plat;
	struct sl_send *s = xcalloc(1, sizeof(*s));
	cJSON *o = cJSON_CreateObject();
	char *text = sl_escape(p->text), *js;

	if (o == NULL || !cJSON_AddStringToObject(o, "channel", p->chat_id) ||
	    !cJSON_AddStringToObject(o, "text", text) || !cJSON_AddTrueToObject(o, "mrkdwn") ||
	    (p->thread_id != NULL && !cJSON_AddStringToObject(o, "thread_ts", p->thread_id)) ||
	    (js = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	free(text);
	s->a = a;
	if (sl_api(sl, "chat.postMessage", sl->bot_auth, js, sl_sent, s) == NULL) {
		outq_result(a, OUTQ_REJECTED, 0, "chat.postMessage: api_url is not usable");
		free(s);
	}
	free(js);
}

/* ---- the platform ------------------------------------------------------------------ */

/* For a stop: every connection closed with 1000; what was not acked comes again. */
static void
sl_close(void *plat)
{
	struct sl *sl = plat;
	struct sl_conn *c;
	int i;

	sl->closing = 1;
	if (sl->call != NULL) {
		http_cancel(sl->call);
		sl->call = NULL;
	}
	event_del(sl->tick_ev);
	for (i = 0; i < SL_CONNS; i++) {
		c = &sl->conns[i];
		if (c->st != SLC_FREE && c->st != SLC_CLOSING) {
			if (ws_close(c->ws, 1000, "restarting") == 0)
				c->st = SLC_CLOSING;
			else
				sl_conn_drop(c);
		}
	}
	sl_maybe_closed(sl);
}

static const struct kit_ops sl_kit_ops = {
	.connect = sl_connect,
	.send = sl_send,
	.close = sl_close,
	.limits = { .max_text = SL_MAX_TEXT, .chat_rate = 1, .chat_burst = 3,
		.global_rate = 10, .global_burst = 20, .inflight = 8 },
	.link = { .backoff_min_usec = 1000000, .backoff_max_usec = 60000000 },
};

static const char *const sl_keys[] = { "bot_token", "app_token", "api_url", "require_mention",
	"ping_interval", "limits", NULL };

static void sl_free(void *self);

/* The tokens, as Authorization values; a token of the other kind is refused. */
static int
sl_conf_tokens(const struct plat_env *env, struct sl *sl, char *err, size_t errlen)
{
	char *bot = NULL, *app = NULL;
	int rc = -1;

	if (kit_conf_secret(env, "bot_token", "SLACK_BOT_TOKEN", &bot, err, errlen) < 0 ||
	    kit_conf_secret(env, "app_token", "SLACK_APP_TOKEN", &app, err, errlen) < 0)
		;
	else if (strncmp(bot, "xapp-", 5) == 0)
		snprintf(err, errlen, "platforms.%s.bot_token: an app-level token (xapp-); the "
		    "bot token (xoxb-) goes here, the app token in app_token", env->name);
	else if (strncmp(app, "xox", 3) == 0)
		snprintf(err, errlen, "platforms.%s.app_token: must be an app-level token (xapp-) "
		    "with connections:write", env->name);
	else {
		sl->bot_auth = xasprintf("Bearer %s", bot);
		sl->app_auth = xasprintf("Bearer %s", app);
		rc = 0;
	}
	if (bot != NULL)
		explicit_bzero(bot, strlen(bot));
	if (app != NULL)
		explicit_bzero(app, strlen(app));
	free(bot);
	free(app);
	return rc;
}

/* ping_interval: seconds between our pings (default 10); three without a byte end it. */
static int
sl_conf_ping(const struct plat_env *env, struct sl *sl, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(env->conf, "ping_interval");

	sl->ping_interval = 10;
	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsNumber(v) || v->valuedouble < 0.2 || v->valuedouble > 300) {
		snprintf(err, errlen, "platforms.%s.ping_interval: must be a number of seconds "
		    "from 0.2 to 300", env->name);
		return -1;
	}
	sl->ping_interval = v->valuedouble;
	return 0;
}

static void *
sl_create(const struct plat_env *env, char *err, size_t errlen)
{
	struct sl *sl = xcalloc(1, sizeof(*sl));
	struct timeval tv;

	sl->require_mention = 1;
	sl->name = xstrdup(env->name);
	if (sl_conf_tokens(env, sl, err, errlen) < 0 ||
	    kit_conf_url(env, "api_url", SL_DEFAULT_API, &sl->api_url, err, errlen) < 0 ||
	    kit_conf_bool(env, "require_mention", &sl->require_mention, err, errlen) < 0 ||
	    sl_conf_ping(env, sl, err, errlen) < 0) {
		sl_free(sl);
		return NULL;
	}
	sl->base = env->base;
	sl->dns = env->dns;
	sl->tls = env->tls;
	sl->http = http_client_new(env->base, env->dns, env->tls);
	sl->tick_ev = event_new(env->base, -1, EV_PERSIST, sl_tick, sl);
	if (sl->tick_ev == NULL)
		fatalx("%s: out of memory", __func__);
	tv.tv_sec = (time_t)sl->ping_interval;
	tv.tv_usec = (suseconds_t)((sl->ping_interval - (double)tv.tv_sec) * 1e6);
	evtimer_add(sl->tick_ev, &tv);
	sl->kit = kit_new(env, &sl_kit_ops, sl);
	if (kit_conf_limits(env, sl->kit, err, errlen) < 0) {
		sl_free(sl);
		return NULL;
	}
	return sl;
}

static void
sl_secret_free(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
	free(s);
}

static void
sl_free(void *self)
{
	struct sl *sl = self;
	int i;

	if (sl == NULL)
		return;
	for (i = 0; i < SL_CONNS; i++)
		sl_conn_drop(&sl->conns[i]);
	if (sl->call != NULL)
		http_cancel(sl->call);
	kit_free(sl->kit);
	http_client_free(sl->http);
	if (sl->tick_ev != NULL)
		event_free(sl->tick_ev);
	sl_secret_free(sl->bot_auth);
	sl_secret_free(sl->app_auth);
	free(sl->api_url);
	free(sl->name);
	free(sl);
}

const struct platform_ops slack_ops = {
	.name = "slack",
	.max_text = SL_MAX_TEXT,
	.keys = sl_keys,
	.create = sl_create,
	.start = kit_vt_start,
	.send = kit_vt_send,
	.stop = kit_vt_stop,
	.free = sl_free,
};
