/*
 * fuzz_http_response.c - the HTTP client's handling of responses
 * (worker/net/http.c on libevent's evhttp): status line, headers, bodies
 * by length, chunked or until close, the size cap, streaming to a chunk
 * callback, and the keep-alive pool.
 *
 * The harness is both ends: a server on 127.0.0.1 in the same event loop
 * answers the client's requests with the input's bytes.
 *
 * Input: a byte of mode, a byte of options (size cap, streaming), then:
 * raw (mode even): the rest is sent verbatim as the response, then the
 *   server closes.  Invariants: the done callback runs exactly once; a
 *   transport error has a message that never shows the URL's path (where
 *   a Telegram token lives) and no body; a response has a NUL-terminated
 *   body within the cap, and (streamed 2xx) its
 *   body went to the chunk callback, within the cap, instead.
 * built (mode odd): one to three well-formed responses (status, body,
 *   framing by Content-Length, chunked with random chunk sizes and
 *   trailers, or until close; HTTP/1.0 or 1.1; "Connection: close") made
 *   from the rest; the client sends each next request from the previous
 *   one's done callback, as the Telegram long poll does.  Invariants, in
 *   addition: each body arrives exactly (streamed or buffered), a body
 *   over the cap fails with "larger than", the Content-Type is reported,
 *   every request reaches the server once, and a kept-alive connection is
 *   reused (the number of connections the server accepts is exactly the
 *   number the responses' framing calls for).
 */
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "fz_util.h"
#include "net/http.h"
#include "util.h"

#define MAX_RESP        3
#define SECRET          "SECRET123"

enum framing { FR_LENGTH, FR_CHUNKED, FR_CLOSE };

/* What the server answers, and what the client must then report. */
struct resp {
	struct evbuffer *wire;          /* the bytes sent */
	int closes;                     /* the server shuts the connection after it */
	int status;                     /* built: the status sent */
	char *body;                     /* built: the body sent */
	size_t body_len;
	int ends_conn;                  /* built: the client cannot reuse the connection after it */
};

/* One exchange: the plan, and what happened. */
struct run {
	struct resp resp[MAX_RESP];
	int nresp, built;
	size_t max_body;
	int stream;
	struct http_client *client;
	int issued, served, accepted, finished;
	int done_calls[MAX_RESP];
	struct evbuffer *streamed[MAX_RESP];
	struct bufferevent *conns[8];
	int nconns;
};

static struct event_base *fz_base;
static struct evdns_base *fz_dns;
static struct evconnlistener *fz_listener;
static char fz_url[128];
static struct run *fz_run;

static void client_issue(struct run *r);

/* ---- the server ------------------------------------------------------- */

static void
srv_write_cb(struct bufferevent *bev, void *arg)
{
	(void)arg;
	/* Everything written: a closing response now ends the stream. */
	if (bufferevent_getfd(bev) >= 0 && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		shutdown(bufferevent_getfd(bev), SHUT_WR);
}

/* Answers each complete request head (our requests have no body) with the next response. */
static void
srv_read_cb(struct bufferevent *bev, void *arg)
{
	struct run *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end;

	for (;;) {
		end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		if (end.pos < 0)
			return;
		evbuffer_drain(in, (size_t)end.pos + 4);
		FZ_CHECK(r->served < r->issued, "the server got %d requests, %d were made",
		    r->served + 1, r->issued);
		FZ_CHECK(r->served < r->nresp, "a request beyond the plan");
		bufferevent_write(bev, evbuffer_pullup(r->resp[r->served].wire, -1),
		    evbuffer_get_length(r->resp[r->served].wire));
		if (r->resp[r->served].closes) {
			bufferevent_setcb(bev, srv_read_cb, srv_write_cb, NULL, r);
			if (evbuffer_get_length(r->resp[r->served].wire) == 0)
				shutdown(bufferevent_getfd(bev), SHUT_WR);
		}
		r->served++;
	}
}

static void
srv_event_cb(struct bufferevent *bev, short what, void *arg)
{
	(void)bev;
	(void)what;
	(void)arg;
	/* The client closed: the connection is freed with the run. */
}

static void
srv_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
    void *arg)
{
	struct run *r = fz_run;
	struct bufferevent *bev;

	(void)l;
	(void)sa;
	(void)len;
	(void)arg;
	if (r == NULL || r->nconns == (int)ARRAY_LEN(r->conns)) {
		close(fd);
		return;
	}
	bev = bufferevent_socket_new(fz_base, fd, BEV_OPT_CLOSE_ON_FREE);
	FZ_CHECK(bev != NULL, "bufferevent");
	bufferevent_setcb(bev, srv_read_cb, NULL, srv_event_cb, r);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	r->conns[r->nconns++] = bev;
	r->accepted++;
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);

	(void)argc;
	(void)argv;
	fz_setup();
	fz_base = event_base_new();
	fz_dns = evdns_base_new(fz_base, 0);
	fz_listener = evconnlistener_new_bind(fz_base, srv_accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 64, (struct sockaddr *)&sin, sizeof(sin));
	if (fz_base == NULL || fz_dns == NULL || fz_listener == NULL ||
	    getsockname(evconnlistener_get_fd(fz_listener), (struct sockaddr *)&sin, &sl) < 0)
		abort();
	/* The path holds a secret, as a Telegram bot token does. */
	snprintf(fz_url, sizeof(fz_url), "http://127.0.0.1:%d/bot" SECRET "/getMe?q=1",
	    ntohs(sin.sin_port));
	return 0;
}

/* ---- the client ------------------------------------------------------- */

static void
on_chunk(void *arg, const char *data, size_t len)
{
	struct run *r = arg;
	int i = r->issued - 1;

	FZ_CHECK(len > 0, "an empty chunk");
	evbuffer_add(r->streamed[i], data, len);
	FZ_CHECK(evbuffer_get_length(r->streamed[i]) <= r->max_body,
	    "streamed %zu bytes over the cap %zu", evbuffer_get_length(r->streamed[i]),
	    r->max_body);
}

/* What any response must look like, whatever the server sent. */
static void
check_any(const struct run *r, int i, const struct http_response *rs)
{
	if (rs->status == 0) {
		FZ_CHECK(rs->error != NULL && rs->error[0] != '\0', "a failure without a message");
		FZ_CHECK(strstr(rs->error, SECRET) == NULL, "the URL path in an error: %s",
		    rs->error);
		FZ_CHECK(rs->body != NULL && rs->body_len == 0, "a failure with a body");
		return;
	}
	/*
	 * http.h promises a status, not its range: libevent 2.1 takes any
	 * number ("HTTP/1.1 21 X" gives 21, an overflowing one -1).
	 */
	FZ_CHECK(rs->body != NULL && rs->body[rs->body_len] == '\0', "body not NUL-terminated");
	FZ_CHECK(rs->body_len <= r->max_body, "a body of %zu bytes over the cap %zu",
	    rs->body_len, r->max_body);
	if (r->stream && rs->status >= 200 && rs->status < 300)
		FZ_CHECK(rs->body_len == 0, "a streamed response also buffered");
	else
		FZ_CHECK(evbuffer_get_length(r->streamed[i]) == 0, "a non-2xx body was streamed");
}

/* What a built response must give. */
static void
check_built(const struct run *r, int i, const struct http_response *rs)
{
	const struct resp *p = &r->resp[i];
	struct evbuffer *sb = r->streamed[i];
	int streamed = r->stream && p->status >= 200 && p->status < 300;

	if (p->body_len > r->max_body) {
		FZ_CHECK(rs->status == 0 && strstr(rs->error, "larger than") != NULL,
		    "response %d: %zu bytes over the cap %zu gave status %d (%s)", i, p->body_len,
		    r->max_body, rs->status, rs->error ? rs->error : "");
		return;
	}
	FZ_CHECK(rs->status == p->status, "response %d: status %d, sent %d (%s)", i, rs->status,
	    p->status, rs->error ? rs->error : "");
	FZ_CHECK(rs->content_type != NULL && strcmp(rs->content_type, "text/x-fuzz") == 0,
	    "response %d: content type", i);
	if (streamed)
		FZ_CHECK(evbuffer_get_length(sb) == p->body_len && (p->body_len == 0 ||
		    memcmp(evbuffer_pullup(sb, -1), p->body, p->body_len) == 0),
		    "response %d: streamed %zu bytes, sent %zu", i, evbuffer_get_length(sb),
		    p->body_len);
	else
		FZ_CHECK(rs->body_len == p->body_len && memcmp(rs->body, p->body, p->body_len) == 0,
		    "response %d: body of %zu bytes, sent %zu", i, rs->body_len, p->body_len);
}

static void
on_done(void *arg, const struct http_response *rs)
{
	struct run *r = arg;
	int i = r->issued - 1;

	r->done_calls[i]++;
	fz_trace("response %d: status %d, %zu bytes (+%zu streamed), error %s", i, rs->status,
	    rs->body_len, evbuffer_get_length(r->streamed[i]), rs->error ? rs->error : "none");
	FZ_CHECK(r->done_calls[i] == 1, "done called %d times", r->done_calls[i]);
	check_any(r, i, rs);
	if (r->built)
		check_built(r, i, rs);
	if (r->issued < r->nresp)
		client_issue(r);        /* from the callback, as a long poll does */
	else
		r->finished = 1;
}

static void
client_issue(struct run *r)
{
	struct http_req req = {
		.method = "GET", .url = fz_url, .timeout = 10, .max_body = r->max_body,
		.on_chunk = r->stream ? on_chunk : NULL,
	};

	r->issued++;
	FZ_CHECK(http_request(r->client, &req, on_done, r) != NULL, "the request did not start");
}

/* ---- building responses ------------------------------------------------ */

static void
build_one(struct resp *p, struct fz_in *in, int last)
{
	static const int codes[] = { 200, 201, 202, 299, 302, 400, 401, 404, 409, 429, 500, 503 };
	uint8_t o = fz_u8(in);
	enum framing fr = (enum framing)(o % 3);
	int v10 = (o >> 2) & 1, cclose = (o >> 3) & 1;
	size_t len, off, n;
	const uint8_t *b;

	if (fr == FR_CLOSE && !last)
		fr = FR_LENGTH;
	p->status = codes[(o >> 4) % ARRAY_LEN(codes)];
	b = fz_take(in, fz_u16(in) % 3000, &len);
	p->body = xmalloc(len + 1);
	memcpy(p->body, b, len);
	p->body_len = len;
	p->wire = evbuffer_new();
	evbuffer_add_printf(p->wire, "HTTP/1.%d %d Fuzz\r\nContent-Type: text/x-fuzz\r\n",
	    v10 ? 0 : 1, p->status);
	if (cclose)
		evbuffer_add_printf(p->wire, "Connection: close\r\n");
	if (fr == FR_LENGTH)
		evbuffer_add_printf(p->wire, "Content-Length: %zu\r\n\r\n", len);
	else if (fr == FR_CHUNKED)
		evbuffer_add_printf(p->wire, "Transfer-Encoding: chunked\r\n\r\n");
	else
		evbuffer_add_printf(p->wire, "\r\n");
	if (fr != FR_CHUNKED) {
		evbuffer_add(p->wire, b, len);
	} else {
		for (off = 0; off < len; off += n) {
			n = 1 + fz_u8(in) % 200;
			if (n > len - off)
				n = len - off;
			evbuffer_add_printf(p->wire, n & 1 ? "%zx\r\n" : "%04zX\r\n", n);
			evbuffer_add(p->wire, b + off, n);
			evbuffer_add(p->wire, "\r\n", 2);
		}
		evbuffer_add_printf(p->wire, "0\r\n%s\r\n", o & 0x40 ? "X-Trailer: 1\r\n" : "");
	}
	p->closes = fr == FR_CLOSE || cclose || v10 || last;
	p->ends_conn = fr == FR_CLOSE || cclose || v10;
}

static void
plan(struct run *r, struct fz_in *in, uint8_t mode)
{
	int i;

	r->built = mode & 1;
	if (!r->built) {
		size_t len;
		const uint8_t *b = fz_take(in, in->n, &len);

		r->nresp = 1;
		r->resp[0].wire = evbuffer_new();
		evbuffer_add(r->resp[0].wire, b, len);
		r->resp[0].closes = 1;
		return;
	}
	r->nresp = 1 + (mode >> 1) % MAX_RESP;
	for (i = 0; i < r->nresp; i++)
		build_one(&r->resp[i], in, i == r->nresp - 1);
}

/* Connections the server must see: one, plus one after each response that ends its own. */
static int
conns_expected(const struct run *r)
{
	int i, n = 1;

	for (i = 0; i + 1 < r->nresp; i++)
		n += r->resp[i].ends_conn || r->resp[i].body_len > r->max_body;
	return n;
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct run *r = arg;

	(void)fd;
	(void)what;
	fz_fail(__FILE__, __LINE__, "deadline", "request %d of %d never completed", r->issued, r->nresp);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t caps[] = { 0, 1, 16, 100, 1000, 2048, 100000, 0 };
	struct fz_in in = { data, size };
	uint8_t mode = fz_u8(&in), opt = fz_u8(&in);
	struct timeval tv = { 15, 0 };
	struct run r;
	struct event *deadline;
	int i;

	memset(&r, 0, sizeof(r));
	r.max_body = caps[opt & 7];
	if (r.max_body == 0)
		r.max_body = 1024 * 1024;
	r.stream = (opt >> 3) & 1;
	plan(&r, &in, mode);
	for (i = 0; i < MAX_RESP; i++)
		r.streamed[i] = evbuffer_new();
	r.client = http_client_new(fz_base, fz_dns, NULL);
	fz_run = &r;
	deadline = evtimer_new(fz_base, deadline_cb, &r);
	evtimer_add(deadline, &tv);
	client_issue(&r);
	while (!r.finished)
		event_base_loop(fz_base, EVLOOP_ONCE);
	event_free(deadline);
	fz_trace("%d requests, %d connections", r.issued, r.accepted);
	FZ_CHECK(r.served == r.issued, "%d requests made, %d reached the server", r.issued,
	    r.served);
	if (r.built)
		FZ_CHECK(r.accepted == conns_expected(&r), "%d connections, expected %d", r.accepted,
		    conns_expected(&r));
	http_client_free(r.client);
	fz_run = NULL;
	for (i = 0; i < r.nconns; i++)
		bufferevent_free(r.conns[i]);
	event_base_loop(fz_base, EVLOOP_NONBLOCK);
	for (i = 0; i < MAX_RESP; i++) {
		evbuffer_free(r.streamed[i]);
		if (r.resp[i].wire != NULL)
			evbuffer_free(r.resp[i].wire);
		free(r.resp[i].body);
	}
	return 0;
}
