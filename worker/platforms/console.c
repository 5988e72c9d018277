/*
 * console.c - the local console platform (HTTP API + web page on evhttp).
 *
 * Inbound: POST /v1/messages hands the message to the hub and keeps it in
 * the "inbox" until the hub calls done; a ?wait request is answered then
 * (or when its wait ends) with the replies collected for it.
 * Outbound: send() appends to one bounded log with gateway-wide increasing
 * ids, wakes the long-polls of that chat and completes asynchronously.
 * Ids come from one counter shared by inbound and outbound messages; its
 * high-water mark is reserved on disk in blocks so an id is never reused,
 * not even after a crash (the hub deduplicates inbound ids).
 *
 * Persistence: at stop, console.outbox.json and console.inbox.json are
 * written atomically.  Between stops every accepted message, every done
 * and every sent message is appended to console.journal (one JSON line
 * each, written once per loop turn before any answer leaves), so a worker
 * that is killed loses nothing either; the journal is folded into the two
 * files at start, at stop and whenever it grows past CON_JOURNAL_MAX.
 */
#include "console.h"
#include "console_page.h"
#include "config.h"
#include "hub.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include <cjson/cJSON.h>

#define CON_MAX_BODY            65536           /* bytes; more -> 413 */
#define CON_MAX_HEADERS         16384           /* bytes of request headers */
#define CON_TIMEOUT_SEC         30              /* idle / header / write timeout */
#define CON_MAX_WAIT_USEC       (60ULL * 1000000)       /* ?wait is clamped to this */
#define CON_MAX_ID_LEN          128             /* chat_id, user_id, user_name */
#define CON_LOG_MAX_MSGS        1000            /* outbound log bound (gateway-wide) */
#define CON_LOG_MAX_BYTES       (4u << 20)      /* ... and its text bytes */
#define CON_PAGE_MAX_MSGS       500             /* messages in one GET answer */
#define CON_ID_BLOCK            65536           /* ids reserved on disk at a time */
#define CON_STATE_MAX           (64u << 20)     /* largest state file read */
#define CON_FLUSH_MSEC          500             /* stop: time replies get to flush */
#define CON_BACKOFF_MIN_MSEC    250
#define CON_BACKOFF_MAX_MSEC    30000
#define CON_INBOX_BUCKETS       256
#define CON_JOURNAL_MAX         (8u << 20)      /* bytes before folding it */

/* One outbound message in the log. */
struct con_msg {
	TAILQ_ENTRY(con_msg) entry;
	uint64_t id;
	char *chat_id;
	char *thread_id;                /* NULL when none */
	char *reply_to;                 /* NULL when none */
	char *text;
	time_t time;
};
TAILQ_HEAD(con_msg_list, con_msg);

/* One inbound message the hub has not called done for yet. */
struct con_inbox {
	TAILQ_ENTRY(con_inbox) entry;   /* all, in id order */
	LIST_ENTRY(con_inbox) bucket;   /* lookup by id */
	struct console *c;
	uint64_t id;
	char idstr[24];
	char *chat_id;
	char *user_id;
	char *user_name;                /* may be NULL */
	char *text;
	time_t time;
	int replay;                     /* saved by a previous worker, not yet handed over */
	struct evhttp_request *req;     /* a POST ?wait still waiting, or NULL */
	struct event *timer;            /* its wait deadline */
	cJSON *replies;                 /* collected while req waits */
};
TAILQ_HEAD(con_inbox_list, con_inbox);
LIST_HEAD(con_inbox_bucket, con_inbox);

/* One parked long-poll GET. */
struct con_waiter {
	TAILQ_ENTRY(con_waiter) entry;
	struct console *c;
	struct evhttp_request *req;
	struct event *timer;
	char *chat_id;
	uint64_t after;
};
TAILQ_HEAD(con_waiter_list, con_waiter);

/* One send() whose callback is still due (callbacks run from the loop). */
struct con_sent {
	STAILQ_ENTRY(con_sent) entry;
	plat_sent_fn cb;
	void *arg;
	int ok;
};
STAILQ_HEAD(con_sent_list, con_sent);

struct console {
	struct event_base *base;
	struct hub *hub;
	char *name;
	char *state_dir;
	int listen_fd;                  /* inherited socket (never closed) or -1 */
	struct sockaddr_storage addr;   /* configured address (when binding) */
	socklen_t addrlen;
	char *addr_text;                /* "127.0.0.1:8642" */
	int loopback;                   /* the listening address is loopback */
	char *token;                    /* NULL when none */

	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	struct event *retry_ev;
	unsigned backoff_msec;
	int started, stopping, stopped;

	uint64_t next_id;               /* next id handed out */
	uint64_t reserved;              /* ids below this are reserved on disk */
	uint64_t last_out;              /* highest outbound id */

	struct con_msg_list log;
	size_t log_count, log_bytes;
	struct con_inbox_list inbox;
	struct con_inbox_bucket buckets[CON_INBOX_BUCKETS];
	struct con_waiter_list waiters;
	struct con_sent_list sent;
	struct event *sent_ev;
	struct event *replay_ev;
	cJSON *replay;                  /* loaded inbox waiting to be replayed */
	int journal_fd;                 /* console.journal, or -1 */
	size_t journal_bytes;
	struct evbuffer *journal_buf;   /* lines not yet written */
	struct event *journal_ev;

	unsigned inflight;              /* replies not yet written out */
	struct event *flush_ev;         /* stop: finishes once flushed or late */
	plat_stopped_fn stopped_cb;
	void *stopped_arg;
};

static const char *const console_keys[] = { "listen", "token", NULL };

/* ---------------------------------------------------------------- */
/* Small helpers                                                    */
/* ---------------------------------------------------------------- */

/* Checks that s (len bytes) is well-formed UTF-8 without NUL bytes. */
static int
utf8_valid(const unsigned char *s, size_t len)
{
	size_t i = 0;

	while (i < len) {
		unsigned char ch = s[i];
		size_t n;
		uint32_t cp;

		if (ch == 0)
			return 0;
		if (ch < 0x80) {
			i++;
			continue;
		}
		if ((ch & 0xe0) == 0xc0) {
			n = 1;
			cp = ch & 0x1f;
		} else if ((ch & 0xf0) == 0xe0) {
			n = 2;
			cp = ch & 0x0f;
		} else if ((ch & 0xf8) == 0xf0) {
			n = 3;
			cp = ch & 0x07;
		} else
			return 0;
		if (i + n >= len)
			return 0;
		for (size_t k = 1; k <= n; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) ||
		    (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return 0;
		i += n + 1;
	}
	return 1;
}

/* An identifier: 1..CON_MAX_ID_LEN bytes of UTF-8 without control characters. */
static int
ident_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len > CON_MAX_ID_LEN)
		return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 0;
	return utf8_valid((const unsigned char *)s, len);
}

/* Compares in time that depends only on the secret's length. */
static int
token_equal(const char *given, size_t glen, const char *secret)
{
	size_t slen = strlen(secret);
	volatile unsigned char d = glen != slen;

	for (size_t i = 0; i < slen; i++)
		d |= (unsigned char)secret[i] ^ (unsigned char)(i < glen ? given[i] : 0);
	return d == 0;
}

static int
addr_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		return (ntohl(in->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		const uint8_t *b = in6->sin6_addr.s6_addr;
		static const uint8_t v4mapped[12] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };
		if (IN6_IS_ADDR_LOOPBACK(&in6->sin6_addr))
			return 1;
		return memcmp(b, v4mapped, 12) == 0 && b[12] == 127;
	}
	return 0;
}

/* Formats an address as "1.2.3.4:80" or "[::1]:80". */
static char *
addr_format(const struct sockaddr *sa)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		return xasprintf("%s:%u", host, ntohs(in->sin_port));
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		return xasprintf("[%s]:%u", host, ntohs(in6->sin6_port));
	}
	return xstrdup("?");
}

/* Parses "HOST:PORT" or "[V6]:PORT" with a numeric host or "localhost". */
static int
listen_parse(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	const char *colon = strrchr(s, ':');
	char host[INET6_ADDRSTRLEN + 2];
	uint64_t port;
	size_t hlen;

	if (colon == NULL || parse_u64(colon + 1, 65535, &port) == -1)
		return -1;
	hlen = (size_t)(colon - s);
	if (hlen >= 2 && s[0] == '[' && s[hlen - 1] == ']') {
		s++;
		hlen -= 2;
	}
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (strcmp(host, "localhost") == 0)
		strcpy(host, "127.0.0.1");
	memset(ss, 0, sizeof(*ss));
	struct sockaddr_in *in = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		*len = sizeof(*in);
		return 0;
	}
	if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*in6);
		return 0;
	}
	return -1;
}

static char *
state_path(const struct console *c, const char *suffix)
{
	return xasprintf("%s/%s.%s", c->state_dir, c->name, suffix);
}

/* ---------------------------------------------------------------- */
/* Ids                                                              */
/* ---------------------------------------------------------------- */

/* Writes the reserved high-water mark; ids below it are never handed out again. */
static void
seq_write(struct console *c, uint64_t mark)
{
	char *path = state_path(c, "seq");
	char buf[32];
	int n = snprintf(buf, sizeof(buf), "%" PRIu64 "\n", mark);

	if (mkdir_p(c->state_dir, 0700) == -1 ||
	    write_file_atomic(path, buf, (size_t)n, 0600) == -1)
		log_warn("console: cannot write %s", path);
	free(path);
}

/* Hands out the next id, reserving a new block on disk when needed. */
static uint64_t
id_next(struct console *c)
{
	if (c->next_id >= c->reserved) {
		c->reserved = c->next_id + CON_ID_BLOCK;
		seq_write(c, c->reserved);
	}
	return c->next_id++;
}

/* ---------------------------------------------------------------- */
/* HTTP replies                                                     */
/* ---------------------------------------------------------------- */

static void
reply_done(struct evhttp_request *req, void *arg)
{
	struct console *c = arg;

	(void)req;
	if (c->inflight > 0)
		c->inflight--;
	if (c->stopping && c->inflight == 0 && c->flush_ev != NULL)
		event_active(c->flush_ev, EV_TIMEOUT, 0);
}

/* Sends status with body (may be NULL) and the usual headers. */
static void
reply_send(struct console *c, struct evhttp_request *req, int code,
    const char *reason, const char *ctype, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *out = evhttp_request_get_output_buffer(req);

	evhttp_add_header(h, "Content-Type", ctype);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	if (c->stopping)
		evhttp_add_header(h, "Connection", "close");
	if (body != NULL)
		evbuffer_add(out, body, len);
	if (evhttp_request_get_connection(req) != NULL) {
		c->inflight++;
		evhttp_request_set_on_complete_cb(req, reply_done, c);
	}
	evhttp_send_reply(req, code, reason, NULL);
}

/* Sends a JSON object and frees it. */
static void
reply_json(struct console *c, struct evhttp_request *req, int code,
    const char *reason, cJSON *obj)
{
	char *s = cJSON_PrintUnformatted(obj);

	if (s == NULL)
		fatalx("console: out of memory printing JSON");
	reply_send(c, req, code, reason, "application/json; charset=utf-8", s,
	    strlen(s));
	cJSON_free(s);
	cJSON_Delete(obj);
}

static void
reply_error(struct console *c, struct evhttp_request *req, int code,
    const char *reason, const char *msg)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL || cJSON_AddStringToObject(o, "error", msg) == NULL)
		fatalx("console: out of memory");
	reply_json(c, req, code, reason, o);
}

/* ---------------------------------------------------------------- */
/* The outbound log                                                 */
/* ---------------------------------------------------------------- */

static size_t
msg_bytes(const struct con_msg *m)
{
	return strlen(m->text) + strlen(m->chat_id) + 64;
}

static void
msg_free(struct con_msg *m)
{
	if (m == NULL)
		return;
	free(m->chat_id);
	free(m->thread_id);
	free(m->reply_to);
	free(m->text);
	free(m);
}

/* Adds m at the end of the log and drops the oldest beyond the bounds. */
static void
outbox_append(struct console *c, struct con_msg *m)
{
	TAILQ_INSERT_TAIL(&c->log, m, entry);
	c->log_count++;
	c->log_bytes += msg_bytes(m);
	if (m->id > c->last_out)
		c->last_out = m->id;
	while (c->log_count > CON_LOG_MAX_MSGS ||
	    (c->log_bytes > CON_LOG_MAX_BYTES && c->log_count > 1)) {
		struct con_msg *old = TAILQ_FIRST(&c->log);
		TAILQ_REMOVE(&c->log, old, entry);
		c->log_count--;
		c->log_bytes -= msg_bytes(old);
		msg_free(old);
	}
}

/* Adds the API form of m to arr. */
static void
msg_to_json(const struct con_msg *m, cJSON *arr)
{
	cJSON *o = cJSON_CreateObject();
	uint64_t rt;

	if (o == NULL || !cJSON_AddItemToArray(arr, o))
		fatalx("console: out of memory");
	cJSON_AddNumberToObject(o, "id", (double)m->id);
	cJSON_AddStringToObject(o, "text", m->text);
	if (m->reply_to == NULL)
		cJSON_AddNullToObject(o, "reply_to");
	else if (parse_u64(m->reply_to, (1ULL << 53), &rt) == 0)
		cJSON_AddNumberToObject(o, "reply_to", (double)rt);
	else
		cJSON_AddStringToObject(o, "reply_to", m->reply_to);
	if (m->thread_id == NULL)
		cJSON_AddNullToObject(o, "thread_id");
	else
		cJSON_AddStringToObject(o, "thread_id", m->thread_id);
	cJSON_AddNumberToObject(o, "time", (double)m->time);
}

/* Builds {"messages": [...], "last": M} for chat_id after id after; NULL when none. */
static cJSON *
outbox_query(struct console *c, const char *chat_id, uint64_t after, int empty_ok)
{
	cJSON *o, *arr;
	uint64_t last = after > c->last_out ? after : c->last_out;
	int n = 0;
	struct con_msg *m;

	/* Walk back to the first message newer than after, then forward. */
	m = TAILQ_LAST(&c->log, con_msg_list);
	while (m != NULL && m->id > after) {
		struct con_msg *prev = TAILQ_PREV(m, con_msg_list, entry);
		if (prev == NULL || prev->id <= after)
			break;
		m = prev;
	}
	if (m != NULL && m->id <= after)
		m = NULL;
	o = cJSON_CreateObject();
	arr = cJSON_CreateArray();
	if (o == NULL || arr == NULL || !cJSON_AddItemToObject(o, "messages", arr))
		fatalx("console: out of memory");
	for (; m != NULL && n < CON_PAGE_MAX_MSGS; m = TAILQ_NEXT(m, entry)) {
		if (strcmp(m->chat_id, chat_id) != 0)
			continue;
		msg_to_json(m, arr);
		last = m->id;
		n++;
	}
	if (n == 0 && !empty_ok) {
		cJSON_Delete(o);
		return NULL;
	}
	cJSON_AddNumberToObject(o, "last", (double)last);
	return o;
}

/* ---------------------------------------------------------------- */
/* Long-poll waiters                                                */
/* ---------------------------------------------------------------- */

static void
waiter_free(struct con_waiter *w)
{
	TAILQ_REMOVE(&w->c->waiters, w, entry);
	event_free(w->timer);
	free(w->chat_id);
	free(w);
}

/* Answers a parked long-poll with whatever there is and frees it. */
static void
waiter_finish(struct con_waiter *w)
{
	struct console *c = w->c;

	reply_json(c, w->req, 200, "OK", outbox_query(c, w->chat_id, w->after, 1));
	waiter_free(w);
}

static void
waiter_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	waiter_finish(arg);
}

/* Answers every long-poll of chat_id that now has something newer. */
static void
waiters_wake(struct console *c, const char *chat_id, uint64_t id)
{
	struct con_waiter *w, *next;

	for (w = TAILQ_FIRST(&c->waiters); w != NULL; w = next) {
		next = TAILQ_NEXT(w, entry);
		if (id > w->after && strcmp(w->chat_id, chat_id) == 0)
			waiter_finish(w);
	}
}

/* ---------------------------------------------------------------- */
/* The inbox (inbound messages until the hub is done with them)      */
/* ---------------------------------------------------------------- */

static struct con_inbox_bucket *
inbox_bucket(struct console *c, uint64_t id)
{
	return &c->buckets[id % CON_INBOX_BUCKETS];
}

static struct con_inbox *
inbox_find(struct console *c, const char *idstr)
{
	struct con_inbox *in;
	uint64_t id;

	if (idstr == NULL || parse_u64(idstr, UINT64_MAX, &id) == -1)
		return NULL;
	LIST_FOREACH(in, inbox_bucket(c, id), bucket)
		if (in->id == id)
			return in;
	return NULL;
}

static struct con_inbox *
inbox_new(struct console *c, uint64_t id, const char *chat_id,
    const char *user_id, const char *user_name, const char *text, time_t t)
{
	struct con_inbox *in = xcalloc(1, sizeof(*in));

	in->c = c;
	in->id = id;
	snprintf(in->idstr, sizeof(in->idstr), "%" PRIu64, id);
	in->chat_id = xstrdup(chat_id);
	in->user_id = xstrdup(user_id);
	in->user_name = user_name != NULL ? xstrdup(user_name) : NULL;
	in->text = xstrdup(text);
	in->time = t;
	TAILQ_INSERT_TAIL(&c->inbox, in, entry);
	LIST_INSERT_HEAD(inbox_bucket(c, id), in, bucket);
	return in;
}

static void
inbox_free(struct con_inbox *in)
{
	TAILQ_REMOVE(&in->c->inbox, in, entry);
	LIST_REMOVE(in, bucket);
	if (in->timer != NULL)
		event_free(in->timer);
	cJSON_Delete(in->replies);
	free(in->chat_id);
	free(in->user_id);
	free(in->user_name);
	free(in->text);
	free(in);
}

/* Answers the waiting POST ?wait of in (if any) with the replies so far. */
static void
inbox_answer(struct con_inbox *in, int done)
{
	cJSON *o;

	if (in->req == NULL)
		return;
	o = cJSON_CreateObject();
	if (o == NULL)
		fatalx("console: out of memory");
	cJSON_AddNumberToObject(o, "message_id", (double)in->id);
	if (in->replies == NULL)
		in->replies = cJSON_CreateArray();
	cJSON_AddItemToObject(o, "replies", in->replies);
	in->replies = NULL;
	cJSON_AddBoolToObject(o, "done", done);
	reply_json(in->c, in->req, 200, "OK", o);
	in->req = NULL;
	if (in->timer != NULL) {
		event_free(in->timer);
		in->timer = NULL;
	}
}

static void
inbox_wait_timeout(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	inbox_answer(arg, 0);
}

static void journal_add(struct console *c, const char *key, cJSON *item);

/* The hub has handled the message: answer its waiter and forget it. */
static void
inbox_done(void *arg)
{
	struct con_inbox *in = arg;

	journal_add(in->c, "done", cJSON_CreateNumber((double)in->id));
	inbox_answer(in, 1);
	inbox_free(in);
}

/* Hands in to the hub (done may run before this returns and free in). */
static void
inbox_submit(struct console *c, struct con_inbox *in)
{
	struct inbound m = {
		.chat_id = in->chat_id,
		.chat_type = CHAT_DM,
		.thread_id = NULL,
		.user_id = in->user_id,
		.user_name = in->user_name,
		.message_id = in->idstr,
		.text = in->text,
		.time = in->time,
		.addressed = 1,
	};

	hub_inbound(c->hub, c->name, &m, inbox_done, in);
}

/* ---------------------------------------------------------------- */
/* Persistence                                                      */
/* ---------------------------------------------------------------- */

/* Reads a state file as JSON; NULL when absent or unreadable (logged). */
static cJSON *
state_read(struct console *c, const char *suffix)
{
	char *path = state_path(c, suffix);
	size_t len;
	char *data = read_file(path, CON_STATE_MAX, &len);
	cJSON *j = NULL;

	if (data == NULL) {
		if (errno != ENOENT)
			log_warn("console: cannot read %s", path);
	} else if ((j = cJSON_ParseWithLength(data, len)) == NULL ||
	    !cJSON_IsObject(j)) {
		log_warnx("console: %s is not a JSON object; ignored", path);
		cJSON_Delete(j);
		j = NULL;
	}
	free(data);
	free(path);
	return j;
}

static int
state_write(struct console *c, const char *suffix, cJSON *j)
{
	char *path = state_path(c, suffix);
	char *s = cJSON_PrintUnformatted(j);
	int rc = 0;

	if (s == NULL)
		fatalx("console: out of memory");
	if (mkdir_p(c->state_dir, 0700) == -1 ||
	    write_file_atomic(path, s, strlen(s), 0600) == -1) {
		log_warn("console: cannot write %s", path);
		rc = -1;
	}
	cJSON_free(s);
	free(path);
	return rc;
}

static const char *
jstr(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int
jid(const cJSON *o, const char *key, uint64_t *id)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > 9007199254740992.0)
		return -1;
	*id = (uint64_t)v->valuedouble;
	return 0;
}

/* The saved form of an outbound message (reply_to as the platform's string). */
static cJSON *
msg_saved_json(const struct con_msg *m)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		fatalx("console: out of memory");
	cJSON_AddNumberToObject(o, "id", (double)m->id);
	cJSON_AddStringToObject(o, "chat_id", m->chat_id);
	cJSON_AddStringToObject(o, "text", m->text);
	if (m->thread_id != NULL)
		cJSON_AddStringToObject(o, "thread_id", m->thread_id);
	if (m->reply_to != NULL)
		cJSON_AddStringToObject(o, "reply_to", m->reply_to);
	cJSON_AddNumberToObject(o, "time", (double)m->time);
	return o;
}

/* The saved form of an inbound message. */
static cJSON *
inbox_saved_json(const struct con_inbox *in)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL)
		fatalx("console: out of memory");
	cJSON_AddNumberToObject(o, "id", (double)in->id);
	cJSON_AddStringToObject(o, "chat_id", in->chat_id);
	cJSON_AddStringToObject(o, "user_id", in->user_id);
	if (in->user_name != NULL)
		cJSON_AddStringToObject(o, "user_name", in->user_name);
	cJSON_AddStringToObject(o, "text", in->text);
	cJSON_AddNumberToObject(o, "time", (double)in->time);
	return o;
}

/* Adds a saved outbound message to the log (older or malformed ones skipped). */
static void
outbox_load_one(struct console *c, const cJSON *it, uint64_t *next)
{
	const char *chat = jstr(it, "chat_id"), *text = jstr(it, "text");
	const char *thread = jstr(it, "thread_id"), *rt = jstr(it, "reply_to");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "time");
	struct con_msg *m;
	uint64_t v;

	if (jid(it, "id", &v) == -1 || chat == NULL || text == NULL || v <= c->last_out)
		return;
	m = xcalloc(1, sizeof(*m));
	m->id = v;
	m->chat_id = xstrdup(chat);
	m->text = xstrdup(text);
	m->thread_id = thread != NULL ? xstrdup(thread) : NULL;
	m->reply_to = rt != NULL ? xstrdup(rt) : NULL;
	m->time = cJSON_IsNumber(t) ? (time_t)t->valuedouble : 0;
	outbox_append(c, m);
	if (v >= *next)
		*next = v + 1;
}

/* Index in arr of the saved message with id, or -1. */
static int
saved_index(const cJSON *arr, uint64_t id)
{
	const cJSON *it;
	uint64_t v;
	int i = 0;

	cJSON_ArrayForEach(it, arr) {
		if (jid(it, "id", &v) == 0 && v == id)
			return i;
		i++;
	}
	return -1;
}

/*
 * Applies the journal of a worker that did not stop cleanly: sent
 * messages go to the log, accepted ones join the inbox to replay, done
 * ones leave it.  Returns 1 when it held anything.
 */
static int
journal_load(struct console *c, cJSON *pending, uint64_t *next)
{
	char *path = state_path(c, "journal");
	size_t len;
	char *data = read_file(path, CON_STATE_MAX, &len), *line, *save = NULL;
	int any = 0, bad = 0;

	if (data == NULL) {
		if (errno != ENOENT)
			log_warn("console: cannot read %s", path);
		free(path);
		return 0;
	}
	for (line = strtok_r(data, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		cJSON *j = cJSON_Parse(line), *it;
		uint64_t id;
		int i;

		any = 1;
		if ((it = cJSON_GetObjectItemCaseSensitive(j, "out")) != NULL)
			outbox_load_one(c, it, next);
		else if ((it = cJSON_GetObjectItemCaseSensitive(j, "in")) != NULL &&
		    jid(it, "id", &id) == 0) {
			if (id >= *next)
				*next = id + 1;
			if (saved_index(pending, id) == -1)
				cJSON_AddItemToArray(pending, cJSON_Duplicate(it, 1));
		} else if (jid(j, "done", &id) == 0) {
			if ((i = saved_index(pending, id)) != -1)
				cJSON_DeleteItemFromArray(pending, i);
		} else
			bad++;          /* e.g. a line cut short by the crash */
		cJSON_Delete(j);
	}
	if (any)
		log_info("console: recovered from the journal of a worker that did "
		    "not stop cleanly (%d unreadable line(s))", bad);
	free(data);
	free(path);
	return any;
}

static int state_save_outbox(struct console *c);
static int state_write_inbox(struct console *c, const cJSON *arr);

/* Loads the log, the id counter, the journal and the inbox to replay. */
static void
state_load(struct console *c)
{
	cJSON *out = state_read(c, "outbox.json"), *pending;
	char *path = state_path(c, "seq");
	char *data = read_file(path, 64, NULL);
	uint64_t v, next = 1;
	const cJSON *it;

	if (data != NULL) {
		data[strcspn(data, "\n")] = '\0';
		if (parse_u64(data, UINT64_MAX / 2, &v) == 0 && v > next)
			next = v;
		else if (parse_u64(data, UINT64_MAX / 2, &v) == -1)
			log_warnx("console: %s is not a number; ignored", path);
	}
	free(data);
	free(path);
	if (out != NULL) {
		if (jid(out, "next_id", &v) == 0 && v > next)
			next = v;
		cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(out, "messages"))
			outbox_load_one(c, it, &next);
		cJSON_Delete(out);
	}
	c->replay = state_read(c, "inbox.json");
	pending = cJSON_GetObjectItemCaseSensitive(c->replay, "messages");
	if (!cJSON_IsArray(pending)) {
		cJSON_Delete(c->replay);
		c->replay = cJSON_CreateObject();
		pending = cJSON_AddArrayToObject(c->replay, "messages");
		if (pending == NULL)
			fatalx("console: out of memory");
	}
	cJSON_ArrayForEach(it, pending)
		if (jid(it, "id", &v) == 0 && v >= next)
			next = v + 1;
	c->next_id = next;
	if (journal_load(c, pending, &c->next_id)) {
		/* fold it in now, so the journal starts empty */
		(void)state_save_outbox(c);
		(void)state_write_inbox(c, pending);
	}
	c->reserved = c->next_id + CON_ID_BLOCK;
	seq_write(c, c->reserved);
	path = state_path(c, "journal");
	c->journal_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (c->journal_fd == -1)
		log_warn("console: cannot open %s; messages are saved at stop only", path);
	free(path);
	if (cJSON_GetArraySize(pending) == 0) {
		cJSON_Delete(c->replay);
		c->replay = NULL;
	}
}

/* Writes the log; 0 or -1. */
static int
state_save_outbox(struct console *c)
{
	cJSON *j = cJSON_CreateObject(), *arr = cJSON_CreateArray();
	struct con_msg *m;
	int rc;

	if (j == NULL || arr == NULL)
		fatalx("console: out of memory");
	cJSON_AddNumberToObject(j, "version", 1);
	cJSON_AddNumberToObject(j, "next_id", (double)c->next_id);
	cJSON_AddItemToObject(j, "messages", arr);
	TAILQ_FOREACH(m, &c->log, entry)
		cJSON_AddItemToArray(arr, msg_saved_json(m));
	rc = state_write(c, "outbox.json", j);
	cJSON_Delete(j);
	return rc;
}

/* Writes console.inbox.json holding arr (borrowed); 0 or -1. */
static int
state_write_inbox(struct console *c, const cJSON *arr)
{
	cJSON *j = cJSON_CreateObject();
	int rc;

	if (j == NULL)
		fatalx("console: out of memory");
	cJSON_AddNumberToObject(j, "version", 1);
	cJSON_AddItemReferenceToObject(j, "messages", (cJSON *)arr);
	rc = state_write(c, "inbox.json", j);
	cJSON_Delete(j);
	return rc;
}

/* Writes the inbox (messages not handled yet, and any not yet replayed). */
static int
state_save_inbox(struct console *c, int quiet)
{
	cJSON *arr = cJSON_CreateArray();
	struct con_inbox *in;
	const cJSON *it;
	int rc;

	if (arr == NULL)
		fatalx("console: out of memory");
	TAILQ_FOREACH(in, &c->inbox, entry)
		cJSON_AddItemToArray(arr, inbox_saved_json(in));
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(c->replay, "messages"))
		cJSON_AddItemToArray(arr, cJSON_Duplicate(it, 1));
	if (!quiet && cJSON_GetArraySize(arr) > 0)
		log_info("console: %d unhandled message(s) kept for the next start",
		    cJSON_GetArraySize(arr));
	rc = state_write_inbox(c, arr);
	cJSON_Delete(arr);
	return rc;
}

/* Writes the journal lines gathered during this loop turn. */
static void
journal_flush(struct console *c)
{
	while (c->journal_fd != -1 && evbuffer_get_length(c->journal_buf) > 0) {
		int n = evbuffer_write(c->journal_buf, c->journal_fd);
		if (n <= 0) {
			log_warn("console: cannot write the journal; messages are "
			    "saved at stop only");
			close(c->journal_fd);
			c->journal_fd = -1;
		} else
			c->journal_bytes += (size_t)n;
	}
	if (c->journal_buf != NULL)
		evbuffer_drain(c->journal_buf, evbuffer_get_length(c->journal_buf));
}

/* Folds the journal into the two state files and empties it. */
static void
journal_fold(struct console *c)
{
	journal_flush(c);
	if (c->journal_fd == -1)
		return;
	if (state_save_outbox(c) == -1 || state_save_inbox(c, 1) == -1 ||
	    ftruncate(c->journal_fd, 0) == -1)
		log_warnx("console: cannot fold the journal; trying again later");
	c->journal_bytes = 0;           /* on failure: again after as much more */
}

static void
journal_cb(evutil_socket_t fd, short what, void *arg)
{
	struct console *c = arg;

	(void)fd;
	(void)what;
	journal_flush(c);
	if (c->journal_bytes > CON_JOURNAL_MAX)
		journal_fold(c);
}

/* Queues one line {key: item} (item is taken); written before answers leave. */
static void
journal_add(struct console *c, const char *key, cJSON *item)
{
	cJSON *o;
	char *s;

	if (c->journal_fd == -1 || c->stopped || item == NULL) {
		cJSON_Delete(item);
		return;
	}
	if ((o = cJSON_CreateObject()) == NULL)
		fatalx("console: out of memory");
	cJSON_AddItemToObject(o, key, item);
	if ((s = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("console: out of memory");
	evbuffer_add(c->journal_buf, s, strlen(s));
	evbuffer_add(c->journal_buf, "\n", 1);
	cJSON_free(s);
	cJSON_Delete(o);
	/* Active events run before the loop polls again, so before the
	 * answer to this request can be written to its socket. */
	event_active(c->journal_ev, EV_TIMEOUT, 0);
}

/* Hands the inbox saved by the previous worker to the hub, same ids. */
static void
replay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct console *c = arg;
	cJSON *j = c->replay;
	const cJSON *it;
	struct con_inbox *in;
	int n = 0;

	(void)fd;
	(void)what;
	if (j == NULL)
		return;
	/* First all into the inbox (so a fold meanwhile keeps them), then to the hub. */
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(j, "messages")) {
		const char *chat = jstr(it, "chat_id"), *user = jstr(it, "user_id");
		const char *text = jstr(it, "text"), *name = jstr(it, "user_name");
		const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "time");
		char idstr[24];
		uint64_t id;

		if (jid(it, "id", &id) == -1 || chat == NULL || user == NULL ||
		    text == NULL || !ident_valid(chat) || !ident_valid(user) ||
		    (name != NULL && !ident_valid(name))) {
			log_warnx("console: skipping a malformed saved message");
			continue;
		}
		snprintf(idstr, sizeof(idstr), "%" PRIu64, id);
		if (inbox_find(c, idstr) != NULL)
			continue;
		in = inbox_new(c, id, chat, user, name, text,
		    cJSON_IsNumber(t) ? (time_t)t->valuedouble : time(NULL));
		in->replay = 1;
	}
	c->replay = NULL;
	cJSON_Delete(j);
	/* Stopping already: they stay in the inbox, saved again at stop. */
	while (!c->stopping) {
		TAILQ_FOREACH(in, &c->inbox, entry)
			if (in->replay)
				break;
		if (in == NULL)
			break;
		in->replay = 0;
		n++;
		inbox_submit(c, in);    /* may free in */
	}
	if (n > 0)
		log_info("console: replayed %d saved message(s)", n);
}

/* ---------------------------------------------------------------- */
/* Request handlers                                                 */
/* ---------------------------------------------------------------- */

/* Parses the query of req into kv; -1 when malformed. */
static int
query_parse(struct evhttp_request *req, struct evkeyvalq *kv)
{
	const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));

	TAILQ_INIT(kv);
	if (q == NULL)
		return 0;
	return evhttp_parse_query_str(q, kv);
}

/* Reads ?wait=S (seconds, clamped to 60): 0 ok, -1 malformed. */
static int
query_wait(struct evkeyvalq *kv, uint64_t *usec)
{
	const char *w = evhttp_find_header(kv, "wait");

	*usec = 0;
	if (w == NULL)
		return 0;
	if (parse_seconds(w, 86400ULL * 1000000, usec) == -1)
		return -1;
	if (*usec > CON_MAX_WAIT_USEC)
		*usec = CON_MAX_WAIT_USEC;
	return 0;
}

static struct event *
timer_start(struct console *c, uint64_t usec, event_callback_fn cb, void *arg)
{
	struct timeval tv = { (time_t)(usec / 1000000), (suseconds_t)(usec % 1000000) };
	struct event *ev = evtimer_new(c->base, cb, arg);

	if (ev == NULL)
		fatalx("console: cannot create a timer");
	evtimer_add(ev, &tv);
	return ev;
}

/* A "\u0000" escape would cut a string short after parsing: refuse it. */
static int
json_has_nul_escape(const char *s, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (s[i] != '\\')
			continue;
		if (s[i + 1] == 'u' && i + 5 < len && memcmp(s + i + 2, "0000", 4) == 0)
			return 1;
		i++;                    /* skip the escaped character */
	}
	return 0;
}

/* Reads the JSON body of req; NULL with err set when not a JSON object. */
static cJSON *
body_json(struct evhttp_request *req, const char **err)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	cJSON *j;

	if (len == 0) {
		*err = "the request has no body; expected a JSON object";
		return NULL;
	}
	const char *data = (const char *)evbuffer_pullup(in, -1);
	if (json_has_nul_escape(data, len)) {
		*err = "strings must not contain NUL characters";
		return NULL;
	}
	j = cJSON_ParseWithLength(data, len);
	if (j == NULL) {
		*err = "the body is not valid JSON";
		return NULL;
	}
	if (!cJSON_IsObject(j)) {
		cJSON_Delete(j);
		*err = "the body must be a JSON object";
		return NULL;
	}
	return j;
}

/* Checks one string field of a message; returns an error text or NULL. */
static const char *
field_check(const cJSON *j, const char *key, int required, int ident,
    const char **out)
{
	static char err[96];
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);

	*out = NULL;
	if (v == NULL || cJSON_IsNull(v)) {
		if (!required)
			return NULL;
		snprintf(err, sizeof(err), "missing field \"%s\"", key);
		return err;
	}
	if (!cJSON_IsString(v)) {
		snprintf(err, sizeof(err), "field \"%s\" must be a string", key);
		return err;
	}
	if (ident && !ident_valid(v->valuestring)) {
		snprintf(err, sizeof(err), "field \"%s\" must be 1 to %d bytes of "
		    "UTF-8 without control characters", key, CON_MAX_ID_LEN);
		return err;
	}
	*out = v->valuestring;
	return NULL;
}

/* POST /v1/messages[?wait=S] */
static void
handle_post_message(struct console *c, struct evhttp_request *req)
{
	struct evkeyvalq kv;
	const char *err = NULL, *chat, *user, *name, *text;
	uint64_t wait;
	cJSON *j;
	struct con_inbox *in;

	if (query_parse(req, &kv) == -1 || query_wait(&kv, &wait) == -1) {
		evhttp_clear_headers(&kv);
		reply_error(c, req, 400, "Bad Request",
		    "wait must be a number of seconds (at most 60 are used)");
		return;
	}
	evhttp_clear_headers(&kv);
	if ((j = body_json(req, &err)) == NULL) {
		reply_error(c, req, 400, "Bad Request", err);
		return;
	}
	if ((err = field_check(j, "chat_id", 1, 1, &chat)) == NULL &&
	    (err = field_check(j, "user_id", 1, 1, &user)) == NULL &&
	    (err = field_check(j, "user_name", 0, 1, &name)) == NULL &&
	    (err = field_check(j, "text", 1, 0, &text)) == NULL) {
		if (text[strspn(text, " \t\r\n")] == '\0')
			err = "field \"text\" must not be empty";
		else if (!utf8_valid((const unsigned char *)text, strlen(text)))
			err = "field \"text\" must be UTF-8";
	}
	if (err != NULL) {
		reply_error(c, req, 400, "Bad Request", err);
		cJSON_Delete(j);
		return;
	}
	in = inbox_new(c, id_next(c), chat, user, name, text, time(NULL));
	cJSON_Delete(j);
	journal_add(c, "in", inbox_saved_json(in));
	if (wait > 0) {
		in->req = req;
		in->replies = cJSON_CreateArray();
		in->timer = timer_start(c, wait, inbox_wait_timeout, in);
	} else {
		cJSON *o = cJSON_CreateObject();
		if (o == NULL)
			fatalx("console: out of memory");
		cJSON_AddNumberToObject(o, "message_id", (double)in->id);
		reply_json(c, req, 202, "Accepted", o);
	}
	inbox_submit(c, in);
}

/* GET /v1/chats/{chat_id}/messages?after=N&wait=S (chat_id still encoded). */
static void
handle_get_messages(struct console *c, struct evhttp_request *req,
    const char *enc_chat, size_t enc_len)
{
	struct evkeyvalq kv;
	char *raw = xstrndup(enc_chat, enc_len);
	size_t dlen = 0;
	char *chat = evhttp_uridecode(raw, 0, &dlen);
	const char *a;
	uint64_t after = 0, wait = 0;
	cJSON *o;

	free(raw);
	if (chat == NULL || dlen != strlen(chat) || !ident_valid(chat)) {
		reply_error(c, req, 400, "Bad Request", "invalid chat_id in the path");
		free(chat);
		return;
	}
	if (query_parse(req, &kv) == -1 || query_wait(&kv, &wait) == -1 ||
	    ((a = evhttp_find_header(&kv, "after")) != NULL &&
	    parse_u64(a, UINT64_MAX / 2, &after) == -1)) {
		evhttp_clear_headers(&kv);
		reply_error(c, req, 400, "Bad Request", "after must be a message id "
		    "and wait a number of seconds");
		free(chat);
		return;
	}
	evhttp_clear_headers(&kv);
	o = outbox_query(c, chat, after, wait == 0 || c->stopping);
	if (o != NULL) {
		reply_json(c, req, 200, "OK", o);
		free(chat);
		return;
	}
	struct con_waiter *w = xcalloc(1, sizeof(*w));
	w->c = c;
	w->req = req;
	w->chat_id = chat;
	w->after = after;
	w->timer = timer_start(c, wait, waiter_timeout, w);
	TAILQ_INSERT_TAIL(&c->waiters, w, entry);
}

static void
handle_status(struct console *c, struct evhttp_request *req)
{
	cJSON *s = hub_status_json(c->hub);

	if (s == NULL) {
		reply_error(c, req, 503, "Service Unavailable", "status not available");
		return;
	}
	reply_json(c, req, 200, "OK", s);
}

static void
handle_page(struct console *c, struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);

	evhttp_add_header(h, "Content-Security-Policy", "default-src 'none'; "
	    "script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
	    "connect-src 'self'; img-src data:; frame-ancestors 'none'");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	reply_send(c, req, 200, "OK", "text/html; charset=utf-8",
	    console_page_html, console_page_len);
}

/* A Host header naming a loopback address or "localhost", with an optional port. */
static int
host_is_loopback(const char *host)
{
	char name[INET6_ADDRSTRLEN + 2];
	const char *end;
	size_t len;
	struct in_addr a4;

	if (*host == '[') {
		end = strchr(host, ']');
		if (end == NULL || (end[1] != '\0' && end[1] != ':'))
			return 0;
		len = (size_t)(end - host - 1);
		if (len >= sizeof(name))
			return 0;
		memcpy(name, host + 1, len);
		name[len] = '\0';
		struct in6_addr a6;
		return inet_pton(AF_INET6, name, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
	}
	len = strcspn(host, ":");
	if (len >= sizeof(name) || (host[len] == ':' &&
	    host[len + 1 + strspn(host + len + 1, "0123456789")] != '\0'))
		return 0;
	memcpy(name, host, len);
	name[len] = '\0';
	if (strcasecmp(name, "localhost") == 0)
		return 1;
	return inet_pton(AF_INET, name, &a4) == 1 && (ntohl(a4.s_addr) >> 24) == 127;
}

/*
 * Without a token, a loopback console must not be reachable from web
 * pages of other sites: a Host naming another name (DNS rebinding) or an
 * Origin of another site (cross-site POST) is refused.
 */
static int
request_origin_ok(struct console *c, struct evhttp_request *req)
{
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	const char *host = evhttp_find_header(h, "Host");
	const char *origin = evhttp_find_header(h, "Origin");

	if (host != NULL && c->loopback && !host_is_loopback(host))
		return 0;
	if (origin != NULL) {
		const char *p = strstr(origin, "://");
		if (p == NULL || host == NULL || strcasecmp(p + 3, host) != 0)
			return 0;
	}
	return 1;
}

static int
request_auth_ok(struct console *c, struct evhttp_request *req)
{
	const char *a;

	if (c->token == NULL)
		return 1;
	a = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
	if (a == NULL || strncasecmp(a, "Bearer ", 7) != 0)
		return 0;
	a += 7;
	while (*a == ' ')
		a++;
	return token_equal(a, strlen(a), c->token);
}

static void
reply_method(struct console *c, struct evhttp_request *req, const char *allow)
{
	evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", allow);
	reply_error(c, req, 405, "Method Not Allowed", "method not allowed");
}

/* Routes one request. */
static void
request_cb(struct evhttp_request *req, void *arg)
{
	struct console *c = arg;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri != NULL ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type m = evhttp_request_get_command(req);
	int get = m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD;
	size_t plen;

	if (c->stopping) {
		reply_error(c, req, 503, "Service Unavailable", "the gateway is restarting");
		return;
	}
	if (path == NULL || *path != '/') {
		reply_error(c, req, 400, "Bad Request", "bad request target");
		return;
	}
	if (!request_origin_ok(c, req)) {
		reply_error(c, req, 403, "Forbidden", "cross-site request refused");
		return;
	}
	if (strcmp(path, "/") == 0 || strcmp(path, "/index.html") == 0) {
		if (!get)
			reply_method(c, req, "GET, HEAD");
		else
			handle_page(c, req);
		return;
	}
	if (strncmp(path, "/v1/", 4) != 0) {
		reply_error(c, req, 404, "Not Found", "not found");
		return;
	}
	if (!request_auth_ok(c, req)) {
		evhttp_add_header(evhttp_request_get_output_headers(req),
		    "WWW-Authenticate", "Bearer realm=\"hermes\"");
		reply_error(c, req, 401, "Unauthorized", "a valid bearer token is required");
		return;
	}
	plen = strlen(path);
	if (strcmp(path, "/v1/messages") == 0) {
		if (m != EVHTTP_REQ_POST)
			reply_method(c, req, "POST");
		else
			handle_post_message(c, req);
	} else if (strcmp(path, "/v1/status") == 0) {
		if (!get)
			reply_method(c, req, "GET, HEAD");
		else
			handle_status(c, req);
	} else if (strncmp(path, "/v1/chats/", 10) == 0 && plen > 10 + 9 &&
	    strcmp(path + plen - 9, "/messages") == 0 &&
	    memchr(path + 10, '/', plen - 10 - 9) == NULL) {
		if (!get)
			reply_method(c, req, "GET, HEAD");
		else
			handle_get_messages(c, req, path + 10, plen - 10 - 9);
	} else
		reply_error(c, req, 404, "Not Found", "not found");
}

/* ---------------------------------------------------------------- */
/* Listening                                                        */
/* ---------------------------------------------------------------- */

static void listen_try(struct console *c);

static void
retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	listen_try(arg);
}

/* Reports BACKOFF with reason and schedules the next try (jittered, doubling). */
static void
listen_backoff(struct console *c, const char *reason)
{
	unsigned ms = c->backoff_msec;
	struct timeval tv;

	ms = ms / 2 + arc4random_uniform(ms / 2 + 1);
	tv.tv_sec = ms / 1000;
	tv.tv_usec = (suseconds_t)(ms % 1000) * 1000;
	log_warnx("console: %s; retrying in %u ms", reason, ms);
	hub_platform_state(c->hub, c->name, PLAT_BACKOFF, reason);
	c->backoff_msec = c->backoff_msec * 2 > CON_BACKOFF_MAX_MSEC ?
	    CON_BACKOFF_MAX_MSEC : c->backoff_msec * 2;
	evtimer_add(c->retry_ev, &tv);
}

/* accept() failed (EMFILE...): pause the listener a little instead of spinning. */
static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	struct console *c = arg;
	struct timeval tv = { 0, 100000 };

	log_warn("console: accept");
	evconnlistener_disable(l);
	evtimer_add(c->retry_ev, &tv);
}

/* Opens the configured listening socket; -1 with errno set. */
static int
listen_open(struct console *c)
{
	int one = 1, fd, e;

	fd = socket(c->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (c->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&c->addr, c->addrlen) == -1 ||
	    listen(fd, 1024) == -1) {
		e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* Binds (or adopts the inherited socket) and reports PLAT_UP, else backs off. */
static void
listen_try(struct console *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd;

	if (c->stopping)
		return;
	if (c->bound != NULL) {         /* resuming after an accept error */
		evconnlistener_enable(evhttp_bound_socket_get_listener(c->bound));
		return;
	}
	if (c->listen_fd != -1) {
		/*
		 * evhttp closes the socket it accepts on; give it a copy, so
		 * the inherited one stays open (a worker re-executing itself
		 * passes it on, and connections wait in its backlog meanwhile).
		 */
		if ((fd = fcntl(c->listen_fd, F_DUPFD_CLOEXEC, 3)) == -1) {
			char *why = xasprintf("cannot use the inherited socket: %s",
			    strerror(errno));
			listen_backoff(c, why);
			free(why);
			return;
		}
		fd_set_nonblock(fd, 1);
	} else if ((fd = listen_open(c)) == -1) {
		char *why = xasprintf("cannot listen on %s: %s", c->addr_text,
		    strerror(errno));
		listen_backoff(c, why);
		free(why);
		return;
	}
	c->bound = evhttp_accept_socket_with_handle(c->http, fd);
	if (c->bound == NULL) {
		close(fd);
		listen_backoff(c, "cannot accept on the listening socket");
		return;
	}
	evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(c->bound),
	    accept_error_cb);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0) {
		free(c->addr_text);
		c->addr_text = addr_format((struct sockaddr *)&ss);
	}
	c->backoff_msec = CON_BACKOFF_MIN_MSEC;
	log_info("console: listening on http://%s/", c->addr_text);
	hub_platform_state(c->hub, c->name, PLAT_UP, c->addr_text);
}

/* ---------------------------------------------------------------- */
/* Sent callbacks                                                   */
/* ---------------------------------------------------------------- */

static void
sent_flush(struct console *c)
{
	struct con_sent *s;

	while ((s = STAILQ_FIRST(&c->sent)) != NULL) {
		STAILQ_REMOVE_HEAD(&c->sent, entry);
		s->cb(s->arg, s->ok);
		free(s);
	}
}

static void
sent_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	sent_flush(arg);
}

static void
sent_push(struct console *c, plat_sent_fn cb, void *arg, int ok)
{
	struct con_sent *s;

	if (cb == NULL)
		return;
	s = xmalloc(sizeof(*s));
	s->cb = cb;
	s->arg = arg;
	s->ok = ok;
	STAILQ_INSERT_TAIL(&c->sent, s, entry);
	event_active(c->sent_ev, EV_TIMEOUT, 0);
}

/* ---------------------------------------------------------------- */
/* The platform interface                                           */
/* ---------------------------------------------------------------- */

/* Validates the section and the token rule; no I/O beyond getsockname. */
static int
console_config(struct console *c, const struct plat_env *env, char *err,
    size_t errlen)
{
	const cJSON *listen = cJSON_GetObjectItemCaseSensitive(env->conf, "listen");
	const cJSON *token = cJSON_GetObjectItemCaseSensitive(env->conf, "token");
	const char *ltext = "127.0.0.1:8642";
	char *secret;

	if (listen != NULL && !cJSON_IsNull(listen)) {
		if (!cJSON_IsString(listen)) {
			snprintf(err, errlen, "platforms.%s.listen: must be a string "
			    "\"HOST:PORT\"", env->name);
			return -1;
		}
		ltext = listen->valuestring;
	}
	if (listen_parse(ltext, &c->addr, &c->addrlen) == -1) {
		snprintf(err, errlen, "platforms.%s.listen: \"%.64s\" is not "
		    "a numeric HOST:PORT (e.g. 127.0.0.1:8642 or [::1]:8642)",
		    env->name, ltext);
		return -1;
	}
	if (token != NULL && !cJSON_IsNull(token) &&
	    (!cJSON_IsString(token) || token->valuestring[0] == '\0')) {
		snprintf(err, errlen, "platforms.%s.token: must be a non-empty "
		    "string or null", env->name);
		return -1;
	}
	if ((secret = config_secret("HERMES_CONSOLE_TOKEN")) != NULL && *secret != '\0')
		c->token = secret;
	else {
		free(secret);
		if (cJSON_IsString(token))
			c->token = xstrdup(token->valuestring);
	}
	if (c->listen_fd != -1) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		if (getsockname(c->listen_fd, (struct sockaddr *)&ss, &sl) == -1) {
			snprintf(err, errlen, "platforms.%s: the inherited socket is "
			    "unusable: %s", env->name, strerror(errno));
			return -1;
		}
		c->loopback = addr_is_loopback((struct sockaddr *)&ss);
		c->addr_text = addr_format((struct sockaddr *)&ss);
	} else {
		c->loopback = addr_is_loopback((struct sockaddr *)&c->addr);
		c->addr_text = addr_format((struct sockaddr *)&c->addr);
	}
	if (!c->loopback && c->token == NULL) {
		snprintf(err, errlen, "platforms.%s.listen: %s is not a loopback "
		    "address; set platforms.%s.token (or HERMES_CONSOLE_TOKEN) "
		    "to listen there", env->name, c->addr_text, env->name);
		return -1;
	}
	return 0;
}

static void console_free(void *self);

static void *
console_create(const struct plat_env *env, char *err, size_t errlen)
{
	struct console *c = xcalloc(1, sizeof(*c));

	c->base = env->base;
	c->hub = env->hub;
	c->name = xstrdup(env->name);
	c->state_dir = xstrdup(env->state_dir);
	c->listen_fd = env->listen_fd;
	c->journal_fd = -1;
	TAILQ_INIT(&c->log);
	TAILQ_INIT(&c->inbox);
	TAILQ_INIT(&c->waiters);
	STAILQ_INIT(&c->sent);
	for (size_t i = 0; i < CON_INBOX_BUCKETS; i++)
		LIST_INIT(&c->buckets[i]);
	if (console_config(c, env, err, errlen) == -1) {
		console_free(c);
		return NULL;
	}
	c->backoff_msec = CON_BACKOFF_MIN_MSEC;
	c->next_id = 1;
	return c;
}

static void
console_start(void *self)
{
	struct console *c = self;

	if (c->started)
		return;
	c->started = 1;
	c->http = evhttp_new(c->base);
	c->retry_ev = evtimer_new(c->base, retry_cb, c);
	c->sent_ev = event_new(c->base, -1, 0, sent_cb, c);
	c->replay_ev = event_new(c->base, -1, 0, replay_cb, c);
	c->journal_ev = event_new(c->base, -1, 0, journal_cb, c);
	c->journal_buf = evbuffer_new();
	if (c->http == NULL || c->retry_ev == NULL || c->sent_ev == NULL ||
	    c->replay_ev == NULL || c->journal_ev == NULL || c->journal_buf == NULL)
		fatalx("console: cannot set up the HTTP server");
	evhttp_set_max_body_size(c->http, CON_MAX_BODY);
	evhttp_set_max_headers_size(c->http, CON_MAX_HEADERS);
	evhttp_set_timeout(c->http, CON_TIMEOUT_SEC);
	evhttp_set_allowed_methods(c->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_gencb(c->http, request_cb, c);
	state_load(c);
	if (c->replay != NULL)
		event_active(c->replay_ev, EV_TIMEOUT, 0);
	listen_try(c);
}

static void
console_send(void *self, const struct outbound *msg, plat_sent_fn cb, void *arg)
{
	struct console *c = self;
	struct con_msg *m;
	struct con_inbox *in;

	if (c->stopped || !c->started) {
		if (cb != NULL)
			cb(arg, 0);
		return;
	}
	m = xcalloc(1, sizeof(*m));
	m->id = id_next(c);
	m->chat_id = xstrdup(msg->chat_id);
	m->thread_id = msg->thread_id != NULL ? xstrdup(msg->thread_id) : NULL;
	m->reply_to = msg->reply_to != NULL ? xstrdup(msg->reply_to) : NULL;
	m->text = xstrdup(msg->text != NULL ? msg->text : "");
	m->time = time(NULL);
	if ((in = inbox_find(c, m->reply_to)) != NULL && in->req != NULL)
		msg_to_json(m, in->replies);
	journal_add(c, "out", msg_saved_json(m));
	outbox_append(c, m);
	waiters_wake(c, m->chat_id, m->id);
	sent_push(c, cb, arg, 1);
}

/* Everything is answered or given up: close, persist, report. */
static void
stop_finish(evutil_socket_t fd, short what, void *arg)
{
	struct console *c = arg;
	plat_stopped_fn cb = c->stopped_cb;

	(void)fd;
	(void)what;
	if (c->stopped)
		return;
	c->stopped = 1;
	if (c->http != NULL) {
		evhttp_free(c->http);
		c->http = NULL;
		c->bound = NULL;
	}
	journal_flush(c);
	if (state_save_outbox(c) == 0 && state_save_inbox(c, 0) == 0) {
		seq_write(c, c->next_id);       /* no id is handed out after this */
		if (c->journal_fd != -1 && ftruncate(c->journal_fd, 0) == -1)
			log_warn("console: cannot empty the journal");
	}
	if (c->journal_fd != -1) {
		close(c->journal_fd);
		c->journal_fd = -1;
	}
	sent_flush(c);
	hub_platform_state(c->hub, c->name, PLAT_STOPPED, NULL);
	c->stopped_cb = NULL;
	if (cb != NULL)
		cb(c->stopped_arg);
}

static void
console_stop(void *self, plat_stopped_fn cb, void *arg)
{
	struct console *c = self;
	struct con_inbox *in;
	struct timeval tv = { 0, CON_FLUSH_MSEC * 1000 };

	if (c->stopping)                /* stop is called once; ignore a repeat */
		return;
	c->stopping = 1;
	c->stopped_cb = cb;
	c->stopped_arg = arg;
	if (!c->started) {
		c->stopped = 1;
		if (cb != NULL)
			cb(arg);
		return;
	}
	evtimer_del(c->retry_ev);
	if (c->bound != NULL) {
		evhttp_del_accept_socket(c->http, c->bound);
		c->bound = NULL;
	}
	TAILQ_FOREACH(in, &c->inbox, entry)
		inbox_answer(in, 0);
	while (!TAILQ_EMPTY(&c->waiters))
		waiter_finish(TAILQ_FIRST(&c->waiters));
	c->flush_ev = evtimer_new(c->base, stop_finish, c);
	if (c->flush_ev == NULL)
		fatalx("console: cannot create a timer");
	if (c->inflight == 0)
		event_active(c->flush_ev, EV_TIMEOUT, 0);
	else
		evtimer_add(c->flush_ev, &tv);
}

static void
console_free(void *self)
{
	struct console *c = self;
	struct con_msg *m;

	if (c == NULL)
		return;
	/* Parked requests belong to evhttp, which frees them with itself. */
	while (!TAILQ_EMPTY(&c->inbox)) {
		TAILQ_FIRST(&c->inbox)->req = NULL;
		inbox_free(TAILQ_FIRST(&c->inbox));
	}
	while (!TAILQ_EMPTY(&c->waiters))
		waiter_free(TAILQ_FIRST(&c->waiters));
	if (c->http != NULL)
		evhttp_free(c->http);
	while ((m = TAILQ_FIRST(&c->log)) != NULL) {
		TAILQ_REMOVE(&c->log, m, entry);
		msg_free(m);
	}
	while (!STAILQ_EMPTY(&c->sent)) {
		struct con_sent *s = STAILQ_FIRST(&c->sent);
		STAILQ_REMOVE_HEAD(&c->sent, entry);
		free(s);
	}
	if (c->retry_ev != NULL)
		event_free(c->retry_ev);
	if (c->sent_ev != NULL)
		event_free(c->sent_ev);
	if (c->replay_ev != NULL)
		event_free(c->replay_ev);
	if (c->flush_ev != NULL)
		event_free(c->flush_ev);
	if (c->journal_ev != NULL)
		event_free(c->journal_ev);
	if (c->journal_buf != NULL)
		evbuffer_free(c->journal_buf);
	if (c->journal_fd != -1)
		close(c->journal_fd);
	cJSON_Delete(c->replay);
	if (c->token != NULL) {
		explicit_bzero(c->token, strlen(c->token));
		free(c->token);
	}
	/* An inherited listen_fd is left open: it belongs to the process. */
	free(c->addr_text);
	free(c->name);
	free(c->state_dir);
	free(c);
}

const struct platform_ops console_ops = {
	.name = "console",
	.max_text = CON_MAX_BODY,
	.keys = console_keys,
	.create = console_create,
	.start = console_start,
	.send = console_send,
	.stop = console_stop,
	.free = console_free,
};
