/* feishu.c - the Feishu / Lark platform on the kit (see feishu.h). */
#include "platforms/feishu.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/evp.h>

#include "config.h"
#include "json.h"
#include "kit.h"
#include "log.h"
#include "net/http.h"
#include "net/ws.h"
#include "platforms/feishu_frame.h"
#include "util.h"

#define FS_MAX_TEXT     8000            /* hermes's chunk; the API takes 150 KB of text */
#define FS_PING_SEC     120             /* the SDKs' default PingInterval */
#define FS_EVENTS       1024            /* event ids remembered after their ack */

enum fs_phase {
	FS_IDLE = 0,                    /* no connection */
	FS_TOKEN,                       /* fetching the tenant_access_token */
	FS_BOT,                         /* GET /open-apis/bot/v3/info */
	FS_ENDPOINT,                    /* POST /callback/ws/endpoint */
	FS_OPENING,                     /* the WebSocket handshake */
	FS_UP,                          /* events flowing */
	FS_CLOSING,                     /* ws_close sent */
};

struct fs {
	struct kit *kit;                /* first: the kit's vtable entries find it */
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct http_client *http;
	char *name, *domain, *app_id, *app_secret;
	int require_mention;

	char *auth;                     /* "Bearer <tenant_access_token>", NULL when none */
	uint64_t token_expiry;          /* mono_usec */
	uint64_t token_margin;          /* a token this close to expiry is not used */
	struct http_call *token_call, *step_call;
	struct event *token_ev;
	char bot_open_id[128];

	struct ws *ws;
	unsigned ws_gen;                /* counts connections: a commit knows its own */
	enum fs_phase phase;
	int32_t service_id;
	uint64_t ping_usec;
	int pong_seen, journal_failed;
	struct event *ping_ev;
	struct fsf_frags *frags;
	char (*events)[72];             /* a ring of acknowledged event ids */
	size_t event_next;
};

/* ---- pure helpers ------------------------------------------------------- */

/* A secret's memory cleared, then freed.  NULL is a no-op. */
static void
fs_free_secret(char *s)
{
	if (s != NULL)
		explicit_bzero(s, strlen(s));
	free(s);
}

/* Untrusted text (a server's message, an id) made fit to log, cut to the buffer. */
static const char *
fs_safe(char *buf, size_t len, const char *s)
{
	return log_escape(buf, len, s != NULL ? s : "", s != NULL ? strlen(s) : 0);
}

char *
fs_domain_url(const char *d)
{
	size_t n;
	char *u;

	if (strcmp(d, "feishu") == 0)
		return xstrdup("https://open.feishu.cn");
	if (strcmp(d, "lark") == 0)
		return xstrdup("https://open.larksuite.com");
	if ((strncmp(d, "https://", 8) != 0 && strncmp(d, "http://", 7) != 0) ||
	    strpbrk(d, " \t\r\n?#") != NULL)
		return NULL;
	u = xstrdup(d);
	for (n = strlen(u); n > 0 && u[n - 1] == '/'; n--)
		u[n - 1] = '\0';
	return u;
}

void
fs_uuid(const char *key, char out[37])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0, i;
	char *p = out;

	if (EVP_Digest(key, strlen(key), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen < 16)
		fatalx("%s: sha256 failed", __func__);
	for (i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		snprintf(p, 3, "%02x", md[i]);
		p += 2;
	}
}

/* The mention whose key starts at s (the longest one), or NULL. */
static const cJSON *
fs_mention_at(const cJSON *mentions, const char *s, size_t *keylen)
{
	const cJSON *m, *best = NULL;
	const char *key;
	size_t n;

	*keylen = 0;
	cJSON_ArrayForEach(m, mentions)
		if ((key = json_str(m, "key")) != NULL && (n = strlen(key)) > *keylen &&
		    strncmp(s, key, n) == 0) {
			best = m;
			*keylen = n;
		}
	return best;
}

/* The text with each mention key replaced by "@name", ours removed; *us set if ours is there. */
static char *
fs_mentions_resolve(const char *text, const cJSON *mentions, const char *bot, int *us)
{
	size_t len = 0, cap = strlen(text) + 1, k;
	char *out = xmalloc(cap), *p;
	const cJSON *m;
	const char *id, *name, *s;

	*us = 0;
	for (s = text; *s != '\0';) {
		m = *s == '@' ? fs_mention_at(mentions, s, &k) : NULL;
		if (m == NULL) {
			(void)buf_append(&out, &len, &cap, SIZE_MAX, s++, 1);
			continue;
		}
		s += k;
		id = json_str(json_obj(m, "id"), "open_id");
		if (id != NULL && bot[0] != '\0' && strcmp(id, bot) == 0) {
			*us = 1;
			if (*s == ' ' && (len == 0 || out[len - 1] == ' '))
				s++;    /* no double blank where it was */
			continue;
		}
		name = json_str(m, "name");
		(void)buf_append(&out, &len, &cap, SIZE_MAX, "@", 1);
		(void)buf_append(&out, &len, &cap, SIZE_MAX, name != NULL ? name : "user",
		    strlen(name != NULL ? name : "user"));
	}
	out[len] = '\0';
	while (len > 0 && strchr(" \t\n", out[len - 1]) != NULL)
		out[--len] = '\0';
	p = out + strspn(out, " \t\n");
	memmove(out, p, strlen(p) + 1);
	return out;
}

/* The text of a text message's content (a JSON string itself), newly allocated. */
static char *
fs_content_text(const char *content)
{
	cJSON *c = cJSON_Parse(content);
	const char *t = json_str(c, "text");
	char *s = t != NULL ? xstrdup(t) : NULL;

	cJSON_Delete(c);
	return s;
}

int
fs_event_parse(const cJSON *ev, const char *bot, int require_mention, struct fs_msg *m,
    const char **why)
{
	const cJSON *e = json_obj(ev, "event"), *msg = json_obj(e, "message");
	const cJSON *sender = json_obj(e, "sender");
	const char *type = json_str(msg, "message_type"), *chat_type = json_str(msg, "chat_type");
	const char *content = json_str(msg, "content"), *sender_type, *th, *root;
	char *raw;
	int64_t ms = 0;
	int us;

	memset(m, 0, sizeof(*m));
	m->event_id = json_str(json_obj(ev, "header"), "event_id");
	m->message_id = json_str(msg, "message_id");
	m->chat_id = json_str(msg, "chat_id");
	m->user_id = json_str(json_obj(sender, "sender_id"), "open_id");
	sender_type = json_str(sender, "sender_type");
	if (m->message_id == NULL || m->chat_id == NULL || type == NULL || chat_type == NULL ||
	    content == NULL || m->user_id == NULL)
		return -1;
	if (strcmp(m->user_id, bot) == 0) {
		*why = "our own message";
		return 0;
	}
	if (sender_type == NULL || strcmp(sender_type, "user") != 0) {
		*why = "an app's message";
		return 0;
	}
	if (strcmp(type, "text") != 0) {
		*why = "a message that is not text";
		return 0;
	}
	if ((raw = fs_content_text(content)) == NULL)
		return -1;
	m->text = fs_mentions_resolve(raw, json_arr(msg, "mentions"), bot, &us);
	free(raw);
	m->group = strcmp(chat_type, "p2p") != 0;
	m->addressed = !m->group || !require_mention || us || m->text[0] == '/';
	th = json_str(msg, "thread_id");
	root = json_str(msg, "root_id");
	if (th != NULL && th[0] != '\0')
		m->thread = root != NULL && root[0] != '\0' ? root : m->message_id;
	m->time = json_i64(msg, "create_time", 0, INT64_MAX, &ms) == 0 ? (time_t)(ms / 1000) :
	    time(NULL);
	return 1;
}

enum outq_result
fs_send_classify(int status, int64_t code, int reply, int *refresh, int *pause_all)
{
	*refresh = *pause_all = 0;
	if (status == 200 && code == 0)
		return OUTQ_OK;
	switch (code) {
	case 99991661:
	case 99991663:
	case 99991664:
	case 99991668:
		*refresh = 1;           /* the token is invalid or expired: fetch it anew */
		return OUTQ_TRANSIENT;
	case 99991400:
		*pause_all = 1;         /* the app's request rate */
		return OUTQ_RETRY_AFTER;
	case 230020:                    /* the chat's message rate */
		return OUTQ_RETRY_AFTER;
	case 230011:                    /* the message replied to was recalled */
	case 231003:                    /* ... or deleted */
		return reply ? OUTQ_VARIANT : OUTQ_REJECTED;
	case 99991672:                  /* a scope not granted: may be granted meanwhile */
		return OUTQ_UNAUTHORIZED;
	}
	if (status == 429)
		return OUTQ_RETRY_AFTER;
	if (status == 0 || status >= 500)
		return OUTQ_TRANSIENT;
	if (status == 401 || status == 403)
		return OUTQ_UNAUTHORIZED;
	return OUTQ_REJECTED;
}

/* The integer value of key in the URL's query, or -1. */
static int64_t
fs_query_int(const char *url, const char *key)
{
	const char *q = strchr(url, '?');
	size_t n = strlen(key);
	long long v;
	char *end;

	while (q != NULL) {
		q++;
		if (strncmp(q, key, n) == 0 && q[n] == '=') {
			v = strtoll(q + n + 1, &end, 10);
			if (end == q + n + 1 || (*end != '\0' && *end != '&'))
				return -1;
			return v >= 0 && v <= INT32_MAX ? v : -1;
		}
		q = strchr(q, '&');
	}
	return -1;
}

unsigned
fs_client_config_ping(const char *json, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(json, len);
	int64_t v = 0;

	if (json_i64(o, "PingInterval", 1, 3600, &v) < 0)
		v = 0;
	cJSON_Delete(o);
	return (unsigned)v;
}

int
fs_endpoint_parse(int status, const char *body, size_t len, struct fs_endpoint *e, char *buf,
    size_t buflen)
{
	cJSON *o = cJSON_ParseWithLength(body, len);
	const cJSON *d = json_obj(o, "data");
	const char *url = json_str(d, "URL"), *msg = json_str(o, "msg");
	int64_t code = -1, ping = 0, svc;
	char m[100];
	int r = 1;

	memset(e, 0, sizeof(*e));
	(void)json_i64(o, "code", INT64_MIN, INT64_MAX, &code);
	if (status != 200)
		snprintf(buf, buflen, "the endpoint answered HTTP %d", status);
	else if (code == 1 || code == 1000040343 || code < 0)
		snprintf(buf, buflen, "the endpoint is busy (code %" PRId64 ")", code);
	else if (code != 0) {
		snprintf(buf, buflen, "the endpoint refuses the app: code %" PRId64 ": %s "
		    "(check app_id and app_secret; long connections need a self-built app)", code,
		    fs_safe(m, sizeof(m), msg));
		r = -1;
	} else if (url == NULL || strncmp(url, "ws", 2) != 0 || strpbrk(url, " \r\n") != NULL ||
	    (svc = fs_query_int(url, "service_id")) < 0)
		snprintf(buf, buflen, "the endpoint gave no usable URL with a service_id");
	else {
		e->url = xstrdup(url);
		e->service_id = (int32_t)svc;
		if (json_i64(json_obj(d, "ClientConfig"), "PingInterval", 1, 3600, &ping) == 0)
			e->ping_sec = (unsigned)ping;
		r = 0;
	}
	cJSON_Delete(o);
	return r;
}

/* ---- the long connection -------------------------------------------------- */

static void fs_step(struct fs *fs);
static void fs_token_fetch(struct fs *fs);
static void fs_token_forget(struct fs *fs, const char *auth);

/* Drops the connection and any step in progress (not a token fetch: sends share it). */
static void
fs_drop(struct fs *fs)
{
	if (fs->step_call != NULL)
		http_cancel(fs->step_call);
	fs->step_call = NULL;
	evtimer_del(fs->ping_ev);
	ws_free(fs->ws);
	fs->ws = NULL;
	fs->phase = FS_IDLE;
}

/* The attempt or the connection failed: the link schedules the next one. */
static void
fs_fail(struct fs *fs, enum link_fail kind, const char *why)
{
	fs_drop(fs);
	if (kit_stopping(fs->kit)) {
		kit_closed(fs->kit);
		return;
	}
	link_fail(kit_link(fs->kit), kind, 0, why);
}

static void
fs_send_frame(struct fs *fs, const struct fsf_frame *f)
{
	size_t n;
	unsigned char *b = fsf_encode(f, &n);

	if (fs->ws != NULL && ws_send_binary(fs->ws, b, n) < 0)
		log_debug("%s: a frame not sent: the connection is closing", fs->name);
	free(b);
}

static void
fs_ping_arm(struct fs *fs)
{
	struct timeval tv = { (time_t)(fs->ping_usec / 1000000),
		(suseconds_t)(fs->ping_usec % 1000000) };

	evtimer_add(fs->ping_ev, &tv);
}

/* Every PingInterval: a ping, unless the last one went unanswered (a dead connection). */
static void
fs_ping_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fs *fs = arg;
	struct fsf_frame f;
	char why[80];

	(void)fd;
	(void)what;
	if (!fs->pong_seen) {
		snprintf(why, sizeof(why), "no pong within %.0f s: the connection is dead",
		    (double)fs->ping_usec / 1e6);
		fs_fail(fs, LINK_TRANSIENT, why);
		return;
	}
	memset(&f, 0, sizeof(f));
	f.method = FSF_CONTROL;
	f.service = fs->service_id;
	fsf_header_add(&f, "type", "ping");
	fs_send_frame(fs, &f);
	fsf_clear(&f);
	fs->pong_seen = 0;
	fs_ping_arm(fs);
}

/* A pong; its ClientConfig may change the ping interval. */
static void
fs_pong(struct fs *fs, const struct fsf_frame *f)
{
	unsigned sec = f->payload_len > 0 ?
	    fs_client_config_ping((const char *)f->payload, f->payload_len) : 0;

	fs->pong_seen = 1;
	if (sec == 0 || (uint64_t)sec * 1000000 == fs->ping_usec)
		return;
	log_info("%s: the server sets the ping interval to %u s", fs->name, sec);
	fs->ping_usec = (uint64_t)sec * 1000000;
	fs_ping_arm(fs);
}

/* 1 when event id was acknowledged lately. */
static int
fs_event_seen(const struct fs *fs, const char *id)
{
	size_t i;

	for (i = 0; i < FS_EVENTS; i++)
		if (fs->events[i][0] != '\0' && strcmp(fs->events[i], id) == 0)
			return 1;
	return 0;
}

static void
fs_event_remember(struct fs *fs, const char *id)
{
	if (id[0] == '\0' || strlen(id) >= sizeof(fs->events[0]) || fs_event_seen(fs, id))
		return;
	snprintf(fs->events[fs->event_next], sizeof(fs->events[0]), "%s", id);
	fs->event_next = (fs->event_next + 1) % FS_EVENTS;
}

/* An event's frame, kept until the journal holds the event, then echoed as its ack. */
struct fs_ack {
	struct fs *fs;
	unsigned ws_gen;                /* the connection it came on */
	struct fsf_frame frame;
	char event_id[72];
	uint64_t start;
};

static void
fs_ack(struct fs *fs, struct fs_ack *c)
{
	char rt[24];

	snprintf(rt, sizeof(rt), "%" PRIu64, (mono_usec() - c->start) / 1000);
	fsf_header_add(&c->frame, "biz_rt", rt);
	fsf_set_payload(&c->frame, "{\"code\":200}", 12);
	fs_send_frame(fs, &c->frame);
	fs_event_remember(fs, c->event_id);
}

/* The commit's answer: acknowledge the event, or reconnect so that it comes again. */
static void
fs_committed(void *arg, int ok)
{
	struct fs_ack *c = arg;
	struct fs *fs = c->fs;
	const char *err;

	if (c->ws_gen == fs->ws_gen && fs->ws != NULL) {
		if (ok)
			fs_ack(fs, c);
		else if (!fs->journal_failed) {
			fs->journal_failed = 1;
			err = intake_error(kit_intake(fs->kit));
			log_warnx("%s: the journal cannot be written; events are left "
			    "unacknowledged for Feishu to push again", fs->name);
			fs_fail(fs, LINK_TRANSIENT, err != NULL ? err :
			    "the journal cannot be written");
		}
	}
	fsf_clear(&c->frame);
	free(c);
}

/* Stages the message an event carries, if any. */
static void
fs_message(struct fs *fs, const cJSON *ev)
{
	struct fs_msg m;
	struct inbound in;
	const char *why = "";
	int r = fs_event_parse(ev, fs->bot_open_id, fs->require_mention, &m, &why);

	if (r <= 0) {
		if (r < 0)
			log_warnx("%s: an im.message.receive_v1 without message_id, chat_id, "
			    "sender or text content; acknowledged and dropped", fs->name);
		else
			log_debug("%s: skipped %s", fs->name, why);
		return;
	}
	memset(&in, 0, sizeof(in));
	in.chat_id = m.chat_id;
	in.chat_type = !m.group ? CHAT_DM : m.thread != NULL ? CHAT_THREAD : CHAT_GROUP;
	in.thread_id = m.thread;
	in.user_id = m.user_id;
	in.message_id = m.message_id;
	in.text = m.text;
	in.time = m.time;
	in.addressed = m.addressed;
	if (kit_inbound(fs->kit, &in) == INTAKE_INVALID)
		log_warnx("%s: a message with an unusable id; skipped", fs->name);
	free(m.text);
}

/* One whole event: stage it, commit, and acknowledge it in the commit's callback. */
static void
fs_event(struct fs *fs, struct fsf_frame *f, const char *payload, size_t len)
{
	cJSON *ev = cJSON_ParseWithLength(payload, len);
	const char *id = json_str(json_obj(ev, "header"), "event_id");
	const char *type = json_str(json_obj(ev, "header"), "event_type");
	struct fs_ack *c = xcalloc(1, sizeof(*c));
	char safe[80];

	c->fs = fs;
	c->ws_gen = fs->ws_gen;
	c->start = mono_usec();
	c->frame = *f;
	memset(f, 0, sizeof(*f));
	snprintf(c->event_id, sizeof(c->event_id), "%s", id != NULL ? id : "");
	if (ev == NULL || id == NULL || type == NULL)
		log_warnx("%s: an event that is not JSON with a header (event_id, event_type); "
		    "acknowledged and dropped", fs->name);
	else if (fs_event_seen(fs, id)) {
		log_debug("%s: event %s pushed again; acknowledged", fs->name,
		    fs_safe(safe, sizeof(safe), id));
		fs_ack(fs, c);
		fsf_clear(&c->frame);
		free(c);
		cJSON_Delete(ev);
		return;
	} else if (strcmp(type, "im.message.receive_v1") == 0)
		fs_message(fs, ev);
	else
		log_debug("%s: an event of type %s; acknowledged", fs->name,
		    fs_safe(safe, sizeof(safe), type));
	cJSON_Delete(ev);
	kit_commit(fs->kit, NULL, fs_committed, c);
}

/* A data frame: an event (maybe one fragment of it); cards and others are not ours. */
static void
fs_data(struct fs *fs, struct fsf_frame *f)
{
	const char *type = fsf_header(f, "type"), *sum_s = fsf_header(f, "sum");
	const char *seq_s = fsf_header(f, "seq"), *why = "";
	unsigned long sum = sum_s != NULL ? strtoul(sum_s, NULL, 10) : 1;
	unsigned long seq = seq_s != NULL ? strtoul(seq_s, NULL, 10) : 0;
	unsigned char *whole = NULL;
	size_t len = 0;
	int r;

	if (type == NULL || strcmp(type, "event") != 0 || fs->journal_failed)
		return;
	if (sum <= 1) {
		fs_event(fs, f, f->payload != NULL ? (const char *)f->payload : "", f->payload_len);
		return;
	}
	r = fsf_frags_add(fs->frags, fsf_header(f, "message_id"), sum > 65536 ? 65536 :
	    (unsigned)sum, seq > 65536 ? 65536 : (unsigned)seq, f->payload != NULL ?
	    (const void *)f->payload : "", f->payload_len, mono_usec(), &whole, &len, &why);
	if (r < 0)
		log_warnx("%s: a fragment refused: %s", fs->name, why);
	if (r == 1)
		fs_event(fs, f, (const char *)whole, len);
	free(whole);
}

static void
fs_frame(struct fs *fs, const char *data, size_t len)
{
	struct fsf_frame f;
	const char *why = "", *type;

	if (fsf_decode(data, len, &f, &why) < 0) {
		log_warnx("%s: a frame that is not a pbbp2.Frame (%s); ignored", fs->name, why);
		return;
	}
	type = fsf_header(&f, "type");
	if (f.method == FSF_CONTROL && type != NULL && strcmp(type, "pong") == 0)
		fs_pong(fs, &f);
	else if (f.method == FSF_DATA)
		fs_data(fs, &f);
	fsf_clear(&f);
}

static void
fs_opened(struct fs *fs)
{
	fs->phase = FS_UP;
	fs->pong_seen = 1;
	fs->journal_failed = 0;
	link_up(kit_link(fs->kit));
	fs_ping_cb(-1, 0, fs);          /* the first ping now, as the SDKs do */
}

/* The connection ended: on a stop that is the end, else decide how to go on. */
static void
fs_ws_ended(struct fs *fs, const struct ws_event *ev)
{
	char why[200];

	if (fs->phase == FS_CLOSING || kit_stopping(fs->kit)) {
		fs_drop(fs);
		kit_closed(fs->kit);
		return;
	}
	if (ev->type == WS_EV_ERROR && ev->status == 403) {
		fs_fail(fs, LINK_UNAUTHORIZED_FAIL, "the long connection is refused: forbidden "
		    "(HTTP 403)");
		return;
	}
	if (ev->type == WS_EV_ERROR && ev->status != 0)
		snprintf(why, sizeof(why), "the long connection handshake failed: HTTP %d",
		    ev->status);
	else if (ev->type == WS_EV_ERROR)
		snprintf(why, sizeof(why), "the long connection failed: %.150s", ev->reason);
	else
		snprintf(why, sizeof(why), "the server closed the long connection (%d)", ev->code);
	fs_fail(fs, LINK_TRANSIENT, why);
}

static void
fs_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg)
{
	struct fs *fs = arg;

	if (ws != fs->ws)
		return;
	switch (ev->type) {
	case WS_EV_OPEN:
		fs_opened(fs);
		break;
	case WS_EV_BINARY:
		fs_frame(fs, ev->data, ev->len);
		break;
	case WS_EV_TEXT:
		log_debug("%s: a text frame ignored (frames are binary)", fs->name);
		break;
	case WS_EV_CLOSE:
	case WS_EV_ERROR:
		fs_ws_ended(fs, ev);
		break;
	}
}

static void
fs_endpoint_done(void *arg, const struct http_response *r)
{
	struct fs *fs = arg;
	struct ws_opts o = { .handshake_timeout = 30 };
	struct fs_endpoint e;
	char why[300];
	int rc = fs_endpoint_parse(r->status, r->body, r->body_len, &e, why, sizeof(why));

	fs->step_call = NULL;
	if (r->status == 0)
		snprintf(why, sizeof(why), "POST /callback/ws/endpoint: %.200s", r->error);
	if (rc != 0) {
		fs_fail(fs, rc < 0 ? LINK_UNAUTHORIZED_FAIL : LINK_TRANSIENT, why);
		return;
	}
	fs->service_id = e.service_id;
	fs->ping_usec = (uint64_t)(e.ping_sec != 0 ? e.ping_sec : FS_PING_SEC) * 1000000;
	fs->phase = FS_OPENING;
	fs->ws_gen++;
	fs->ws = ws_new(fs->base, fs->dns, fs->tls, e.url, &o, fs_ws_cb, fs);
	free(e.url);
	if (fs->ws == NULL)
		fs_fail(fs, LINK_TRANSIENT, "the endpoint's WebSocket URL is not usable");
}

static void
fs_bot_done(void *arg, const struct http_response *r)
{
	struct fs *fs = arg;
	cJSON *o = cJSON_ParseWithLength(r->body, r->body_len);
	const char *id = json_str(json_obj(o, "bot"), "open_id");
	int64_t code = -1;
	int refresh, all;
	enum outq_result res;
	char why[200], m[100];

	fs->step_call = NULL;
	(void)json_i64(o, "code", INT64_MIN, INT64_MAX, &code);
	res = fs_send_classify(r->status, code, 0, &refresh, &all);
	if (res == OUTQ_OK && id != NULL && id[0] != '\0' && strlen(id) < sizeof(fs->bot_open_id)) {
		snprintf(fs->bot_open_id, sizeof(fs->bot_open_id), "%s", id);
		fs_step(fs);
	} else {
		snprintf(why, sizeof(why), "GET /open-apis/bot/v3/info: HTTP %d, code %" PRId64
		    ": %s", r->status, code, r->status == 0 ? r->error :
		    fs_safe(m, sizeof(m), json_str(o, "msg")));
		if (refresh)
			fs_token_forget(fs, fs->auth);
		fs_fail(fs, res == OUTQ_REJECTED || res == OUTQ_UNAUTHORIZED ?
		    LINK_UNAUTHORIZED_FAIL : LINK_TRANSIENT, why);
	}
	cJSON_Delete(o);
}

/* The next step of a connection attempt: the bot's identity, then the endpoint. */
static void
fs_step(struct fs *fs)
{
	struct http_req req = { .timeout = 30, .max_body = 65536 };
	const char *headers[] = { "locale: zh", NULL };
	cJSON *b = NULL;
	char *url, *body = NULL;
	int bot = fs->bot_open_id[0] == '\0';

	url = xasprintf("%s%s", fs->domain, bot ? "/open-apis/bot/v3/info" :
	    "/callback/ws/endpoint");
	req.url = url;
	if (bot) {
		req.method = "GET";
		req.authorization = fs->auth;
	} else {
		b = cJSON_CreateObject();
		if (b == NULL || !cJSON_AddStringToObject(b, "AppID", fs->app_id) ||
		    !cJSON_AddStringToObject(b, "AppSecret", fs->app_secret) ||
		    (body = cJSON_PrintUnformatted(b)) == NULL)
			fatalx("%s: out of memory", __func__);
		req.method = "POST";
		req.headers = headers;
		req.content_type = "application/json";
		req.body = body;
		req.body_len = strlen(body);
	}
	fs->phase = bot ? FS_BOT : FS_ENDPOINT;
	fs->step_call = http_request(fs->http, &req, bot ? fs_bot_done : fs_endpoint_done, fs);
	fs_free_secret(body);
	cJSON_Delete(b);
	free(url);
	if (fs->step_call == NULL)
		fs_fail(fs, LINK_FATAL, "domain is not a usable URL");
}

/* ---- the tenant_access_token ----------------------------------------------- */

/*
 * An app token fetched with the app's credentials, used as a Bearer, fetched
 * again before it expires and when the API refuses it.  DingTalk, QQ and WeCom
 * have the same life cycle: a candidate for the kit.
 */

static int
fs_token_valid(const struct fs *fs)
{
	return fs->auth != NULL && mono_usec() + fs->token_margin < fs->token_expiry;
}

static void
fs_token_timer(struct fs *fs, uint64_t usec)
{
	struct timeval tv = { (time_t)(usec / 1000000), (suseconds_t)(usec % 1000000) };

	evtimer_add(fs->token_ev, &tv);
}

/* Keeps a new token; it is fetched again once half its life (or all but 30 min) is gone. */
static int
fs_token_take(struct fs *fs, const struct http_response *r, char *why, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(r->body, r->body_len);
	const char *tok = json_str(o, "tenant_access_token"), *msg = json_str(o, "msg");
	int64_t code = -1, expire = 0;
	char m[100];
	int rc = -1;

	(void)json_i64(o, "code", INT64_MIN, INT64_MAX, &code);
	if (r->status == 200 && code == 0 && tok != NULL && tok[0] != '\0' && strlen(tok) < 1024 &&
	    strpbrk(tok, " \t\r\n") == NULL && json_i64(o, "expire", 1, 86400, &expire) == 0) {
		fs_free_secret(fs->auth);
		fs->auth = xasprintf("Bearer %s", tok);
		fs->token_expiry = mono_usec() + (uint64_t)expire * 1000000;
		fs->token_margin = (uint64_t)(expire < 240 ? expire / 4.0 * 1e6 : 60e6);
		fs_token_timer(fs, (uint64_t)(expire - 1800 > expire / 2 ? expire - 1800 :
		    expire / 2) * 1000000);
		rc = 0;
	} else if (r->status == 0)
		snprintf(why, len, "tenant_access_token: %.200s", r->error);
	else {
		snprintf(why, len, "tenant_access_token: HTTP %d, code %" PRId64 ": %s",
		    r->status, code, msg != NULL ? fs_safe(m, sizeof(m), msg) :
		    "no token in the answer");
		rc = code > 0 && r->status < 500 ? -2 : -1;
	}
	cJSON_Delete(o);
	return rc;
}

static void
fs_token_done(void *arg, const struct http_response *r)
{
	struct fs *fs = arg;
	char why[300];
	int rc;

	fs->token_call = NULL;
	rc = fs_token_take(fs, r, why, sizeof(why));
	if (kit_stopping(fs->kit))
		evtimer_del(fs->token_ev);
	else if (rc == 0 && fs->phase == FS_TOKEN)
		fs_step(fs);
	else if (rc < 0 && fs->phase == FS_TOKEN)
		fs_fail(fs, rc == -2 ? LINK_UNAUTHORIZED_FAIL : LINK_TRANSIENT, why);
	else if (rc < 0) {
		log_warnx("%s: %s; trying again in 30 s", fs->name, why);
		fs_token_timer(fs, 30 * 1000000ULL);
	}
}

static void
fs_token_fetch(struct fs *fs)
{
	struct http_req req = { .method = "POST", .timeout = 30, .max_body = 65536,
		.content_type = "application/json" };
	cJSON *b = cJSON_CreateObject();
	char *body, *url;

	if (fs->token_call != NULL) {
		cJSON_Delete(b);
		return;
	}
	if (b == NULL || !cJSON_AddStringToObject(b, "app_id", fs->app_id) ||
	    !cJSON_AddStringToObject(b, "app_secret", fs->app_secret) ||
	    (body = cJSON_PrintUnformatted(b)) == NULL)
		fatalx("%s: out of memory", __func__);
	url = xasprintf("%s/open-apis/auth/v3/tenant_access_token/internal", fs->domain);
	req.url = url;
	req.body = body;
	req.body_len = strlen(body);
	fs->token_call = http_request(fs->http, &req, fs_token_done, fs);
	fs_free_secret(body);
	free(url);
	cJSON_Delete(b);
	if (fs->token_call == NULL && fs->phase == FS_TOKEN)
		fs_fail(fs, LINK_FATAL, "domain is not a usable URL");
}

/* The token auth was refused: a new one is fetched (unless another replaced it already). */
static void
fs_token_forget(struct fs *fs, const char *auth)
{
	if (fs->auth == NULL || auth == NULL || strcmp(fs->auth, auth) != 0)
		return;
	fs_free_secret(fs->auth);
	fs->auth = NULL;
	fs_token_fetch(fs);
}

static void
fs_token_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	fs_token_fetch(arg);
}

/* One connection attempt: a token if needed, the bot's identity once, the endpoint, the socket. */
static void
fs_connect(void *plat)
{
	struct fs *fs = plat;

	fs_drop(fs);
	if (fs_token_valid(fs)) {
		fs_step(fs);
		return;
	}
	fs->phase = FS_TOKEN;
	fs_token_fetch(fs);
}

/* ---- sending ---------------------------------------------------------------- */

struct fs_send {
	struct fs *fs;
	struct outq_attempt *a;
	char *chat, *auth;
	int reply;
};

static void
fs_send_free(struct fs_send *s)
{
	fs_free_secret(s->auth);
	free(s->chat);
	free(s);
}

static void
fs_sent(void *arg, const struct http_response *r)
{
	struct fs_send *s = arg;
	struct fs *fs = s->fs;
	cJSON *o = r->status != 0 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
	const char *msg = json_str(o, "msg"), *reset;
	int64_t code = -1;
	int refresh, all;
	double ra = 1;
	enum outq_result res;
	char why[300], chat[80], m[100];

	(void)json_i64(o, "code", INT64_MIN, INT64_MAX, &code);
	res = fs_send_classify(r->status, code, s->reply, &refresh, &all);
	(void)fs_safe(chat, sizeof(chat), s->chat);
	if (r->status == 0)
		snprintf(why, sizeof(why), "sending to %s: %.150s", chat, r->error);
	else
		snprintf(why, sizeof(why), "sending to %s: HTTP %d, code %" PRId64 ": %s",
		    chat, r->status, code, fs_safe(m, sizeof(m), msg));
	if (refresh)
		fs_token_forget(fs, s->auth);
	reset = http_response_header(r, "x-ogw-ratelimit-reset");
	if (res == OUTQ_RETRY_AFTER && reset != NULL && strtod(reset, NULL) > 0)
		ra = strtod(reset, NULL) < 3600 ? strtod(reset, NULL) : 3600;
	if (all)
		outq_pause(kit_outq(fs->kit), ra);
	outq_result(s->a, res, ra, res == OUTQ_OK ? NULL : why);
	cJSON_Delete(o);
	fs_send_free(s);
}

/* 1 when id may stand in a URL path as it is. */
static int
fs_id_ok(const char *id)
{
	return id[0] != '\0' && strlen(id) < 128 &&
	    strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") ==
	    strlen(id);
}

/* The body of a send: a create in the chat, or a reply to target (in its thread). */
static char *
fs_send_body(const struct outq_piece *p, const char *target)
{
	cJSON *o = cJSON_CreateObject(), *c = cJSON_CreateObject();
	char uuid[37], *content, *s;

	fs_uuid(p->key, uuid);
	if (o == NULL || c == NULL || !cJSON_AddStringToObject(c, "text", p->text) ||
	    (content = cJSON_PrintUnformatted(c)) == NULL)
		fatalx("%s: out of memory", __func__);
	if ((target == NULL && !cJSON_AddStringToObject(o, "receive_id", p->chat_id)) ||
	    !cJSON_AddStringToObject(o, "msg_type", "text") ||
	    !cJSON_AddStringToObject(o, "content", content) ||
	    !cJSON_AddStringToObject(o, "uuid", uuid) ||
	    (target != NULL &&
	    !cJSON_AddBoolToObject(o, "reply_in_thread", p->thread_id != NULL)) ||
	    (s = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	free(content);
	cJSON_Delete(c);
	cJSON_Delete(o);
	return s;
}

static void
fs_send(void *plat, const struct outq_piece *p, struct outq_attempt *a)
{
	struct fs *fs = plat;
	struct http_req req = { .method = "POST", .content_type = "application/json",
		.timeout = 30, .max_body = 1 << 20 };
	/* the first piece replies to its message, the rest go to the thread or the chat */
	const char *target = p->variant > 0 ? NULL : p->reply_to != NULL ? p->reply_to :
	    p->thread_id;
	struct fs_send *s;
	char *body, *url;

	if (!fs_token_valid(fs)) {
		fs_token_fetch(fs);
		outq_result(a, OUTQ_TRANSIENT, 0, "waiting for a tenant_access_token");
		return;
	}
	if (target != NULL && !fs_id_ok(target)) {
		outq_result(a, OUTQ_REJECTED, 0, "not a usable message id to reply to");
		return;
	}
	body = fs_send_body(p, target);
	url = target != NULL ? xasprintf("%s/open-apis/im/v1/messages/%s/reply", fs->domain,
	    target) : xasprintf("%s/open-apis/im/v1/messages?receive_id_type=chat_id", fs->domain);
	s = xcalloc(1, sizeof(*s));
	s->fs = fs;
	s->a = a;
	s->chat = xstrdup(p->chat_id);
	s->auth = xstrdup(fs->auth);
	s->reply = target != NULL;
	req.url = url;
	req.authorization = fs->auth;
	req.body = body;
	req.body_len = strlen(body);
	if (http_request(fs->http, &req, fs_sent, s) == NULL) {
		outq_result(a, OUTQ_REJECTED, 0, "not a usable URL");
		fs_send_free(s);
	}
	free(url);
	free(body);
}

/* ---- the platform ------------------------------------------------------------ */

/* At a stop: the socket closes; events not acknowledged are pushed again to the next worker. */
static void
fs_close(void *plat)
{
	struct fs *fs = plat;

	if (fs->step_call != NULL)
		http_cancel(fs->step_call);
	fs->step_call = NULL;
	evtimer_del(fs->ping_ev);
	evtimer_del(fs->token_ev);
	if (fs->ws == NULL || fs->phase != FS_UP || ws_close(fs->ws, 1000, "restarting") < 0) {
		fs_drop(fs);
		kit_closed(fs->kit);
		return;
	}
	fs->phase = FS_CLOSING;
}

static const struct kit_ops fs_kit_ops = {
	.connect = fs_connect,
	.send = fs_send,
	.close = fs_close,
	.limits = { .max_text = FS_MAX_TEXT, .chat_rate = 5, .chat_burst = 5,
		.global_rate = 50, .global_burst = 50, .inflight = 8, .variants = 2,
		.retry_min_usec = 500000 },
	.link = { .backoff_min_usec = 1000000, .backoff_max_usec = 60000000 },
};

static const char *const fs_keys[] = { "app_id", "app_secret", "domain", "require_mention",
	NULL };

/* The config: credentials, the domain (config, else FEISHU_DOMAIN, else feishu). */
static int
fs_configure(struct fs *fs, const struct plat_env *env, char *err, size_t errlen)
{
	const char *d = NULL;
	char *envd = NULL;

	if (kit_conf_secret(env, "app_id", "FEISHU_APP_ID", &fs->app_id, err, errlen) < 0 ||
	    kit_conf_secret(env, "app_secret", "FEISHU_APP_SECRET", &fs->app_secret, err,
	    errlen) < 0 || kit_conf_str(env, "domain", &d, err, errlen) < 0 ||
	    kit_conf_bool(env, "require_mention", &fs->require_mention, err, errlen) < 0)
		return -1;
	if (d == NULL)
		d = envd = config_secret("FEISHU_DOMAIN");
	fs->domain = fs_domain_url(d != NULL && d[0] != '\0' ? d : "feishu");
	free(envd);
	if (fs->domain == NULL) {
		snprintf(err, errlen, "platforms.%s.domain: must be feishu, lark or an http(s):// "
		    "URL (or set FEISHU_DOMAIN)", env->name);
		return -1;
	}
	return 0;
}

static void fs_free(void *self);

static void *
fs_create(const struct plat_env *env, char *err, size_t errlen)
{
	struct fs *fs = xcalloc(1, sizeof(*fs));

	fs->require_mention = 1;
	fs->name = xstrdup(env->name);
	if (fs_configure(fs, env, err, errlen) < 0) {
		fs_free(fs);
		return NULL;
	}
	fs->base = env->base;
	fs->dns = env->dns;
	fs->tls = env->tls;
	fs->http = http_client_new(env->base, env->dns, env->tls);
	fs->ping_ev = evtimer_new(env->base, fs_ping_cb, fs);
	fs->token_ev = evtimer_new(env->base, fs_token_cb, fs);
	if (fs->ping_ev == NULL || fs->token_ev == NULL)
		fatalx("%s: out of memory", __func__);
	fs->frags = fsf_frags_new();
	fs->events = xcalloc(FS_EVENTS, sizeof(*fs->events));
	fs->kit = kit_new(env, &fs_kit_ops, fs);
	return fs;
}

static void
fs_free(void *self)
{
	struct fs *fs = self;

	if (fs == NULL)
		return;
	kit_free(fs->kit);
	ws_free(fs->ws);
	if (fs->step_call != NULL)
		http_cancel(fs->step_call);
	if (fs->token_call != NULL)
		http_cancel(fs->token_call);
	http_client_free(fs->http);
	if (fs->ping_ev != NULL)
		event_free(fs->ping_ev);
	if (fs->token_ev != NULL)
		event_free(fs->token_ev);
	fsf_frags_free(fs->frags);
	free(fs->events);
	fs_free_secret(fs->app_id);
	fs_free_secret(fs->app_secret);
	fs_free_secret(fs->auth);
	free(fs->domain);
	free(fs->name);
	free(fs);
}

const struct platform_ops feishu_ops = {
	.name = "feishu",
	.max_text = FS_MAX_TEXT,
	.keys = fs_keys,
	.create = fs_create,
	.start = kit_vt_start,
	.send = kit_vt_send,
	.stop = kit_vt_stop,
	.free = fs_free,
};
