/* test_http.c - the HTTP client against in-process servers, plain and TLS. */
#include "net_fixture.h"

#include <event2/keyvalq_struct.h>

#include "net/http.h"
#include "net/tls.h"

/* What the test server saw and what a call got. */
struct result {
	int done;
	int status;
	char error[512];
	char body[8192];
	size_t body_len;
	char ctype[128];
	char chunks[8192];
	size_t nchunks;
	int cancel_on_chunk;
	int got_chunk;                  /* nchunks > 0, as a flag to wait on */
	int free_client_in_cb;          /* http_client_free() from inside a callback */
	struct http_call *call;
	struct http_call *cancel_other; /* cancelled from the done callback */
};

struct seen {
	int requests;
	char auth[256];
	char body[1024];
	char method[16];
	char host[128];
	struct evhttp_request *hung;
	int hung_seen;
	unsigned short ports[64];       /* the client's port, per request */
};

static struct event_base *base;
static struct fx_server srv;
static struct fx_server tsrv;           /* TLS */
static struct seen seen;
static struct http_client *client;
static struct tls_ctx *tls;

static void
done_cb(void *arg, const struct http_response *r)
{
	struct result *res = arg;

	ck_assert_int_eq(res->done, 0);
	res->done = 1;
	if (getenv("HTTP_TEST_VERBOSE")) fprintf(stderr, "status %d error: %s\n", r->status, r->error ? r->error : "");
	res->status = r->status;
	snprintf(res->error, sizeof(res->error), "%s", r->error ? r->error : "");
	ck_assert_ptr_nonnull(r->body);
	ck_assert_uint_lt(r->body_len, sizeof(res->body));
	memcpy(res->body, r->body, r->body_len);
	res->body[r->body_len] = '\0';
	res->body_len = r->body_len;
	snprintf(res->ctype, sizeof(res->ctype), "%s", r->content_type ? r->content_type : "");
	if (res->cancel_other != NULL)
		http_cancel(res->cancel_other);
	if (res->free_client_in_cb) {
		http_client_free(client);
		client = NULL;
	}
}

static void
chunk_cb(void *arg, const char *data, size_t len)
{
	struct result *res = arg;
	size_t have = strlen(res->chunks);

	ck_assert_uint_lt(have + len, sizeof(res->chunks));
	memcpy(res->chunks + have, data, len);
	res->chunks[have + len] = '\0';
	res->nchunks++;
	res->got_chunk = 1;
	if (res->cancel_on_chunk)
		http_cancel(res->call);
	if (res->free_client_in_cb) {
		http_client_free(client);
		client = NULL;
	}
}

/* Sends the next piece of a streamed reply, then ends it. */
static void
stream_step(evutil_socket_t fd, short what, void *arg)
{
	static const char *pieces[] = { "data: a\n\n", "data: b\n", "\n", NULL };
	struct evhttp_request *req = arg;
	struct evhttp_connection *conn = evhttp_request_get_connection(req);
	static int i;
	struct evbuffer *b;

	(void)fd;
	(void)what;
	if (pieces[i] == NULL) {
		i = 0;
		evhttp_send_reply_end(req);
		return;
	}
	b = evbuffer_new();
	evbuffer_add(b, pieces[i], strlen(pieces[i]));
	evhttp_send_reply_chunk(req, b);
	evbuffer_free(b);
	i++;
	(void)conn;
	{
		struct timeval tv = { 0, 20000 };

		event_base_once(base, -1, EV_TIMEOUT, stream_step, req, &tv);
	}
}

/* The test server: a few paths with different behaviours. */
static void
server_cb(struct evhttp_request *req, void *arg)
{
	const char *uri = evhttp_request_get_uri(req);
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct evbuffer *body = evhttp_request_get_input_buffer(req);
	struct evbuffer *out = evbuffer_new();
	const char *h;
	size_t n;

	(void)arg;
	{
		char *addr;
		ev_uint16_t peer;

		evhttp_connection_get_peer(evhttp_request_get_connection(req), &addr, &peer);
		if (seen.requests < 64)
			seen.ports[seen.requests] = peer;
	}
	seen.requests++;
	h = evhttp_find_header(in, "Authorization");
	snprintf(seen.auth, sizeof(seen.auth), "%s", h ? h : "");
	h = evhttp_find_header(in, "Host");
	snprintf(seen.host, sizeof(seen.host), "%s", h ? h : "");
	snprintf(seen.method, sizeof(seen.method), "%s",
	    evhttp_request_get_command(req) == EVHTTP_REQ_POST ? "POST" : "GET");
	n = evbuffer_get_length(body);
	if (n >= sizeof(seen.body))
		n = sizeof(seen.body) - 1;
	evbuffer_copyout(body, seen.body, n);
	seen.body[n] = '\0';

	if (strncmp(uri, "/hello", 6) == 0) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
		    "text/plain");
		evbuffer_add_printf(out, "hello world");
		evhttp_send_reply(req, 200, "OK", out);
	} else if (strcmp(uri, "/close") == 0) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		evbuffer_add_printf(out, "closing");
		evhttp_send_reply(req, 200, "OK", out);
	} else if (strcmp(uri, "/echo") == 0) {
		evbuffer_add_buffer(out, body);
		evhttp_send_reply(req, 200, "OK", out);
	} else if (strcmp(uri, "/big") == 0) {
		char big[2000];

		memset(big, 'b', sizeof(big));
		evbuffer_add(out, big, sizeof(big));
		evhttp_send_reply(req, 200, "OK", out);
	} else if (strcmp(uri, "/err") == 0) {
		evbuffer_add_printf(out, "{\"error\":{\"message\":\"nope\"}}");
		evhttp_send_reply(req, 500, "Internal Server Error", out);
	} else if (strcmp(uri, "/stream") == 0) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
		    "text/event-stream");
		evhttp_send_reply_start(req, 200, "OK");
		stream_step(-1, 0, req);
	} else if (strcmp(uri, "/hang") == 0) {
		seen.hung = req;        /* never answered */
		seen.hung_seen = 1;
	} else {
		evhttp_send_reply(req, 404, "Not Found", out);
	}
	evbuffer_free(out);
}

static void
setup(void)
{
	char err[256];

	signal(SIGPIPE, SIG_IGN);
	fx_make_certs();
	memset(&seen, 0, sizeof(seen));
	base = event_base_new();
	fx_server_start(&srv, base, NULL, server_cb, NULL);
	tls = tls_ctx_new(fx_cert("ca.pem"), err, sizeof(err));
	ck_assert_msg(tls != NULL, "%s", err);
	client = http_client_new(base, NULL, tls);
}

static void
teardown(void)
{
	http_client_free(client);
	tls_ctx_free(tls);
	fx_server_stop(&srv);
	event_base_free(base);
}

/* Starts a request to url and runs until it is done (or 10 s). */
static void
fetch(const char *method, const char *url, const char *body, struct http_req *tmpl,
    struct result *res)
{
	struct http_req req = { 0 };

	if (tmpl != NULL)
		req = *tmpl;
	req.method = method;
	req.url = url;
	if (body != NULL) {
		req.body = body;
		req.body_len = strlen(body);
		req.content_type = "application/json";
	}
	if (req.timeout == 0)
		req.timeout = 10;
	memset(res, 0, sizeof(*res));
	res->call = http_request(client, &req, done_cb, res);
	ck_assert_ptr_nonnull(res->call);
	/* Never answered from inside http_request(). */
	ck_assert_int_eq(res->done, 0);
	fx_run_until(base, &res->done, 10);
}

static char *
url(const char *scheme, int port, const char *path)
{
	static char b[4][256];
	static int slot;
	char *p = b[slot++ % 4];

	snprintf(p, sizeof(b[0]), "%s://127.0.0.1:%d%s", scheme, port, path);
	return p;
}

START_TEST(test_get)
{
	struct result r;

	fetch("GET", url("http", srv.port, "/hello?x=1"), NULL, NULL, &r);
	ck_assert_int_eq(r.done, 1);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "hello world");
	ck_assert_uint_eq(r.body_len, 11);
	ck_assert_str_eq(r.ctype, "text/plain");
	ck_assert_str_eq(r.error, "");
	ck_assert_str_eq(seen.method, "GET");
	ck_assert_str_eq(seen.auth, "");
	ck_assert_int_eq(atoi(strchr(seen.host, ':') + 1), srv.port);
}
END_TEST

START_TEST(test_post_with_authorization)
{
	struct http_req tmpl = { .authorization = "Bearer sk-secret" };
	struct result r;

	fetch("POST", url("http", srv.port, "/echo"), "{\"a\":1}", &tmpl, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "{\"a\":1}");
	ck_assert_str_eq(seen.method, "POST");
	ck_assert_str_eq(seen.body, "{\"a\":1}");
	ck_assert_str_eq(seen.auth, "Bearer sk-secret");
}
END_TEST

START_TEST(test_http_error_status_is_a_response)
{
	struct result r;

	fetch("GET", url("http", srv.port, "/err"), NULL, NULL, &r);
	ck_assert_int_eq(r.status, 500);
	ck_assert_str_eq(r.body, "{\"error\":{\"message\":\"nope\"}}");
	fetch("GET", url("http", srv.port, "/missing"), NULL, NULL, &r);
	ck_assert_int_eq(r.status, 404);
}
END_TEST

START_TEST(test_connection_refused)
{
	struct result r;

	fetch("GET", url("http", fx_closed_port(), "/"), NULL, NULL, &r);
	ck_assert_int_eq(r.done, 1);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "cannot connect to 127.0.0.1") != NULL, "error: %s", r.error);
}
END_TEST

START_TEST(test_timeout)
{
	struct http_req tmpl = { .timeout = 0.3 };
	uint64_t t0 = mono_msec();
	struct result r;

	fetch("GET", url("http", srv.port, "/hang"), NULL, &tmpl, &r);
	ck_assert_int_eq(r.done, 1);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "timed out") != NULL, "error: %s", r.error);
	ck_assert_uint_ge(mono_msec() - t0, 290);
	ck_assert_ptr_nonnull(seen.hung);
}
END_TEST

START_TEST(test_body_cap)
{
	struct http_req tmpl = { .max_body = 1000 };
	struct result r;

	fetch("GET", url("http", srv.port, "/big"), NULL, &tmpl, &r);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "larger than 1000") != NULL, "error: %s", r.error);
	tmpl.max_body = 2000;
	fetch("GET", url("http", srv.port, "/big"), NULL, &tmpl, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_uint_eq(r.body_len, 2000);
}
END_TEST

START_TEST(test_body_cap_streaming)
{
	struct http_req tmpl = { .max_body = 1000, .on_chunk = chunk_cb };
	struct result r;

	fetch("GET", url("http", srv.port, "/big"), NULL, &tmpl, &r);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "larger than 1000") != NULL, "error: %s", r.error);
}
END_TEST

START_TEST(test_streaming)
{
	struct http_req tmpl = { .on_chunk = chunk_cb };
	struct result r;

	fetch("GET", url("http", srv.port, "/stream"), NULL, &tmpl, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.chunks, "data: a\n\ndata: b\n\n");
	ck_assert_uint_ge(r.nchunks, 2);
	ck_assert_str_eq(r.body, "");
	ck_assert_str_eq(r.ctype, "text/event-stream");
}
END_TEST

START_TEST(test_streaming_error_status_buffered)
{
	struct http_req tmpl = { .on_chunk = chunk_cb };
	struct result r;

	fetch("GET", url("http", srv.port, "/err"), NULL, &tmpl, &r);
	ck_assert_int_eq(r.status, 500);
	ck_assert_uint_eq(r.nchunks, 0);
	ck_assert_str_eq(r.body, "{\"error\":{\"message\":\"nope\"}}");
}
END_TEST

START_TEST(test_cancel_inside_chunk_callback)
{
	struct http_req req = { .method = "GET", .timeout = 10, .on_chunk = chunk_cb };
	struct result r = { .cancel_on_chunk = 1 };

	req.url = url("http", srv.port, "/stream");
	r.call = http_request(client, &req, done_cb, &r);
	ck_assert_ptr_nonnull(r.call);
	fx_run_until(base, &r.got_chunk, 10);
	/* The rest of the stream (sent every 20 ms) never reaches the callbacks. */
	fx_run_for(base, 0.3);
	ck_assert_uint_eq(r.nchunks, 1);
	ck_assert_int_eq(r.done, 0);
	/* The client still works afterwards. */
	fetch("GET", url("http", srv.port, "/hello"), NULL, NULL, &r);
	ck_assert_int_eq(r.status, 200);
}
END_TEST

START_TEST(test_cancel_before_done)
{
	struct http_req req = { .method = "GET", .timeout = 5 };
	struct result r = { 0 }, r2 = { 0 };

	req.url = url("http", srv.port, "/hello");
	http_cancel(http_request(client, &req, done_cb, &r));
	req.url = url("http", srv.port, "/hang");
	r2.call = http_request(client, &req, done_cb, &r2);
	/* Cancelled while the server holds the request. */
	ck_assert(fx_run_until(base, &seen.hung_seen, 10));
	http_cancel(r2.call);
	fx_run_for(base, 0.4);
	ck_assert_int_eq(r.done, 0);
	ck_assert_int_eq(r2.done, 0);
	http_cancel(NULL);
}
END_TEST

START_TEST(test_free_client_inside_callbacks)
{
	struct http_req req = { .method = "GET", .timeout = 10 };
	struct result r = { .free_client_in_cb = 1 }, other = { 0 };

	/* From the done callback, with another call still running. */
	req.url = url("http", srv.port, "/hang");
	ck_assert_ptr_nonnull(http_request(client, &req, done_cb, &other));
	req.url = url("http", srv.port, "/hello");
	ck_assert_ptr_nonnull(http_request(client, &req, done_cb, &r));
	fx_run_until(base, &r.done, 10);
	ck_assert_int_eq(r.status, 200);
	ck_assert_ptr_null(client);
	fx_run_for(base, 0.1);
	ck_assert_int_eq(other.done, 0);
	/* From a chunk callback. */
	client = http_client_new(base, NULL, tls);
	memset(&r, 0, sizeof(r));
	r.free_client_in_cb = 1;
	req.url = url("http", srv.port, "/stream");
	req.on_chunk = chunk_cb;
	ck_assert_ptr_nonnull(http_request(client, &req, done_cb, &r));
	fx_run_until(base, &r.got_chunk, 10);
	fx_run_for(base, 0.3);
	ck_assert_uint_eq(r.nchunks, 1);
	ck_assert_int_eq(r.done, 0);
	ck_assert_ptr_null(client);
	/* From a failure's callback. */
	client = http_client_new(base, NULL, tls);
	memset(&r, 0, sizeof(r));
	r.free_client_in_cb = 1;
	req.url = url("http", fx_closed_port(), "/");
	req.on_chunk = NULL;
	ck_assert_ptr_nonnull(http_request(client, &req, done_cb, &r));
	fx_run_until(base, &r.done, 10);
	ck_assert_int_eq(r.status, 0);
	fx_run_for(base, 0.05);
	client = http_client_new(base, NULL, tls);
}
END_TEST

START_TEST(test_cancel_other_call_inside_callback)
{
	struct http_req req = { .method = "GET", .timeout = 10 };
	struct result r = { 0 }, other = { 0 };

	req.url = url("http", srv.port, "/hang");
	other.call = http_request(client, &req, done_cb, &other);
	fx_run_for(base, 0.05);
	r.cancel_other = other.call;
	req.url = url("http", srv.port, "/hello");
	ck_assert_ptr_nonnull(http_request(client, &req, done_cb, &r));
	fx_run_until(base, &r.done, 10);
	ck_assert_int_eq(r.status, 200);
	fx_run_for(base, 0.1);
	ck_assert_int_eq(other.done, 0);
}
END_TEST

START_TEST(test_keep_alive_reuse)
{
	struct result r;
	int i;

	for (i = 0; i < 3; i++) {
		fetch("GET", url("http", srv.port, "/hello"), NULL, NULL, &r);
		ck_assert_int_eq(r.status, 200);
	}
	/* One connection served all three. */
	ck_assert_int_eq(seen.requests, 3);
	ck_assert_int_eq(seen.ports[1], seen.ports[0]);
	ck_assert_int_eq(seen.ports[2], seen.ports[0]);
	/* "Connection: close" from the server: the next request opens a new one. */
	fetch("GET", url("http", srv.port, "/close"), NULL, NULL, &r);
	ck_assert_str_eq(r.body, "closing");
	fetch("GET", url("http", srv.port, "/hello"), NULL, NULL, &r);
	ck_assert_int_eq(r.status, 200);
	ck_assert_int_eq(seen.ports[3], seen.ports[0]);
	ck_assert_int_ne(seen.ports[4], seen.ports[3]);
}
END_TEST

/* Done callback that starts the next request at once, as a long poll does. */
struct chain {
	int left;
	int done;
	int failed;
};

static void
chain_cb(void *arg, const struct http_response *r)
{
	struct chain *ch = arg;
	struct http_req req = { .method = "GET", .timeout = 10 };

	if (r->status != 200)
		ch->failed++;
	if (--ch->left == 0) {
		ch->done = 1;
		return;
	}
	req.url = url("http", srv.port, "/hello");
	ck_assert_ptr_nonnull(http_request(client, &req, chain_cb, ch));
}

START_TEST(test_keep_alive_from_callback)
{
	struct http_req req = { .method = "GET", .timeout = 10 };
	struct chain ch = { .left = 5 };
	int i;

	req.url = url("http", srv.port, "/hello");
	http_request(client, &req, chain_cb, &ch);
	fx_run_until(base, &ch.done, 10);
	ck_assert_int_eq(ch.failed, 0);
	ck_assert_int_eq(seen.requests, 5);
	for (i = 1; i < 5; i++)
		ck_assert_int_eq(seen.ports[i], seen.ports[0]);
}
END_TEST

START_TEST(test_server_closes_idle_connection)
{
	/* HTTP/1.1 without "Connection: close", yet the server closes: never reused. */
	struct fx_raw raw = { 0 };
	const char *reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
	struct result r;
	int i;

	fx_raw_start(&raw, base, reply, strlen(reply));
	for (i = 0; i < 5; i++) {
		fetch("GET", url("http", raw.port, "/"), NULL, NULL, &r);
		ck_assert_msg(r.status == 200, "request %d: %s", i, r.error);
		if (i % 2)
			fx_run_for(base, 0.05);
	}
	fx_raw_stop(&raw);
}
END_TEST


/*
 * A keep-alive server that closes idle connections as a request arrives:
 * the first request on a connection is answered (its body echoed), the
 * next one on the same connection is not (closed at once, or after part
 * of a status line, by mode).
 */
enum ka_mode { KA_CLOSE_SECOND, KA_PARTIAL_SECOND, KA_CLOSE_ALL };

struct ka_server {
	struct evconnlistener *lis;
	enum ka_mode mode;
	int port;
	int conns;
	int requests;
	char body[256];                 /* of the last request */
};

struct ka_conn {
	struct ka_server *ks;
	int nreq;
};

static void
ka_free(struct bufferevent *bev, void *arg)
{
	free(arg);
	bufferevent_free(bev);
}

static void
ka_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	ka_free(bev, arg);
}

/* Reads one whole request (head and Content-Length body); 1 when one was taken. */
static int
ka_take_request(struct ka_server *ks, struct evbuffer *in)
{
	struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	char head[2048], *cl;
	size_t hlen, blen = 0;

	if (end.pos < 0 || (size_t)end.pos + 4 > sizeof(head) - 1)
		return 0;
	hlen = (size_t)end.pos + 4;
	evbuffer_copyout(in, head, hlen);
	head[hlen] = '\0';
	cl = strcasestr(head, "\r\nContent-Length:");
	if (cl != NULL)
		blen = (size_t)strtoul(cl + 17, NULL, 10);
	if (evbuffer_get_length(in) < hlen + blen || blen >= sizeof(ks->body))
		return 0;
	evbuffer_drain(in, hlen);
	evbuffer_remove(in, ks->body, blen);
	ks->body[blen] = '\0';
	ks->requests++;
	return 1;
}

static void
ka_read(struct bufferevent *bev, void *arg)
{
	struct ka_conn *kc = arg;
	struct ka_server *ks = kc->ks;

	while (ka_take_request(ks, bufferevent_get_input(bev))) {
		if (++kc->nreq == 1 && ks->mode != KA_CLOSE_ALL) {
			evbuffer_add_printf(bufferevent_get_output(bev), "HTTP/1.1 200 OK\r\n"
			    "Content-Length: %zu\r\n\r\n%s", strlen(ks->body), ks->body);
			continue;
		}
		if (ks->mode == KA_PARTIAL_SECOND) {
			bufferevent_setcb(bev, NULL, ka_free, ka_event, kc);
			bufferevent_write(bev, "HTTP/1.1 200", 12);
		} else
			ka_free(bev, kc);
		return;
	}
}

static void
ka_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa, int salen,
    void *arg)
{
	struct ka_server *ks = arg;
	struct ka_conn *kc = calloc(1, sizeof(*kc));
	struct bufferevent *bev;

	(void)sa;
	(void)salen;
	ck_assert_ptr_nonnull(kc);
	kc->ks = ks;
	ks->conns++;
	bev = bufferevent_socket_new(evconnlistener_get_base(lis), fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, ka_read, NULL, ka_event, kc);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void
ka_start(struct ka_server *ks, enum ka_mode mode)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };

	memset(ks, 0, sizeof(*ks));
	ks->mode = mode;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ks->lis = evconnlistener_new_bind(base, ka_accept, ks,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16, (struct sockaddr *)&sin, sizeof(sin));
	ck_assert_ptr_nonnull(ks->lis);
	ks->port = fx_sock_port(evconnlistener_get_fd(ks->lis));
}

/* Posts "n=1", "n=2", ... to a keep-alive server in mode; r holds the last answer. */
static void
ka_run(struct ka_server *ks, enum ka_mode mode, int n, struct result *r)
{
	struct http_req tmpl = { .authorization = "Bearer sekrit" };
	char body[32];
	int i;

	ka_start(ks, mode);
	for (i = 1; i <= n; i++) {
		snprintf(body, sizeof(body), "n=%d", i);
		fetch("POST", url("http", ks->port, "/x"), body, &tmpl, r);
		if (i < n)
			ck_assert_msg(r->status == 200 && strcmp(r->body, body) == 0, "%d: %s", i,
			    r->error);
	}
	/* The pooled connection closes: the server side frees its end. */
	http_client_free(client);
	client = NULL;
	fx_run_for(base, 0.1);
	evconnlistener_free(ks->lis);
}

START_TEST(test_retry_when_a_kept_alive_connection_closes)
{
	struct ka_server ks;
	struct result r;

	/* The second request goes out on the pooled connection, which the server closes. */
	ka_run(&ks, KA_CLOSE_SECOND, 2, &r);
	ck_assert_msg(r.status == 200, "%s", r.error);
	ck_assert_str_eq(r.body, "n=2");        /* sent again, once, on a new connection */
	ck_assert_int_eq(ks.conns, 2);
	ck_assert_int_eq(ks.requests, 3);
}
END_TEST

START_TEST(test_no_retry_once_an_answer_began)
{
	struct ka_server ks;
	struct result r;

	ka_run(&ks, KA_PARTIAL_SECOND, 2, &r);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "closed before a complete response") != NULL, "%s", r.error);
	ck_assert_int_eq(ks.conns, 1);
	ck_assert_int_eq(ks.requests, 2);
}
END_TEST

START_TEST(test_no_retry_on_a_new_connection)
{
	struct ka_server ks;
	struct result r;

	ka_run(&ks, KA_CLOSE_ALL, 1, &r);
	ck_assert_int_eq(r.status, 0);
	ck_assert_int_eq(ks.conns, 1);
	ck_assert_int_eq(ks.requests, 1);
}
END_TEST

START_TEST(test_idle_connection_times_out)
{
	/* evhttp's own idle timeout (the call's timeout + 1 s) closes a pooled connection. */
	struct http_req tmpl = { .timeout = 0.2 };
	struct result r;

	fetch("GET", url("http", srv.port, "/hello"), NULL, &tmpl, &r);
	ck_assert_int_eq(r.status, 200);
	fx_run_for(base, 1.6);
	fetch("GET", url("http", srv.port, "/hello"), NULL, &tmpl, &r);
	ck_assert_msg(r.status == 200, "%s", r.error);
	ck_assert_int_eq(seen.requests, 2);
	ck_assert_int_ne(seen.ports[1], seen.ports[0]);
}
END_TEST

START_TEST(test_keep_alive_tls)
{
	struct http_req req = { .method = "GET", .timeout = 10 };
	struct result r;
	int i;

	fx_server_start(&tsrv, base, "srv", server_cb, NULL);
	for (i = 0; i < 3; i++) {
		char u[128];

		snprintf(u, sizeof(u), "https://127.0.0.1:%d/hello", tsrv.port);
		req.url = u;
		memset(&r, 0, sizeof(r));
		ck_assert_ptr_nonnull(http_request(client, &req, done_cb, &r));
		fx_run_until(base, &r.done, 10);
		ck_assert_msg(r.status == 200, "%s", r.error);
	}
	ck_assert_int_eq(seen.requests, 3);
	ck_assert_int_eq(seen.ports[1], seen.ports[0]);
	ck_assert_int_eq(seen.ports[2], seen.ports[0]);
	http_client_free(client);
	client = NULL;
	fx_server_stop(&tsrv);
}
END_TEST

START_TEST(test_free_with_running_calls)
{
	struct http_req req = { .method = "GET", .timeout = 5 };
	struct result r = { 0 };

	req.url = url("http", srv.port, "/hang");
	ck_assert_ptr_nonnull(http_request(client, &req, done_cb, &r));
	ck_assert_ptr_nonnull(http_request(client, &req, done_cb, &r));
	fx_run_for(base, 0.1);
	http_client_free(client);
	client = http_client_new(base, NULL, tls);
	fx_run_for(base, 0.1);
	ck_assert_int_eq(r.done, 0);
}
END_TEST

START_TEST(test_invalid_urls)
{
	static const char *bad[] = { "ftp://127.0.0.1/", "not a url", "http://", "http:///x",
	    "", "127.0.0.1:80/x" };
	struct http_req req = { .method = "GET", .timeout = 1 };
	struct result r = { 0 };
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		req.url = bad[i];
		ck_assert_msg(http_request(client, &req, done_cb, &r) == NULL, "accepted %s",
		    bad[i]);
	}
	req.url = NULL;
	ck_assert_ptr_null(http_request(client, &req, done_cb, &r));
	req.url = url("http", srv.port, "/");
	req.method = "BREW";
	ck_assert_ptr_null(http_request(client, &req, done_cb, &r));
	fx_run_for(base, 0.05);
	ck_assert_int_eq(r.done, 0);
}
END_TEST

/* Raw servers: broken HTTP. */
static void
raw_case(const char *reply, int close_at_once, const char *want)
{
	struct fx_raw raw = { .close_at_once = close_at_once };
	struct result r;

	fx_raw_start(&raw, base, reply, strlen(reply));
	fetch("GET", url("http", raw.port, "/"), NULL, NULL, &r);
	fx_raw_stop(&raw);
	ck_assert_int_eq(r.done, 1);
	ck_assert_msg(r.status == 0, "status %d for %s", r.status, reply);
	ck_assert_msg(strstr(r.error, want) != NULL, "error: %s (wanted %s)", r.error, want);
}

START_TEST(test_truncated_body)
{
	raw_case("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort", 0,
	    "closed before a complete response");
}
END_TEST

START_TEST(test_truncated_chunked)
{
	raw_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", 0,
	    "closed before a complete response");
}
END_TEST

START_TEST(test_bad_chunk_size)
{
	raw_case("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
	    0, "malformed response body");
}
END_TEST

START_TEST(test_headers_too_large)
{
	static char reply[80 * 1024];
	size_t n;

	n = (size_t)snprintf(reply, sizeof(reply), "HTTP/1.1 200 OK\r\nX-Big: ");
	memset(reply + n, 'h', 70 * 1024);
	n += 70 * 1024;
	snprintf(reply + n, sizeof(reply) - n, "\r\nContent-Length: 2\r\n\r\nok");
	raw_case(reply, 0, "invalid HTTP response");
}
END_TEST

START_TEST(test_garbage)
{
	raw_case("this is not http at all\r\n\r\n", 0, "invalid HTTP response");
}
END_TEST

START_TEST(test_closed_without_answer)
{
	raw_case("", 1, "closed before a complete response");
}
END_TEST

START_TEST(test_body_until_close)
{
	struct fx_raw raw = { 0 };
	const char *reply = "HTTP/1.0 200 OK\r\n\r\nuntil close";
	struct result r;

	fx_raw_start(&raw, base, reply, strlen(reply));
	fetch("GET", url("http", raw.port, "/"), NULL, NULL, &r);
	fx_raw_stop(&raw);
	ck_assert_int_eq(r.status, 200);
	ck_assert_str_eq(r.body, "until close");
}
END_TEST

/* TLS. */

static void
tls_case(const char *cert, const char *host, struct tls_ctx *t, struct result *r)
{
	struct http_client *c = http_client_new(base, NULL, t);
	struct http_req req = { .method = "GET", .timeout = 10 };
	char u[256];

	fx_server_start(&tsrv, base, cert, server_cb, NULL);
	snprintf(u, sizeof(u), "https://%s:%d/hello", host, tsrv.port);
	req.url = u;
	memset(r, 0, sizeof(*r));
	ck_assert_ptr_nonnull(http_request(c, &req, done_cb, r));
	fx_run_until(base, &r->done, 10);
	http_client_free(c);
	fx_server_stop(&tsrv);
}

START_TEST(test_tls_ok)
{
	struct result r;

	tls_case("srv", "127.0.0.1", tls, &r);
	ck_assert_msg(r.status == 200, "error: %s", r.error);
	ck_assert_str_eq(r.body, "hello world");
}
END_TEST

START_TEST(test_tls_ok_by_name)
{
	struct result r;

	tls_case("srv", "localhost", tls, &r);
	ck_assert_msg(r.status == 200, "error: %s", r.error);
	ck_assert_str_eq(r.body, "hello world");
}
END_TEST

START_TEST(test_tls_unknown_ca)
{
	char err[256];
	struct tls_ctx *other = tls_ctx_new(fx_cert("other-ca.pem"), err, sizeof(err));
	struct tls_ctx *sys = tls_ctx_new(NULL, err, sizeof(err));
	struct result r;

	ck_assert_ptr_nonnull(other);
	ck_assert_ptr_nonnull(sys);
	tls_case("srv", "127.0.0.1", other, &r);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "certificate verification failed") != NULL &&
	    strstr(r.error, "issuer") != NULL, "error: %s", r.error);
	tls_case("srv", "127.0.0.1", sys, &r);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "certificate verification failed") != NULL,
	    "error: %s", r.error);
	tls_ctx_free(other);
	tls_ctx_free(sys);
}
END_TEST

START_TEST(test_tls_wrong_host)
{
	struct result r;

	tls_case("wrong", "127.0.0.1", tls, &r);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "mismatch") != NULL, "error: %s", r.error);
	tls_case("wrong", "localhost", tls, &r);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "mismatch") != NULL, "error: %s", r.error);
}
END_TEST

START_TEST(test_tls_to_plain_server)
{
	struct result r;

	fetch("GET", url("https", srv.port, "/hello"), NULL, NULL, &r);
	ck_assert_int_eq(r.done, 1);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "TLS") != NULL || strstr(r.error, "closed") != NULL,
	    "error: %s", r.error);
}
END_TEST

START_TEST(test_https_without_tls_context)
{
	struct http_client *c = http_client_new(base, NULL, NULL);
	struct http_req req = { .method = "GET", .timeout = 1 };
	struct result r = { 0 };

	req.url = url("https", srv.port, "/");
	ck_assert_ptr_nonnull(http_request(c, &req, done_cb, &r));
	ck_assert_int_eq(r.done, 0);
	fx_run_until(base, &r.done, 5);
	ck_assert_int_eq(r.status, 0);
	ck_assert_msg(strstr(r.error, "TLS") != NULL, "error: %s", r.error);
	http_client_free(c);
}
END_TEST

START_TEST(test_bad_ca_file)
{
	char err[256];

	ck_assert_ptr_null(tls_ctx_new("/nonexistent/ca.pem", err, sizeof(err)));
	ck_assert_msg(strstr(err, "tls.ca_file") != NULL, "%s", err);
	ck_assert_ptr_null(tls_ctx_new(fx_cert("srv.key"), err, sizeof(err)));
	tls_ctx_free(NULL);
}
END_TEST

static Suite *
http_suite(void)
{
	Suite *s = suite_create("http");
	TCase *tc = tcase_create("client");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_get);
	tcase_add_test(tc, test_post_with_authorization);
	tcase_add_test(tc, test_http_error_status_is_a_response);
	tcase_add_test(tc, test_connection_refused);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_body_cap);
	tcase_add_test(tc, test_body_cap_streaming);
	tcase_add_test(tc, test_streaming);
	tcase_add_test(tc, test_streaming_error_status_buffered);
	tcase_add_test(tc, test_cancel_inside_chunk_callback);
	tcase_add_test(tc, test_cancel_before_done);
	tcase_add_test(tc, test_free_with_running_calls);
	tcase_add_test(tc, test_keep_alive_reuse);
	tcase_add_test(tc, test_keep_alive_from_callback);
	tcase_add_test(tc, test_server_closes_idle_connection);
	tcase_add_test(tc, test_retry_when_a_kept_alive_connection_closes);
	tcase_add_test(tc, test_no_retry_once_an_answer_began);
	tcase_add_test(tc, test_no_retry_on_a_new_connection);
	tcase_add_test(tc, test_keep_alive_tls);
	tcase_add_test(tc, test_idle_connection_times_out);
	tcase_add_test(tc, test_free_client_inside_callbacks);
	tcase_add_test(tc, test_cancel_other_call_inside_callback);
	tcase_add_test(tc, test_invalid_urls);
	tcase_add_test(tc, test_truncated_body);
	tcase_add_test(tc, test_truncated_chunked);
	tcase_add_test(tc, test_garbage);
	tcase_add_test(tc, test_bad_chunk_size);
	tcase_add_test(tc, test_headers_too_large);
	tcase_add_test(tc, test_closed_without_answer);
	tcase_add_test(tc, test_body_until_close);
	tcase_add_test(tc, test_tls_ok);
	tcase_add_test(tc, test_tls_ok_by_name);
	tcase_add_test(tc, test_tls_unknown_ca);
	tcase_add_test(tc, test_tls_wrong_host);
	tcase_add_test(tc, test_tls_to_plain_server);
	tcase_add_test(tc, test_https_without_tls_context);
	tcase_add_test(tc, test_bad_ca_file);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(http_suite());
	int failed;

	fx_make_certs();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	fx_remove_certs();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
