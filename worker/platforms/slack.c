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

struct sl_conn {
	struct sl *sl;
	struct ws *ws;
	enum sl_cstate st;
	unsigned gen;                   /* names it to the commits under way */
};

struct sl {
	struct kit *kit;                /* first: the kit's vtable entries find it */
	struct plat_env env;            /* a copy: what it points to lives until free */
	const char *name;
	struct http_client *http;
	char *api_url, *bot_auth, *app_auth;
	int require_mention;
	double ping_interval;
	char self_id[SL_ID_MAX];        /* our user id, from auth.test */
	struct sl_conn conns[SL_CONNS];
	unsigned gen;
	struct http_call *call;         /* auth.test or apps.connections.open */
	int calling_auth;               /* the call is auth.test */
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

	while ((p = strstr(p, pat)) != NULL)
		if ((p[n] == '>' || p[n] == '|') && (end = strchr(p + n, '>')) != NULL) {
			memmove(p, end + 1, strlen(end + 1) + 1);
			found++;
		} else
			p += n;
	p = text + strspn(text, " \t\n");
	memmove(text, p, strlen(p) + 1);
	return found;
}

void
sl_unescape(char *text)
{
	static const char *const ent[] = { "&amp;", "&lt;", "&gt;" };
	char *r = text, *w = text;
	size_t i;

	while (*r != '\0') {
		for (i = 0; i < 3 && strncmp(r, ent[i], strlen(ent[i])) != 0; i++)
			;
		*w++ = i < 3 ? "&<>"[i] : *r;
		r += i < 3 ? strlen(ent[i]) : 1;
	}
	*w = '\0';
}

char *
sl_escape(const char *text)
{
	char *out = xmalloc(strlen(text) * 5 + 1), *w = out;

	for (; *text != '\0'; text++)
		w = *text == '&' ? stpcpy(w, "&amp;") : *text == '<' ? stpcpy(w, "&lt;") :
		    *text == '>' ? stpcpy(w, "&gt;") : (*w = *text, w + 1);
	*w = '\0';
	return out;
}

double
sl_retry_after(const char *header, double dflt)
{
	char *end = NULL;
	double v = header != NULL ? strtod(header, &end) : -1;

	if (end == header || (end != NULL && *end != '\0') || !(v >= 0))
		return dflt;
	return v > 3600 ? 3600 : v;
}

/* 1 when s is a usable id: 1..SL_ID_MAX-1 bytes of letters, digits, '.', '-' and '_'. */
static int
sl_id_ok(const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	return n > 0 && n < SL_ID_MAX &&
	    strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_") == n;
}

/* 1 when word is one of the space-separated words of list. */
static int
sl_word_in(const char *word, const char *list)
{
	size_t n = strlen(word);
	const char *p;

	for (p = list; n > 0 && (p = strstr(p, word)) != NULL; p += n)
		if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
			return 1;
	return 0;
}

enum outq_result
sl_error_class(const char *e)
{
	if (e == NULL || sl_word_in(e, "internal_error fatal_error service_unavailable "
	    "request_timeout team_added_to_org"))
		return OUTQ_TRANSIENT;
	if (sl_word_in(e, "ratelimited rate_limited"))
		return OUTQ_RETRY_AFTER;
	if (sl_word_in(e, "not_authed invalid_auth account_inactive token_revoked "
	    "token_expired not_allowed_token_type missing_scope team_access_not_granted "
	    "no_permission"))
		return OUTQ_UNAUTHORIZED;
	return OUTQ_REJECTED;           /* channel_not_found, not_in_channel, msg_too_long... */
}

int
sl_event_parse(const cJSON *ev, const char *self_id, int require_mention, struct sl_msg *m,
    const char **why)
{
	const char *type = json_str(ev, "type"), *ctype = json_str(ev, "channel_type");
	const char *text = json_str(ev, "text"), *sub = json_str(ev, "subtype");
	int mentioned;

	memset(m, 0, sizeof(*m));
	m->channel = json_str(ev, "channel");
	m->user = json_str(ev, "user");
	m->ts = json_str(ev, "ts");
	m->thread_ts = json_str(ev, "thread_ts");
	if (type == NULL || !sl_word_in(type, "message app_mention"))
		*why = "an event that is not a message";
	else if (sub != NULL && !sl_word_in(sub, "thread_broadcast file_share"))
		*why = "a message edit, deletion or system message";
	else if (m->user != NULL && strcmp(m->user, self_id) == 0)
		*why = "our own message";
	else if (json_str(ev, "bot_id") != NULL || json_obj(ev, "bot_profile") != NULL)
		*why = "a bot's message";
	else if (!sl_id_ok(m->channel) || !sl_id_ok(m->user) || !sl_id_ok(m->ts) ||
	    text == NULL || (m->thread_ts != NULL && !sl_id_ok(m->thread_ts)))
		return -1;
	else {
		snprintf(m->id, sizeof(m->id), "%s:%s", m->channel, m->ts);
		m->dm = ctype != NULL ? sl_word_in(ctype, "im mpim") : m->channel[0] == 'D';
		m->text = xstrdup(text);
		mentioned = sl_strip_mention(m->text, self_id) > 0 ||
		    strcmp(type, "app_mention") == 0;
		sl_unescape(m->text);
		if (m->text[0] == '!' && isalpha((unsigned char)m->text[1]))
			m->text[0] = '/';       /* Slack keeps "/" for its own commands */
		m->addressed = m->dm || !require_mention || mentioned;
		return 1;
	}
	return 0;
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
	cJSON *o = NULL;
	const char *e;
	char esc[80];
	enum outq_result cls = r->status == 429 ? OUTQ_RETRY_AFTER : r->status == 401 ||
	    r->status == 403 ? OUTQ_UNAUTHORIZED : r->status >= 300 && r->status < 500 &&
	    r->status != 408 ? OUTQ_REJECTED : OUTQ_TRANSIENT;

	*out = NULL;
	if (r->status == 0)
		snprintf(why, len, "%s: %s", method, r->error);
	else if (r->status != 200)
		snprintf(why, len, "%s: HTTP %d", method, r->status);
	else if ((o = cJSON_ParseWithLength(r->body, r->body_len)) == NULL)
		snprintf(why, len, "%s: an answer that is not JSON", method);
	else if (json_bool(o, "ok") == 1) {
		*out = o;
		cls = OUTQ_OK;
	} else {
		e = json_str(o, "error");
		snprintf(why, len, "%s: %s", method, e == NULL ? "ok false" :
		    log_escape(esc, sizeof(esc), e, strlen(e)));
		cls = sl_error_class(e);
		cJSON_Delete(o);
	}
	*retry_after = cls == OUTQ_RETRY_AFTER ?
	    sl_retry_after(http_response_header(r, "Retry-After"), 30) : 0;
	return cls;
}

/* ---- connections ------------------------------------------------------------ */

static void sl_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg);

static int
sl_count(const struct sl *sl, enum sl_cstate st)
{
	int i, n = 0;

	for (i = 0; i < SL_CONNS; i++)
		n += sl->conns[i].st == st;
	return n;
}

/* 1 while a connection delivers or one is on its way (retiring ones do not count). */
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
}

/* A connection ended: go on with the others, or reconnect when none is left. */
static void
sl_conn_gone(struct sl_conn *c, const char *why)
{
	struct sl *sl = c->sl;

	sl_conn_drop(c);
	if (kit_stopping(sl->kit))
		sl_maybe_closed(sl);
	else if (!sl_usable(sl))
		link_fail(kit_link(sl->kit), LINK_TRANSIENT, 0, why);
	else
		log_info("%s: one of the connections ended (%s); the others go on", sl->name, why);
}

/* auth.test or apps.connections.open failed: reconnect unless a connection still works. */
static void
sl_attempt_failed(struct sl *sl, enum outq_result cls, double retry_after, const char *why)
{
	if (sl_usable(sl))
		log_warnx("%s: no replacement connection: %s", sl->name, why);
	else                            /* (nothing while stopping) */
		link_fail(kit_link(sl->kit), cls == OUTQ_RETRY_AFTER ? LINK_RETRY_AFTER :
		    cls == OUTQ_TRANSIENT ? LINK_TRANSIENT : LINK_UNAUTHORIZED_FAIL, retry_after,
		    why);
}

/* Opens a WebSocket on the single-use URL Slack gave, in a free slot. */
static void
sl_conn_new(struct sl *sl, const char *url)
{
	struct ws_opts o = { .max_message = 4u << 20, .handshake_timeout = 15,
		.idle_timeout = sl->ping_interval * 3 };
	struct sl_conn *c = &sl->conns[0];
	int i;

	/* a free slot, else the oldest: only retiring ones are left when one opens */
	for (i = 0; i < SL_CONNS; i++)
		if (sl->conns[i].st == SLC_FREE || (c->st != SLC_FREE && sl->conns[i].gen < c->gen))
			c = &sl->conns[i];
	sl_conn_drop(c);
	c->sl = sl;
	c->gen = ++sl->gen;
	c->ws = ws_new(sl->env.base, sl->env.dns, sl->env.tls, url, &o, sl_ws_cb, c);
	c->st = c->ws != NULL ? SLC_OPENING : SLC_FREE;
	if (c->ws == NULL)
		sl_attempt_failed(sl, OUTQ_TRANSIENT, 0,
		    "apps.connections.open: the URL given is not a usable wss:// URL");
}

static void sl_called(void *arg, const struct http_response *r);

/* auth.test (the bot token works; our user id) or apps.connections.open (a fresh URL). */
static void
sl_call(struct sl *sl, int auth)
{
	if (sl->call != NULL)
		return;                 /* one on its way already: it reports */
	sl->calling_auth = auth;
	sl->call = sl_api(sl, auth ? "auth.test" : "apps.connections.open",
	    auth ? sl->bot_auth : sl->app_auth, NULL, sl_called, sl);
	if (sl->call == NULL)
		link_fail(kit_link(sl->kit), LINK_FATAL, 0, "api_url is not a usable URL");
}

/* Each answer moves one step: auth.test, apps.connections.open, the WebSocket. */
static void
sl_called(void *arg, const struct http_response *r)
{
	struct sl *sl = arg;
	int auth = sl->calling_auth;
	const char *method = auth ? "auth.test" : "apps.connections.open", *v;
	cJSON *o;
	double ra;
	char why[240];
	enum outq_result cls = sl_answer(r, method, &o, &ra, why, sizeof(why));

	sl->call = NULL;
	v = json_str(o, auth ? "user_id" : "url");
	if (cls == OUTQ_OK && (auth ? !sl_id_ok(v) : v == NULL || strncmp(v, "wss://", 6) != 0)) {
		cls = OUTQ_TRANSIENT;
		snprintf(why, sizeof(why), "%s: no usable %s in the answer", method,
		    auth ? "user_id" : "url");
	}
	if (cls == OUTQ_UNAUTHORIZED || cls == OUTQ_REJECTED)
		strncat(why, auth ? " (check bot_token)" : " (check app_token: an app-level "
		    "xapp- token with connections:write)", sizeof(why) - strlen(why) - 1);
	if (cls != OUTQ_OK)
		sl_attempt_failed(sl, cls, ra, why);
	else if (auth && !kit_stopping(sl->kit)) {
		if (strcmp(sl->self_id, v) != 0)
			log_info("%s: signed in as user %s", sl->name, v);
		snprintf(sl->self_id, sizeof(sl->self_id), "%s", v);
		sl_call(sl, 0);
	} else if (!kit_stopping(sl->kit))
		sl_conn_new(sl, v);
	cJSON_Delete(o);
}

/* One attempt of the link. */
static void
sl_connect(void *plat)
{
	struct sl *sl = plat;

	sl->journal_failed = 0;
	sl_call(sl, 1);
}

/* ---- envelopes ------------------------------------------------------------------ */

struct sl_commit {
	struct sl_conn *c;              /* the connection the envelope came on, */
	unsigned gen;                   /* if c still is that one */
	char envelope_id[SL_ID_MAX];
};

/* The journal holds the envelope's event (ok): acknowledge it on its connection. */
static void
sl_committed(void *arg, int ok)
{
	struct sl_commit *k = arg;
	struct sl *sl = k->c->sl;
	struct sl_conn *c = k->c->gen == k->gen ? k->c : NULL;
	char buf[SL_ID_MAX + 20];
	int i, n = snprintf(buf, sizeof(buf), "{\"envelope_id\":\"%s\"}", k->envelope_id);

	if (ok && (c == NULL || c->st == SLC_FREE || c->st == SLC_CLOSING ||
	    ws_send_text(c->ws, buf, (size_t)n) < 0))
		log_debug("%s: envelope %s not acknowledged: its connection is gone; Slack "
		    "delivers it again", sl->name, k->envelope_id);
	else if (!ok && !sl->journal_failed && !kit_stopping(sl->kit)) {
		sl->journal_failed = 1;
		log_warnx("%s: the journal cannot be written; events are not acknowledged (Slack "
		    "delivers them again)", sl->name);
		for (i = 0; i < SL_CONNS; i++)
			sl_conn_drop(&sl->conns[i]);
		link_fail(kit_link(sl->kit), LINK_TRANSIENT, 0,
		    intake_error(kit_intake(sl->kit)) != NULL ? intake_error(kit_intake(sl->kit)) :
		    "the journal cannot be written");
	}
	free(k);
}

/*
 * Hands an events_api envelope's message to the kit, then commits; the ack
 * follows in the commit's callback.  Other envelopes (slash commands,
 * interactive) are not handled: acked after the same commit.
 */
static void
sl_envelope(struct sl_conn *c, const cJSON *o, const char *type, const char *envelope_id)
{
	struct sl *sl = c->sl;
	struct sl_commit *k = xcalloc(1, sizeof(*k));
	struct sl_msg m;
	const char *why = "an envelope other than events_api";
	int pr = strcmp(type, "events_api") != 0 ? 0 : sl_event_parse(json_obj(json_obj(o,
	    "payload"), "event"), sl->self_id, sl->require_mention, &m, &why);

	if (pr < 0)
		log_warnx("%s: a message event without channel, user, ts or text; skipped",
		    sl->name);
	else if (pr == 0)
		log_debug("%s: skipped %s", sl->name, why);
	else {
		struct inbound in = { .chat_id = m.channel, .thread_id = m.thread_ts,
			.chat_type = m.dm ? CHAT_DM : m.thread_ts != NULL ? CHAT_THREAD : CHAT_GROUP,
			.user_id = m.user, .message_id = m.id, .text = m.text, .time = time(NULL),
			.addressed = m.addressed };

		if (kit_inbound(sl->kit, &in) == INTAKE_INVALID)
			log_warnx("%s: a message the journal cannot hold; skipped", sl->name);
		free(m.text);
	}
	/* a duplicate is acknowledged too, once the commit that holds it is on disk */
	k->c = c;
	k->gen = c->gen;
	snprintf(k->envelope_id, sizeof(k->envelope_id), "%s", envelope_id);
	kit_commit(sl->kit, NULL, sl_committed, k);
}

static void
sl_frame(struct sl_conn *c, const char *data, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(data, len);
	const char *type = json_str(o, "type"), *eid = json_str(o, "envelope_id");
	const char *reason = json_str(o, "reason");
	char esc[64];

	if (type == NULL)
		log_warnx("%s: a frame that is not JSON with a type; ignored", c->sl->name);
	else if (strcmp(type, "hello") == 0 && c->st == SLC_OPENING) {
		c->st = SLC_LIVE;
		link_up(kit_link(c->sl->kit));
	} else if (strcmp(type, "disconnect") == 0 && c->st != SLC_CLOSING) {
		log_info("%s: Slack asks for a new connection (%s)", c->sl->name, reason == NULL ?
		    "no reason" : log_escape(esc, sizeof(esc), reason, strlen(reason)));
		c->st = SLC_RETIRING;   /* delivers until Slack closes it */
		if (!sl_usable(c->sl))
			sl_call(c->sl, 0);
	} else if (eid != NULL && !sl_id_ok(eid))
		log_warnx("%s: an envelope with an unusable envelope_id; ignored", c->sl->name);
	else if (eid != NULL)
		sl_envelope(c, o, type, eid);
	cJSON_Delete(o);
}

static void
sl_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg)
{
	struct sl_conn *c = arg;
	char why[200];

	if (ws != c->ws || ev->type == WS_EV_OPEN || ev->type == WS_EV_BINARY)
		return;
	if (ev->type == WS_EV_TEXT) {
		sl_frame(c, ev->data, ev->len);
		return;
	}
	if (ev->type == WS_EV_CLOSE)
		snprintf(why, sizeof(why), "Slack closed the connection (%d)", ev->code);
	else if (ev->status != 0)
		snprintf(why, sizeof(why), "the Socket Mode URL was refused (HTTP %d)", ev->status);
	else
		snprintf(why, sizeof(why), "%s", ev->reason);
	sl_conn_gone(c, why);
}

/* Every ping_interval: a ping on each connection (three intervals without a byte end it). */
static void
sl_tick(evutil_socket_t fd, short what, void *arg)
{
	struct sl *sl = arg;
	int i;

	(void)fd;
	(void)what;
	for (i = 0; i < SL_CONNS; i++)
		if (sl->conns[i].st != SLC_FREE && sl->conns[i].st != SLC_CLOSING)
			(void)ws_ping(sl->conns[i].ws, "hermes", 6);
}

/* ---- sending ---------------------------------------------------------------------- */

static void
sl_sent(void *arg, const struct http_response *r)
{
	cJSON *o;
	double ra;
	char why[200];
	enum outq_result cls = sl_answer(r, "chat.postMessage", &o, &ra, why, sizeof(why));

	outq_result(arg, cls, ra, cls == OUTQ_OK ? NULL : why);
	cJSON_Delete(o);
}

/* One attempt: chat.postMessage in the chat (thread), text escaped, mrkdwn on. */
static void
sl_send(void *plat, const struct outq_piece *p, struct outq_attempt *a)
{
	struct sl *sl = plat;
	cJSON *o = cJSON_CreateObject();
	char *text = sl_escape(p->text), *js;

	if (o == NULL || !cJSON_AddStringToObject(o, "channel", p->chat_id) ||
	    !cJSON_AddStringToObject(o, "text", text) || !cJSON_AddTrueToObject(o, "mrkdwn") ||
	    (p->thread_id != NULL && !cJSON_AddStringToObject(o, "thread_ts", p->thread_id)) ||
	    (js = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	free(text);
	if (sl_api(sl, "chat.postMessage", sl->bot_auth, js, sl_sent, a) == NULL)
		outq_result(a, OUTQ_REJECTED, 0, "chat.postMessage: api_url is not usable");
	free(js);
}

/* ---- the platform ------------------------------------------------------------------ */

/* For a stop: every connection closed with 1000; what was not acked comes again. */
static void
sl_close(void *plat)
{
	struct sl *sl = plat;
	int i;

	sl->closing = 1;
	http_cancel(sl->call);
	sl->call = NULL;
	event_del(sl->tick_ev);
	for (i = 0; i < SL_CONNS; i++)
		if (sl->conns[i].st == SLC_FREE || ws_close(sl->conns[i].ws, 1000, "restarting") < 0)
			sl_conn_drop(&sl->conns[i]);
		else
			sl->conns[i].st = SLC_CLOSING;
	sl_maybe_closed(sl);
}

static const struct kit_ops sl_kit_ops = {
	.connect = sl_connect,
	.send = sl_send,
	.close = sl_close,
	.limits = { .max_text = SL_MAX_TEXT, .chat_rate = 1, .chat_burst = 3,
		.global_rate = 10, .global_burst = 20, .inflight = 8 },
};

static const char *const sl_keys[] = { "bot_token", "app_token", "api_url", "require_mention",
	"ping_interval", "limits", NULL };

static void sl_free(void *self);

static void
sl_secret_free(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
	free(s);
}

/* ping_interval: seconds between our pings (default 10); three without a byte end it. */
static int
sl_conf_ping(const struct plat_env *env, struct sl *sl, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(env->conf, "ping_interval");

	sl->ping_interval = cJSON_IsNumber(v) ? v->valuedouble : 10;
	if (v == NULL || cJSON_IsNull(v) || (cJSON_IsNumber(v) && v->valuedouble >= 0.2 &&
	    v->valuedouble <= 300))
		return 0;
	snprintf(err, errlen, "platforms.%s.ping_interval: must be a number of seconds from 0.2 "
	    "to 300", env->name);
	return -1;
}

/* The section's keys; the tokens become Authorization values. */
static int
sl_conf(const struct plat_env *env, struct sl *sl, char *err, size_t errlen)
{
	char *bot = NULL, *app = NULL;
	int rc = -1;

	if (kit_conf_secret(env, "bot_token", "SLACK_BOT_TOKEN", &bot, err, errlen) < 0 ||
	    kit_conf_secret(env, "app_token", "SLACK_APP_TOKEN", &app, err, errlen) < 0 ||
	    kit_conf_url(env, "api_url", SL_DEFAULT_API, &sl->api_url, err, errlen) < 0 ||
	    kit_conf_bool(env, "require_mention", &sl->require_mention, err, errlen) < 0 ||
	    sl_conf_ping(env, sl, err, errlen) < 0 || kit_conf_limits(env, sl->kit, err, errlen) < 0)
		;
	else if (strncmp(app, "xapp-", 5) != 0)
		snprintf(err, errlen, "platforms.%s.app_token: must be an app-level token (xapp-) "
		    "with connections:write", env->name);
	else {
		sl->bot_auth = xasprintf("Bearer %s", bot);
		sl->app_auth = xasprintf("Bearer %s", app);
		rc = 0;
	}
	sl_secret_free(bot);
	sl_secret_free(app);
	return rc;
}

static void *
sl_create(const struct plat_env *env, char *err, size_t errlen)
{
	struct sl *sl = xcalloc(1, sizeof(*sl));
	struct timeval tv;

	sl->require_mention = 1;
	sl->env = *env;
	sl->name = env->name;
	sl->kit = kit_new(env, &sl_kit_ops, sl);
	sl->http = http_client_new(env->base, env->dns, env->tls);
	if ((sl->tick_ev = event_new(env->base, -1, EV_PERSIST, sl_tick, sl)) == NULL)
		fatalx("%s: out of memory", __func__);
	if (sl_conf(env, sl, err, errlen) < 0) {
		sl_free(sl);
		return NULL;
	}
	tv.tv_sec = (time_t)sl->ping_interval;
	tv.tv_usec = (suseconds_t)((sl->ping_interval - (double)tv.tv_sec) * 1e6);
	evtimer_add(sl->tick_ev, &tv);
	return sl;
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
	http_cancel(sl->call);
	kit_free(sl->kit);
	http_client_free(sl->http);
	event_free(sl->tick_ev);
	sl_secret_free(sl->bot_auth);
	sl_secret_free(sl->app_auth);
	free(sl->api_url);
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
