/*
 * http.h - an asynchronous HTTP/1.1 client on libevent's evhttp, over TLS
 * (bufferevent_openssl) for https URLs, DNS through evdns.
 *
 * Every request has a timeout and a response-size cap.  Exactly one done
 * callback per request unless it is cancelled.
 */
#ifndef HERMES_HTTP_H
#define HERMES_HTTP_H

#include <stddef.h>

struct event_base;
struct evdns_base;
struct tls_ctx;
struct http_client;
struct http_call;

struct http_response {
	int status;                     /* HTTP status, or 0 on a transport error */
	const char *error;              /* transport error text when status == 0 */
	const char *body;               /* NUL-terminated; "" when none (not when streamed) */
	size_t body_len;
	const char *content_type;       /* may be NULL */
	const void *headers_;           /* for http_response_header() only */
};

/* A response header's value (during the done callback only), or NULL. */
const char *http_response_header(const struct http_response *r, const char *name);

typedef void (*http_done_fn)(void *arg, const struct http_response *r);
/*
 * Called with each piece of a 2xx body as it arrives (for SSE); the body
 * is then not kept.  Bodies of other statuses are buffered and given to
 * the done callback, so that an API's error message can be read.
 */
typedef void (*http_chunk_fn)(void *arg, const char *data, size_t len);

struct http_req {
	const char *method;             /* "GET" or "POST" */
	const char *url;                /* http:// or https:// */
	const char *content_type;       /* for a body; may be NULL */
	const char *body;
	size_t body_len;
	const char *authorization;      /* full header value, or NULL; never logged */
	/* More headers, "Name: value" each, NULL-terminated; may be NULL; never logged.
	 * A User-Agent here replaces the default one. */
	const char *const *headers;
	double timeout;                 /* seconds for the whole request */
	size_t max_body;                /* larger responses fail; 0 means 1 MiB */
	http_chunk_fn on_chunk;         /* NULL: buffer the whole body */
};

struct http_client *http_client_new(struct event_base *base, struct evdns_base *dns,
    struct tls_ctx *tls);
/*
 * Cancels all running calls (no callbacks) and frees.  May be called from
 * inside one of the client's own callbacks: the memory is then released
 * from the event loop a moment later.
 */
void http_client_free(struct http_client *c);
/* Starts a request; NULL (and no callback) when the URL is invalid. */
struct http_call *http_request(struct http_client *c, const struct http_req *req,
    http_done_fn cb, void *arg);
/*
 * Cancels a running request: its callback is never called.  Safe inside
 * any callback (also the call's own chunk callback); NULL is a no-op.
 * Never call it once the done callback has run: the call is gone.
 */
void http_cancel(struct http_call *call);

#endif
