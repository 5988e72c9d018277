/*
 * console.c - the local console platform (HTTP API + web page on evhttp).
 *
 * Inbound: POST /v1/messages writes the message to the journal; once the
 * line is written it is answered (202, or parked for ?wait) and handed to
 * the hub, and it stays in the "inbox" until the hub calls done.  A
 * message the journal cannot keep is refused with 503 and Retry-After,
 * never taken and then lost.
 * Outbound: send() gives the message an id and queues it; once its journal
 * line is written it joins the bounded chat log, wakes the long-polls of
 * that chat and completes.  A reply is thus recorded before anyone can see
 * it, and a message whose reply was recorded is never run again.
 * Ids come from one counter shared by inbound and outbound messages; its
 * high-water mark is reserved on disk in blocks so an id is never reused,
 * not even after a crash (the hub deduplicates inbound ids).  Ids stay
 * below 2^53 so they are exact in JSON.
 *
 * Persistence: console.outbox.json and console.inbox.json are snapshots
 * written atomically; console.journal holds every message taken, handled
 * or sent since (one JSON line each, written once per loop turn before
 * any answer leaves), so a worker that is killed loses nothing.  The
 * journal is folded into the snapshots at start, at stop and whenever it
 * grows past CON_JOURNAL_MAX.  When it cannot be written, the console
 * refuses new messages, holds replies and retries with backoff; it takes
 * messages again only after a fold has made the files match memory.  The
 * journal functions (journal_*) know nothing of HTTP: they call back
 * inbox_intake_end() and sendq_deliver_all() when lines are durable.
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
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include <cjson/cJSON.h>

#define CON_MAX_BODY            65536           /* bytes; more -> 413 */
#define CON_MAX_HEADERS         16384           /* bytes of request headers */
#define CON_TIMEOUT_SEC         30              /* idle keep-alive / write timeout */
#define CON_REQUEST_SEC         30              /* a whole request, headers and body */
#define CON_MAX_WAIT_USEC       (60ULL * 1000000)       /* ?wait is clamped to this */
#define CON_MAX_ID_LEN          128             /* chat_id, user_id, user_name */
#define CON_ID_MAX              ((1ULL << 53) - 1)      /* exact in a JSON number */
#define CON_LOG_MAX_MSGS        1000            /* outbound log bound (gateway-wide) */
#define CON_LOG_MAX_BYTES       (4u << 20)      /* ... and its text bytes */
#define CON_PAGE_MAX_MSGS       500             /* messages in one GET answer */
#define CON_ID_BLOCK            65536           /* ids reserved on disk at a time */
#define CON_STATE_MAX           (64u << 20)     /* largest state file read */
#define CON_FLUSH_MSEC          500             /* stop: time replies get to flush */
#define CON_BACKOFF_MIN_MSEC    250
#define CON_BACKOFF_MAX_MSEC    30000
#define CON_JOURNAL_RETRY_MAX_MSEC 5000         /* a journal that cannot be written */
#define CON_ACCEPT_PAUSE_MIN_MSEC 100           /* accept() failed (EMFILE...) */
#define CON_ACCEPT_PAUSE_MAX_MSEC 2000
#define CON_WARN_MSEC           10000           /* a repeated warning, at most this often */
#define CON_INBOX_BUCKETS       256             /* initial; doubles as the inbox grows */
#define CON_JOURNAL_MAX         (8u << 20)      /* bytes before folding it */

/* One outbound message: queued until its journal line is written, then in the log. */
struct con_msg {
	TAILQ_ENTRY(con_msg) entry;     /* in the send queue, then in the log */
	uint64_t id;
	char *chat_id;
	char *thread_id;                /* NULL when none */
	char *reply_to;                 /* NULL when none */
	char *text;
	time_t time;
	plat_sent_fn cb;                /* while queued */
	void *cb_arg;
};
TAILQ_HEAD(con_msg_list, con_msg);

enum con_in_state {
	IN_INTAKE = 0,                  /* POSTed; answered once its journal line is written */
	IN_HELD,                        /* saved by a previous worker; replayed once the journal is up */
	IN_HUB,                         /* with the hub until it calls done */
};

/* One inbound message the hub has not called done for yet. */
struct con_inbox {
	TAILQ_ENTRY(con_inbox) entry;   /* all, in id order */
	TAILQ_ENTRY(con_inbox) queue;   /* c->intake or c->held, by state */
	LIST_ENTRY(con_inbox) bucket;   /* lookup by id */
	struct console *c;
	enum con_in_state state;
	uint64_t id;
	char idstr[24];
	char *chat_id;
	char *user_id;
	char *user_name;                /* may be NULL */
	char *text;
	time_t time;
	int replied;                    /* a reply to it was recorded */
	struct evhttp_request *req;     /* the POST (intake) or its ?wait, or NULL */
	uint64_t wait_usec;             /* intake: how long the POST waits for replies */
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

enum con_conn_state {
	CONN_NEW = 0,                   /* accepted; evhttp is still setting it up */
	CONN_IDLE,                      /* between requests (evhttp's idle timeout applies) */
	CONN_READING,                   /* a request has begun: its deadline runs */
	CONN_HANDLING,                  /* the request is with a handler */
};

/* One accepted connection, watched so that a request arrives whole in time. */
struct con_conn {
	LIST_ENTRY(con_conn) entry;
	struct console *c;
	struct bufferevent *bev;
	struct evhttp_connection *evcon;        /* once attached */
	struct evbuffer_cb_entry *watch;        /* on the input buffer */
	struct event *timer;
	int fd;
	enum con_conn_state state;
};
LIST_HEAD(con_conn_list, con_conn);

/* A warning that may repeat fast: logged at most once per CON_WARN_MSEC. */
struct con_ratelog {
	uint64_t last;
	unsigned quiet;                 /* occurrences not logged since */
};

/* console.journal and what it takes to write it. */
struct con_journal {
	int fd;                         /* open for appending, or -1 */
	int up;                         /* lines can be written: messages are taken */
	int stale;                      /* the files lag behind memory: fold before use */
	int warned;                     /* the current outage was logged */
	unsigned aside;                 /* state files still to be set aside (CON_ASIDE_*) */
	size_t size;                    /* bytes of whole lines in the file */
	size_t since_fold;
	char why[128];                  /* why it is down */
	struct evbuffer *done;          /* "done" lines of this loop turn */
	struct event *flush_ev;         /* writes the turn's lines before answers leave */
	struct event *retry_ev;
	unsigned backoff_msec;
	uint64_t retry_at;              /* mono msec of the next try */
};

struct console {
	LIST_ENTRY(console) all;        /* every console, to find one from its evhttp */
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
	struct event *accept_ev;        /* resumes a listener paused by accept errors */
	unsigned accept_pause_msec;
	struct con_ratelog accept_log;
	struct con_conn_list conns;
	struct con_conn **conn_by_fd;
	size_t conn_cap;
	int started, stopping, stopped;

	uint64_t next_id;               /* next id handed out */
	uint64_t reserved;              /* ids below this are reserved on disk */
	uint64_t last_out;              /* highest outbound id */

	struct con_msg_list log;
	size_t log_count, log_bytes;
	struct con_msg_list sendq;      /* sent, waiting for the journal */
	struct con_inbox_list inbox;
	struct con_inbox_list intake;   /* IN_INTAKE, waiting for the journal */
	struct con_inbox_list held;     /* IN_HELD, waiting for the journal */
	struct con_inbox_bucket *buckets;
	size_t nbuckets, ninbox;
	struct con_waiter_list waiters;
	struct con_sent_list sent;
	struct event *sent_ev;
	struct event *replay_ev;
	struct con_journal j;

	unsigned inflight;              /* replies not yet written out */
	struct event *flush_ev;         /* stop: finishes once flushed or late */
	plat_stopped_fn stopped_cb;
	void *stopped_arg;
};

static LIST_HEAD(, console) console_all = LIST_HEAD_INITIALIZER(console_all);

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

/* Checks a message text as a POST's: returns an error text or NULL. */
static const char *
text_check(const char *text)
{
	size_t len = strlen(text);

	if (text[strspn(text, " \t\r\n")] == '\0')
		return "field \"text\" must not be empty";
	if (len > CON_MAX_BODY)
		return "field \"text\" is too long";
	if (!utf8_valid((const unsigned char *)text, len))
		return "field \"text\" must be UTF-8";
	return NULL;
}

/* 1 when a repeated warning may be logged now; otherwise counts it in quiet. */
static int
ratelog_due(struct con_ratelog *r)
{
	uint64_t now = mono_msec();

	if (r->last != 0 && now - r->last < CON_WARN_MSEC) {
		r->quiet++;
		return 0;
	}
	r->last = now;
	return 1;
}

/*
 * An id as a JSON number printed in full: cJSON prints numbers above
 * about 10^15 with 15 significant digits, which would change the id.
 */
static cJSON *
id_json(uint64_t id)
{
	char buf[24];
	cJSON *v;

	snprintf(buf, sizeof(buf), "%" PRIu64, id);
	if ((v = cJSON_CreateRaw(buf)) == NULL)
		fatalx("console: out of memory");
	return v;
}

static void
id_add(cJSON *o, const char *key, uint64_t id)
{
	if (!cJSON_AddItemToObject(o, key, id_json(id)))
		fatalx("console: out of memory");
}

static const char *
skip_space(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
		p++;
	return p;
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

/* Hands out the next id, reserving a new block on disk when needed; 0 when none is left. */
static uint64_t
id_next(struct console *c)
{
	if (c->next_id > CON_ID_MAX)
		return 0;
	if (c->next_id >= c->reserved) {
		c->reserved = c->next_id + CON_ID_BLOCK;
		seq_write(c, c->reserved);
	}
	return c->next_id++;
}

/* Raises *next past an id seen in a state file. */
static void
id_seen(uint64_t *next, uint64_t id)
{
	if (id >= *next)
		*next = id + 1;
}

/* ---------------------------------------------------------------- */
/* HTTP replies                                                     */
/* ---------------------------------------------------------------- */

static void conn_request_done(struct console *c, struct evhttp_request *req);

static void
reply_done(struct evhttp_request *req, void *arg)
{
	struct console *c = arg;

	conn_request_done(c, req);
	if (c->inflight > 0)
		c->inflight--;
	if (c->stopping && c->inflight == 0 && c->flush_ev != NULL)
		event_active(c->flush_ev, EV_TIMEOUT, 0);
}

/*
 * Sends status with body (may be NULL) and the usual headers.  A HEAD
 * answer carries the length of the body it leaves out, and no body.
 */
static void
reply_send(struct console *c, struct evhttp_request *req, int code,
    const char *reason, const char *ctype, const char *body, size_t len)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	char clen[24];

	evhttp_add_header(h, "Content-Type", ctype);
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	if (c->stopping)
		evhttp_add_header(h, "Connection", "close");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		snprintf(clen, sizeof(clen), "%zu", body != NULL ? len : 0);
		evhttp_add_header(h, "Content-Length", clen);
	} else if (body != NULL)
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

/* 503 with Retry-After: the client may send the same again in secs seconds. */
static void
reply_unavailable(struct console *c, struct evhttp_request *req, unsigned secs,
    const char *msg)
{
	char v[16];

	snprintf(v, sizeof(v), "%u", secs > 0 ? secs : 1);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", v);
	reply_error(c, req, 503, "Service Unavailable", msg);
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

/* A new outbound message (not yet queued or logged). */
static struct con_msg *
msg_new(uint64_t id, const struct outbound *o)
{
	struct con_msg *m = xcalloc(1, sizeof(*m));

	m->id = id;
	m->chat_id = xstrdup(o->chat_id);
	m->thread_id = o->thread_id != NULL ? xstrdup(o->thread_id) : NULL;
	m->reply_to = o->reply_to != NULL ? xstrdup(o->reply_to) : NULL;
	m->text = xstrdup(o->text != NULL ? o->text : "");
	m->time = time(NULL);
	return m;
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
	id_add(o, "id", m->id);
	cJSON_AddStringToObject(o, "text", m->text);
	if (m->reply_to == NULL)
		cJSON_AddNullToObject(o, "reply_to");
	else if (parse_u64(m->reply_to, CON_ID_MAX, &rt) == 0)
		id_add(o, "reply_to", rt);
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
	id_add(o, "last", last);
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
	return &c->buckets[id % c->nbuckets];
}

static struct con_inbox *
inbox_find_id(struct console *c, uint64_t id)
{
	struct con_inbox *in;

	LIST_FOREACH(in, inbox_bucket(c, id), bucket)
		if (in->id == id)
			return in;
	return NULL;
}

static struct con_inbox *
inbox_find(struct console *c, const char *idstr)
{
	uint64_t id;

	if (idstr == NULL || parse_u64(idstr, UINT64_MAX, &id) == -1)
		return NULL;
	return inbox_find_id(c, id);
}

/* Doubles the hash table, so that lookups stay short however many wait. */
static void
inbox_rehash(struct console *c)
{
	size_t n = c->nbuckets * 2;
	struct con_inbox *in;

	free(c->buckets);
	c->buckets = xcalloc(n, sizeof(*c->buckets));
	c->nbuckets = n;
	for (size_t i = 0; i < n; i++)
		LIST_INIT(&c->buckets[i]);
	TAILQ_FOREACH(in, &c->inbox, entry)
		LIST_INSERT_HEAD(inbox_bucket(c, in->id), in, bucket);
}

/* The queue an entry in state st waits in, or NULL (IN_HUB). */
static struct con_inbox_list *
inbox_queue(struct console *c, enum con_in_state st)
{
	if (st == IN_INTAKE)
		return &c->intake;
	if (st == IN_HELD)
		return &c->held;
	return NULL;
}

/* A time read back from a state file: a whole number of seconds in range, else dflt. */
static time_t
con_saved_time(const cJSON *t, time_t dflt)
{
	if (!cJSON_IsNumber(t) || !(t->valuedouble >= 0 && t->valuedouble <= 253402300799.0))
		return dflt;                    /* absent, negative, NaN, past the year 9999 */
	return (time_t)t->valuedouble;
}

static struct con_inbox *
inbox_new(struct console *c, uint64_t id, const char *chat_id,
    const char *user_id, const char *user_name, const char *text, time_t t,
    enum con_in_state st)
{
	struct con_inbox *in = xcalloc(1, sizeof(*in));

	in->c = c;
	in->id = id;
	in->state = st;
	snprintf(in->idstr, sizeof(in->idstr), "%" PRIu64, id);
	in->chat_id = xstrdup(chat_id);
	in->user_id = xstrdup(user_id);
	in->user_name = user_name != NULL ? xstrdup(user_name) : NULL;
	in->text = xstrdup(text);
	in->time = t;
	TAILQ_INSERT_TAIL(&c->inbox, in, entry);
	if (inbox_queue(c, st) != NULL)
		TAILQ_INSERT_TAIL(inbox_queue(c, st), in, queue);
	if (++c->ninbox > c->nbuckets * 2)
		inbox_rehash(c);
	else
		LIST_INSERT_HEAD(inbox_bucket(c, id), in, bucket);
	return in;
}

/* Moves in out of its queue into state st (IN_HUB or a queue's state). */
static void
inbox_set_state(struct con_inbox *in, enum con_in_state st)
{
	struct console *c = in->c;

	if (inbox_queue(c, in->state) != NULL)
		TAILQ_REMOVE(inbox_queue(c, in->state), in, queue);
	in->state = st;
	if (inbox_queue(c, st) != NULL)
		TAILQ_INSERT_TAIL(inbox_queue(c, st), in, queue);
}

static void
inbox_free(struct con_inbox *in)
{
	struct console *c = in->c;

	inbox_set_state(in, IN_HUB);
	TAILQ_REMOVE(&c->inbox, in, entry);
	LIST_REMOVE(in, bucket);
	c->ninbox--;
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

	if (in->req == NULL || in->state != IN_HUB)
		return;
	o = cJSON_CreateObject();
	if (o == NULL)
		fatalx("console: out of memory");
	id_add(o, "message_id", in->id);
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

static void journal_take_done(struct console *c, uint64_t id);

/* The hub has handled the message: record it, answer its waiter, forget it. */
static void
inbox_done(void *arg)
{
	struct con_inbox *in = arg;

	journal_take_done(in->c, in->id);
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

	inbox_set_state(in, IN_HUB);
	hub_inbound(c->hub, c->name, &m, inbox_done, in);
}

/* ---------------------------------------------------------------- */
/* State files                                                      */
/* ---------------------------------------------------------------- */

/* State files that could not be used, kept aside instead of overwritten. */
#define CON_ASIDE_OUTBOX        1u
#define CON_ASIDE_INBOX         2u
#define CON_ASIDE_JOURNAL       4u
static const char *const state_aside_suffix[] = { "outbox.json", "inbox.json", "journal" };

/* What loading the state found. */
struct con_load {
	uint64_t next;                  /* the next id to hand out */
	int malformed;                  /* saved messages that fail a POST's checks */
	int answered;                   /* saved messages whose reply was recorded */
	int seen;                       /* an outbox, inbox or journal was there */
	int seq_seen, seq_ok;           /* console.seq was there; it was whole */
	int outbox_next;                /* the outbox said which id comes next */
};

/*
 * Renames a state file that could not be read whole to "<file>.kept-TIME"
 * so that nothing overwrites it.  Returns 0, or -1 when it is still in the
 * way (then no state file is written until it has been moved: the journal
 * stays down).
 */
static int
state_keep_aside(struct console *c, unsigned which)
{
	size_t i = (size_t)__builtin_ctz(which);
	char *path = state_path(c, state_aside_suffix[i]), *to = NULL;
	struct stat st;
	int rc = 0;

	for (int n = 0; to == NULL || (lstat(to, &st) == 0 && n < 100); n++) {
		free(to);
		to = n == 0 ? xasprintf("%s.kept-%lld", path, (long long)time(NULL)) :
		    xasprintf("%s.kept-%lld-%d", path, (long long)time(NULL), n);
	}
	c->j.aside &= ~which;
	if (rename(path, to) == 0)
		log_warnx("console: %s kept as %s", path, to);
	else if (errno != ENOENT) {
		if (!c->j.warned)
			log_warn("console: cannot set %s aside", path);
		c->j.aside |= which;
		rc = -1;
	}
	free(to);
	free(path);
	return rc;
}

/* Sets aside the files still waiting for it; 0, or -1 while one cannot be. */
static int
state_aside_pending(struct console *c)
{
	for (unsigned bit = 1; bit <= CON_ASIDE_JOURNAL; bit <<= 1)
		if ((c->j.aside & bit) && state_keep_aside(c, bit) == -1)
			return -1;
	return 0;
}

/* Reads a state file as a JSON object; NULL when absent or unusable (logged, kept aside). */
static cJSON *
state_read(struct console *c, const char *suffix, unsigned aside)
{
	char *path = state_path(c, suffix);
	size_t len;
	char *data = read_file(path, CON_STATE_MAX, &len);
	cJSON *j = NULL;

	if (data == NULL) {
		if (errno != ENOENT) {
			log_warn("console: cannot read %s", path);
			state_keep_aside(c, aside);
		}
	} else if ((j = cJSON_ParseWithLength(data, len)) == NULL ||
	    !cJSON_IsObject(j)) {
		log_warnx("console: %s is not a JSON object; ignored", path);
		cJSON_Delete(j);
		j = NULL;
		state_keep_aside(c, aside);
	}
	free(data);
	free(path);
	return j;
}

/* Writes a state file atomically; 0, or -1 with errno set. */
static int
state_write(struct console *c, const char *suffix, cJSON *j)
{
	char *path = state_path(c, suffix);
	char *s = cJSON_PrintUnformatted(j);
	int rc = 0, e = 0;

	if (s == NULL)
		fatalx("console: out of memory");
	if (mkdir_p(c->state_dir, 0700) == -1 ||
	    write_file_atomic(path, s, strlen(s), 0600) == -1) {
		e = errno;
		rc = -1;
	}
	cJSON_free(s);
	free(path);
	errno = e;
	return rc;
}

static const char *
jstr(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Reads a message id (1 to CON_ID_MAX); 0 or -1. */
static int
jid(const cJSON *o, const char *key, uint64_t *id)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > (double)CON_ID_MAX)
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
	id_add(o, "id", m->id);
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
	id_add(o, "id", in->id);
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
	m->time = con_saved_time(t, 0);
	outbox_append(c, m);
	id_seen(next, v);
}

/* Adds a saved inbound message to the inbox, held for replay, if it passes a POST's checks. */
static void
inbox_load_one(struct console *c, const cJSON *it, struct con_load *ld)
{
	const char *chat = jstr(it, "chat_id"), *user = jstr(it, "user_id");
	const char *text = jstr(it, "text"), *name = jstr(it, "user_name");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(it, "time");
	struct con_inbox *in;
	uint64_t id;

	if (jid(it, "id", &id) == -1) {
		ld->malformed++;
		return;
	}
	id_seen(&ld->next, id);
	if (inbox_find_id(c, id) != NULL)
		return;
	if (chat == NULL || user == NULL || text == NULL || !ident_valid(chat) ||
	    !ident_valid(user) || (name != NULL && !ident_valid(name)) ||
	    text_check(text) != NULL) {
		ld->malformed++;
		return;
	}
	in = inbox_new(c, id, chat, user, name, text,
	    con_saved_time(t, time(NULL)), IN_HELD);
	in->replied = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(it, "replied"));
}

/* The complete objects of the "messages" array of a cut or corrupt inbox file. */
static cJSON *
inbox_salvage(const char *data, size_t len)
{
	const char *end = data + len, *p = memmem(data, len, "\"messages\"", 10);
	cJSON *arr = cJSON_CreateArray(), *it;

	if (arr == NULL)
		fatalx("console: out of memory");
	if (p != NULL)
		p = skip_space(p + 10, end);
	if (p == NULL || p >= end || *p != ':' ||
	    (p = skip_space(p + 1, end)) >= end || *p != '[')
		return arr;
	for (p++; (p = skip_space(p, end)) < end && *p != ']'; p++) {
		const char *stop;

		if ((it = cJSON_ParseWithLengthOpts(p, (size_t)(end - p), &stop, 0)) == NULL)
			break;
		cJSON_AddItemToArray(arr, it);
		if ((p = skip_space(stop, end)) >= end || *p != ',')
			break;
	}
	return arr;
}

/* The "messages" of console.inbox.json; *damaged when only part could be read. */
static cJSON *
inbox_parse(const char *data, size_t len, int *damaged)
{
	cJSON *j = cJSON_ParseWithLength(data, len);
	cJSON *arr = cJSON_DetachItemFromObjectCaseSensitive(j, "messages");

	*damaged = !cJSON_IsObject(j) || !cJSON_IsArray(arr);
	cJSON_Delete(j);
	if (!*damaged)
		return arr;
	cJSON_Delete(arr);
	return inbox_salvage(data, len);
}

/* Loads console.inbox.json (what a previous worker left unhandled) as held messages. */
static void
inbox_load(struct console *c, struct con_load *ld)
{
	char *path = state_path(c, "inbox.json");
	size_t len;
	char *data = read_file(path, CON_STATE_MAX, &len);
	const cJSON *it;
	cJSON *arr;
	int damaged;

	if (data == NULL) {
		if (errno != ENOENT) {
			log_warn("console: cannot read %s; its messages are not replayed", path);
			state_keep_aside(c, CON_ASIDE_INBOX);
		}
		free(path);
		return;
	}
	arr = inbox_parse(data, len, &damaged);
	cJSON_ArrayForEach(it, arr)
		inbox_load_one(c, it, ld);
	if (damaged) {
		log_warnx("console: %s is damaged; recovered %d message(s) from it",
		    path, cJSON_GetArraySize(arr));
		state_keep_aside(c, CON_ASIDE_INBOX);
	}
	cJSON_Delete(arr);
	free(data);
	free(path);
}

/* Loads console.outbox.json: the chat log and the next id. */
static void
outbox_load(struct console *c, struct con_load *ld)
{
	cJSON *out = state_read(c, "outbox.json", CON_ASIDE_OUTBOX);
	const cJSON *it;
	uint64_t v;

	if (out == NULL)
		return;
	if (jid(out, "next_id", &v) == 0) {
		ld->outbox_next = 1;
		if (v > ld->next)
			ld->next = v;
	}
	cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(out, "messages"))
		outbox_load_one(c, it, &ld->next);
	cJSON_Delete(out);
}

/* Reads the reserved id mark of console.seq ("N\n"; without the newline it was cut). */
static void
seq_load(struct console *c, struct con_load *ld)
{
	char *path = state_path(c, "seq");
	size_t len = 0;
	char *data = read_file(path, 64, &len);
	uint64_t v;

	ld->seq_seen = data != NULL || errno != ENOENT;
	if (data == NULL && errno != ENOENT)
		log_warn("console: cannot read %s; ignored", path);
	if (data != NULL) {
		ld->seq_ok = len > 0 && data[len - 1] == '\n';
		data[strcspn(data, "\n")] = '\0';
		if (!ld->seq_ok || parse_u64(data, CON_ID_MAX + 1, &v) == -1) {
			ld->seq_ok = 0;
			log_warnx("console: %s does not hold an id mark (at most %llu); "
			    "ignored", path, (unsigned long long)CON_ID_MAX + 1);
		} else if (v > ld->next)
			ld->next = v;
	}
	free(data);
	free(path);
}

/*
 * With console.seq damaged or gone and no outbox to say which id comes
 * next, the ids still on disk may be behind some handed out before (the
 * hub remembers those as handled and would drop a new message reusing
 * one).  Ids then continue from the clock in microseconds: above any id
 * handed out before, and below 2^53 for two centuries.
 */
static void
seq_floor(struct con_load *ld)
{
	struct timespec ts;
	uint64_t us;

	if (ld->seq_ok || ld->outbox_next || (!ld->seq_seen && !ld->seen))
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	us = (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
	if (us <= ld->next || us > CON_ID_MAX)
		return;
	ld->next = us;
	log_warnx("console: the id counter is damaged; ids continue from %" PRIu64
	    " (the clock), above any handed out before", us);
}

/* 1 when the state file exists (damaged or not). */
static int
state_exists(struct console *c, const char *suffix)
{
	char *path = state_path(c, suffix);
	struct stat st;
	int rc = lstat(path, &st) == 0;

	free(path);
	return rc;
}

/* Writes the log; 0, or -1 with errno set. */
static int
state_save_outbox(struct console *c)
{
	cJSON *j = cJSON_CreateObject(), *arr = cJSON_CreateArray();
	struct con_msg *m;
	int rc, e;

	if (j == NULL || arr == NULL)
		fatalx("console: out of memory");
	cJSON_AddNumberToObject(j, "version", 1);
	id_add(j, "next_id", c->next_id);
	cJSON_AddItemToObject(j, "messages", arr);
	TAILQ_FOREACH(m, &c->log, entry)
		cJSON_AddItemToArray(arr, msg_saved_json(m));
	rc = state_write(c, "outbox.json", j);
	e = errno;
	cJSON_Delete(j);
	errno = e;
	return rc;
}

/*
 * Writes console.inbox.json: the messages not handled yet.  Between stops
 * those already answered are marked, so that a crash does not run them
 * again; at a stop the hub has left them on purpose (e.g. a cancelled
 * agent call told "will be answered again"), so they are replayed.
 */
static int
state_save_inbox(struct console *c, int at_stop)
{
	cJSON *j = cJSON_CreateObject(), *arr = cJSON_CreateArray(), *o;
	struct con_inbox *in;
	int rc, e;

	if (j == NULL || arr == NULL)
		fatalx("console: out of memory");
	cJSON_AddNumberToObject(j, "version", 1);
	cJSON_AddItemToObject(j, "messages", arr);
	TAILQ_FOREACH(in, &c->inbox, entry) {
		if (in->state == IN_INTAKE)
			continue;
		o = inbox_saved_json(in);
		if (in->replied && !at_stop)
			cJSON_AddTrueToObject(o, "replied");
		cJSON_AddItemToArray(arr, o);
	}
	if (at_stop && cJSON_GetArraySize(arr) > 0)
		log_info("console: %d unhandled message(s) kept for the next start",
		    cJSON_GetArraySize(arr));
	rc = state_write(c, "inbox.json", j);
	e = errno;
	cJSON_Delete(j);
	errno = e;
	return rc;
}

/* ---------------------------------------------------------------- */
/* The journal                                                      */
/* ---------------------------------------------------------------- */

/* Applies one "out" line: the message joins the log; what it replied to is marked answered. */
static void
journal_apply_out(struct console *c, const cJSON *it, struct con_load *ld)
{
	struct con_inbox *in = inbox_find(c, jstr(it, "reply_to"));

	outbox_load_one(c, it, &ld->next);
	if (in != NULL)
		in->replied = 1;
}

/* Applies one journal line; -1 when it is unreadable (e.g. cut short by a crash). */
static int
journal_apply(struct console *c, const char *line, struct con_load *ld)
{
	cJSON *j = cJSON_Parse(line), *it;
	struct con_inbox *in;
	uint64_t id;
	int rc = 0;

	if ((it = cJSON_GetObjectItemCaseSensitive(j, "out")) != NULL)
		journal_apply_out(c, it, ld);
	else if ((it = cJSON_GetObjectItemCaseSensitive(j, "in")) != NULL)
		inbox_load_one(c, it, ld);
	else if (jid(j, "done", &id) == 0) {
		if ((in = inbox_find_id(c, id)) != NULL)
			inbox_free(in);
	} else if (jid(j, "keep", &id) == 0) {
		if ((in = inbox_find_id(c, id)) != NULL)
			in->replied = 0;
	} else
		rc = -1;
	cJSON_Delete(j);
	return rc;
}

/*
 * Applies the journal of a worker that did not stop cleanly: sent messages
 * go to the log, taken ones join the inbox, done ones leave it.  A line
 * holding a NUL byte is unreadable, not the end of the file.  A journal
 * that cannot be read whole (too large, an I/O error) is kept aside, never
 * emptied.
 */
static void
journal_load(struct console *c, struct con_load *ld)
{
	char *path = state_path(c, "journal");
	size_t len;
	char *data = read_file(path, CON_STATE_MAX, &len), *p, *nl;
	int lines = 0, bad = 0;

	if (data == NULL) {
		if (errno != ENOENT) {
			log_warn("console: cannot read %s; its messages are not replayed", path);
			state_keep_aside(c, CON_ASIDE_JOURNAL);
		}
		free(path);
		return;
	}
	for (p = data; p < data + len; p = nl + 1) {
		if ((nl = memchr(p, '\n', (size_t)(data + len - p))) == NULL)
			nl = data + len;
		if (nl == p)
			continue;
		*nl = '\0';
		lines++;
		bad += memchr(p, '\0', (size_t)(nl - p)) != NULL ||
		    journal_apply(c, p, ld) == -1;
	}
	if (lines > 0) {
		c->j.stale = 1;
		log_info("console: recovered %d line(s) from the journal of a worker "
		    "that did not stop cleanly (%d unreadable line(s))", lines, bad);
	}
	free(data);
	free(path);
}

/* Forgets the loaded messages whose reply was recorded: they are not run again. */
static void
journal_drop_answered(struct console *c, struct con_load *ld)
{
	struct con_inbox *in, *next;

	for (in = TAILQ_FIRST(&c->inbox); in != NULL; in = next) {
		next = TAILQ_NEXT(in, entry);
		if (in->replied) {
			ld->answered++;
			inbox_free(in);
		}
	}
}

/* Appends the line {key: item} (item is taken) to b. */
static void
journal_line(struct evbuffer *b, const char *key, cJSON *item)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (o == NULL || item == NULL || !cJSON_AddItemToObject(o, key, item))
		fatalx("console: out of memory");
	if ((s = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("console: out of memory");
	evbuffer_add(b, s, strlen(s));
	evbuffer_add(b, "\n", 1);
	cJSON_free(s);
	cJSON_Delete(o);
}

/* Seconds until the journal is tried again (for Retry-After). */
static unsigned
journal_retry_after(const struct console *c)
{
	uint64_t now = mono_msec();

	return c->j.retry_at > now ? (unsigned)((c->j.retry_at - now + 999) / 1000) : 1;
}

static void
journal_retry_schedule(struct console *c)
{
	unsigned ms = c->j.backoff_msec;
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	c->j.retry_at = mono_msec() + ms;
	c->j.backoff_msec = ms * 2 > CON_JOURNAL_RETRY_MAX_MSEC ?
	    CON_JOURNAL_RETRY_MAX_MSEC : ms * 2;
	if (!c->stopped)
		evtimer_add(c->j.retry_ev, &tv);
}

/* The journal cannot be written (errno says why): refuse messages, hold replies, retry. */
static void
journal_outage(struct console *c, const char *what)
{
	int e = errno;

	c->j.up = 0;
	c->j.stale = 1;
	snprintf(c->j.why, sizeof(c->j.why), "%s: %s", what, strerror(e));
	if (!c->j.warned)
		log_warnx("console: %s in %s (%s); new messages get 503 until it "
		    "can be written", what, c->state_dir, strerror(e));
	else
		log_debug("console: %s (%s); trying again", what, strerror(e));
	c->j.warned = 1;
	journal_retry_schedule(c);
}

/* Opens console.journal for appending; 0, or -1 with errno set. */
static int
journal_open(struct console *c)
{
	char *path = state_path(c, "journal");
	struct stat st;
	int e;

	if (mkdir_p(c->state_dir, 0700) == 0)
		c->j.fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	e = errno;
	free(path);
	if (c->j.fd == -1 || fstat(c->j.fd, &st) == -1) {
		errno = e;
		return -1;
	}
	c->j.size = (size_t)st.st_size;
	if (c->j.size > 0)
		c->j.stale = 1;         /* lines memory may not match: fold first */
	return 0;
}

/* Writes the two snapshots from memory and empties the journal; 0, or -1 with errno set. */
static int
journal_fold(struct console *c)
{
	if (state_save_outbox(c) == -1 || state_save_inbox(c, 0) == -1)
		return -1;
	if (ftruncate(c->j.fd, 0) == -1)
		return -1;
	c->j.size = c->j.since_fold = 0;
	c->j.stale = 0;
	return 0;
}

/*
 * Makes the journal usable: damaged files set aside, the file open, the
 * snapshots matching memory.  Then messages are taken again and what
 * waited for it (replies, replays) goes on.  Returns 0 when up.
 */
static int
journal_try_up(struct console *c)
{
	const char *failed = NULL;

	if (c->j.up || c->stopped)
		return c->j.up ? 0 : -1;
	if (state_aside_pending(c) == -1)
		failed = "cannot set a damaged state file aside";
	else if (c->j.fd == -1 && journal_open(c) == -1)
		failed = "cannot open the journal";
	else if (c->j.stale && journal_fold(c) == -1)
		failed = "cannot write the state files";
	if (failed != NULL) {
		journal_outage(c, failed);
		return -1;
	}
	c->j.up = 1;
	c->j.backoff_msec = CON_BACKOFF_MIN_MSEC;
	if (c->j.warned)
		log_info("console: the journal can be written again; taking messages");
	c->j.warned = 0;
	if (!TAILQ_EMPTY(&c->held))
		event_active(c->replay_ev, EV_TIMEOUT, 0);
	if (!TAILQ_EMPTY(&c->sendq))
		event_active(c->j.flush_ev, EV_TIMEOUT, 0);
	return 0;
}

static void
journal_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)journal_try_up(arg);
}

/* Writes b whole or not at all; 0, or -1 (the journal is then down). */
static int
journal_write(struct console *c, struct evbuffer *b)
{
	size_t len = evbuffer_get_length(b);
	int n, e;

	while (evbuffer_get_length(b) > 0) {
		if ((n = evbuffer_write(b, c->j.fd)) > 0 || (n < 0 && errno == EINTR))
			continue;
		e = n == 0 ? ENOSPC : errno;
		/* Cut a partial line off, so that no line is glued to a later one. */
		if (ftruncate(c->j.fd, (off_t)c->j.size) == -1) {
			close(c->j.fd);
			c->j.fd = -1;
		}
		errno = e;
		journal_outage(c, "cannot write the journal");
		return -1;
	}
	c->j.size += len;
	c->j.since_fold += len;
	return 0;
}

/* This turn's lines: the done marks, then the messages taken, then those sent. */
static struct evbuffer *
journal_batch(struct console *c)
{
	struct evbuffer *b = evbuffer_new();
	struct con_inbox *in;
	struct con_msg *m;

	if (b == NULL)
		fatalx("console: out of memory");
	evbuffer_add_buffer(b, c->j.done);
	TAILQ_FOREACH(in, &c->intake, queue)
		journal_line(b, "in", inbox_saved_json(in));
	TAILQ_FOREACH(m, &c->sendq, entry)
		journal_line(b, "out", msg_saved_json(m));
	return b;
}

static void inbox_intake_end(struct console *c, int ok);
static void sendq_deliver_all(struct console *c);

/*
 * Writes the lines gathered during this loop turn; then the messages
 * taken are answered (or refused) and the replies sent are delivered.
 * Runs from an active event, so before the loop polls again: before any
 * answer can be written to a socket.
 */
static void
journal_flush(struct console *c)
{
	struct evbuffer *b;
	int ok;

	if (TAILQ_EMPTY(&c->intake) && TAILQ_EMPTY(&c->sendq) &&
	    evbuffer_get_length(c->j.done) == 0)
		return;
	if (!c->j.up) {
		evbuffer_drain(c->j.done, evbuffer_get_length(c->j.done));
		inbox_intake_end(c, 0);
		return;                 /* replies wait for the journal */
	}
	b = journal_batch(c);
	ok = journal_write(c, b) == 0;
	evbuffer_free(b);
	if (ok)
		sendq_deliver_all(c);
	inbox_intake_end(c, ok);
}

static void
journal_cb(evutil_socket_t fd, short what, void *arg)
{
	struct console *c = arg;

	(void)fd;
	(void)what;
	journal_flush(c);
	if (c->j.up && c->j.since_fold > CON_JOURNAL_MAX) {
		if (journal_fold(c) == -1)
			log_warn("console: cannot fold the journal; trying again later");
		c->j.since_fold = 0;    /* on failure: again after as much more */
	}
}

/* Queues a mark line ("done" or "keep") for message id. */
static void
journal_take_mark(struct console *c, const char *key, uint64_t id)
{
	if (!c->j.up) {
		c->j.stale = 1;         /* a fold brings the files up to date */
		return;
	}
	journal_line(c->j.done, key, id_json(id));
	event_active(c->j.flush_ev, EV_TIMEOUT, 0);
}

static void
journal_take_done(struct console *c, uint64_t id)
{
	journal_take_mark(c, "done", id);
}

/* A message taken (already in the intake queue): written at the end of the turn. */
static void
journal_take_in(struct console *c)
{
	event_active(c->j.flush_ev, EV_TIMEOUT, 0);
}

/* A message sent: delivered once its line is written (while down, it waits). */
static void
journal_take_out(struct console *c, struct con_msg *m)
{
	TAILQ_INSERT_TAIL(&c->sendq, m, entry);
	if (c->j.up)
		event_active(c->j.flush_ev, EV_TIMEOUT, 0);
}

/* At stop: the answered messages the hub left unhandled are replayed, not dropped. */
static void
journal_keep_answered(struct console *c)
{
	struct con_inbox *in;

	TAILQ_FOREACH(in, &c->inbox, entry)
		if (in->state == IN_HUB && in->replied)
			journal_take_mark(c, "keep", in->id);
}

/* Empties the journal once the snapshots hold everything. */
static void
journal_clear(struct console *c)
{
	char *path;

	if (c->j.fd != -1) {
		if (ftruncate(c->j.fd, 0) == -1)
			log_warn("console: cannot empty the journal");
		return;
	}
	path = state_path(c, "journal");
	if (unlink(path) == -1 && errno != ENOENT)
		log_warn("console: cannot remove %s", path);
	free(path);
}

static void
journal_close(struct console *c)
{
	if (c->j.retry_ev != NULL)
		evtimer_del(c->j.retry_ev);
	if (c->j.fd != -1)
		close(c->j.fd);
	c->j.fd = -1;
	c->j.up = 0;
}

/* ---------------------------------------------------------------- */
/* What the journal completes: intake, delivery, replay             */
/* ---------------------------------------------------------------- */

static void sent_push(struct console *c, plat_sent_fn cb, void *arg, int ok);

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

/* 503: the journal cannot keep a message now. */
static void
reply_journal_down(struct console *c, struct evhttp_request *req)
{
	char msg[192];

	snprintf(msg, sizeof(msg), "the message cannot be saved now (%s); "
	    "send it again later", c->j.why);
	reply_unavailable(c, req, journal_retry_after(c), msg);
}

/* The journal holds in: answer its POST (or park it for ?wait), hand it to the hub. */
static void
inbox_accept(struct console *c, struct con_inbox *in)
{
	cJSON *o;

	inbox_set_state(in, IN_HUB);
	if (in->wait_usec > 0) {
		in->replies = cJSON_CreateArray();
		in->timer = timer_start(c, in->wait_usec, inbox_wait_timeout, in);
	} else {
		if ((o = cJSON_CreateObject()) == NULL)
			fatalx("console: out of memory");
		id_add(o, "message_id", in->id);
		reply_json(c, in->req, 202, "Accepted", o);
		in->req = NULL;
	}
	inbox_submit(c, in);            /* may free in */
}

/* The journal could not keep in: refuse its POST and forget it. */
static void
inbox_refuse(struct console *c, struct con_inbox *in)
{
	reply_journal_down(c, in->req);
	in->req = NULL;
	inbox_free(in);
}

/* Answers every message waiting for the journal: taken when ok, else refused. */
static void
inbox_intake_end(struct console *c, int ok)
{
	struct con_inbox *in;

	while ((in = TAILQ_FIRST(&c->intake)) != NULL) {
		if (ok)
			inbox_accept(c, in);
		else
			inbox_refuse(c, in);
	}
}

/* The journal holds m: it joins the log, reaches waiting clients, its send completes. */
static void
sendq_deliver(struct console *c, struct con_msg *m)
{
	struct con_inbox *in = inbox_find(c, m->reply_to);

	if (in != NULL) {
		in->replied = 1;
		if (in->req != NULL && in->replies != NULL)
			msg_to_json(m, in->replies);
	}
	sent_push(c, m->cb, m->cb_arg, 1);
	m->cb = NULL;
	outbox_append(c, m);
	waiters_wake(c, m->chat_id, m->id);
}

static void
sendq_deliver_all(struct console *c)
{
	struct con_msg *m;

	while ((m = TAILQ_FIRST(&c->sendq)) != NULL) {
		TAILQ_REMOVE(&c->sendq, m, entry);
		sendq_deliver(c, m);
	}
}

/* At stop: the sends the journal never took fail. */
static void
sendq_fail_all(struct console *c)
{
	struct con_msg *m;

	while ((m = TAILQ_FIRST(&c->sendq)) != NULL) {
		TAILQ_REMOVE(&c->sendq, m, entry);
		sent_push(c, m->cb, m->cb_arg, 0);
		msg_free(m);
	}
}

/* Hands the messages saved by a previous worker to the hub, same ids, once the journal is up. */
static void
replay_cb(evutil_socket_t fd, short what, void *arg)
{
	struct console *c = arg;
	struct con_inbox *in;
	int n = 0;

	(void)fd;
	(void)what;
	/* Stopping already: they stay in the inbox, saved again at stop. */
	while (c->j.up && !c->stopping && (in = TAILQ_FIRST(&c->held)) != NULL) {
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

/* Reads the JSON body of req: one object and nothing after it; NULL with err set. */
static cJSON *
body_json(struct evhttp_request *req, const char **err)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *data, *end;
	cJSON *j;

	if (len == 0) {
		*err = "the request has no body; expected a JSON object";
		return NULL;
	}
	data = (const char *)evbuffer_pullup(in, -1);
	if (memchr(data, '\0', len) != NULL || json_has_nul_escape(data, len)) {
		*err = "the body must not contain NUL characters";
		return NULL;
	}
	if ((j = cJSON_ParseWithLengthOpts(data, len, &end, 0)) == NULL) {
		*err = "the body is not valid JSON";
		return NULL;
	}
	if (!cJSON_IsObject(j) || skip_space(end, data + len) != data + len) {
		cJSON_Delete(j);
		*err = "the body must be one JSON object and nothing after it";
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

/* The fields of a posted message; an error text or NULL. */
static const char *
post_fields(const cJSON *j, const char **chat, const char **user,
    const char **name, const char **text)
{
	const char *err;

	if ((err = field_check(j, "chat_id", 1, 1, chat)) != NULL ||
	    (err = field_check(j, "user_id", 1, 1, user)) != NULL ||
	    (err = field_check(j, "user_name", 0, 1, name)) != NULL ||
	    (err = field_check(j, "text", 1, 0, text)) != NULL)
		return err;
	return text_check(*text);
}

/* POST /v1/messages[?wait=S]: answered once the journal holds the message. */
static void
handle_post_message(struct console *c, struct evhttp_request *req)
{
	struct evkeyvalq kv;
	const char *err = NULL, *chat, *user, *name, *text;
	uint64_t wait, id;
	cJSON *j;
	struct con_inbox *in;

	if (query_parse(req, &kv) == -1 || query_wait(&kv, &wait) == -1) {
		evhttp_clear_headers(&kv);
		reply_error(c, req, 400, "Bad Request",
		    "wait must be a number of seconds (at most 60 are used)");
		return;
	}
	evhttp_clear_headers(&kv);
	if ((j = body_json(req, &err)) == NULL ||
	    (err = post_fields(j, &chat, &user, &name, &text)) != NULL)
		reply_error(c, req, 400, "Bad Request", err);
	else if (!c->j.up)
		reply_journal_down(c, req);
	else if ((id = id_next(c)) == 0)
		reply_unavailable(c, req, 3600, "no message ids are left");
	else {
		in = inbox_new(c, id, chat, user, name, text, time(NULL), IN_INTAKE);
		in->req = req;
		in->wait_usec = wait;
		journal_take_in(c);
	}
	cJSON_Delete(j);
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
	const char *a, *err = NULL;
	uint64_t after = 0, wait = 0;
	cJSON *o;

	free(raw);
	TAILQ_INIT(&kv);
	if (chat == NULL || dlen != strlen(chat) || !ident_valid(chat))
		err = "invalid chat_id in the path";
	else if (query_parse(req, &kv) == -1 || query_wait(&kv, &wait) == -1)
		err = "wait must be a number of seconds (at most 60 are used)";
	else if ((a = evhttp_find_header(&kv, "after")) != NULL &&
	    parse_u64(a, CON_ID_MAX, &after) == -1)
		err = "after must be a message id from 0 to 9007199254740991";
	evhttp_clear_headers(&kv);
	if (err != NULL) {
		reply_error(c, req, 400, "Bad Request", err);
		free(chat);
		return;
	}
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

static void conn_request_started(struct console *c, struct evhttp_request *req);

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

	conn_request_started(c, req);
	if (c->stopping) {
		reply_unavailable(c, req, 1, "the gateway is restarting");
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
/* Connections: a whole request within CON_REQUEST_SEC              */
/* ---------------------------------------------------------------- */

/*
 * evhttp's own timeout is an idle timeout: a client sending one byte now
 * and then keeps a connection forever.  Each connection is watched from
 * its bufferevent: the first byte of a request starts a deadline, the
 * request reaching a handler stops it, the answer being written makes the
 * connection idle again.
 */

static void
conn_index(struct console *c, struct con_conn *conn)
{
	size_t fd = (size_t)conn->fd, n = c->conn_cap;

	if (fd >= n) {
		while (n <= fd)
			n = n == 0 ? 64 : n * 2;
		c->conn_by_fd = xrealloc(c->conn_by_fd, n * sizeof(*c->conn_by_fd));
		memset(c->conn_by_fd + c->conn_cap, 0,
		    (n - c->conn_cap) * sizeof(*c->conn_by_fd));
		c->conn_cap = n;
	}
	c->conn_by_fd[fd] = conn;
}

static void
conn_free(struct con_conn *conn)
{
	struct console *c = conn->c;

	evbuffer_remove_cb_entry(bufferevent_get_input(conn->bev), conn->watch);
	if (conn->fd >= 0 && (size_t)conn->fd < c->conn_cap &&
	    c->conn_by_fd[conn->fd] == conn)
		c->conn_by_fd[conn->fd] = NULL;
	event_free(conn->timer);
	LIST_REMOVE(conn, entry);
	if (conn->state == CONN_NEW)
		bufferevent_decref(conn->bev);  /* the reference taken at accept */
	free(conn);
}

/* evhttp is freeing the connection. */
static void
conn_closed(struct evhttp_connection *evcon, void *arg)
{
	(void)evcon;
	conn_free(arg);
}

/* A request begins: its deadline runs. */
static void
conn_begin(struct con_conn *conn)
{
	struct timeval tv = { CON_REQUEST_SEC, 0 };

	conn->state = CONN_READING;
	evtimer_add(conn->timer, &tv);
}

/*
 * Learns the evhttp connection behind a new bufferevent (evhttp passes it
 * as the bufferevent's callback argument) and asks to hear of its end.
 * Returns -1 (conn freed) when evhttp has already dropped it.
 */
static int
conn_attach(struct con_conn *conn)
{
	bufferevent_data_cb readcb;
	void *arg;

	if (conn->state != CONN_NEW)
		return 0;
	bufferevent_getcb(conn->bev, &readcb, NULL, NULL, &arg);
	if (readcb == NULL || arg == NULL) {
		conn_free(conn);
		return -1;
	}
	event_del(conn->timer);
	conn->evcon = arg;
	conn->fd = bufferevent_getfd(conn->bev);
	evhttp_connection_set_closecb(conn->evcon, conn_closed, conn);
	if (conn->fd >= 0)
		conn_index(conn->c, conn);
	bufferevent_decref(conn->bev);
	conn->state = CONN_IDLE;
	if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
		conn_begin(conn);
	return 0;
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct con_conn *conn = arg;

	(void)fd;
	(void)what;
	if (conn->state == CONN_NEW) {
		(void)conn_attach(conn);
		return;
	}
	if (conn->state != CONN_READING)
		return;
	log_debug("console: closing a connection that took over %d s to send "
	    "its request", CON_REQUEST_SEC);
	evhttp_connection_free(conn->evcon);    /* frees conn through conn_closed */
}

/* Bytes arrived: an idle connection has begun a request. */
static void
conn_input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct con_conn *conn = arg;

	(void)buf;
	if (info->n_added == 0 || conn_attach(conn) == -1)
		return;
	if (conn->state == CONN_IDLE)
		conn_begin(conn);
}

/* evhttp's bufferevent factory: every accepted connection gets a watch. */
static struct bufferevent *
conn_new_cb(struct event_base *base, void *arg)
{
	struct console *c = arg;
	struct bufferevent *bev = bufferevent_socket_new(base, -1, 0);
	struct con_conn *conn;

	if (bev == NULL)
		return NULL;            /* evhttp tries its own */
	conn = xcalloc(1, sizeof(*conn));
	conn->c = c;
	conn->bev = bev;
	conn->fd = -1;
	conn->state = CONN_NEW;
	if ((conn->timer = evtimer_new(base, conn_timer_cb, conn)) == NULL ||
	    (conn->watch = evbuffer_add_cb(bufferevent_get_input(bev),
	    conn_input_cb, conn)) == NULL)
		fatalx("console: cannot watch a connection");
	/* Kept until attached: evhttp may drop the connection before that. */
	bufferevent_incref(bev);
	LIST_INSERT_HEAD(&c->conns, conn, entry);
	event_active(conn->timer, EV_TIMEOUT, 0);
	c->accept_pause_msec = 0;       /* accept() works again */
	return bev;
}

/* The watch of the connection req came on, or NULL. */
static struct con_conn *
conn_of(struct console *c, struct evhttp_request *req)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct con_conn *conn;
	int fd;

	if (evcon == NULL)
		return NULL;
	fd = bufferevent_getfd(evhttp_connection_get_bufferevent(evcon));
	if (fd < 0 || (size_t)fd >= c->conn_cap)
		return NULL;
	conn = c->conn_by_fd[fd];
	return conn != NULL && conn->evcon == evcon ? conn : NULL;
}

/* The request has arrived whole: a handler has it now. */
static void
conn_request_started(struct console *c, struct evhttp_request *req)
{
	struct con_conn *conn = conn_of(c, req);

	if (conn != NULL) {
		conn->state = CONN_HANDLING;
		event_del(conn->timer);
	}
}

/* Its answer is written: idle, or the next (pipelined) request has begun. */
static void
conn_request_done(struct console *c, struct evhttp_request *req)
{
	struct con_conn *conn = conn_of(c, req);

	if (conn == NULL)
		return;
	conn->state = CONN_IDLE;
	if (evbuffer_get_length(bufferevent_get_input(conn->bev)) > 0)
		conn_begin(conn);
}

/* After evhttp_free: the watches of connections never attached. */
static void
conns_free_all(struct console *c)
{
	while (!LIST_EMPTY(&c->conns))
		conn_free(LIST_FIRST(&c->conns));
	free(c->conn_by_fd);
	c->conn_by_fd = NULL;
	c->conn_cap = 0;
}

/* Closes the HTTP server and every connection. */
static void
console_http_close(struct console *c)
{
	if (c->http != NULL) {
		evhttp_free(c->http);   /* calls conn_closed for attached ones */
		c->http = NULL;
		c->bound = NULL;
	}
	conns_free_all(c);
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

/* The console whose evhttp is http (a listener's callback argument), or NULL. */
static struct console *
console_of_http(void *http)
{
	struct console *c;

	LIST_FOREACH(c, &console_all, all)
		if (c->http == http)
			return c;
	return NULL;
}

/*
 * accept() failed (EMFILE, ENFILE, ENOBUFS...): pause the listener, so
 * connections wait in the backlog, and resume it a little later (doubling
 * up to CON_ACCEPT_PAUSE_MAX_MSEC while it keeps failing).  The listener's
 * argument is evhttp's, not ours.
 */
static void
accept_error_cb(struct evconnlistener *l, void *arg)
{
	int e = errno;
	struct console *c = console_of_http(arg);
	unsigned ms;
	struct timeval tv;

	evconnlistener_disable(l);
	if (c == NULL || c->stopping)
		return;
	ms = c->accept_pause_msec == 0 ? CON_ACCEPT_PAUSE_MIN_MSEC :
	    c->accept_pause_msec * 2;
	c->accept_pause_msec = ms > CON_ACCEPT_PAUSE_MAX_MSEC ?
	    CON_ACCEPT_PAUSE_MAX_MSEC : ms;
	if (ratelog_due(&c->accept_log)) {
		errno = e;
		if (c->accept_log.quiet > 0)
			log_warn("console: cannot accept connections (%u more times "
			    "since the last warning); they wait in the backlog",
			    c->accept_log.quiet);
		else
			log_warn("console: cannot accept connections; they wait in "
			    "the backlog");
		c->accept_log.quiet = 0;
	}
	tv.tv_sec = c->accept_pause_msec / 1000;
	tv.tv_usec = (suseconds_t)(c->accept_pause_msec % 1000) * 1000;
	evtimer_add(c->accept_ev, &tv);
}

static void
accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct console *c = arg;

	(void)fd;
	(void)what;
	if (c->bound != NULL && !c->stopping)
		evconnlistener_enable(evhttp_bound_socket_get_listener(c->bound));
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

	if (c->stopping || c->bound != NULL)
		return;
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
	c->j.fd = -1;
	c->j.backoff_msec = CON_BACKOFF_MIN_MSEC;
	TAILQ_INIT(&c->log);
	TAILQ_INIT(&c->sendq);
	TAILQ_INIT(&c->inbox);
	TAILQ_INIT(&c->intake);
	TAILQ_INIT(&c->held);
	TAILQ_INIT(&c->waiters);
	STAILQ_INIT(&c->sent);
	LIST_INIT(&c->conns);
	c->nbuckets = CON_INBOX_BUCKETS;
	c->buckets = xcalloc(c->nbuckets, sizeof(*c->buckets));
	for (size_t i = 0; i < c->nbuckets; i++)
		LIST_INIT(&c->buckets[i]);
	LIST_INSERT_HEAD(&console_all, c, all);
	if (console_config(c, env, err, errlen) == -1) {
		console_free(c);
		return NULL;
	}
	c->backoff_msec = CON_BACKOFF_MIN_MSEC;
	c->next_id = 1;
	return c;
}

/* Creates the HTTP server and the events; fatal when libevent cannot. */
static void
console_setup(struct console *c)
{
	c->http = evhttp_new(c->base);
	c->retry_ev = evtimer_new(c->base, retry_cb, c);
	c->accept_ev = evtimer_new(c->base, accept_resume_cb, c);
	c->sent_ev = event_new(c->base, -1, 0, sent_cb, c);
	c->replay_ev = event_new(c->base, -1, 0, replay_cb, c);
	c->j.flush_ev = event_new(c->base, -1, 0, journal_cb, c);
	c->j.retry_ev = evtimer_new(c->base, journal_retry_cb, c);
	c->j.done = evbuffer_new();
	if (c->http == NULL || c->retry_ev == NULL || c->accept_ev == NULL ||
	    c->sent_ev == NULL || c->replay_ev == NULL || c->j.flush_ev == NULL ||
	    c->j.retry_ev == NULL || c->j.done == NULL)
		fatalx("console: cannot set up the HTTP server");
	evhttp_set_max_body_size(c->http, CON_MAX_BODY);
	evhttp_set_max_headers_size(c->http, CON_MAX_HEADERS);
	evhttp_set_timeout(c->http, CON_TIMEOUT_SEC);
	evhttp_set_allowed_methods(c->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST |
	    EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
	    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_bevcb(c->http, conn_new_cb, c);
	evhttp_set_gencb(c->http, request_cb, c);
}

/* Loads the log, the id counter, the inbox and the journal. */
static void
state_load(struct console *c)
{
	struct con_load ld = { .next = 1 };

	ld.seen = state_exists(c, "outbox.json") || state_exists(c, "inbox.json") ||
	    state_exists(c, "journal");
	seq_load(c, &ld);
	outbox_load(c, &ld);
	inbox_load(c, &ld);
	journal_load(c, &ld);
	journal_drop_answered(c, &ld);
	seq_floor(&ld);
	if (ld.malformed > 0)
		log_warnx("console: skipped %d malformed saved message(s)", ld.malformed);
	if (ld.answered > 0)
		log_info("console: %d saved message(s) already answered are not "
		    "run again", ld.answered);
	c->next_id = ld.next;
	c->reserved = c->next_id + CON_ID_BLOCK;
	seq_write(c, c->reserved);
}

static void
console_start(void *self)
{
	struct console *c = self;

	if (c->started)
		return;
	c->started = 1;
	console_setup(c);
	state_load(c);
	if (c->token == NULL)
		log_info("console: no token set: every local process that can "
		    "connect to %s is trusted and may act as any user, admins "
		    "included", c->addr_text);
	(void)journal_try_up(c);        /* replays the inbox once up */
	listen_try(c);
}

static void
console_send(void *self, const struct outbound *msg, plat_sent_fn cb, void *arg)
{
	struct console *c = self;
	struct con_msg *m;
	uint64_t id;

	if (c->stopped || !c->started) {
		if (cb != NULL)
			cb(arg, 0);
		return;
	}
	if ((id = id_next(c)) == 0) {
		sent_push(c, cb, arg, 0);
		return;
	}
	m = msg_new(id, msg);
	m->cb = cb;
	m->cb_arg = arg;
	journal_take_out(c, m);
}

/* At stop: the snapshots, then an empty journal; if they cannot be written, the journal stays. */
static void
state_save_final(struct console *c)
{
	if (state_aside_pending(c) == -1 || state_save_outbox(c) == -1 ||
	    state_save_inbox(c, 1) == -1) {
		log_warn("console: cannot save the state at stop; the journal is "
		    "kept for the next start");
		return;
	}
	seq_write(c, c->next_id);       /* no id is handed out after this */
	journal_clear(c);
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
	journal_flush(c);               /* replies that can be recorded are delivered */
	sendq_fail_all(c);
	c->stopped = 1;                 /* sends fail at once from now on */
	sent_flush(c);                  /* the hub hears of them: done marks follow */
	journal_keep_answered(c);
	journal_flush(c);
	console_http_close(c);
	state_save_final(c);
	journal_close(c);
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
	evtimer_del(c->accept_ev);
	if (c->bound != NULL) {
		evhttp_del_accept_socket(c->http, c->bound);
		c->bound = NULL;
	}
	journal_flush(c);               /* POSTs still waiting for it are answered */
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
msg_list_free(struct con_msg_list *l)
{
	struct con_msg *m;

	while ((m = TAILQ_FIRST(l)) != NULL) {
		TAILQ_REMOVE(l, m, entry);
		msg_free(m);
	}
}

static void
console_free_events(struct console *c)
{
	struct event *evs[] = { c->retry_ev, c->accept_ev, c->sent_ev,
	    c->replay_ev, c->flush_ev, c->j.flush_ev, c->j.retry_ev };

	for (size_t i = 0; i < ARRAY_LEN(evs); i++)
		if (evs[i] != NULL)
			event_free(evs[i]);
	if (c->j.done != NULL)
		evbuffer_free(c->j.done);
}

static void
console_free(void *self)
{
	struct console *c = self;

	if (c == NULL)
		return;
	LIST_REMOVE(c, all);
	/* Parked requests belong to evhttp, which frees them with itself. */
	while (!TAILQ_EMPTY(&c->inbox)) {
		TAILQ_FIRST(&c->inbox)->req = NULL;
		inbox_free(TAILQ_FIRST(&c->inbox));
	}
	while (!TAILQ_EMPTY(&c->waiters))
		waiter_free(TAILQ_FIRST(&c->waiters));
	console_http_close(c);
	msg_list_free(&c->log);
	msg_list_free(&c->sendq);
	while (!STAILQ_EMPTY(&c->sent)) {
		struct con_sent *s = STAILQ_FIRST(&c->sent);
		STAILQ_REMOVE_HEAD(&c->sent, entry);
		free(s);
	}
	console_free_events(c);
	journal_close(c);
	free(c->buckets);
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

/* Usable out of the box: everyone, admin "local" (see the trust model). */
static const char *const con_default_users[] = { "*", NULL };
static const char *const con_default_admins[] = { "local", NULL };

const struct platform_ops console_ops = {
	.name = "console",
	.max_text = CON_MAX_BODY,
	.keys = console_keys,
	.create = console_create,
	.start = console_start,
	.send = console_send,
	.stop = console_stop,
	.free = console_free,
	.default_users = con_default_users,
	.default_admins = con_default_admins,
};
