/*
 * net_fixture.h - helpers for the network unit tests (header only, static):
 * a throwaway test CA and server certificates made with the openssl tool,
 * an in-process evhttp server (plain or TLS), a raw TCP server that
 * answers any request with fixed bytes, and a bounded loop runner.
 */
#ifndef HERMES_NET_FIXTURE_H
#define HERMES_NET_FIXTURE_H

#include <check.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/ssl.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>

#include "util.h"

/* Where the test certificates are: ca.pem, other-ca.pem, srv.pem/key (127.0.0.1,
 * localhost), wrong.pem/key (only other.invalid). */
static char fx_certdir[256];

/* Runs a shell command; exits when it fails (also callable outside a test). */
static __attribute__((unused)) void
fx_sh(const char *cmd)
{
	int r = system(cmd);

	if (r != 0) {
		fprintf(stderr, "command failed (%d): %s\n", r, cmd);
		exit(2);
	}
}

/* Makes the certificates once per process in a temporary directory. */
static __attribute__((unused)) void
fx_make_certs(void)
{
	char cmd[2048];

	if (fx_certdir[0] != '\0')
		return;
	snprintf(fx_certdir, sizeof(fx_certdir), "/tmp/hermes-certs-XXXXXX");
	if (mkdtemp(fx_certdir) == NULL) {
		perror("mkdtemp");
		exit(2);
	}
	snprintf(cmd, sizeof(cmd),
	    "cd %s && exec >/dev/null 2>&1 && "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "  -keyout ca.key -out ca.pem -days 2 -subj /CN=hermes-test-ca && "
	    "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "  -keyout other-ca.key -out other-ca.pem -days 2 -subj /CN=other-ca && "
	    "for n in srv wrong; do "
	    "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
	    "    -keyout $n.key -out $n.csr -subj /CN=$n || exit 1; done && "
	    "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > srv.ext && "
	    "printf 'subjectAltName=DNS:other.invalid\\n' > wrong.ext && "
	    "for n in srv wrong; do "
	    "  openssl x509 -req -in $n.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
	    "    -out $n.pem -days 2 -extfile $n.ext || exit 1; done",
	    fx_certdir);
	fx_sh(cmd);
}

/* Removes the certificate directory (from main, after the tests). */
static __attribute__((unused)) void
fx_remove_certs(void)
{
	char cmd[512];

	if (fx_certdir[0] == '\0')
		return;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", fx_certdir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", fx_certdir);
}

/* Path of a file in the certificate directory (static buffer per slot). */
static __attribute__((unused)) const char *
fx_cert(const char *name)
{
	static char bufs[4][512];
	static int slot;
	char *b = bufs[slot++ % 4];

	snprintf(b, sizeof(bufs[0]), "%s/%s", fx_certdir, name);
	return b;
}

/* The port a socket is bound to. */
static __attribute__((unused)) int
fx_sock_port(evutil_socket_t fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

/* A TCP port on 127.0.0.1 with nothing listening (was free a moment ago). */
static __attribute__((unused)) int
fx_closed_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	port = fx_sock_port(fd);
	close(fd);
	return port;
}

/* An in-process evhttp server, optionally over TLS. */
struct fx_server {
	struct evhttp *http;
	SSL_CTX *ssl_ctx;
	int port;
};

/* Wraps each accepted connection in TLS. */
static __attribute__((unused)) struct bufferevent *
fx_tls_bevcb(struct event_base *base, void *arg)
{
	SSL_CTX *ctx = arg;

	return bufferevent_openssl_socket_new(base, -1, SSL_new(ctx),
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
}

/* Starts a server on 127.0.0.1; cert names a pair in the cert dir, or NULL for plain. */
static __attribute__((unused)) void
fx_server_start(struct fx_server *s, struct event_base *base, const char *cert,
    void (*cb)(struct evhttp_request *, void *), void *arg)
{
	struct evhttp_bound_socket *bs;

	memset(s, 0, sizeof(*s));
	s->http = evhttp_new(base);
	ck_assert_ptr_nonnull(s->http);
	if (cert != NULL) {
		char pem[64], key[64];

		snprintf(pem, sizeof(pem), "%s.pem", cert);
		snprintf(key, sizeof(key), "%s.key", cert);
		s->ssl_ctx = SSL_CTX_new(TLS_server_method());
		ck_assert_int_eq(SSL_CTX_use_certificate_chain_file(s->ssl_ctx, fx_cert(pem)), 1);
		ck_assert_int_eq(SSL_CTX_use_PrivateKey_file(s->ssl_ctx, fx_cert(key),
		    SSL_FILETYPE_PEM), 1);
		evhttp_set_bevcb(s->http, fx_tls_bevcb, s->ssl_ctx);
	}
	evhttp_set_gencb(s->http, cb, arg);
	bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
	ck_assert_ptr_nonnull(bs);
	s->port = fx_sock_port(evhttp_bound_socket_get_fd(bs));
}

static __attribute__((unused)) void
fx_server_stop(struct fx_server *s)
{
	if (s->http != NULL)
		evhttp_free(s->http);
	if (s->ssl_ctx != NULL)
		SSL_CTX_free(s->ssl_ctx);
	memset(s, 0, sizeof(*s));
}

/* A raw TCP server: reads a request's head, writes fixed bytes, closes. */
struct fx_raw {
	struct evconnlistener *lis;
	const char *reply;
	size_t reply_len;
	int close_at_once;              /* close without answering */
	int port;
};

static __attribute__((unused)) void
fx_raw_written(struct bufferevent *bev, void *arg)
{
	(void)arg;
	bufferevent_free(bev);
}

static __attribute__((unused)) void
fx_raw_event(struct bufferevent *bev, short what, void *arg)
{
	(void)what;
	(void)arg;
	bufferevent_free(bev);
}

static __attribute__((unused)) void
fx_raw_read(struct bufferevent *bev, void *arg)
{
	struct fx_raw *r = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr p = evbuffer_search(in, "\r\n\r\n", 4, NULL);

	if (p.pos < 0)
		return;
	evbuffer_drain(in, evbuffer_get_length(in));
	if (r->close_at_once) {
		bufferevent_free(bev);
		return;
	}
	bufferevent_setcb(bev, NULL, fx_raw_written, fx_raw_event, r);
	bufferevent_write(bev, r->reply, r->reply_len);
}

static __attribute__((unused)) void
fx_raw_accept(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	struct bufferevent *bev;

	(void)sa;
	(void)salen;
	bev = bufferevent_socket_new(evconnlistener_get_base(lis), fd, BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, fx_raw_read, NULL, fx_raw_event, arg);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static __attribute__((unused)) void
fx_raw_start(struct fx_raw *r, struct event_base *base, const char *reply, size_t len)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };

	r->reply = reply;
	r->reply_len = len;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	r->lis = evconnlistener_new_bind(base, fx_raw_accept, r,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16, (struct sockaddr *)&sin, sizeof(sin));
	ck_assert_ptr_nonnull(r->lis);
	r->port = fx_sock_port(evconnlistener_get_fd(r->lis));
}

static __attribute__((unused)) void
fx_raw_stop(struct fx_raw *r)
{
	if (r->lis != NULL)
		evconnlistener_free(r->lis);
	r->lis = NULL;
}

/* Runs the loop until *flag is non-zero or secs pass; returns *flag. */
static __attribute__((unused)) int
fx_run_until(struct event_base *base, const int *flag, double secs)
{
	uint64_t end = mono_msec() + (uint64_t)(secs * 1000);

	while (!*flag && mono_msec() < end) {
		struct timeval tv = { 0, 20000 };

		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
	return *flag;
}

/* Runs the loop for secs seconds. */
static __attribute__((unused)) void
fx_run_for(struct event_base *base, double secs)
{
	int never = 0;

	fx_run_until(base, &never, secs);
}

#endif

#include <fcntl.h>
#include <libgen.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <cjson/cJSON.h>

/* A running tests/fakes/fake_openai.py. */
struct fx_fake {
	pid_t pid;
	int port;
	char url[128];
	char ca[512];
};

/* Starts the fake (TLS when tls_dir is set); exits the process on failure. */
static __attribute__((unused)) void
fx_fake_start(struct fx_fake *f, const char *tls_dir, const char *api_key)
{
	const char *src = getenv("HERMES_SRC");
	char script[512], line[1024];
	const char *argv[8];
	size_t n = 0;
	int fds[2], argc = 0;
	cJSON *j;

	memset(f, 0, sizeof(*f));
	snprintf(script, sizeof(script), "%s/tests/fakes/fake_openai.py", src ? src : ".");
	if (src == NULL && access(script, R_OK) != 0) {
		/* Not run from the source tree: try beside BUILD/tests/<binary>. */
		char exe[400];
		ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

		if (len > 0) {
			exe[len] = '\0';
			snprintf(script, sizeof(script), "%s/../../tests/fakes/fake_openai.py",
			    dirname(exe));
		}
	}
	argv[argc++] = "/usr/bin/python3";
	argv[argc++] = script;
	if (tls_dir != NULL) {
		argv[argc++] = "--tls-dir";
		argv[argc++] = tls_dir;
	}
	if (api_key != NULL) {
		argv[argc++] = "--api-key";
		argv[argc++] = api_key;
	}
	argv[argc] = NULL;
	if (pipe(fds) < 0)
		exit(2);
	f->pid = fork();
	if (f->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execv(argv[0], (char *const *)argv);
		_exit(127);
	}
	close(fds[1]);
	while (n < sizeof(line) - 1) {
		struct pollfd p = { .fd = fds[0], .events = POLLIN };
		ssize_t r;

		if (poll(&p, 1, 30000) <= 0)
			break;
		r = read(fds[0], line + n, 1);
		if (r <= 0 || line[n] == '\n')
			break;
		n++;
	}
	line[n] = '\0';
	close(fds[0]);
	j = cJSON_Parse(line);
	if (j == NULL || !cJSON_IsNumber(cJSON_GetObjectItem(j, "port"))) {
		fprintf(stderr, "fake_openai did not start (run from the source tree or set "
		    "HERMES_SRC): %s\n", line);
		exit(2);
	}
	f->port = cJSON_GetObjectItem(j, "port")->valueint;
	snprintf(f->url, sizeof(f->url), "%s", cJSON_GetObjectItem(j, "url")->valuestring);
	if (cJSON_IsString(cJSON_GetObjectItem(j, "ca")))
		snprintf(f->ca, sizeof(f->ca), "%s", cJSON_GetObjectItem(j, "ca")->valuestring);
	cJSON_Delete(j);
}

static __attribute__((unused)) void
fx_fake_stop(struct fx_fake *f)
{
	if (f->pid > 0) {
		kill(f->pid, SIGTERM);
		waitpid(f->pid, NULL, 0);
	}
	f->pid = 0;
}
