/*
 * net_bench.c - what the worker's network layer and agent backends cost:
 * HTTP client round trips (plain and TLS, on kept-alive connections and
 * with a new connection each), openai streaming calls, and exec calls.
 *
 *   net_bench [-n REQUESTS] [-c CONCURRENCY]
 *
 * A forked child runs the servers (evhttp, plain and TLS with a throwaway
 * CA made by the openssl tool; an SSE chat-completions endpoint), so the
 * client's loop has its own process.  Prints requests/s and p50/p99
 * latency per scenario.
 */

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "agent.h"
#include "log.h"
#include "net/http.h"
#include "net/tls.h"
#include "util.h"

/* The benchmark needs no secrets: the environment only. */
char *
config_secret(const char *name)
{
	const char *v = getenv(name);

	return v != NULL ? xstrdup(v) : NULL;
}

static char certdir[] = "/tmp/hermes-bench-XXXXXX";

static const char sse_body[] =
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\", world\"}}]}\n\n"
    "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n"
    "data: [DONE]\n\n";

/* Server side. */
static void
srv_cb(struct evhttp_request *req, void *arg)
{
	struct evbuffer *out = evbuffer_new();

	(void)arg;
	if (strcmp(evhttp_request_get_uri(req), "/v1/chat/completions") == 0) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
		    "text/event-stream");
		evbuffer_add(out, sse_body, sizeof(sse_body) - 1);
	} else {
		if (strcmp(evhttp_request_get_uri(req), "/close") == 0)
			evhttp_add_header(evhttp_request_get_output_headers(req), "Connection",
			    "close");
		evbuffer_add(out, "ok", 2);
	}
	evhttp_send_reply(req, 200, "OK", out);
	evbuffer_free(out);
}

static struct bufferevent *
srv_tls_bev(struct event_base *base, void *arg)
{
	return bufferevent_openssl_socket_new(base, -1, SSL_new(arg),
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

/* Binds an evhttp server on 127.0.0.1; returns its port. */
static int
srv_bind(struct evhttp *h)
{
	struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(h, "127.0.0.1", 0);
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	int one = 1;

	if (bs == NULL || getsockname(evhttp_bound_socket_get_fd(bs),
	    (struct sockaddr *)&sin, &len) < 0)
		fatalx("bench: cannot bind");
	/* Inherited by accepted sockets: a reply in several TLS records is not held back. */
	setsockopt(evhttp_bound_socket_get_fd(bs), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return ntohs(sin.sin_port);
}

/* The server process: writes its two ports to fd, then serves until killed. */
static void
srv_run(int fd)
{
	struct event_base *base = event_base_new();
	struct evhttp *plain = evhttp_new(base), *tls = evhttp_new(base);
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	char path[512];
	int ports[2];

	snprintf(path, sizeof(path), "%s/srv.pem", certdir);
	if (SSL_CTX_use_certificate_chain_file(ctx, path) != 1)
		fatalx("bench: server certificate");
	snprintf(path, sizeof(path), "%s/srv.key", certdir);
	if (SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM) != 1)
		fatalx("bench: server key");
	evhttp_set_gencb(plain, srv_cb, NULL);
	evhttp_set_gencb(tls, srv_cb, NULL);
	evhttp_set_bevcb(tls, srv_tls_bev, ctx);
	ports[0] = srv_bind(plain);
	ports[1] = srv_bind(tls);
	if (write(fd, ports, sizeof(ports)) != sizeof(ports))
		_exit(1);
	close(fd);
	event_base_dispatch(base);
	_exit(0);
}

/* Client side: keeps `conc` operations in flight until n are done. */
struct run {
	struct event_base *base;
	int n, conc, started, done, failed;
	uint64_t *lat;                  /* usec per operation */
	uint64_t t0;
	void (*start)(struct run *, uint64_t *slot);
	struct http_client *http;
	char url[256];
	struct agent *agent;
};

struct op {
	struct run *r;
	uint64_t t;
	uint64_t *slot;
};

static void run_next(struct run *r);

static void
op_end(struct op *o, int ok)
{
	struct run *r = o->r;

	*o->slot = mono_usec() - o->t;
	if (!ok)
		r->failed++;
	r->done++;
	free(o);
	if (r->done == r->n)
		event_base_loopbreak(r->base);
	else
		run_next(r);
}

static void
http_op_done(void *arg, const struct http_response *resp)
{
	op_end(arg, resp->status == 200);
}

static void
agent_op_done(void *arg, int ok, const char *text)
{
	(void)text;
	op_end(arg, ok);
}

static void
start_http(struct run *r, uint64_t *slot)
{
	struct http_req req = { .method = "GET", .url = r->url, .timeout = 10 };
	struct op *o = xcalloc(1, sizeof(*o));

	o->r = r;
	o->t = mono_usec();
	o->slot = slot;
	if (http_request(r->http, &req, http_op_done, o) == NULL)
		fatalx("bench: bad URL");
}

static void
start_agent(struct run *r, uint64_t *slot)
{
	struct agent_req req = { .session = "bench", .platform = "bench", .chat_id = "c",
	    .user_id = "u", .text = "hello" };
	struct op *o = xcalloc(1, sizeof(*o));

	o->r = r;
	o->t = mono_usec();
	o->slot = slot;
	agent_call(r->agent, &req, agent_op_done, o);
}

static void
run_next(struct run *r)
{
	if (r->started < r->n) {
		uint64_t *slot = &r->lat[r->started++];

		r->start(r, slot);
	}
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Runs one scenario and prints its line. */
static void
run_scenario(const char *name, struct run *r)
{
	uint64_t el;
	int i;

	r->lat = xcalloc((size_t)r->n, sizeof(uint64_t));
	r->t0 = mono_usec();
	for (i = 0; i < r->conc; i++)
		run_next(r);
	event_base_dispatch(r->base);
	el = mono_usec() - r->t0;
	qsort(r->lat, (size_t)r->n, sizeof(uint64_t), cmp_u64);
	printf("%-34s %6d ops  conc %2d  %8.0f ops/s  p50 %7.2f ms  p99 %7.2f ms  failed %d\n",
	    name, r->n, r->conc, r->n / (el / 1e6), r->lat[r->n / 2] / 1000.0,
	    r->lat[(r->n * 99) / 100] / 1000.0, r->failed);
	fflush(stdout);
	free(r->lat);
}

static void
make_certs(void)
{
	char cmd[2048];

	if (mkdtemp(certdir) == NULL)
		fatal("mkdtemp");
	snprintf(cmd, sizeof(cmd),
	    "cd %s && exec >/dev/null 2>&1 && "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "  -keyout ca.key -out ca.pem -days 2 -subj /CN=bench-ca && "
	    "openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "  -keyout srv.key -out srv.csr -subj /CN=srv && "
	    "printf 'subjectAltName=IP:127.0.0.1\\n' > srv.ext && "
	    "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
	    "  -out srv.pem -days 2 -extfile srv.ext", certdir);
	if (system(cmd) != 0)
		fatalx("bench: openssl failed");
}

/* Builds an agent from a JSON text. */
static struct agent *
bench_agent(struct event_base *base, const char *json)
{
	cJSON *conf = cJSON_Parse(json);
	char err[256];
	struct agent *a = agent_new(base, NULL, NULL, conf, err, sizeof(err));

	cJSON_Delete(conf);
	if (a == NULL)
		fatalx("bench: %s", err);
	return a;
}

int
main(int argc, char **argv)
{
	struct event_base *base;
	struct tls_ctx *tls;
	struct run r;
	char err[256], path[600], json[512], cmd[600];
	int n = 2000, conc = 8, ch, fds[2], ports[2];
	pid_t srv;

	while ((ch = getopt(argc, argv, "n:c:")) != -1) {
		if (ch == 'n')
			n = atoi(optarg);
		else if (ch == 'c')
			conc = atoi(optarg);
		else
			fatalx("usage: net_bench [-n REQUESTS] [-c CONCURRENCY]");
	}
	if (n < 10 || conc < 1)
		fatalx("usage: net_bench [-n REQUESTS >= 10] [-c CONCURRENCY >= 1]");
	log_init("net_bench", NULL);
	signal(SIGPIPE, SIG_IGN);
	make_certs();
	if (pipe(fds) < 0)
		fatal("pipe");
	if ((srv = fork()) == 0) {
		close(fds[0]);
		srv_run(fds[1]);
	}
	close(fds[1]);
	if (read(fds[0], ports, sizeof(ports)) != sizeof(ports))
		fatalx("bench: server did not start");
	base = event_base_new();
	snprintf(path, sizeof(path), "%s/ca.pem", certdir);
	if ((tls = tls_ctx_new(path, err, sizeof(err))) == NULL)
		fatalx("%s", err);

	memset(&r, 0, sizeof(r));
	r.base = base;
	r.n = n;
	r.conc = conc;
	r.start = start_http;
	r.http = http_client_new(base, NULL, tls);
	snprintf(r.url, sizeof(r.url), "http://127.0.0.1:%d/", ports[0]);
	run_scenario("http GET, kept alive", &r);
	r.started = r.done = r.failed = 0;
	snprintf(r.url, sizeof(r.url), "http://127.0.0.1:%d/close", ports[0]);
	run_scenario("http GET, new connection each", &r);
	r.started = r.done = r.failed = 0;
	snprintf(r.url, sizeof(r.url), "https://127.0.0.1:%d/", ports[1]);
	run_scenario("https GET, kept alive", &r);
	r.started = r.done = r.failed = 0;
	r.n = n / 4;
	snprintf(r.url, sizeof(r.url), "https://127.0.0.1:%d/close", ports[1]);
	run_scenario("https GET, new TLS handshake each", &r);
	http_client_free(r.http);

	r.started = r.done = r.failed = 0;
	r.n = n;
	r.start = start_agent;
	snprintf(json, sizeof(json), "{\"backend\":\"openai\",\"model\":\"m\","
	    "\"base_url\":\"http://127.0.0.1:%d/v1\"}", ports[0]);
	r.agent = bench_agent(base, json);
	run_scenario("openai call, SSE stream (plain)", &r);
	agent_free(r.agent);

	r.started = r.done = r.failed = 0;
	r.n = n;
	r.agent = bench_agent(base, "{\"backend\":\"echo\"}");
	run_scenario("echo call", &r);
	agent_free(r.agent);

	r.started = r.done = r.failed = 0;
	r.n = n / 4;
	r.agent = bench_agent(base, "{\"backend\":\"exec\",\"command\":[\"/bin/echo\",\"ok\"]}");
	run_scenario("exec call (/bin/echo ok)", &r);
	agent_free(r.agent);

	tls_ctx_free(tls);
	event_base_free(base);
	kill(srv, SIGKILL);
	waitpid(srv, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", certdir);
	return system(cmd) == 0 ? 0 : 1;
}
