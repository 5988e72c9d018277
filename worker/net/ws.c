/*
 * ws.c - a WebSocket client (RFC 6455) on libevent, framing by wslay.
 *
 * States: connecting (DNS, TCP, TLS) -> upgrading (request sent, waiting
 * for the 101) -> open -> closing (a close frame went one way: waiting
 * for the other, the output to drain, or the close deadline) -> done
 * (connection freed, terminal event reported).  One deadline timer
 * covers the handshake and then the close; the idle timer checks the
 * time of the last received byte, so a busy connection never touches
 * the timer heap per read.
 *
 * wslay checks what the RFC asks of a client (unmasked server frames,
 * UTF-8 text, control frame rules, the message cap) and answers pings
 * and close frames; this file adds the frame cap, the opening handshake,
 * the timers and the life cycle.
 *
 * Re-entry: user callbacks run only from our libevent handlers, which
 * hold ws->busy; ws_free() inside one marks the connection and the
 * handler frees it on its way out.  The terminal event is reported from
 * its own zero-timeout event, after the connection is torn down.
 */
#include "net/ws.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>

#include <wslay/wslay.h>

#include "log.h"
#include "net/tls.h"
#include "util.h"

#define WS_MAX_FRAME    (1024 * 1024)
#define WS_MAX_MESSAGE  (4 * 1024 * 1024)
#define WS_MAX_HEADER   (16 * 1024)
#define WS_HANDSHAKE_S  30.0
#define WS_CLOSE_S      5.0
#define WS_GUID         "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

enum ws_state { WS_CONNECTING, WS_UPGRADING, WS_OPEN, WS_CLOSING, WS_DONE };

struct ws {
	struct event_base *base;
	struct bufferevent *bev;
	SSL *ssl;                       /* owned by bev; NULL for ws:// */
	wslay_event_context_ptr wslay;  /* from OPEN until the teardown */
	enum ws_state state;
	ws_event_fn cb;
	void *arg;
	struct ws_opts opts;            /* defaults filled in; headers not kept */
	char accept[32];                /* the Sec-WebSocket-Accept expected */
	char hostport[300];             /* for messages */
	struct event *deadline;         /* handshake, then close */
	struct event *idle;
	struct event *report;           /* delivers the terminal event */
	uint64_t last_rx;               /* mono_msec() of the last byte received */
	int busy;                       /* our handlers on the stack */
	int freed;                      /* ws_free() called */
	int in_recv;                    /* inside wslay_event_recv() */
	int user_closed;                /* ws_close() called */
	int fail_code;                  /* close code we sent for a peer's error */
	char fail[400];                 /* why, when fail_code is set */
	int peer_code;                  /* the peer's close frame, 0 until one */
	char peer_reason[124];
	struct ws_event term;           /* the terminal event, once done */
	char term_reason[700];
};

/* Runs the user's callback unless the connection was freed. */
static void
ws_emit(struct ws *ws, const struct ws_event *ev)
{
	if (!ws->freed)
		ws->cb(ws, ev, ws->arg);
}

/* Releases the connection itself: socket, TLS, wslay, timers stopped. */
static void
ws_teardown(struct ws *ws)
{
	if (ws->bev != NULL)
		bufferevent_free(ws->bev);
	ws->bev = NULL;
	ws->ssl = NULL;
	if (ws->wslay != NULL)
		wslay_event_context_free(ws->wslay);
	ws->wslay = NULL;
	evtimer_del(ws->deadline);
	evtimer_del(ws->idle);
}

static void
ws_destroy(struct ws *ws)
{
	ws_teardown(ws);
	event_free(ws->deadline);
	event_free(ws->idle);
	event_free(ws->report);
	free(ws);
}

/* Leaves one of our handlers; the last one out frees a freed connection. */
static void
ws_leave(struct ws *ws)
{
	if (--ws->busy == 0 && ws->freed)
		ws_destroy(ws);
}

/* Ends the connection: torn down now, the terminal event from the loop. */
static void __attribute__((format(printf, 4, 5)))
ws_finish(struct ws *ws, enum ws_ev type, int code, const char *fmt, ...)
{
	static const struct timeval zero = { 0, 0 };
	va_list ap;

	if (ws->state == WS_DONE)
		return;
	ws->state = WS_DONE;
	ws_teardown(ws);
	va_start(ap, fmt);
	vsnprintf(ws->term_reason, sizeof(ws->term_reason), fmt, ap);
	va_end(ap);
	ws->term.type = type;
	ws->term.code = code;
	ws->term.reason = ws->term_reason;
	evtimer_add(ws->report, &zero);
}

static void
ws_report_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ws *ws = arg;

	(void)fd;
	(void)what;
	ws->busy++;
	ws_emit(ws, &ws->term);
	ws_leave(ws);
}

static void
ws_timer_add(struct event *ev, double secs)
{
	struct timeval tv;

	tv.tv_sec = (time_t)secs;
	tv.tv_usec = (suseconds_t)((secs - floor(secs)) * 1e6);
	evtimer_add(ev, &tv);
}

/* Ends a closing connection with what the close handshake gave. */
static void
ws_finish_closing(struct ws *ws, const char *why_no_answer)
{
	if (ws->fail_code != 0)
		ws_finish(ws, WS_EV_ERROR, ws->fail_code, "%s", ws->fail);
	else if (ws->peer_code != 0)
		ws_finish(ws, WS_EV_CLOSE, ws->peer_code, "%s", ws->peer_reason);
	else
		ws_finish(ws, WS_EV_CLOSE, 1006, "%s", why_no_answer);
}

/* The handshake or the close handshake took too long. */
static void
ws_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ws *ws = arg;

	(void)fd;
	(void)what;
	if (ws->state == WS_CLOSING)
		ws_finish_closing(ws, "no close answer in time");
	else
		ws_finish(ws, WS_EV_ERROR, 1006, "%s: handshake timed out after %g s",
		    ws->hostport, ws->opts.handshake_timeout);
}

/* Fails when nothing was received for idle_timeout, else waits the rest. */
static void
ws_idle_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ws *ws = arg;
	double quiet = (double)(mono_msec() - ws->last_rx) / 1000.0;

	(void)fd;
	(void)what;
	if (quiet + 0.001 >= ws->opts.idle_timeout)
		ws_finish(ws, WS_EV_ERROR, 1006, "%s: no data received for %g s",
		    ws->hostport, ws->opts.idle_timeout);
	else
		ws_timer_add(ws->idle, ws->opts.idle_timeout - quiet);
}

/* wslay reads from the bufferevent's input. */
static ssize_t
ws_wslay_recv(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, int flags, void *arg)
{
	struct ws *ws = arg;
	int n = evbuffer_remove(bufferevent_get_input(ws->bev), buf, len);

	(void)flags;
	if (n <= 0) {
		wslay_event_set_error(ctx, WSLAY_ERR_WOULDBLOCK);
		return -1;
	}
	return n;
}

/* wslay writes to the bufferevent's output, which takes everything. */
static ssize_t
ws_wslay_send(wslay_event_context_ptr ctx, const uint8_t *data, size_t len, int flags,
    void *arg)
{
	struct ws *ws = arg;

	(void)ctx;
	(void)flags;
	if (evbuffer_add(bufferevent_get_output(ws->bev), data, len) != 0)
		fatalx("%s: out of memory", __func__);
	return (ssize_t)len;
}

/* A fresh masking key for each client frame. */
static int
ws_wslay_genmask(wslay_event_context_ptr ctx, uint8_t *buf, size_t len, void *arg)
{
	(void)ctx;
	(void)arg;
	return RAND_bytes(buf, (int)len) == 1 ? 0 : -1;
}

/* Refuses a frame over max_frame (wslay caps whole messages only). */
static void
ws_wslay_frame_start(wslay_event_context_ptr ctx,
    const struct wslay_event_on_frame_recv_start_arg *a, void *arg)
{
	struct ws *ws = arg;

	if (a->payload_length <= ws->opts.max_frame || ws->fail_code != 0)
		return;
	ws->fail_code = WSLAY_CODE_MESSAGE_TOO_BIG;
	snprintf(ws->fail, sizeof(ws->fail), "%s: frame larger than %zu bytes", ws->hostport,
	    ws->opts.max_frame);
	wslay_event_queue_close(ctx, WSLAY_CODE_MESSAGE_TOO_BIG, NULL, 0);
	wslay_event_shutdown_read(ctx);
}

/* Keeps the peer's close code and reason (wslay answers the frame itself). */
static void
ws_note_close(struct ws *ws, const struct wslay_event_on_msg_recv_arg *a)
{
	/* wslay checked it: at most 123 bytes of UTF-8 after the code. */
	size_t n = a->msg_length > 2 ? a->msg_length - 2 : 0;

	ws->peer_code = a->status_code != 0 ? a->status_code : WSLAY_CODE_NO_STATUS_RCVD;
	snprintf(ws->peer_reason, sizeof(ws->peer_reason), "%.*s", (int)n,
	    n > 0 ? (const char *)a->msg + 2 : "");
}

/* A whole message from wslay: data goes to the user, pings and pongs stay here. */
static void
ws_wslay_msg(wslay_event_context_ptr ctx, const struct wslay_event_on_msg_recv_arg *a,
    void *arg)
{
	struct ws *ws = arg;
	struct ws_event ev = { 0 };

	(void)ctx;
	if (a->opcode == WSLAY_CONNECTION_CLOSE) {
		ws_note_close(ws, a);
		return;
	}
	if (a->opcode != WSLAY_TEXT_FRAME && a->opcode != WSLAY_BINARY_FRAME)
		return;
	/* Nothing is delivered once a close is under way (or after ws_free()). */
	if (ws->freed || ws->user_closed || ws->fail_code != 0 || ws->state != WS_OPEN)
		return;
	ev.type = a->opcode == WSLAY_TEXT_FRAME ? WS_EV_TEXT : WS_EV_BINARY;
	ev.data = a->msg != NULL ? (const char *)a->msg : "";
	ev.len = a->msg_length;
	ev.reason = "";
	ws_emit(ws, &ev);
}

/* The text of a close code wslay sent for the peer's error. */
static void
ws_describe_violation(struct ws *ws, int code)
{
	if (code == WSLAY_CODE_MESSAGE_TOO_BIG)
		snprintf(ws->fail, sizeof(ws->fail), "%s: message larger than %zu bytes",
		    ws->hostport, ws->opts.max_message);
	else
		snprintf(ws->fail, sizeof(ws->fail), "%s: %s", ws->hostport,
		    code == WSLAY_CODE_INVALID_FRAME_PAYLOAD_DATA ?
		    "invalid UTF-8 in a text message or close reason" :
		    "protocol error (masked, reserved or malformed frame)");
}

/* Moves an open connection to closing once a close frame went either way. */
static void
ws_check_closing(struct ws *ws)
{
	int sent = wslay_event_get_close_sent(ws->wslay);
	int recvd = wslay_event_get_close_received(ws->wslay);

	if (ws->state == WS_OPEN && (sent || recvd)) {
		ws->state = WS_CLOSING;
		evtimer_del(ws->idle);
		ws_timer_add(ws->deadline, ws->opts.close_timeout);
		if (!recvd && !ws->user_closed && ws->fail_code == 0) {
			ws->fail_code = wslay_event_get_status_code_sent(ws->wslay);
			ws_describe_violation(ws, ws->fail_code);
		}
	}
	if (ws->state == WS_CLOSING && sent && recvd &&
	    evbuffer_get_length(bufferevent_get_output(ws->bev)) == 0)
		ws_finish_closing(ws, "");
}

/* Hands wslay's queued frames to the bufferevent. */
static void
ws_flush(struct ws *ws)
{
	if (ws->in_recv || ws->state == WS_DONE)
		return;
	if (wslay_event_send(ws->wslay) != 0) {
		ws_finish(ws, WS_EV_ERROR, 1006, "%s: cannot queue a frame", ws->hostport);
		return;
	}
	ws_check_closing(ws);
}

/* Feeds the received bytes to wslay, then sends what it queued. */
static void
ws_pump(struct ws *ws)
{
	int r;

	ws->in_recv = 1;
	r = wslay_event_recv(ws->wslay);
	ws->in_recv = 0;
	if (ws->freed || ws->state == WS_DONE)
		return;
	if (r != 0 && ws->fail_code == 0 && !wslay_event_get_close_received(ws->wslay)) {
		ws->fail_code = WSLAY_CODE_PROTOCOL_ERROR;
		ws_describe_violation(ws, ws->fail_code);
	}
	/* Once wslay reads no more, the rest is discarded, never kept. */
	if (!wslay_event_get_read_enabled(ws->wslay))
		evbuffer_drain(bufferevent_get_input(ws->bev),
		    evbuffer_get_length(bufferevent_get_input(ws->bev)));
	ws_flush(ws);
}

/* 1 when the comma-separated list value holds token (case-insensitive). */
static int
ws_has_token(const char *value, const char *token)
{
	size_t n = strlen(token);
	const char *p = value;

	while (*p != '\0') {
		p += strspn(p, " \t,");
		if (strncasecmp(p, token, n) == 0 && strchr(" \t,", p[n]) != NULL)
			return 1;
		p += strcspn(p, ",");
	}
	return 0;
}

/* Checks one response header line; returns a refusal or NULL. */
static const char *
ws_check_header(struct ws *ws, char *line, int *seen)
{
	char *colon = strchr(line, ':'), *v, *end;

	if (colon == NULL || colon == line || line[0] == ' ' || line[0] == '\t')
		return "malformed response header";
	*colon = '\0';
	v = colon + 1 + strspn(colon + 1, " \t");
	for (end = v + strlen(v); end > v && (end[-1] == ' ' || end[-1] == '\t'); end--)
		*--end = '\0';
	if (strcasecmp(line, "Upgrade") == 0 && strcasecmp(v, "websocket") == 0)
		*seen |= 1;
	else if (strcasecmp(line, "Connection") == 0 && ws_has_token(v, "upgrade"))
		*seen |= 2;
	else if (strcasecmp(line, "Sec-WebSocket-Accept") == 0) {
		if (strcmp(v, ws->accept) != 0 || (*seen & 4))
			return "wrong Sec-WebSocket-Accept";
		*seen |= 4;
	} else if (strcasecmp(line, "Sec-WebSocket-Extensions") == 0 && *v != '\0')
		return "the server chose an extension that was not offered";
	else if (strcasecmp(line, "Sec-WebSocket-Protocol") == 0 && *v != '\0')
		return "the server chose a subprotocol that was not offered";
	return NULL;
}

/*
 * Checks the response head (NUL-terminated, CRLF lines, no final empty
 * line).  Returns NULL when it accepts the upgrade, else why not; sets
 * *status to the HTTP status when there is one.
 */
static const char *
ws_check_head(struct ws *ws, char *head, int *status)
{
	char *line, *next, *c = head + 9;
	const char *why;
	int seen = 0;

	if (strncmp(head, "HTTP/1.1 ", 9) != 0 || !isdigit((unsigned char)c[0]) ||
	    !isdigit((unsigned char)c[1]) || !isdigit((unsigned char)c[2]) ||
	    strchr(" \r", c[3]) == NULL)
		return "not an HTTP/1.1 response";
	*status = atoi(c);
	if (*status != 101)
		return *status >= 300 && *status < 400 ? "redirects are not followed" :
		    "the server did not switch protocols";
	for (line = strstr(head, "\r\n"); line != NULL; line = next) {
		line += 2;
		next = strstr(line, "\r\n");
		if (next != NULL)
			*next = '\0';
		if ((why = ws_check_header(ws, line, &seen)) != NULL)
			return why;
	}
	if ((seen & 3) != 3)
		return "missing Upgrade: websocket or Connection: Upgrade";
	if ((seen & 4) == 0)
		return "missing Sec-WebSocket-Accept";
	return NULL;
}

/* The handshake completed: wslay takes over the stream. */
static void
ws_open(struct ws *ws)
{
	struct wslay_event_callbacks cbs = {
		ws_wslay_recv, ws_wslay_send, ws_wslay_genmask,
		ws_wslay_frame_start, NULL, NULL, ws_wslay_msg,
	};
	struct ws_event ev = { .type = WS_EV_OPEN, .data = "", .reason = "" };

	if (wslay_event_context_client_init(&ws->wslay, &cbs, ws) != 0)
		fatalx("%s: out of memory", __func__);
	wslay_event_config_set_max_recv_msg_length(ws->wslay, ws->opts.max_message);
	ws->state = WS_OPEN;
	evtimer_del(ws->deadline);
	if (ws->opts.idle_timeout > 0)
		ws_timer_add(ws->idle, ws->opts.idle_timeout);
	ws_emit(ws, &ev);
}

/* Reads the response head; opens on a valid 101. */
static void
ws_read_head(struct ws *ws)
{
	struct evbuffer *in = bufferevent_get_input(ws->bev);
	struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	size_t n = evbuffer_get_length(in);
	const char *why;
	char *head;
	int status;

	if ((p.pos < 0 && n > ws->opts.max_header) ||
	    (p.pos >= 0 && (size_t)p.pos + 4 > ws->opts.max_header)) {
		ws_finish(ws, WS_EV_ERROR, 1006, "%s: response header larger than %zu bytes",
		    ws->hostport, ws->opts.max_header);
		return;
	}
	if (p.pos < 0)
		return;
	head = xstrndup((const char *)evbuffer_pullup(in, p.pos + 4), (size_t)p.pos);
	evbuffer_drain(in, (size_t)p.pos + 4);
	status = 0;
	why = strlen(head) != (size_t)p.pos ? "NUL in the response" :
	    ws_check_head(ws, head, &status);
	free(head);
	if (why == NULL) {
		ws_open(ws);
		return;
	}
	ws->term.status = status;
	if (status != 0 && status != 101)
		ws_finish(ws, WS_EV_ERROR, 1006, "%s: HTTP %d instead of 101 (%s)",
		    ws->hostport, status, why);
	else
		ws_finish(ws, WS_EV_ERROR, 1006, "%s: upgrade refused: %s", ws->hostport, why);
}

static void
ws_read_cb(struct bufferevent *bev, void *arg)
{
	struct ws *ws = arg;

	(void)bev;
	ws->busy++;
	ws->last_rx = mono_msec();
	if (ws->state == WS_UPGRADING)
		ws_read_head(ws);
	if (!ws->freed && (ws->state == WS_OPEN || ws->state == WS_CLOSING))
		ws_pump(ws);
	ws_leave(ws);
}

/* The output drained: a closing connection may be done. */
static void
ws_write_cb(struct bufferevent *bev, void *arg)
{
	struct ws *ws = arg;

	(void)bev;
	ws->busy++;
	if (ws->state == WS_CLOSING)
		ws_check_closing(ws);
	ws_leave(ws);
}

/* The request is on its way: waits for the answer. */
static void
ws_upgrade(struct ws *ws)
{
	ws->state = WS_UPGRADING;
	if (evbuffer_get_length(bufferevent_get_input(ws->bev)) > 0)
		ws_read_head(ws);
}

/* Why the connection failed, into buf. */
static void
ws_describe_error(struct ws *ws, short what, int err, char *buf, size_t len)
{
	const char *verify = tls_verify_error(ws->ssl);
	unsigned long ssl_err = ws->ssl != NULL ? bufferevent_get_openssl_error(ws->bev) : 0;
	int dns_err = bufferevent_socket_get_dns_error(ws->bev);
	char why[256];

	if (dns_err != 0) {
		snprintf(buf, len, "cannot resolve %s: %s", ws->hostport,
		    evutil_gai_strerror(dns_err));
	} else if (verify[0] != '\0') {
		snprintf(buf, len, "TLS certificate verification failed for %s: %s",
		    ws->hostport, verify);
	} else if (ssl_err != 0) {
		ERR_error_string_n(ssl_err, why, sizeof(why));
		snprintf(buf, len, "TLS failure with %s: %s", ws->hostport, why);
	} else if (ws->state == WS_CONNECTING) {
		snprintf(buf, len, "cannot connect to %s: %s", ws->hostport,
		    err != 0 ? strerror(err) : "connection closed");
	} else if (what & BEV_EVENT_EOF) {
		snprintf(buf, len, "%s closed the connection %s", ws->hostport,
		    ws->state == WS_UPGRADING ? "during the handshake" : "without a close frame");
	} else {
		snprintf(buf, len, "connection to %s failed: %s", ws->hostport,
		    err != 0 ? strerror(err) : "unknown error");
	}
	ERR_clear_error();
}

static void
ws_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ws *ws = arg;
	int err = errno;
	char msg[700];

	(void)bev;
	ws->busy++;
	if (what & BEV_EVENT_CONNECTED) {
		ws_upgrade(ws);
	} else if (ws->state == WS_CLOSING) {
		ws_finish_closing(ws, "connection closed without a close answer");
	} else if (ws->state != WS_DONE) {
		ws_describe_error(ws, what, err, msg, sizeof(msg));
		ws_finish(ws, WS_EV_ERROR, 1006, "%s", msg);
	}
	ws_leave(ws);
}

/* The parts of a ws URL. */
struct ws_url {
	int tls;
	char host[256];
	int port;
	char *target;                   /* path and query */
};

/* Splits url; -1 when it is not a usable ws(s) URL. */
static int
ws_parse_url(const char *url, struct ws_url *u)
{
	struct evhttp_uri *uri = url != NULL ? evhttp_uri_parse_with_flags(url, 0) : NULL;
	const char *scheme = uri != NULL ? evhttp_uri_get_scheme(uri) : NULL;
	const char *host = uri != NULL ? evhttp_uri_get_host(uri) : NULL;
	const char *path, *query;
	size_t hlen = host != NULL ? strlen(host) : 0;

	if (scheme == NULL || hlen == 0 ||
	    (strcasecmp(scheme, "ws") != 0 && strcasecmp(scheme, "wss") != 0)) {
		if (uri != NULL)
			evhttp_uri_free(uri);
		return -1;
	}
	u->tls = strcasecmp(scheme, "wss") == 0;
	if (host[0] == '[' && hlen > 2 && host[hlen - 1] == ']')
		host++, hlen -= 2;
	snprintf(u->host, sizeof(u->host), "%.*s", (int)hlen, host);
	u->port = evhttp_uri_get_port(uri) > 0 ? evhttp_uri_get_port(uri) : u->tls ? 443 : 80;
	path = evhttp_uri_get_path(uri);
	query = evhttp_uri_get_query(uri);
	if (path == NULL || path[0] == '\0')
		path = "/";
	u->target = query != NULL ? xasprintf("%s?%s", path, query) : xstrdup(path);
	evhttp_uri_free(uri);
	return hlen < sizeof(u->host) ? 0 : -1;
}

/* 1 when every extra header is one "Name: value" line. */
static int
ws_headers_ok(const char *const *headers)
{
	size_t i;

	for (i = 0; headers != NULL && headers[i] != NULL; i++) {
		const char *c = strchr(headers[i], ':');

		if (c == NULL || c == headers[i] || strpbrk(headers[i], "\r\n") != NULL)
			return 0;
	}
	return 1;
}

/*
 * Queues the upgrade request, with a fresh random key, on the output:
 * it goes out once connected.  No extension or subprotocol is offered.
 */
static void
ws_write_request(struct ws *ws, const struct ws_url *u, const char *const *headers)
{
	struct evbuffer *out = bufferevent_get_output(ws->bev);
	int v6 = strchr(u->host, ':') != NULL;
	unsigned char nonce[16], md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	char key[32], both[80];
	size_t i;
	int ua = 0;

	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
		fatalx("%s: no random bytes", __func__);
	EVP_EncodeBlock((unsigned char *)key, nonce, sizeof(nonce));
	snprintf(both, sizeof(both), "%s%s", key, WS_GUID);
	if (EVP_Digest(both, strlen(both), md, &mdlen, EVP_sha1(), NULL) != 1)
		fatalx("%s: SHA-1 failed", __func__);
	EVP_EncodeBlock((unsigned char *)ws->accept, md, (int)mdlen);
	evbuffer_add_printf(out, "GET %s HTTP/1.1\r\nHost: %s%s%s", u->target,
	    v6 ? "[" : "", u->host, v6 ? "]" : "");
	if (u->port != (u->tls ? 443 : 80))
		evbuffer_add_printf(out, ":%d", u->port);
	evbuffer_add_printf(out, "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
	    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n", key);
	for (i = 0; headers != NULL && headers[i] != NULL; i++) {
		if (strncasecmp(headers[i], "User-Agent:", 11) == 0)
			ua = 1;
		evbuffer_add_printf(out, "%s\r\n", headers[i]);
	}
	if (!ua)                        /* a caller's own replaces ours */
		evbuffer_add_printf(out, "User-Agent: hermes-gateway\r\n");
	evbuffer_add(out, "\r\n", 2);
	bufferevent_setcb(ws->bev, ws_read_cb, ws_write_cb, ws_event_cb, ws);
	bufferevent_enable(ws->bev, EV_READ | EV_WRITE);
}

/* Allocates a connection in the state before connecting. */
static struct ws *
ws_alloc(struct event_base *base, const struct ws_url *u, const struct ws_opts *opts,
    ws_event_fn cb, void *arg)
{
	struct ws *ws = xcalloc(1, sizeof(*ws));
	struct ws_opts *o = &ws->opts;

	ws->base = base;
	ws->cb = cb;
	ws->arg = arg;
	if (opts != NULL)
		*o = *opts;
	o->headers = NULL;
	/* A control frame (125 bytes) always fits. */
	o->max_frame = o->max_frame == 0 ? WS_MAX_FRAME : o->max_frame < 125 ? 125 : o->max_frame;
	o->max_message = o->max_message > 0 ? o->max_message : WS_MAX_MESSAGE;
	o->max_header = o->max_header > 0 ? o->max_header : WS_MAX_HEADER;
	o->handshake_timeout = o->handshake_timeout > 0 ? o->handshake_timeout : WS_HANDSHAKE_S;
	o->close_timeout = o->close_timeout > 0 ? o->close_timeout : WS_CLOSE_S;
	snprintf(ws->hostport, sizeof(ws->hostport), "%s:%d", u->host, u->port);
	ws->deadline = evtimer_new(base, ws_deadline_cb, ws);
	ws->idle = evtimer_new(base, ws_idle_cb, ws);
	ws->report = evtimer_new(base, ws_report_cb, ws);
	if (ws->deadline == NULL || ws->idle == NULL || ws->report == NULL)
		fatalx("%s: cannot create an event", __func__);
	ws_timer_add(ws->deadline, ws->opts.handshake_timeout);
	ws->last_rx = mono_msec();
	return ws;
}

/* Parses url into u (u->target for the caller to free) and allocates; NULL when unusable. */
static struct ws *
ws_prepare(struct event_base *base, const char *url, const struct ws_opts *opts,
    ws_event_fn cb, void *arg, struct ws_url *u)
{
	if (ws_parse_url(url, u) < 0 || !ws_headers_ok(opts != NULL ? opts->headers : NULL))
		return NULL;
	return ws_alloc(base, u, opts, cb, arg);
}

/* 1 when host is a literal IPv4 or IPv6 address. */
static int
ws_host_is_ip(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

/* Creates the bufferevent of a new connection (TLS for wss). */
static int
ws_new_bev(struct ws *ws, struct tls_ctx *tls, const struct ws_url *u)
{
	if (!u->tls) {
		ws->bev = bufferevent_socket_new(ws->base, -1, BEV_OPT_CLOSE_ON_FREE);
		return ws->bev != NULL ? 0 : -1;
	}
	if ((ws->ssl = tls_ssl_new(tls, u->host)) == NULL)
		return -1;
	ws->bev = bufferevent_openssl_socket_new(ws->base, -1, ws->ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE);
	if (ws->bev == NULL) {
		SSL_free(ws->ssl);
		ws->ssl = NULL;
		return -1;
	}
	return 0;
}

struct ws *
ws_new(struct event_base *base, struct evdns_base *dns, struct tls_ctx *tls,
    const char *url, const struct ws_opts *opts, ws_event_fn cb, void *arg)
{
	struct ws_url u = { 0 };
	struct ws *ws = ws_prepare(base, url, opts, cb, arg, &u);

	if (ws != NULL && ((u.tls && tls == NULL) || (dns == NULL && !ws_host_is_ip(u.host)) ||
	    ws_new_bev(ws, tls, &u) < 0)) {
		ws_destroy(ws);
		ws = NULL;
	}
	if (ws != NULL) {
		ws_write_request(ws, &u, opts != NULL ? opts->headers : NULL);
		if (bufferevent_socket_connect_hostname(ws->bev, dns, AF_UNSPEC, u.host,
		    u.port) < 0)
			ws_finish(ws, WS_EV_ERROR, 1006, "cannot connect to %s: %s",
			    ws->hostport, strerror(errno));
	}
	free(u.target);
	return ws;
}

struct ws *
ws_new_fd(struct event_base *base, int fd, const char *url, const struct ws_opts *opts,
    ws_event_fn cb, void *arg)
{
	struct ws_url u = { 0 };
	struct ws *ws = ws_prepare(base, url, opts, cb, arg, &u);

	if (ws != NULL && (fd_set_nonblock(fd, 1) < 0 ||
	    (ws->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL)) {
		ws_destroy(ws);
		ws = NULL;
	}
	if (ws != NULL) {
		ws_write_request(ws, &u, opts != NULL ? opts->headers : NULL);
		ws_upgrade(ws);
	}
	free(u.target);
	return ws;
}

void
ws_free(struct ws *ws)
{
	if (ws == NULL)
		return;
	ws->freed = 1;
	if (ws->in_recv && ws->wslay != NULL)
		wslay_event_shutdown_read(ws->wslay);
	if (ws->busy == 0)
		ws_destroy(ws);
}

/* Queues one message of opcode and sends it. */
static int
ws_queue(struct ws *ws, int opcode, const void *data, size_t len)
{
	struct wslay_event_msg m = { (uint8_t)opcode, data, len };

	if (ws == NULL || ws->state != WS_OPEN || ws->user_closed ||
	    wslay_event_queue_msg(ws->wslay, &m) != 0)
		return -1;
	ws_flush(ws);
	return 0;
}

int
ws_send_text(struct ws *ws, const char *text, size_t len)
{
	return ws_queue(ws, WSLAY_TEXT_FRAME, text, len);
}

int
ws_send_binary(struct ws *ws, const void *data, size_t len)
{
	return ws_queue(ws, WSLAY_BINARY_FRAME, data, len);
}

int
ws_ping(struct ws *ws, const void *data, size_t len)
{
	return len <= 125 ? ws_queue(ws, WSLAY_PING, data, len) : -1;
}

/* 1 for a code an endpoint may send in a close frame (RFC 6455 7.4). */
static int
ws_close_code_ok(int code)
{
	return (code >= 1000 && code <= 1003) || (code >= 1007 && code <= 1011) ||
	    (code >= 3000 && code <= 4999);
}

int
ws_close(struct ws *ws, int code, const char *reason)
{
	size_t n = reason != NULL ? strlen(reason) : 0;

	if (ws == NULL || ws->state == WS_DONE || !ws_close_code_ok(code) || n > 123)
		return -1;
	if (ws->state == WS_CLOSING || ws->user_closed)
		return 0;
	ws->user_closed = 1;
	if (ws->state != WS_OPEN) {
		ws_finish(ws, WS_EV_CLOSE, 1006, "closed before the handshake completed");
		return 0;
	}
	if (wslay_event_queue_close(ws->wslay, (uint16_t)code, (const uint8_t *)reason, n) != 0)
		return -1;
	ws_flush(ws);
	return 0;
}

size_t
ws_queued(const struct ws *ws)
{
	if (ws == NULL || ws->bev == NULL)
		return 0;
	return evbuffer_get_length(bufferevent_get_output(ws->bev));
}
