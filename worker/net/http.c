/*
 * http.c - an asynchronous HTTP/1.1 client on libevent's evhttp.
 *
 * One evhttp connection per request at a time, over bufferevent_openssl
 * for https; names are resolved through evdns.  A connection whose
 * HTTP/1.1 response completed and left it open goes to a small pool of
 * idle connections (per scheme, host and port) and serves the next
 * request to the same place, sparing a TCP and TLS handshake.  Idle
 * connections the server closed (evhttp watches them), or idle longer
 * than HTTP_IDLE_MSEC, are dropped, never reconnected: a used TLS
 * bufferevent cannot be.  A server may still close one just as a request
 * goes out on it: a request that fails on a reused connection before a
 * single byte of response arrived is sent once more, on a new connection
 * (it was never answered, so the server did not act on it, as HTTP/1.1
 * clients assume when a kept-alive connection closes).
 *
 * Life cycle of a call: running -> dead.  A call becomes dead when it
 * completes, fails, times out or is cancelled; from then on every evhttp
 * callback that still reaches it is ignored, and the connection is freed
 * later from a zero-timeout "reaper" event, never inside evhttp's own
 * callback chain (evhttp touches the connection after our callbacks
 * return).  The user's done callback runs at most once, and never from
 * inside http_request().
 *
 * Never logged: the Authorization header, the URL's path and query (a
 * Telegram bot token lives there), bodies.
 */
#include "net/http.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/http_struct.h>
#include <event2/keyvalq_struct.h>

#include "log.h"
#include "net/tls.h"
#include "util.h"

#define HTTP_DEFAULT_MAX_BODY   (1024 * 1024)
#define HTTP_MAX_HEADERS        (64 * 1024)
#define HTTP_DEFAULT_TIMEOUT    30.0
#define HTTP_IDLE_MSEC          30000   /* longest a connection waits in the pool */
#define HTTP_IDLE_PER_PLACE     4
#define HTTP_IDLE_MAX           16

/* An idle kept-alive connection. */
struct http_idle {
	char *place;                    /* "http://host:port" or "https://host:port" */
	struct evhttp_connection *conn;
	SSL *ssl;
	uint64_t since;                 /* mono_msec() when it went idle */
	struct http_idle *next;
};

/* The parts of a URL a request needs. */
struct http_url {
	int https;
	char host[256];
	int port;
	char *target;                   /* path and query, allocated */
};

/* A request kept to send it again once (on a reused connection only). */
struct http_replay {
	int method;
	struct http_url u;
	struct http_req req;            /* its strings and body are copies */
};

struct http_client {
	struct event_base *base;
	struct evdns_base *dns;
	int own_dns;
	struct tls_ctx *tls;
	struct http_call *calls;        /* running and dead ones */
	struct event *reaper;
	struct http_idle *idle;         /* newest first */
	struct http_idle *dead;         /* connections left by a retry, freed by the reaper */
	int in_cb;                      /* depth of user callbacks running */
	int free_pending;               /* http_client_free() called inside one */
};

struct http_call {
	struct http_client *c;
	struct evhttp_connection *conn;
	struct evhttp_request *req;     /* NULL once evhttp is done with it */
	SSL *ssl;                       /* owned by the bufferevent; NULL for http */
	struct event *timer;            /* whole-request deadline, or a pending failure */
	http_done_fn cb;
	http_chunk_fn on_chunk;
	void *arg;
	char *hostport;                 /* for messages: "host:port" */
	char *place;                    /* pool key: scheme://host:port */
	double timeout;
	size_t max_body;
	size_t got;                     /* body bytes seen */
	struct evbuffer *body;          /* buffered body */
	int dead;
	int starting;                   /* inside http_request() */
	int streaming;                  /* chunks go to on_chunk (2xx responses) */
	int too_big;
	int req_error;                  /* enum evhttp_request_error + 1, 0 = none */
	char *pending_error;            /* a failure found while starting */
	struct http_replay *replay;     /* set while a retry is possible */
	struct evbuffer *watched;       /* the reused connection's input, watched */
	struct evbuffer_cb_entry *watch;
	int answered;                   /* a response byte arrived on it */
	struct http_call *prev, *next;
};

static void http_reaper_cb(evutil_socket_t, short, void *);
static void http_timer_cb(evutil_socket_t, short, void *);
static int http_retry_ok(const struct http_call *);
static int http_retry(struct http_call *);

struct http_client *
http_client_new(struct event_base *base, struct evdns_base *dns, struct tls_ctx *tls)
{
	struct http_client *c = xcalloc(1, sizeof(*c));

	c->base = base;
	c->tls = tls;
	c->dns = dns;
	if (c->dns == NULL) {
		/* Never fall back to a blocking getaddrinfo on the loop. */
		c->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
		    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
		if (c->dns == NULL)
			fatalx("http: cannot create a DNS resolver");
		c->own_dns = 1;
	}
	c->reaper = evtimer_new(base, http_reaper_cb, c);
	if (c->reaper == NULL)
		fatalx("http: cannot create an event");
	return c;
}

/* Frees an idle connection record and its connection. */
static void
http_idle_free(struct http_idle *e)
{
	evhttp_connection_free(e->conn);
	free(e->place);
	free(e);
}

/*
 * 1 when the idle connection is still open, young enough, and quiet: an
 * idle connection with anything to read (the server's FIN, a TLS alert)
 * is being closed by the server, whether evhttp has noticed yet or not.
 */
static int
http_idle_usable(const struct http_idle *e, uint64_t now)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(e->conn);
	evutil_socket_t fd;
	char b;

	if (bev == NULL || (fd = bufferevent_getfd(bev)) < 0 || now - e->since >= HTTP_IDLE_MSEC ||
	    evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		return 0;
	return recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) < 0 && (errno == EAGAIN ||
	    errno == EWOULDBLOCK);
}

/* Drops idle connections that are closed or too old. */
static void
http_idle_sweep(struct http_client *c)
{
	struct http_idle **pp = &c->idle, *e;
	uint64_t now = mono_msec();

	while ((e = *pp) != NULL) {
		if (http_idle_usable(e, now)) {
			pp = &e->next;
		} else {
			*pp = e->next;
			http_idle_free(e);
		}
	}
}

/* Takes an idle connection to place out of the pool, or NULL. */
static struct http_idle *
http_idle_take(struct http_client *c, const char *place)
{
	struct http_idle **pp, *e;

	http_idle_sweep(c);
	for (pp = &c->idle; (e = *pp) != NULL; pp = &e->next) {
		if (strcmp(e->place, place) == 0) {
			*pp = e->next;
			return e;
		}
	}
	return NULL;
}

/* Moves a completed call's open connection into the pool (newest first, bounded). */
static void
http_idle_put(struct http_client *c, struct http_call *call)
{
	struct http_idle *e = xcalloc(1, sizeof(*e)), **pp;
	struct bufferevent *bev;
	int same = 0, all = 0, one = 1;

	/*
	 * A reused connection is past TCP's quick-ack start: without
	 * TCP_NODELAY a request written as several TLS records waits for
	 * the peer's delayed ACK (40 ms) before its last record goes out.
	 */
	bev = evhttp_connection_get_bufferevent(call->conn);
	if (bev != NULL && bufferevent_getfd(bev) >= 0)
		setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	e->place = call->place;
	e->conn = call->conn;
	e->ssl = call->ssl;
	e->since = mono_msec();
	call->place = NULL;
	call->conn = NULL;
	e->next = c->idle;
	c->idle = e;
	http_idle_sweep(c);
	/* Beyond the bounds, the oldest go. */
	for (pp = &c->idle; (e = *pp) != NULL;) {
		int mine = c->idle != NULL && strcmp(e->place, c->idle->place) == 0;

		same += mine;
		all++;
		if ((mine && same > HTTP_IDLE_PER_PLACE) || all > HTTP_IDLE_MAX) {
			*pp = e->next;
			http_idle_free(e);
			all--;
			continue;
		}
		pp = &e->next;
	}
}

/* Notes whether any response byte arrives on a reused connection. */
static void
http_watch_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct http_call *call = arg;

	(void)buf;
	if (info->n_added > 0)
		call->answered = 1;
}

static void
http_watch(struct http_call *call)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(call->conn);

	if (bev == NULL)
		return;
	call->watched = bufferevent_get_input(bev);
	call->watch = evbuffer_add_cb(call->watched, http_watch_cb, call);
}

static void
http_unwatch(struct http_call *call)
{
	if (call->watch != NULL)
		evbuffer_remove_cb_entry(call->watched, call->watch);
	call->watch = NULL;
	call->watched = NULL;
}

/* A copy of a request, to send it again. */
static struct http_replay *
http_replay_new(int method, const struct http_req *req, const struct http_url *u)
{
	struct http_replay *rp = xcalloc(1, sizeof(*rp));

	rp->method = method;
	rp->u = *u;
	rp->u.target = xstrdup(u->target);
	rp->req = *req;
	rp->req.url = NULL;
	rp->req.method = NULL;
	rp->req.content_type = req->content_type != NULL ? xstrdup(req->content_type) : NULL;
	rp->req.authorization = req->authorization != NULL ? xstrdup(req->authorization) : NULL;
	if (req->body != NULL && req->body_len > 0) {
		char *b = xmalloc(req->body_len);

		memcpy(b, req->body, req->body_len);
		rp->req.body = b;
	} else {
		rp->req.body = NULL;
		rp->req.body_len = 0;
	}
	return rp;
}

static void
http_replay_free(struct http_replay *rp)
{
	char *auth;

	if (rp == NULL)
		return;
	if ((auth = (char *)rp->req.authorization) != NULL) {
		explicit_bzero(auth, strlen(auth));
		free(auth);
	}
	free((char *)rp->req.content_type);
	free((char *)rp->req.body);
	free(rp->u.target);
	free(rp);
}

/* Hands a connection a retry left behind to the reaper (evhttp may still be inside it). */
static void
http_conn_bury(struct http_client *c, struct evhttp_connection *conn)
{
	static const struct timeval zero = { 0, 0 };
	struct http_idle *e = xcalloc(1, sizeof(*e));

	e->conn = conn;
	e->next = c->dead;
	c->dead = e;
	evtimer_add(c->reaper, &zero);
}

/* Frees the connections retries left behind. */
static void
http_dead_free(struct http_client *c)
{
	struct http_idle *e;

	while ((e = c->dead) != NULL) {
		c->dead = e->next;
		http_idle_free(e);
	}
}

/* Frees a call and its connection; never from inside evhttp's callbacks. */
static void
http_call_free(struct http_call *call)
{
	struct http_client *c = call->c;

	if (call->prev != NULL)
		call->prev->next = call->next;
	else
		c->calls = call->next;
	if (call->next != NULL)
		call->next->prev = call->prev;
	/* Frees a pending request too, without calling its callbacks. */
	http_unwatch(call);
	if (call->conn != NULL)
		evhttp_connection_free(call->conn);
	http_replay_free(call->replay);
	free(call->place);
	if (call->timer != NULL)
		event_free(call->timer);
	if (call->body != NULL)
		evbuffer_free(call->body);
	free(call->pending_error);
	free(call->hostport);
	free(call);
}

void
http_client_free(struct http_client *c)
{
	static const struct timeval zero = { 0, 0 };
	struct http_call *call;

	if (c == NULL)
		return;
	if (c->in_cb > 0) {
		/*
		 * Called from one of our callbacks, inside evhttp's chain: no
		 * more callbacks from now on, and the freeing is done from the
		 * loop.
		 */
		for (call = c->calls; call != NULL; call = call->next) {
			call->dead = 1;
			if (call->timer != NULL)
				evtimer_del(call->timer);
		}
		c->free_pending = 1;
		evtimer_add(c->reaper, &zero);
		return;
	}
	while (c->calls != NULL)
		http_call_free(c->calls);
	http_dead_free(c);
	while (c->idle != NULL) {
		struct http_idle *e = c->idle;

		c->idle = e->next;
		http_idle_free(e);
	}
	event_free(c->reaper);
	if (c->own_dns)
		evdns_base_free(c->dns, 0);
	free(c);
}

/* Frees the dead calls, from the event loop. */
static void
http_reaper_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_client *c = arg;
	struct http_call *call, *next;

	(void)fd;
	(void)what;
	if (c->free_pending) {
		c->free_pending = 0;
		http_client_free(c);
		return;
	}
	http_dead_free(c);
	for (call = c->calls; call != NULL; call = next) {
		next = call->next;
		if (call->dead)
			http_call_free(call);
	}
}

/* Marks a call dead and schedules its connection to be freed from the loop. */
static void
http_call_kill(struct http_call *call)
{
	static const struct timeval zero = { 0, 0 };

	call->dead = 1;
	http_unwatch(call);
	if (call->timer != NULL)
		evtimer_del(call->timer);
	evtimer_add(call->c->reaper, &zero);
}

/*
 * Calls the user's done callback of a call already marked dead.  The
 * callback may cancel calls or even free the client: neither frees
 * anything we are still inside of.
 */
static void
http_user_done(struct http_call *call, const struct http_response *r)
{
	struct http_client *c = call->c;

	c->in_cb++;
	call->cb(call->arg, r);
	c->in_cb--;
}

/* Ends a call with a transport error (status 0). */
static void
http_call_fail(struct http_call *call, const char *error)
{
	static const struct timeval zero = { 0, 0 };
	struct http_response r = { 0 };

	if (call->dead)
		return;
	if (call->starting) {
		/* Deliver it from the loop: the caller is still in http_request(). */
		if (call->pending_error == NULL)
			call->pending_error = xstrdup(error);
		evtimer_add(call->timer, &zero);
		return;
	}
	http_call_kill(call);
	r.status = 0;
	r.error = error;
	r.body = "";
	log_debug("http: %s: %s", call->hostport, error);
	http_user_done(call, &r);
}

/* The deadline of the whole request, or a failure found while starting. */
static void
http_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http_call *call = arg;
	char msg[128];

	(void)fd;
	(void)what;
	if (call->pending_error != NULL) {
		snprintf(msg, sizeof(msg), "%s", call->pending_error);
		http_call_fail(call, msg);
		return;
	}
	snprintf(msg, sizeof(msg), "timed out after %g s", call->timeout);
	http_call_fail(call, msg);
}

/* The text of an evhttp request error. */
static const char *
http_req_error_text(int e)
{
	switch (e) {
	case EVREQ_HTTP_TIMEOUT:
		return "timed out";
	case EVREQ_HTTP_EOF:
		return "connection closed before a complete response";
	case EVREQ_HTTP_INVALID_HEADER:
		return "invalid HTTP response";
	case EVREQ_HTTP_BUFFER_ERROR:
		return "connection error";
	case EVREQ_HTTP_DATA_TOO_LONG:
		return "malformed response body";
	default:
		return "request failed";
	}
}

/* Describes why a call failed at the transport level into buf. */
static void
http_describe_failure(struct http_call *call, char *buf, size_t len)
{
	const char *verify = tls_verify_error(call->ssl);
	struct bufferevent *bev;
	unsigned long ssl_err = 0;
	char why[256];

	if (call->too_big) {
		snprintf(buf, len, "response larger than %zu bytes", call->max_body);
		return;
	}
	if (verify[0] != '\0') {
		snprintf(buf, len, "TLS certificate verification failed for %s: %s",
		    call->hostport, verify);
		return;
	}
	bev = call->conn != NULL ? evhttp_connection_get_bufferevent(call->conn) : NULL;
	if (bev != NULL && call->ssl != NULL)
		ssl_err = bufferevent_get_openssl_error(bev);
	if (ssl_err != 0) {
		ERR_error_string_n(ssl_err, why, sizeof(why));
		snprintf(buf, len, "TLS failure with %s: %s", call->hostport, why);
		return;
	}
	if (call->req_error - 1 == EVREQ_HTTP_DATA_TOO_LONG) {
		/* Sizes are capped by http_chunk_cb(): this is bad chunking. */
		snprintf(buf, len, "%s: malformed response body", call->hostport);
		return;
	}
	if (bev != NULL && bufferevent_socket_get_dns_error(bev) != 0) {
		snprintf(buf, len, "cannot resolve %s: %s", call->hostport,
		    evutil_gai_strerror(bufferevent_socket_get_dns_error(bev)));
		return;
	}
	if (call->req_error != 0) {
		snprintf(buf, len, "%s: %s", call->hostport,
		    http_req_error_text(call->req_error - 1));
		return;
	}
	/*
	 * evhttp reports a failed connect without its error callback and
	 * with errno overwritten by its own cleanup: the cause is lost.
	 */
	snprintf(buf, len, "cannot connect to %s (connection refused or unreachable)",
	    call->hostport);
}

/* evhttp's error callback: remembers why, for the done callback that follows. */
static void
http_error_cb(enum evhttp_request_error e, void *arg)
{
	struct http_call *call = arg;

	call->req_error = (int)e + 1;
}

/*
 * Every piece of every body comes here (the chunked callback is always
 * set), so that the size cap is ours: evhttp's own cap reports malformed
 * chunking and oversize alike.  2xx bodies go to on_chunk when set;
 * everything else is buffered.
 */
static void
http_chunk_cb(struct evhttp_request *req, void *arg)
{
	struct http_call *call = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	int code = evhttp_request_get_response_code(req);

	if (call->dead || n == 0)
		return;
	call->got += n;
	if (call->got > call->max_body) {
		char msg[128];

		call->too_big = 1;
		snprintf(msg, sizeof(msg), "response larger than %zu bytes", call->max_body);
		http_call_fail(call, msg);
		return;
	}
	if (call->on_chunk != NULL && code >= 200 && code < 300) {
		struct http_client *c = call->c;

		call->streaming = 1;
		/* The callback may cancel the call: nothing of it is touched after. */
		c->in_cb++;
		call->on_chunk(call->arg, (const char *)evbuffer_pullup(in, -1), n);
		c->in_cb--;
	} else {
		evbuffer_add_buffer(call->body, in);
	}
}

/*
 * 1 when the connection of a complete response can serve another request:
 * HTTP/1.1 and still open (evhttp closes it first on "Connection: close").
 */
static int
http_conn_left_open(struct http_call *call, struct evhttp_request *req)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(call->conn);

	return req->major == 1 && req->minor >= 1 && bev != NULL && bufferevent_getfd(bev) >= 0;
}

/* Delivers a complete response. */
static void
http_call_succeed(struct http_call *call, struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct http_response r = { 0 };
	char *ctype = NULL;
	const char *h;
	size_t len;

	if (!call->streaming)
		evbuffer_add_buffer(call->body, in);
	len = evbuffer_get_length(call->body);
	if (len > call->max_body) {
		char msg[128];

		snprintf(msg, sizeof(msg), "response larger than %zu bytes", call->max_body);
		http_call_fail(call, msg);
		return;
	}
	evbuffer_add(call->body, "", 1);
	h = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
	if (h != NULL)
		ctype = xstrdup(h);
	r.status = evhttp_request_get_response_code(req);
	r.headers_ = evhttp_request_get_input_headers(req);
	r.body = (const char *)evbuffer_pullup(call->body, -1);
	/*
	 * Pooled before the callback, so that a request made from it (the next
	 * long poll) uses this connection: evhttp is done with it, as when it
	 * dispatches a queued request itself.
	 */
	http_unwatch(call);
	if (http_conn_left_open(call, req))
		http_idle_put(call->c, call);
	r.body_len = len;
	r.content_type = ctype;
	http_call_kill(call);
	http_user_done(call, &r);
	free(ctype);
}

/* evhttp's done callback: req is NULL (or has no status) on failure. */
static void
http_done_cb(struct evhttp_request *req, void *arg)
{
	struct http_call *call = arg;
	char msg[512];

	call->req = NULL;
	if (call->dead)
		return;
	if (req == NULL || evhttp_request_get_response_code(req) == 0) {
		if (http_retry_ok(call)) {
			if (http_retry(call) == 0)
				return;
			snprintf(msg, sizeof(msg), "%s: cannot set up a new connection",
			    call->hostport);
		} else
			http_describe_failure(call, msg, sizeof(msg));
		http_call_fail(call, msg);
		return;
	}
	http_call_succeed(call, req);
}

/* Splits url; -1 when it is not a usable http(s) URL. */
static int
http_parse_url(const char *url, struct http_url *u)
{
	struct evhttp_uri *uri = evhttp_uri_parse_with_flags(url, 0);
	const char *scheme, *host, *path, *query;
	size_t hlen;

	if (uri == NULL)
		return -1;
	scheme = evhttp_uri_get_scheme(uri);
	host = evhttp_uri_get_host(uri);
	if (scheme == NULL || host == NULL || host[0] == '\0' ||
	    (strcasecmp(scheme, "http") != 0 && strcasecmp(scheme, "https") != 0)) {
		evhttp_uri_free(uri);
		return -1;
	}
	u->https = strcasecmp(scheme, "https") == 0;
	hlen = strlen(host);
	if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']') {
		host++;
		hlen -= 2;
	}
	if (hlen >= sizeof(u->host)) {
		evhttp_uri_free(uri);
		return -1;
	}
	memcpy(u->host, host, hlen);
	u->host[hlen] = '\0';
	u->port = evhttp_uri_get_port(uri);
	if (u->port <= 0)
		u->port = u->https ? 443 : 80;
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	if (path == NULL || path[0] == '\0')
		path = "/";
	u->target = query != NULL ? xasprintf("%s?%s", path, query) : xstrdup(path);
	evhttp_uri_free(uri);
	return 0;
}

/* Creates the bufferevent for the call's connection (TLS for https). */
static struct bufferevent *
http_new_bev(struct http_call *call, const struct http_url *u)
{
	struct http_client *c = call->c;
	struct bufferevent *bev;

	if (!u->https)
		return bufferevent_socket_new(c->base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (c->tls == NULL)
		return NULL;
	call->ssl = tls_ssl_new(c->tls, u->host);
	if (call->ssl == NULL)
		return NULL;
	bev = bufferevent_openssl_socket_new(c->base, -1, call->ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (bev == NULL) {
		SSL_free(call->ssl);
		call->ssl = NULL;
		return NULL;
	}
	/* Bodies are framed by HTTP; a missing close_notify is not an error. */
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

/* 1 when the caller's extra headers hold name. */
static int
http_has_header(const struct http_req *req, const char *name)
{
	const char *const *p;
	size_t n = strlen(name);

	for (p = req->headers; p != NULL && *p != NULL; p++)
		if (strncasecmp(*p, name, n) == 0 && (*p)[n] == ':')
			return 1;
	return 0;
}

/* Adds the caller's "Name: value" headers (those without a colon are skipped). */
static void
http_add_extra(struct evkeyvalq *h, const struct http_req *req)
{
	const char *const *p, *colon;
	char name[128];

	for (p = req->headers; p != NULL && *p != NULL; p++) {
		colon = strchr(*p, ':');
		if (colon == NULL || colon == *p || (size_t)(colon - *p) >= sizeof(name))
			continue;
		snprintf(name, sizeof(name), "%.*s", (int)(colon - *p), *p);
		evhttp_add_header(h, name, colon + 1 + strspn(colon + 1, " "));
	}
}

const char *
http_response_header(const struct http_response *r, const char *name)
{
	return r->headers_ != NULL ? evhttp_find_header((const struct evkeyvalq *)r->headers_,
	    name) : NULL;
}

/* Adds the request headers. */
static void
http_add_headers(struct evhttp_request *r, const struct http_req *req,
    const struct http_url *u)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(r);
	char host[300];

	if (strchr(u->host, ':') != NULL)
		snprintf(host, sizeof(host), "[%s]", u->host);
	else
		snprintf(host, sizeof(host), "%s", u->host);
	if (u->port != (u->https ? 443 : 80)) {
		size_t n = strlen(host);

		snprintf(host + n, sizeof(host) - n, ":%d", u->port);
	}
	evhttp_add_header(h, "Host", host);
	if (!http_has_header(req, "User-Agent"))
		evhttp_add_header(h, "User-Agent", "hermes-gateway");
	http_add_extra(h, req);
	if (req->on_chunk != NULL)
		evhttp_add_header(h, "Accept", "text/event-stream, application/json");
	else
		evhttp_add_header(h, "Accept", "application/json, */*");
	if (req->content_type != NULL)
		evhttp_add_header(h, "Content-Type", req->content_type);
	if (req->authorization != NULL)
		evhttp_add_header(h, "Authorization", req->authorization);
}

/* Returns the evhttp method for req->method, or -1. */
static int
http_method(const char *m)
{
	if (m == NULL || strcmp(m, "GET") == 0)
		return EVHTTP_REQ_GET;
	if (strcmp(m, "POST") == 0)
		return EVHTTP_REQ_POST;
	if (strcmp(m, "PUT") == 0)
		return EVHTTP_REQ_PUT;
	if (strcmp(m, "DELETE") == 0)
		return EVHTTP_REQ_DELETE;
	return -1;
}

/* Gives the call a new connection to u; 0 or -1. */
static int
http_conn_new(struct http_call *call, const struct http_url *u)
{
	struct bufferevent *bev = http_new_bev(call, u);

	if (bev == NULL)
		return -1;
	call->conn = evhttp_connection_base_bufferevent_new(call->c->base, call->c->dns, bev,
	    u->host, (unsigned short)u->port);
	if (call->conn == NULL) {
		bufferevent_free(bev);
		call->ssl = NULL;
		return -1;
	}
	return 0;
}

/* Gives the call an idle connection to its place, else a new one; 1 when reused, 0, -1. */
static int
http_conn_get(struct http_call *call, const struct http_url *u)
{
	struct http_idle *idle = http_idle_take(call->c, call->place);

	if (idle == NULL)
		return http_conn_new(call, u);
	call->conn = idle->conn;
	call->ssl = idle->ssl;
	free(idle->place);
	free(idle);
	http_watch(call);
	return 1;
}

/* Sets the limits of the call's connection and creates its evhttp request. */
static int
http_req_new(struct http_call *call, const struct http_req *req, const struct http_url *u)
{
	struct timeval tv;
	double t;

	/* Our own timer bounds the whole request; evhttp's is a backstop. */
	t = call->timeout + 1;
	tv.tv_sec = (time_t)t;
	tv.tv_usec = (suseconds_t)((t - floor(t)) * 1e6);
	evhttp_connection_set_timeout_tv(call->conn, &tv);
	evhttp_connection_set_retries(call->conn, 0);
	evhttp_connection_set_max_headers_size(call->conn, HTTP_MAX_HEADERS);
	call->req = evhttp_request_new(http_done_cb, call);
	if (call->req == NULL)
		return -1;
	evhttp_request_set_error_cb(call->req, http_error_cb);
	evhttp_request_set_chunked_cb(call->req, http_chunk_cb);
	http_add_headers(call->req, req, u);
	if (req->body != NULL && req->body_len > 0)
		evbuffer_add(evhttp_request_get_output_buffer(call->req), req->body,
		    req->body_len);
	return 0;
}

/* Creates the connection and the evhttp request of a call (kept for a retry when reused). */
static int
http_call_setup(struct http_call *call, int method, const struct http_req *req,
    const struct http_url *u)
{
	int reused = http_conn_get(call, u);

	if (reused < 0)
		return -1;
	if (reused)
		call->replay = http_replay_new(method, req, u);
	return http_req_new(call, req, u);
}

/*
 * 1 when a failed call may be sent again: it went out on a reused
 * connection that closed (or reset) before any byte of a response came.
 */
static int
http_retry_ok(const struct http_call *call)
{
	int e = call->req_error - 1;

	return call->replay != NULL && !call->answered && !call->too_big &&
	    (e == EVREQ_HTTP_EOF || e == EVREQ_HTTP_BUFFER_ERROR);
}

/* Sends the call's request again, once, on a new connection; 0 or -1. */
static int
http_retry(struct http_call *call)
{
	struct http_replay *rp = call->replay;
	int rc;

	call->replay = NULL;
	http_unwatch(call);
	http_conn_bury(call->c, call->conn);
	call->conn = NULL;
	call->ssl = NULL;
	call->req_error = 0;
	log_debug("http: %s: the kept-alive connection closed unanswered; sending again on a "
	    "new one", call->hostport);
	rc = http_conn_new(call, &rp->u) < 0 || http_req_new(call, &rp->req, &rp->u) < 0 ? -1 : 0;
	if (rc == 0 && evhttp_make_request(call->conn, call->req, rp->method, rp->u.target) < 0) {
		call->req = NULL;       /* evhttp freed it */
		rc = -1;
	}
	if (rc < 0 && call->req != NULL) {
		evhttp_request_free(call->req);
		call->req = NULL;
	}
	http_replay_free(rp);
	return rc;
}

struct http_call *
http_request(struct http_client *c, const struct http_req *req, http_done_fn cb, void *arg)
{
	struct http_call *call;
	struct http_url u;
	struct timeval tv;
	int method = http_method(req->method);

	if (method < 0 || req->url == NULL || http_parse_url(req->url, &u) < 0)
		return NULL;
	call = xcalloc(1, sizeof(*call));
	call->c = c;
	call->cb = cb;
	call->arg = arg;
	call->on_chunk = req->on_chunk;
	call->timeout = req->timeout > 0 ? req->timeout : HTTP_DEFAULT_TIMEOUT;
	call->max_body = req->max_body > 0 ? req->max_body : HTTP_DEFAULT_MAX_BODY;
	call->hostport = xasprintf("%s:%d", u.host, u.port);
	call->place = xasprintf("%s://%s", u.https ? "https" : "http", call->hostport);
	call->body = evbuffer_new();
	call->timer = evtimer_new(c->base, http_timer_cb, call);
	if (call->body == NULL || call->timer == NULL)
		fatalx("http: out of memory");
	call->next = c->calls;
	if (c->calls != NULL)
		c->calls->prev = call;
	c->calls = call;
	call->starting = 1;
	tv.tv_sec = (time_t)call->timeout;
	tv.tv_usec = (suseconds_t)((call->timeout - floor(call->timeout)) * 1e6);
	evtimer_add(call->timer, &tv);
	if (http_call_setup(call, method, req, &u) < 0) {
		if (call->req != NULL)
			evhttp_request_free(call->req);
		call->req = NULL;
		http_call_fail(call, u.https && c->tls == NULL ?
		    "https is not available (no TLS context)" :
		    "cannot set up the connection");
	} else if (evhttp_make_request(call->conn, call->req, method, u.target) < 0) {
		call->req = NULL;
		http_call_fail(call, "cannot start the request");
	}
	call->starting = 0;
	free(u.target);
	return call;
}

void
http_cancel(struct http_call *call)
{
	if (call == NULL || call->dead)
		return;
	http_call_kill(call);
}
