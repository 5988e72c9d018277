/*
 * loadgen.c - HTTP load generator for the console platform.
 *
 * N keep-alive connections, each running POST /v1/messages?wait=S round
 * trips back to back for D seconds; every answer is checked (200, and the
 * echoed text present).  Prints messages/s and latency percentiles of the
 * round trips completed after the warm-up.
 *
 *   loadgen -p PORT [-H HOST] [-c CONNS] [-d SECONDS] [-W WARMUP] [-s WAIT]
 *           [-t TOKEN] [-b TEXT_BYTES]
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

struct opts {
	const char *host;
	int port;
	int conns;
	double duration;
	double warmup;
	const char *wait;
	const char *token;
	size_t text_bytes;
};

struct conn {
	struct evhttp_connection *evcon;
	int idx;
	uint64_t seq;
	uint64_t started;               /* usec of the request in flight */
	char marker[64];                /* the text's unique prefix */
	int busy;
};

static struct opts opt = { "127.0.0.1", 0, 32, 10.0, 1.0, "10", NULL, 16 };
static struct event_base *base;
static struct conn *conns;
static uint64_t t_start, t_measure, t_end;
static uint64_t *lat;                   /* usec, measured round trips */
static size_t nlat, caplat;
static uint64_t n_ok, n_err, n_warm, inflight;
static char *padding;
static char authz[512];

static uint64_t
now_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static void
record(uint64_t usec)
{
	if (nlat == caplat) {
		caplat = caplat ? caplat * 2 : 1 << 16;
		lat = realloc(lat, caplat * sizeof(*lat));
		if (lat == NULL) {
			perror("realloc");
			exit(1);
		}
	}
	lat[nlat++] = usec;
}

static void send_one(struct conn *c);

/* Checks one answer, records it, and starts the next round trip. */
static void
done_cb(struct evhttp_request *req, void *arg)
{
	struct conn *c = arg;
	uint64_t t = now_usec();
	int ok = 0;

	c->busy = 0;
	inflight--;
	if (req != NULL && evhttp_request_get_response_code(req) == 200) {
		struct evbuffer *b = evhttp_request_get_input_buffer(req);
		size_t len = evbuffer_get_length(b);
		const char *body = (const char *)evbuffer_pullup(b, -1);
		/* the marker must come back twice: never in the request echo
		 * alone, so look for it inside "replies" */
		const char *r = body != NULL ? memmem(body, len, "\"replies\":[{", 12) : NULL;
		ok = r != NULL && memmem(r, len - (size_t)(r - body), c->marker,
		    strlen(c->marker)) != NULL;
	}
	if (ok && c->started >= t_measure) {
		n_ok++;
		record(t - c->started);
	} else if (ok)
		n_warm++;
	else
		n_err++;
	if (t < t_end)
		send_one(c);
	else if (inflight == 0)
		event_base_loopbreak(base);
}

static void
send_one(struct conn *c)
{
	struct evhttp_request *req = evhttp_request_new(done_cb, c);
	struct evkeyvalq *h;
	char path[64], hostport[300];

	if (req == NULL) {
		fprintf(stderr, "evhttp_request_new failed\n");
		exit(1);
	}
	h = evhttp_request_get_output_headers(req);
	snprintf(hostport, sizeof(hostport), "%s:%d", opt.host, opt.port);
	evhttp_add_header(h, "Host", hostport);
	evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Connection", "keep-alive");
	if (opt.token != NULL)
		evhttp_add_header(h, "Authorization", authz);
	c->seq++;
	snprintf(c->marker, sizeof(c->marker), "m%d-%" PRIu64 "-", c->idx, c->seq);
	evbuffer_add_printf(evhttp_request_get_output_buffer(req),
	    "{\"chat_id\":\"bench-%d\",\"user_id\":\"bench\",\"text\":\"%s%s\"}",
	    c->idx, c->marker, padding);
	snprintf(path, sizeof(path), "/v1/messages?wait=%s", opt.wait);
	c->started = now_usec();
	c->busy = 1;
	inflight++;
	if (evhttp_make_request(c->evcon, req, EVHTTP_REQ_POST, path) == -1) {
		fprintf(stderr, "evhttp_make_request failed\n");
		exit(1);
	}
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double
pct(double p)
{
	size_t i;

	if (nlat == 0)
		return 0;
	i = (size_t)(p / 100.0 * (double)(nlat - 1) + 0.5);
	return (double)lat[i] / 1000.0;
}

static void
usage(void)
{
	fprintf(stderr, "usage: loadgen -p PORT [-H HOST] [-c CONNS] [-d SECONDS] "
	    "[-W WARMUP] [-s WAIT] [-t TOKEN] [-b TEXT_BYTES]\n");
	exit(2);
}

static void
parse_args(int argc, char **argv)
{
	int ch;

	while ((ch = getopt(argc, argv, "H:p:c:d:W:s:t:b:")) != -1) {
		switch (ch) {
		case 'H': opt.host = optarg; break;
		case 'p': opt.port = atoi(optarg); break;
		case 'c': opt.conns = atoi(optarg); break;
		case 'd': opt.duration = atof(optarg); break;
		case 'W': opt.warmup = atof(optarg); break;
		case 's': opt.wait = optarg; break;
		case 't': opt.token = optarg; break;
		case 'b': opt.text_bytes = (size_t)atol(optarg); break;
		default: usage();
		}
	}
	if (opt.port <= 0 || opt.port > 65535 || opt.conns <= 0 ||
	    opt.conns > 10000 || opt.duration <= 0 || opt.warmup < 0 ||
	    opt.text_bytes > 60000)
		usage();
}

int
main(int argc, char **argv)
{
	double secs;

	parse_args(argc, argv);
	if (opt.token != NULL)
		snprintf(authz, sizeof(authz), "Bearer %s", opt.token);
	padding = malloc(opt.text_bytes + 1);
	if (padding == NULL)
		return 1;
	memset(padding, 'x', opt.text_bytes);
	padding[opt.text_bytes] = '\0';
	base = event_base_new();
	conns = calloc((size_t)opt.conns, sizeof(*conns));
	if (base == NULL || conns == NULL)
		return 1;
	t_start = now_usec();
	t_measure = t_start + (uint64_t)(opt.warmup * 1e6);
	t_end = t_measure + (uint64_t)(opt.duration * 1e6);
	for (int i = 0; i < opt.conns; i++) {
		conns[i].idx = i;
		conns[i].evcon = evhttp_connection_base_new(base, NULL, opt.host,
		    (unsigned short)opt.port);
		if (conns[i].evcon == NULL) {
			fprintf(stderr, "cannot create connection %d\n", i);
			return 1;
		}
		evhttp_connection_set_timeout(conns[i].evcon, 60);
		send_one(&conns[i]);
	}
	event_base_dispatch(base);
	secs = (double)(now_usec() - t_measure) / 1e6;
	qsort(lat, nlat, sizeof(*lat), cmp_u64);
	printf("connections=%d duration=%.1fs text=%zuB ok=%" PRIu64 " errors=%" PRIu64
	    " warmup=%" PRIu64 "\n", opt.conns, secs, opt.text_bytes, n_ok, n_err, n_warm);
	printf("msgs/s=%.0f p50=%.2fms p90=%.2fms p99=%.2fms max=%.2fms\n",
	    (double)n_ok / secs, pct(50), pct(90), pct(99),
	    nlat ? (double)lat[nlat - 1] / 1000.0 : 0.0);
	for (int i = 0; i < opt.conns; i++)
		evhttp_connection_free(conns[i].evcon);
	event_base_free(base);
	free(conns);
	free(lat);
	free(padding);
	return n_err > 0 ? 3 : 0;
}
