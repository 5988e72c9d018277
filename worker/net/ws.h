/*
 * ws.h - a WebSocket client (RFC 6455) on the worker's event loop, for
 * ws:// and wss:// URLs; framing by wslay, TLS through tls.h, names
 * through evdns.
 *
 * One callback receives every event of a connection, in the manner of
 * OpenSMTPD's io layer: OPEN once, then TEXT and BINARY messages, then
 * exactly one terminal event, CLOSE (a close handshake took place, or
 * ws_close() ended the connection) or ERROR (anything else).  After the
 * terminal event the connection is gone and only ws_free() remains to
 * be called.  No callback ever runs from inside a ws_* call.
 *
 * Limits on everything read: the response head, each frame, each
 * message (over the caps: close 1009), the handshake time and the time
 * without a received byte.  Text is checked to be UTF-8 (else close
 * 1007); masked or malformed server frames close with 1002.  Pings are
 * answered automatically.  No extension is offered (no compression).
 */
#ifndef HERMES_WS_H
#define HERMES_WS_H

#include <stddef.h>

struct event_base;
struct evdns_base;
struct tls_ctx;
struct ws;

enum ws_ev {
	WS_EV_OPEN = 1,                 /* the handshake completed */
	WS_EV_TEXT,                     /* a whole text message (UTF-8) */
	WS_EV_BINARY,                   /* a whole binary message */
	WS_EV_CLOSE,                    /* terminal: closed by a close handshake or ws_close() */
	WS_EV_ERROR,                    /* terminal: failed */
};

struct ws_event {
	enum ws_ev type;
	/* TEXT and BINARY: the message, borrowed for the callback; not NUL-terminated. */
	const char *data;
	size_t len;
	/*
	 * CLOSE: the code of the peer's close frame (1005 when it had none),
	 * or 1006 when none arrived (ws_close() with no answer in time, or
	 * ws_close() before the handshake completed).  ERROR: the close code
	 * sent to the peer for its protocol error (1002, 1007, 1009), else
	 * 1006.
	 */
	int code;
	/* ERROR from the opening handshake: the HTTP status when one was read, else 0. */
	int status;
	/*
	 * CLOSE: the peer's close reason (raw UTF-8, "" when none; escape it
	 * before logging).  ERROR: what went wrong, fit to log.  Never NULL.
	 */
	const char *reason;
};

/* ws is the connection; it may be freed (ws_free) from inside the callback. */
typedef void (*ws_event_fn)(struct ws *ws, const struct ws_event *ev, void *arg);

/* Every field is optional: zero means the default. */
struct ws_opts {
	/*
	 * Extra request headers, "Name: value" each (e.g. an Authorization),
	 * NULL-terminated.  Copied; never logged.
	 */
	const char *const *headers;
	size_t max_frame;               /* largest frame payload; default 1 MiB */
	size_t max_message;             /* largest message; default 4 MiB */
	size_t max_header;              /* largest response head; default 16 KiB */
	double handshake_timeout;       /* DNS + TCP + TLS + upgrade, seconds; default 30 */
	double idle_timeout;            /* no byte received for this long: ERROR; default none */
	double close_timeout;           /* the wait for the peer's close answer; default 5 */
};

/*
 * Starts connecting to url (ws:// or wss://; a wss connection verifies
 * the server's certificate and name through tls).  dns resolves names
 * (required unless the host is a literal address).  opts may be NULL.
 * Returns NULL, and calls nothing, when the URL or a header is not
 * usable, or wss is asked without a TLS context.  Never logged: the
 * URL's path and query, the extra headers.
 */
struct ws *ws_new(struct event_base *base, struct evdns_base *dns, struct tls_ctx *tls,
    const char *url, const struct ws_opts *opts, ws_event_fn cb, void *arg);
/*
 * For tests: the same over fd, an already connected socket (taken over;
 * closed by the connection), without DNS or TLS; url gives the Host
 * header and the path.
 */
struct ws *ws_new_fd(struct event_base *base, int fd, const char *url,
    const struct ws_opts *opts, ws_event_fn cb, void *arg);
/*
 * Stops every callback and frees, dropping the connection without a
 * close handshake (call ws_close() first for one).  Safe inside the
 * connection's own callback: the memory is released once it returns.
 * NULL is a no-op.
 */
void ws_free(struct ws *ws);

/*
 * Queue a message (copied; text must be UTF-8) or a ping (at most 125
 * bytes).  Return 0, or -1 when the connection is not open (before
 * OPEN, after ws_close() or a close by the peer) or the ping is too long.
 */
int ws_send_text(struct ws *ws, const char *text, size_t len);
int ws_send_binary(struct ws *ws, const void *data, size_t len);
int ws_ping(struct ws *ws, const void *data, size_t len);
/*
 * Starts the close handshake: a close frame with code (1000, 1001,
 * 3000-4999, ...) and reason (at most 123 bytes), then the wait for the
 * peer's answer (close_timeout), then the TCP close and WS_EV_CLOSE.
 * Messages arriving meanwhile are dropped.  Before OPEN, the connection
 * is dropped and WS_EV_CLOSE (1006) follows.  Returns 0, or -1 for a
 * bad code or reason or a connection already over.
 */
int ws_close(struct ws *ws, int code, const char *reason);
/* Bytes written but not yet taken by the kernel (for backpressure). */
size_t ws_queued(const struct ws *ws);

#endif
