/*
 * tg_fakebench.c - a minimal Bot API server in C (libevent + OpenSSL) for the
 * Telegram throughput benchmark, so that the fake is not the bottleneck.
 *
 * tg_fakebench --cert FILE --key FILE [--port P] [--token T] [-n N] [--chats C]
 *
 * Serves getMe, getUpdates (long polls held until updates exist or the
 * timeout ends; offset confirms earlier updates), sendChatAction and
 * sendMessage over HTTPS.  N private-chat updates "bench <i>" over C chats
 * become available once the first getUpdates after getMe arrives.  When every
 * one has been answered exactly once by sendMessage it prints one line:
 *   messages N seconds S per_s R duplicates D actions A
 * and exits 0 (1 if a text came back twice or unknown).  Prints "port P" when
 * listening.  Only for benchmarks: it trusts its single client.
 */
#include <netinet/in.h>
#include <netinet/tcp.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "util.h"

#define FIRST_ID 900000

struct fb {
	struct event_base *base;
	SSL_CTX *ssl;
	char prefix[256];               /* "/bot<token>/" */
	int64_t n, chats;
	int64_t confirmed;              /* updates below FIRST_ID + confirmed are gone */
	int released;                   /* updates are available */
	unsigned char *answered;
	int64_t nanswered, dups, actions;
	uint64_t t0, t1;
	struct evhttp_request *held;
	struct event *held_timer;
};

static void
reply_json(struct evhttp_request *req, int code, const char *json)
{
	struct evbuffer *b = evbuffer_new();

	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "application/json");
	evbuffer_add(b, json, strlen(json));
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
	evbuffer_free(b);
}

/* The request body parsed as JSON (NULL when absent or broken). */
static cJSON *
body_json(struct evhttp_request *req)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	char *s = xmalloc(len + 1);
	cJSON *j;

	evbuffer_copyout(in, s, len);
	s[len] = '\0';
	j = cJSON_ParseWithLength(s, len);
	free(s);
	return j;
}

/* Answers a getUpdates with up to 100 available updates (maybe none). */
static void
send_updates(struct fb *fb, struct evhttp_request *req)
{
	struct evbuffer *b = evbuffer_new();
	int64_t i, end = fb->released ? fb->n : 0, k = 0;

	evbuffer_add_printf(b, "{\"ok\":true,\"result\":[");
	for (i = fb->confirmed; i < end && k < 100; i++, k++) {
		int64_t chat = 5000 + i % fb->chats;

		evbuffer_add_printf(b, "%s{\"update_id\":%" PRId64 ",\"message\":{\"message_id\":%"
		    PRId64 ",\"from\":{\"id\":%" PRId64 ",\"is_bot\":false,\"first_name\":\"B\","
		    "\"username\":\"b%" PRId64 "\"},\"chat\":{\"id\":%" PRId64 ",\"type\":\"private\"},"
		    "\"date\":1700000000,\"text\":\"bench %" PRId64 "\"}}", k ? "," : "",
		    FIRST_ID + i, i + 1, chat, chat, chat, i);
	}
	evbuffer_add_printf(b, "]}");
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
	    "application/json");
	evhttp_send_reply(req, 200, "OK", b);
	evbuffer_free(b);
}

static void
held_timeout(evutil_socket_t fd, short what, void *arg)
{
	struct fb *fb = arg;

	(void)fd;
	(void)what;
	if (fb->held != NULL) {
		send_updates(fb, fb->held);
		fb->held = NULL;
	}
}

static void
get_updates(struct fb *fb, struct evhttp_request *req)
{
	cJSON *j = body_json(req);
	const cJSON *o = cJSON_GetObjectItemCaseSensitive(j, "offset");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "timeout");
	double timeout = cJSON_IsNumber(t) ? t->valuedouble : 0;
	struct timeval tv;

	if (cJSON_IsNumber(o) && o->valuedouble > FIRST_ID + fb->confirmed) {
		fb->confirmed = (int64_t)o->valuedouble - FIRST_ID;
		if (fb->confirmed > fb->n)
			fb->confirmed = fb->n;
	}
	cJSON_Delete(j);
	if (!fb->released) {
		fb->released = 1;
		fb->t0 = mono_usec();
	}
	if (fb->held != NULL) {
		reply_json(fb->held, 409, "{\"ok\":false,\"error_code\":409,\"description\":"
		    "\"Conflict: terminated by other getUpdates request\"}");
		fb->held = NULL;
	}
	if (fb->confirmed < fb->n || timeout <= 0) {
		send_updates(fb, req);
		return;
	}
	fb->held = req;
	tv.tv_sec = (time_t)timeout;
	tv.tv_usec = 0;
	evtimer_add(fb->held_timer, &tv);
}

static int
send_message(struct fb *fb, struct evhttp_request *req)
{
	cJSON *j = body_json(req);
	const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
	int64_t i;
	char *end;

	if (!cJSON_IsString(text) || strncmp(text->valuestring, "bench ", 6) != 0) {
		cJSON_Delete(j);
		reply_json(req, 200, "{\"ok\":true,\"result\":{\"message_id\":1,\"date\":1,"
		    "\"chat\":{\"id\":1,\"type\":\"private\"}}}");
		return 0;
	}
	i = strtoll(text->valuestring + 6, &end, 10);
	if (*end != '\0' || i < 0 || i >= fb->n)
		fb->dups++;
	else if (fb->answered[i]++)
		fb->dups++;
	else
		fb->nanswered++;
	cJSON_Delete(j);
	reply_json(req, 200, "{\"ok\":true,\"result\":{\"message_id\":1,\"date\":1,"
	    "\"chat\":{\"id\":1,\"type\":\"private\"},\"text\":\"x\"}}");
	if (fb->nanswered == fb->n && fb->t1 == 0) {
		fb->t1 = mono_usec();
		event_base_loopexit(fb->base, NULL);
	}
	return 0;
}

static void
on_request(struct evhttp_request *req, void *arg)
{
	struct fb *fb = arg;
	const char *uri = evhttp_request_get_uri(req);
	size_t plen = strlen(fb->prefix);
	const char *m;

	if (strncmp(uri, fb->prefix, plen) != 0) {
		reply_json(req, 401, "{\"ok\":false,\"error_code\":401,\"description\":"
		    "\"Unauthorized\"}");
		return;
	}
	m = uri + plen;
	if (strcmp(m, "getMe") == 0)
		reply_json(req, 200, "{\"ok\":true,\"result\":{\"id\":7000001,\"is_bot\":true,"
		    "\"first_name\":\"Hermes\",\"username\":\"hermes_test_bot\"}}");
	else if (strcmp(m, "getUpdates") == 0)
		get_updates(fb, req);
	else if (strcmp(m, "sendMessage") == 0)
		send_message(fb, req);
	else if (strcmp(m, "sendChatAction") == 0) {
		fb->actions++;
		reply_json(req, 200, "{\"ok\":true,\"result\":true}");
	} else
		reply_json(req, 404, "{\"ok\":false,\"error_code\":404,\"description\":"
		    "\"Not Found\"}");
}

/* Each accepted connection gets a server-side TLS bufferevent. */
static struct bufferevent *
make_bev(struct event_base *base, void *arg)
{
	struct fb *fb = arg;

	return bufferevent_openssl_socket_new(base, -1, SSL_new(fb->ssl),
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "cert", required_argument, NULL, 'c' }, { "key", required_argument, NULL, 'k' },
		{ "port", required_argument, NULL, 'p' }, { "token", required_argument, NULL, 't' },
		{ "chats", required_argument, NULL, 'C' }, { NULL, 0, NULL, 0 },
	};
	const char *cert = NULL, *key = NULL, *token = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz";
	struct evhttp_bound_socket *sock;
	struct evhttp *http;
	struct fb fb;
	int c, port = 0;
	double el;

	memset(&fb, 0, sizeof(fb));
	fb.n = 10000;
	fb.chats = 50;
	while ((c = getopt_long(argc, argv, "n:", opts, NULL)) != -1) {
		switch (c) {
		case 'c': cert = optarg; break;
		case 'k': key = optarg; break;
		case 'p': port = atoi(optarg); break;
		case 't': token = optarg; break;
		case 'C': fb.chats = atoll(optarg); break;
		case 'n': fb.n = atoll(optarg); break;
		default: return 2;
		}
	}
	if (cert == NULL || key == NULL || fb.n <= 0 || fb.chats <= 0) {
		fprintf(stderr, "usage: tg_fakebench --cert FILE --key FILE [--port P] "
		    "[--token T] [-n N] [--chats C]\n");
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	snprintf(fb.prefix, sizeof(fb.prefix), "/bot%s/", token);
	fb.answered = xcalloc((size_t)fb.n, 1);
	fb.ssl = SSL_CTX_new(TLS_server_method());
	if (fb.ssl == NULL || SSL_CTX_use_certificate_chain_file(fb.ssl, cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(fb.ssl, key, SSL_FILETYPE_PEM) != 1) {
		ERR_print_errors_fp(stderr);
		return 1;
	}
	fb.base = event_base_new();
	fb.held_timer = evtimer_new(fb.base, held_timeout, &fb);
	http = evhttp_new(fb.base);
	evhttp_set_bevcb(http, make_bev, &fb);
	evhttp_set_gencb(http, on_request, &fb);
	evhttp_set_max_body_size(http, 1 << 20);
	sock = evhttp_bind_socket_with_handle(http, "127.0.0.1", (ev_uint16_t)port);
	if (sock == NULL) {
		perror("bind");
		return 1;
	}
	{
		struct sockaddr_in sa;
		socklen_t len = sizeof(sa);
		int one = 1;

		/* Accepted sockets inherit it: no Nagle delay between headers and body. */
		setsockopt(evhttp_bound_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &one,
		    sizeof(one));

		getsockname(evhttp_bound_socket_get_fd(sock), (struct sockaddr *)&sa, &len);
		printf("port %d\n", ntohs(sa.sin_port));
		fflush(stdout);
	}
	event_base_dispatch(fb.base);
	el = (double)(fb.t1 - fb.t0) / 1e6;
	printf("messages %" PRId64 " seconds %.3f per_s %.0f duplicates %" PRId64 " actions %"
	    PRId64 "\n", fb.nanswered, el, el > 0 ? (double)fb.nanswered / el : 0.0, fb.dups,
	    fb.actions);
	evhttp_free(http);
	event_free(fb.held_timer);
	event_base_free(fb.base);
	SSL_CTX_free(fb.ssl);
	free(fb.answered);
	return fb.dups == 0 && fb.nanswered == fb.n ? 0 : 1;
}
