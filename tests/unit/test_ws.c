/*
 * test_ws.c - the WebSocket client against a server side written here:
 * over a socketpair, with hand-built frames (no wslay), so that the
 * framing is checked independently; and against a real TLS server
 * (python3-websockets, tests/fakes/ws_echo.py).
 */
#include "net_fixture.h"

#include <poll.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <openssl/evp.h>

#include <event2/dns.h>

#include "net/tls.h"
#include "net/ws.h"

/* What the client reported. */
struct rec {
	struct ws *ws;
	int open;
	int nmsg;
	int types[16];
	char msgs[16][4096];
	size_t lens[16];
	int term;                       /* WS_EV_CLOSE or WS_EV_ERROR, once */
	int code;
	int status;
	char reason[1024];
	uint64_t term_at;               /* mono_msec() of the terminal event */
	int free_on;                    /* ws_free() inside the callback of this event */
	int close_on;                   /* ws_close() inside the callback of this event */
	int send_on_open;               /* ws_send_text("hi") from the OPEN callback */
	int api_in_cb;                  /* results of ws_* calls made inside callbacks */
};

/* The test's server side: one end of the socketpair and what it read. */
struct peer {
	int fd;
	unsigned char in[1 << 20];
	size_t n;
	char key[64];                   /* the client's Sec-WebSocket-Key */
	char head[4096];                /* the client's request head */
};

/* A frame as the server side parsed it (unmasked). */
struct frame {
	int fin, rsv, op, masked;
	unsigned char key[4];
	size_t len;
	unsigned char data[1 << 18];
};

static struct event_base *base;
static struct peer peer;
static struct rec rec;
static struct frame fr;

static void
on_event(struct ws *ws, const struct ws_event *ev, void *arg)
{
	struct rec *r = arg;

	ck_assert_ptr_eq(ws, r->ws);
	ck_assert_ptr_nonnull(ev->reason);
	ck_assert_int_eq(r->term, 0);   /* nothing after the terminal event */
	switch (ev->type) {
	case WS_EV_OPEN:
		ck_assert_int_eq(r->open, 0);
		r->open = 1;
		if (r->send_on_open)
			r->api_in_cb = ws_send_text(ws, "hi", 2);
		break;
	case WS_EV_TEXT:
	case WS_EV_BINARY:
		ck_assert_int_eq(r->open, 1);
		ck_assert_int_lt(r->nmsg, 16);
		r->types[r->nmsg] = ev->type;
		r->lens[r->nmsg] = ev->len;
		if (ev->len <= sizeof(r->msgs[0]))
			memcpy(r->msgs[r->nmsg], ev->data, ev->len);
		r->nmsg++;
		break;
	case WS_EV_CLOSE:
	case WS_EV_ERROR:
		r->term = ev->type;
		r->code = ev->code;
		r->status = ev->status;
		snprintf(r->reason, sizeof(r->reason), "%s", ev->reason);
		r->term_at = mono_msec();
		break;
	}
	if (r->close_on == (int)ev->type)
		r->api_in_cb = ws_close(ws, 1000, "from the callback");
	if (r->free_on == (int)ev->type) {
		ws_free(ws);
		r->ws = NULL;
	}
}

/* Reads what the client sent so far (non-blocking). */
static void
peer_fill(void)
{
	ssize_t k;

	if (peer.fd < 0)
		return;
	while (peer.n < sizeof(peer.in) &&
	    (k = read(peer.fd, peer.in + peer.n, sizeof(peer.in) - peer.n)) > 0)
		peer.n += (size_t)k;
}

/* One turn of the loop, then what the client sent. */
static void
step(void)
{
	struct pollfd p = { .fd = peer.fd, .events = POLLIN };

	event_base_loop(base, EVLOOP_NONBLOCK);
	poll(&p, peer.fd >= 0 ? 1 : 0, 2);
	peer_fill();
}

#define WAIT_FOR(cond) do {                                             \
	uint64_t end_ = mono_msec() + 10000;                            \
	while (!(cond) && mono_msec() < end_)                           \
		step();                                                 \
	ck_assert_msg((cond), "timed out waiting for " #cond);          \
} while (0)

/* Runs the loop for secs. */
static void
run_for(double secs)
{
	uint64_t end = mono_msec() + (uint64_t)(secs * 1000);

	while (mono_msec() < end)
		step();
}

/* Writes all of buf to the client, running the loop while the socket is full. */
static void
peer_write(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t k = write(peer.fd, p, len);

		if (k > 0) {
			p += k;
			len -= (size_t)k;
		} else {
			ck_assert_int_eq(errno, EAGAIN);
			step();
		}
	}
}

/* Sends buf one byte at a time, with a loop turn between bytes. */
static void
peer_trickle(const void *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++) {
		peer_write((const unsigned char *)buf + i, 1);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
}

static void
peer_consume(size_t k)
{
	memmove(peer.in, peer.in + k, peer.n - k);
	peer.n -= k;
}

/* Builds a server frame by hand (masked when mask is set); returns its length. */
static size_t
mkframe(unsigned char *out, int fin, int op, int mask, const void *payload, size_t len)
{
	static const unsigned char key[4] = { 0x12, 0x34, 0x56, 0x78 };
	size_t n = 0, i;

	out[n++] = (unsigned char)((fin ? 0x80 : 0) | op);
	if (len < 126) {
		out[n++] = (unsigned char)((mask ? 0x80 : 0) | len);
	} else if (len < 65536) {
		out[n++] = (unsigned char)((mask ? 0x80 : 0) | 126);
		out[n++] = (unsigned char)(len >> 8);
		out[n++] = (unsigned char)len;
	} else {
		out[n++] = (unsigned char)((mask ? 0x80 : 0) | 127);
		for (i = 0; i < 8; i++)
			out[n++] = (unsigned char)((uint64_t)len >> (56 - 8 * i));
	}
	if (mask) {
		memcpy(out + n, key, 4);
		n += 4;
	}
	for (i = 0; i < len; i++)
		out[n + i] = ((const unsigned char *)payload)[i] ^ (mask ? key[i % 4] : 0);
	return n + len;
}

/* Sends one server frame. */
static void
peer_frame(int fin, int op, int mask, const void *payload, size_t len)
{
	static unsigned char buf[(1 << 18) + 16];

	ck_assert_uint_le(len, 1 << 18);
	peer_write(buf, mkframe(buf, fin, op, mask, payload, len));
}

/* Parses one client frame from the peer's buffer into fr; 0 while incomplete. */
static size_t
parse_frame(struct frame *f)
{
	const unsigned char *b = peer.in;
	size_t n = 2, len, i;

	if (peer.n < 2)
		return 0;
	f->fin = b[0] >> 7;
	f->rsv = (b[0] >> 4) & 7;
	f->op = b[0] & 15;
	f->masked = b[1] >> 7;
	len = b[1] & 127;
	if (len >= 126) {
		size_t w = len == 126 ? 2 : 8;

		if (peer.n < n + w)
			return 0;
		for (len = 0, i = 0; i < w; i++)
			len = len << 8 | b[n + i];
		n += w;
	}
	if (f->masked) {
		if (peer.n < n + 4)
			return 0;
		memcpy(f->key, b + n, 4);
		n += 4;
	}
	ck_assert_uint_le(len, sizeof(f->data));
	if (peer.n < n + len)
		return 0;
	for (i = 0; i < len; i++)
		f->data[i] = b[n + i] ^ (f->masked ? f->key[i % 4] : 0);
	f->len = len;
	return n + len;
}

/* Waits for the client's next frame; every client frame must be masked. */
static struct frame *
peer_read_frame(void)
{
	size_t k;

	WAIT_FOR((k = parse_frame(&fr)) > 0);
	peer_consume(k);
	ck_assert_msg(fr.masked, "a client frame without a mask");
	ck_assert_int_eq(fr.rsv, 0);
	return &fr;
}

/* The close code of a close frame's payload. */
static int
close_code(const struct frame *f)
{
	ck_assert_int_eq(f->op, 8);
	ck_assert_uint_ge(f->len, 2);
	return f->data[0] << 8 | f->data[1];
}

/* 1 when the client closed its end (EOF after what it sent). */
static int
peer_eof(void)
{
	char b;
	ssize_t k = recv(peer.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return k == 0;
}

/* Base64 of SHA-1 of key + GUID, computed here. */
static void
accept_for(const char *key, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen;
	char in[128];

	snprintf(in, sizeof(in), "%s258EAFA5-E914-47DA-95CA-C5AB0DC85B11", key);
	ck_assert_int_eq(EVP_Digest(in, strlen(in), md, &mdlen, EVP_sha1(), NULL), 1);
	EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
}

/* Waits for the request head; keeps it and its key. */
static void
peer_read_request(void)
{
	unsigned char *end;
	const char *k;
	size_t len;

	WAIT_FOR((end = memmem(peer.in, peer.n, "\r\n\r\n", 4)) != NULL);
	len = (size_t)(end - peer.in) + 4;
	ck_assert_uint_lt(len, sizeof(peer.head));
	memcpy(peer.head, peer.in, len);
	peer.head[len] = '\0';
	peer_consume(len);
	k = strstr(peer.head, "\r\nSec-WebSocket-Key: ");
	ck_assert_ptr_nonnull(k);
	sscanf(k + 21, "%63[^\r]", peer.key);
}

/* The 101 answer for the request read, with extra header lines. */
static const char *
answer_101(const char *extra)
{
	static char b[2048];
	char acc[64];

	accept_for(peer.key, acc);
	snprintf(b, sizeof(b), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	    "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n%s\r\n", acc, extra);
	return b;
}

/* A client on the socketpair with opts (may be NULL). */
static void
start(const struct ws_opts *opts)
{
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	peer.fd = sv[0];
	ck_assert_int_eq(fd_set_nonblock(peer.fd, 1), 0);
	rec.ws = ws_new_fd(base, sv[1], "ws://gw.example:8080/gateway?v=10", opts, on_event, &rec);
	ck_assert_ptr_nonnull(rec.ws);
}

/* A client connected and open. */
static void
start_open(const struct ws_opts *opts)
{
	start(opts);
	peer_read_request();
	peer_write(answer_101(""), strlen(answer_101("")));
	WAIT_FOR(rec.open);
}

static void
setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	memset(&peer, 0, sizeof(peer));
	memset(&rec, 0, sizeof(rec));
	peer.fd = -1;
	base = event_base_new();
}

static void
teardown(void)
{
	ws_free(rec.ws);
	if (peer.fd >= 0)
		close(peer.fd);
	event_base_free(base);
}

START_TEST(test_accept_vector)
{
	char out[64];

	/* RFC 6455 section 1.3: the test's own Accept computation. */
	accept_for("dGhlIHNhbXBsZSBub25jZQ==", out);
	ck_assert_str_eq(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}
END_TEST

START_TEST(test_handshake_accepted)
{
	static const char *const hdrs[] = { "Authorization: Bot s3cret", NULL };
	struct ws_opts o = { .headers = hdrs };
	unsigned char raw[32];

	start(&o);
	peer_read_request();
	ck_assert(strncmp(peer.head, "GET /gateway?v=10 HTTP/1.1\r\n", 28) == 0);
	ck_assert_ptr_nonnull(strstr(peer.head, "\r\nHost: gw.example:8080\r\n"));
	ck_assert_ptr_nonnull(strcasestr(peer.head, "\r\nUpgrade: websocket\r\n"));
	ck_assert_ptr_nonnull(strcasestr(peer.head, "\r\nConnection: Upgrade\r\n"));
	ck_assert_ptr_nonnull(strstr(peer.head, "\r\nSec-WebSocket-Version: 13\r\n"));
	ck_assert_ptr_nonnull(strstr(peer.head, "\r\nAuthorization: Bot s3cret\r\n"));
	ck_assert_ptr_null(strcasestr(peer.head, "Sec-WebSocket-Extensions"));
	/* The key: 16 bytes in base64. */
	ck_assert_uint_eq(strlen(peer.key), 24);
	ck_assert_int_eq(EVP_DecodeBlock(raw, (const unsigned char *)peer.key, 24), 18);
	ck_assert(peer.key[22] == '=' && peer.key[23] == '=');
	run_for(0.05);
	ck_assert_int_eq(rec.open, 0);
	peer_write(answer_101(""), strlen(answer_101("")));
	WAIT_FOR(rec.open);
	ck_assert_int_eq(rec.term, 0);
}
END_TEST

START_TEST(test_key_is_random)
{
	char first[64];

	start(NULL);
	peer_read_request();
	snprintf(first, sizeof(first), "%s", peer.key);
	ws_free(rec.ws);
	close(peer.fd);
	memset(&peer, 0, sizeof(peer));
	start(NULL);
	peer_read_request();
	ck_assert_str_ne(first, peer.key);
}
END_TEST

/* Answers that the client must refuse, and what it must say. */
static const struct refusal {
	const char *extra;              /* header lines added to a valid 101, or */
	const char *raw;                /* the whole answer */
	int status;
	const char *why;
} refusals[] = {
	{ NULL, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade"
	  "\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n", 101,
	  "wrong Sec-WebSocket-Accept" },
	{ NULL, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	  "Connection: Upgrade\r\n\r\n", 101, "missing Sec-WebSocket-Accept" },
	{ "Sec-WebSocket-Extensions: permessage-deflate\r\n", NULL, 101, "extension" },
	{ "Sec-WebSocket-Protocol: chat\r\n", NULL, 101, "subprotocol" },
	{ "Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", NULL, 101,
	  "wrong Sec-WebSocket-Accept" },
	{ "Bad header line\r\n", NULL, 101, "malformed" },
	{ NULL, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", 401, "HTTP 401" },
	{ NULL, "HTTP/1.1 302 Found\r\nLocation: ws://elsewhere/\r\n\r\n", 302,
	  "redirects are not followed" },
	{ NULL, "HTTP/1.1 1010 Nonsense\r\n\r\n", 0, "not an HTTP/1.1 response" },
	{ NULL, "SSH-2.0-OpenSSH_9.2\r\n\r\n", 0, "not an HTTP/1.1 response" },
	{ NULL, "HTTP/1.1 101 OK\r\nUpgrade: h2c\r\n\r\n", 101, "missing Upgrade" },
};

START_TEST(test_handshake_refused)
{
	const struct refusal *t = &refusals[_i];
	const char *a;

	start(NULL);
	peer_read_request();
	a = t->raw != NULL ? t->raw : answer_101(t->extra);
	peer_write(a, strlen(a));
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.open, 0);
	ck_assert_int_eq(rec.term, WS_EV_ERROR);
	ck_assert_int_eq(rec.status, t->status);
	ck_assert_msg(strstr(rec.reason, t->why) != NULL, "%s", rec.reason);
	WAIT_FOR(peer_eof());
}
END_TEST

START_TEST(test_oversized_header_refused)
{
	struct ws_opts o = { .max_header = 1024 };
	char big[1500];

	memset(big, 'a', sizeof(big));
	start(&o);
	peer_read_request();
	peer_write("HTTP/1.1 101 Switching Protocols\r\nX-Pad: ", 42);
	/* Never a complete head: the cap alone must end it. */
	peer_write(big, sizeof(big));
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_ERROR);
	ck_assert_ptr_nonnull(strstr(rec.reason, "larger than 1024"));
	ck_assert_int_eq(rec.open, 0);
}
END_TEST

START_TEST(test_text_and_binary_both_ways)
{
	unsigned char bin[300];
	size_t i;

	for (i = 0; i < sizeof(bin); i++)
		bin[i] = (unsigned char)i;
	start_open(NULL);
	ck_assert_int_eq(ws_send_text(rec.ws, "hello, server", 13), 0);
	ck_assert_int_eq(ws_send_binary(rec.ws, bin, sizeof(bin)), 0);
	peer_read_frame();
	ck_assert_int_eq(fr.op, 1);
	ck_assert_int_eq(fr.fin, 1);
	ck_assert_uint_eq(fr.len, 13);
	ck_assert(memcmp(fr.data, "hello, server", 13) == 0);
	peer_read_frame();
	ck_assert_int_eq(fr.op, 2);
	ck_assert_uint_eq(fr.len, sizeof(bin));
	ck_assert(memcmp(fr.data, bin, sizeof(bin)) == 0);
	peer_frame(1, 1, 0, "hello, client", 13);
	peer_frame(1, 2, 0, bin, sizeof(bin));
	peer_frame(1, 1, 0, "", 0);
	WAIT_FOR(rec.nmsg == 3);
	ck_assert_int_eq(rec.types[0], WS_EV_TEXT);
	ck_assert_uint_eq(rec.lens[0], 13);
	ck_assert(memcmp(rec.msgs[0], "hello, client", 13) == 0);
	ck_assert_int_eq(rec.types[1], WS_EV_BINARY);
	ck_assert_uint_eq(rec.lens[1], sizeof(bin));
	ck_assert(memcmp(rec.msgs[1], bin, sizeof(bin)) == 0);
	ck_assert_int_eq(rec.types[2], WS_EV_TEXT);
	ck_assert_uint_eq(rec.lens[2], 0);
	ck_assert_int_eq(rec.term, 0);
}
END_TEST

START_TEST(test_masking)
{
	static const char text[] = "the same payload twice, long enough to see the mask";
	unsigned char key1[4];
	size_t n = strlen(text), i, same = 0;

	start_open(NULL);
	ck_assert_int_eq(ws_send_text(rec.ws, text, n), 0);
	ck_assert_int_eq(ws_send_text(rec.ws, text, n), 0);
	/* On the wire, masked: the payload bytes are not the text. */
	WAIT_FOR(peer.n >= 2 * (6 + n));
	for (i = 0; i < n; i++)
		same += peer.in[6 + i] == (unsigned char)text[i];
	ck_assert_uint_lt(same, n / 2);
	peer_read_frame();
	memcpy(key1, fr.key, 4);
	ck_assert(memcmp(fr.data, text, n) == 0);
	peer_read_frame();
	ck_assert(memcmp(fr.data, text, n) == 0);
	/* A fresh key per frame. */
	ck_assert(memcmp(key1, fr.key, 4) != 0);
}
END_TEST

START_TEST(test_fragments_reassembled)
{
	start_open(NULL);
	peer_frame(0, 1, 0, "Hel", 3);
	peer_frame(0, 0, 0, "lo, ", 4);
	peer_frame(1, 9, 0, "mid", 3);          /* a ping between fragments */
	peer_frame(1, 10, 0, "pong", 4);        /* an unsolicited pong too */
	peer_frame(1, 0, 0, "w\xc3\xb6rld", 6);
	WAIT_FOR(rec.nmsg == 1);
	ck_assert_int_eq(rec.types[0], WS_EV_TEXT);
	ck_assert_uint_eq(rec.lens[0], 13);
	ck_assert(memcmp(rec.msgs[0], "Hello, w\xc3\xb6rld", 13) == 0);
	peer_read_frame();
	ck_assert_int_eq(fr.op, 10);
	ck_assert_uint_eq(fr.len, 3);
	ck_assert(memcmp(fr.data, "mid", 3) == 0);
	/* A binary message in fragments, a UTF-8 sequence split across them. */
	peer_frame(0, 2, 0, "\x00\x01", 2);
	peer_frame(1, 0, 0, "\x02", 1);
	peer_frame(0, 1, 0, "\xe2\x82", 2);
	peer_frame(1, 0, 0, "\xac", 1);
	WAIT_FOR(rec.nmsg == 3);
	ck_assert_int_eq(rec.types[1], WS_EV_BINARY);
	ck_assert(rec.lens[1] == 3 && memcmp(rec.msgs[1], "\x00\x01\x02", 3) == 0);
	ck_assert(rec.lens[2] == 3 && memcmp(rec.msgs[2], "\xe2\x82\xac", 3) == 0);
	ck_assert_int_eq(rec.term, 0);
}
END_TEST

START_TEST(test_ping_pong)
{
	start_open(NULL);
	peer_frame(1, 9, 0, "abc", 3);
	peer_read_frame();
	ck_assert_int_eq(fr.op, 10);
	ck_assert(fr.len == 3 && memcmp(fr.data, "abc", 3) == 0);
	ck_assert_int_eq(ws_ping(rec.ws, "xyz", 3), 0);
	peer_read_frame();
	ck_assert_int_eq(fr.op, 9);
	ck_assert(fr.len == 3 && memcmp(fr.data, "xyz", 3) == 0);
	{
		char big[126] = { 0 };

		ck_assert_int_eq(ws_ping(rec.ws, big, sizeof(big)), -1);
	}
	ck_assert_int_eq(rec.nmsg, 0);
	ck_assert_int_eq(rec.term, 0);
}
END_TEST

/* The server hangs up; the client must report ERROR with code and why. */
static void
hang_up_expect(int code, const char *why)
{
	close(peer.fd);
	peer.fd = -1;
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_ERROR);
	ck_assert_int_eq(rec.code, code);
	ck_assert_msg(strstr(rec.reason, why) != NULL, "reason: %s", rec.reason);
}

/*
 * After the server's offence: the client sends a close with want, the
 * server answers and hangs up, and the client reports ERROR with want.
 */
static void
expect_violation(int want, const char *why)
{
	peer_read_frame();
	ck_assert_int_eq(close_code(&fr), want);
	ck_assert_int_eq(rec.term, 0);
	peer_frame(1, 8, 0, "\x03\xe8", 2);
	hang_up_expect(want, why);
	ck_assert_int_eq(rec.nmsg, 0);
}

START_TEST(test_frame_too_big)
{
	struct ws_opts o = { .max_frame = 200, .max_message = 100000 };
	char big[201];

	memset(big, 'x', sizeof(big));
	start_open(&o);
	peer_frame(1, 2, 0, big, 200);          /* at the cap: fine */
	WAIT_FOR(rec.nmsg == 1);
	rec.nmsg = 0;
	peer_frame(1, 2, 0, big, sizeof(big));
	expect_violation(1009, "frame larger than 200");
}
END_TEST

START_TEST(test_message_too_big)
{
	struct ws_opts o = { .max_frame = 150, .max_message = 250 };
	char part[150];

	memset(part, 'y', sizeof(part));
	start_open(&o);
	peer_frame(0, 1, 0, part, 150);
	peer_frame(1, 0, 0, part, 100);         /* 250: at the cap */
	WAIT_FOR(rec.nmsg == 1);
	ck_assert_uint_eq(rec.lens[0], 250);
	rec.nmsg = 0;
	peer_frame(0, 1, 0, part, 150);
	peer_frame(1, 0, 0, part, 101);
	expect_violation(1009, "message larger than 250");
}
END_TEST

START_TEST(test_invalid_utf8)
{
	start_open(NULL);
	peer_frame(1, 1, 0, "bad \xc3\x28 text", 11);
	expect_violation(1007, "UTF-8");
}
END_TEST

START_TEST(test_truncated_utf8_across_fragments)
{
	start_open(NULL);
	peer_frame(0, 1, 0, "ok \xe2\x82", 5);
	peer_frame(1, 0, 0, "", 0);
	expect_violation(1007, "UTF-8");
}
END_TEST

START_TEST(test_masked_server_frame)
{
	start_open(NULL);
	peer_frame(1, 1, 1, "masked", 6);
	expect_violation(1002, "protocol error");
}
END_TEST

START_TEST(test_unknown_opcode)
{
	start_open(NULL);
	peer_frame(1, 3, 0, "?", 1);
	expect_violation(1002, "protocol error");
}
END_TEST

START_TEST(test_control_frame_too_long)
{
	char big[126] = { 0 };

	start_open(NULL);
	peer_frame(1, 9, 0, big, sizeof(big));  /* pings carry at most 125 bytes */
	peer_read_frame();
	ck_assert_int_eq(fr.op, 8);             /* wslay's close here has no code */
	hang_up_expect(1002, "protocol error");
}
END_TEST

START_TEST(test_server_close_echoed)
{
	start_open(NULL);
	peer_frame(1, 8, 0, "\x0f\xa1" "bye now", 9);   /* 4001 */
	peer_read_frame();
	ck_assert_int_eq(close_code(&fr), 4001);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.code, 4001);
	ck_assert_str_eq(rec.reason, "bye now");
	WAIT_FOR(peer_eof());
	ck_assert_int_eq(ws_send_text(rec.ws, "late", 4), -1);
}
END_TEST

START_TEST(test_server_close_without_code)
{
	start_open(NULL);
	peer_frame(1, 8, 0, "", 0);
	peer_read_frame();
	ck_assert_int_eq(fr.op, 8);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.code, 1005);
}
END_TEST

START_TEST(test_client_close_answered)
{
	start_open(NULL);
	ck_assert_int_eq(ws_close(rec.ws, 1000, "done"), 0);
	ck_assert_int_eq(ws_send_text(rec.ws, "after", 5), -1);
	ck_assert_int_eq(ws_close(rec.ws, 1000, "again"), 0);
	peer_read_frame();
	ck_assert_int_eq(close_code(&fr), 1000);
	ck_assert(fr.len == 6 && memcmp(fr.data + 2, "done", 4) == 0);
	/* Data before the answer is dropped, not delivered. */
	peer_frame(1, 1, 0, "late", 4);
	run_for(0.05);
	ck_assert_int_eq(rec.term, 0);
	peer_frame(1, 8, 0, "\x03\xe8", 2);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.code, 1000);
	ck_assert_int_eq(rec.nmsg, 0);
	WAIT_FOR(peer_eof());
}
END_TEST

START_TEST(test_client_close_deadline)
{
	struct ws_opts o = { .close_timeout = 0.3 };
	uint64_t t0;

	start_open(&o);
	t0 = mono_msec();
	ck_assert_int_eq(ws_close(rec.ws, 4000, NULL), 0);
	peer_read_frame();
	ck_assert_int_eq(close_code(&fr), 4000);
	ck_assert_uint_eq(fr.len, 2);
	WAIT_FOR(rec.term != 0);
	ck_assert_uint_ge(rec.term_at - t0, 290);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.code, 1006);
	WAIT_FOR(peer_eof());
}
END_TEST

START_TEST(test_close_arguments)
{
	char longer[125];

	memset(longer, 'r', sizeof(longer) - 1);
	longer[124] = '\0';
	start_open(NULL);
	ck_assert_int_eq(ws_close(rec.ws, 1005, NULL), -1);
	ck_assert_int_eq(ws_close(rec.ws, 999, NULL), -1);
	ck_assert_int_eq(ws_close(rec.ws, 1000, longer), -1);
	ck_assert_int_eq(ws_close(rec.ws, 1000, longer + 1), 0);
	peer_read_frame();
	ck_assert_uint_eq(fr.len, 125);
}
END_TEST

START_TEST(test_close_before_open)
{
	start(NULL);
	peer_read_request();
	ck_assert_int_eq(ws_close(rec.ws, 1000, NULL), 0);
	ck_assert_int_eq(rec.term, 0);  /* never from inside ws_close() */
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.code, 1006);
	ck_assert_int_eq(rec.open, 0);
	WAIT_FOR(peer_eof());
	ck_assert_int_eq(ws_close(rec.ws, 1000, NULL), -1);
}
END_TEST

START_TEST(test_eof_without_close)
{
	start_open(NULL);
	hang_up_expect(1006, "without a close frame");
}
END_TEST

START_TEST(test_eof_during_handshake)
{
	start(NULL);
	peer_read_request();
	hang_up_expect(1006, "during the handshake");
}
END_TEST

START_TEST(test_idle_timeout)
{
	struct ws_opts o = { .idle_timeout = 0.3 };
	uint64_t t0;

	start_open(&o);
	t0 = mono_msec();
	WAIT_FOR(rec.term != 0);
	ck_assert_uint_ge(rec.term_at - t0, 280);
	ck_assert_int_eq(rec.term, WS_EV_ERROR);
	ck_assert_ptr_nonnull(strstr(rec.reason, "no data received for 0.3 s"));
	WAIT_FOR(peer_eof());
}
END_TEST

START_TEST(test_idle_kept_alive_by_traffic)
{
	struct ws_opts o = { .idle_timeout = 2 };
	uint64_t end;

	start_open(&o);
	/* Pongs (and any frame) every 0.1 s for 3 s: longer than the timeout. */
	for (end = mono_msec() + 3000; mono_msec() < end;) {
		peer_frame(1, 10, 0, "", 0);
		run_for(0.1);
	}
	ck_assert_int_eq(rec.term, 0);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_ERROR);
}
END_TEST

START_TEST(test_handshake_timeout)
{
	struct ws_opts o = { .handshake_timeout = 0.3 };

	start(&o);
	peer_read_request();
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_ERROR);
	ck_assert_ptr_nonnull(strstr(rec.reason, "handshake timed out"));
	ck_assert_int_eq(rec.open, 0);
}
END_TEST

START_TEST(test_free_inside_message_callback)
{
	unsigned char two[64];
	size_t n;

	rec.free_on = WS_EV_TEXT;
	start_open(NULL);
	n = mkframe(two, 1, 1, 0, "one", 3);
	n += mkframe(two + n, 1, 1, 0, "two", 3);
	n += mkframe(two + n, 1, 9, 0, "p", 1);
	peer_write(two, n);             /* all in one read */
	WAIT_FOR(rec.nmsg == 1);
	run_for(0.1);
	ck_assert_int_eq(rec.nmsg, 1);
	ck_assert_ptr_null(rec.ws);
	WAIT_FOR(peer_eof());
}
END_TEST

START_TEST(test_free_inside_open_callback)
{
	char buf[512];
	size_t n;

	rec.free_on = WS_EV_OPEN;
	start(NULL);
	peer_read_request();
	n = strlen(answer_101(""));
	memcpy(buf, answer_101(""), n);
	n += mkframe((unsigned char *)buf + n, 1, 1, 0, "early", 5);
	peer_write(buf, n);             /* the 101 and a frame together */
	WAIT_FOR(rec.open);
	run_for(0.1);
	ck_assert_int_eq(rec.nmsg, 0);
	ck_assert_ptr_null(rec.ws);
}
END_TEST

START_TEST(test_free_inside_terminal_callbacks)
{
	rec.free_on = WS_EV_ERROR;
	start_open(NULL);
	peer_frame(1, 1, 1, "masked", 6);
	peer_read_frame();
	hang_up_expect(1002, "protocol error");
	ck_assert_ptr_null(rec.ws);
	memset(&rec, 0, sizeof(rec));
	rec.free_on = WS_EV_CLOSE;
	start_open(NULL);
	peer_frame(1, 8, 0, "\x03\xe8", 2);
	WAIT_FOR(rec.term != 0);
	ck_assert_ptr_null(rec.ws);
	run_for(0.05);
}
END_TEST

START_TEST(test_calls_inside_callbacks)
{
	unsigned char two[64];
	size_t n;

	rec.send_on_open = 1;
	start_open(NULL);
	ck_assert_int_eq(rec.api_in_cb, 0);
	peer_read_frame();
	ck_assert(fr.op == 1 && fr.len == 2 && memcmp(fr.data, "hi", 2) == 0);
	rec.close_on = WS_EV_TEXT;
	rec.api_in_cb = -2;
	n = mkframe(two, 1, 1, 0, "one", 3);
	n += mkframe(two + n, 1, 1, 0, "two", 3);
	peer_write(two, n);
	peer_read_frame();
	ck_assert_int_eq(rec.api_in_cb, 0);
	ck_assert_int_eq(close_code(&fr), 1000);
	ck_assert_int_eq(rec.nmsg, 1);  /* "two" came after the close: dropped */
	peer_frame(1, 8, 0, "\x03\xe8", 2);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.nmsg, 1);
}
END_TEST

START_TEST(test_partial_reads)
{
	unsigned char buf[4096], pad[300];
	const char *a;
	size_t n;

	memset(pad, 'z', sizeof(pad));
	start(NULL);
	peer_read_request();
	a = answer_101("");
	n = strlen(a);
	memcpy(buf, a, n);
	n += mkframe(buf + n, 0, 1, 0, "frag", 4);
	n += mkframe(buf + n, 1, 9, 0, "pi", 2);
	n += mkframe(buf + n, 1, 0, 0, "mented", 6);
	n += mkframe(buf + n, 1, 2, 0, "\x00\xff", 2);
	n += mkframe(buf + n, 1, 2, 0, pad, sizeof(pad));       /* a 16-bit length */
	n += mkframe(buf + n, 1, 8, 0, "\x03\xe9", 2);
	peer_trickle(buf, n);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.open, 1);
	ck_assert_int_eq(rec.nmsg, 3);
	ck_assert(rec.lens[0] == 10 && memcmp(rec.msgs[0], "fragmented", 10) == 0);
	ck_assert(rec.lens[1] == 2 && memcmp(rec.msgs[1], "\x00\xff", 2) == 0);
	ck_assert_uint_eq(rec.lens[2], 300);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.code, 1001);
	peer_read_frame();
	ck_assert_int_eq(fr.op, 10);
	peer_read_frame();
	ck_assert_int_eq(close_code(&fr), 1001);
}
END_TEST

START_TEST(test_large_message)
{
	static unsigned char big[200000];
	size_t i;

	for (i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7);
	start_open(NULL);
	ck_assert_int_eq(ws_send_binary(rec.ws, big, sizeof(big)), 0);
	ck_assert_uint_gt(ws_queued(rec.ws), 0);
	peer_read_frame();
	ck_assert_uint_eq(fr.len, sizeof(big));
	ck_assert(memcmp(fr.data, big, sizeof(big)) == 0);
	peer_frame(1, 2, 0, big, sizeof(big));  /* a 64-bit length */
	WAIT_FOR(rec.nmsg == 1);
	ck_assert_uint_eq(rec.lens[0], sizeof(big));
}
END_TEST

START_TEST(test_unusable_arguments)
{
	static const char *const crlf[] = { "X-A: b\r\nX-Injected: c", NULL };
	static const char *const noname[] = { ": v", NULL };
	struct ws_opts o1 = { .headers = crlf }, o2 = { .headers = noname };

	ck_assert_ptr_null(ws_new(base, NULL, NULL, "http://127.0.0.1/", NULL, on_event, &rec));
	ck_assert_ptr_null(ws_new(base, NULL, NULL, "not a url", NULL, on_event, &rec));
	ck_assert_ptr_null(ws_new(base, NULL, NULL, NULL, NULL, on_event, &rec));
	ck_assert_ptr_null(ws_new(base, NULL, NULL, "wss://127.0.0.1/", NULL, on_event, &rec));
	/* A name needs a resolver: never a blocking lookup. */
	ck_assert_ptr_null(ws_new(base, NULL, NULL, "ws://example.org/", NULL, on_event, &rec));
	ck_assert_ptr_null(ws_new(base, NULL, NULL, "ws://127.0.0.1/", &o1, on_event, &rec));
	ck_assert_ptr_null(ws_new(base, NULL, NULL, "ws://127.0.0.1/", &o2, on_event, &rec));
	ck_assert_int_eq(ws_send_text(NULL, "x", 1), -1);
	ck_assert_int_eq(ws_close(NULL, 1000, NULL), -1);
	ws_free(NULL);
}
END_TEST

START_TEST(test_connection_refused)
{
	char url[64];

	snprintf(url, sizeof(url), "ws://127.0.0.1:%d/", fx_closed_port());
	rec.ws = ws_new(base, NULL, NULL, url, NULL, on_event, &rec);
	ck_assert_ptr_nonnull(rec.ws);
	ck_assert_int_eq(rec.term, 0);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_ERROR);
	ck_assert_msg(strstr(rec.reason, "cannot connect") != NULL, "%s", rec.reason);
}
END_TEST

/* A running tests/fakes/ws_echo.py. */
struct echo {
	pid_t pid;
	int port;
};

/* Starts the echo server with the test certificate pair cert; exits on failure. */
static void
echo_start(struct echo *e, const char *cert)
{
	char script[512] = "tests/fakes/ws_echo.py", pem[64], key[64], line[256];
	const char *src = getenv("HERMES_SRC");
	int fds[2];
	size_t n = 0;

	if (src != NULL)
		snprintf(script, sizeof(script), "%s/tests/fakes/ws_echo.py", src);
	snprintf(pem, sizeof(pem), "%s.pem", cert);
	snprintf(key, sizeof(key), "%s.key", cert);
	ck_assert_int_eq(pipe(fds), 0);
	if ((e->pid = fork()) == 0) {
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		execl("/usr/bin/python3", "python3", script, fx_cert(pem), fx_cert(key),
		    (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	while (n < sizeof(line) - 1) {
		struct pollfd p = { .fd = fds[0], .events = POLLIN };

		if (poll(&p, 1, 30000) <= 0 || read(fds[0], line + n, 1) <= 0 || line[n] == '\n')
			break;
		n++;
	}
	line[n] = '\0';
	close(fds[0]);
	ck_assert_msg(sscanf(line, "{\"port\": %d}", &e->port) == 1,
	    "ws_echo.py did not start (run from the source tree or set HERMES_SRC): %s", line);
}

static void
echo_stop(struct echo *e)
{
	kill(e->pid, SIGTERM);
	waitpid(e->pid, NULL, 0);
}

/* Connects to the echo server at host over wss; returns the resolver to free. */
static struct evdns_base *
echo_connect(struct tls_ctx **tls, const char *host, int port, const struct ws_opts *o)
{
	struct evdns_base *dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
	    EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	char url[128], err[256];

	if (dns == NULL)
		dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	ck_assert_ptr_nonnull(dns);
	*tls = tls_ctx_new(fx_cert("ca.pem"), err, sizeof(err));
	ck_assert_msg(*tls != NULL, "%s", err);
	snprintf(url, sizeof(url), "wss://%s:%d/echo?x=1", host, port);
	rec.ws = ws_new(base, dns, *tls, url, o, on_event, &rec);
	ck_assert_ptr_nonnull(rec.ws);
	return dns;
}

/* Frees what echo_connect made (the connection first). */
static void
echo_disconnect(struct evdns_base *dns, struct tls_ctx *tls)
{
	ws_free(rec.ws);
	rec.ws = NULL;
	evdns_base_free(dns, 0);
	tls_ctx_free(tls);
}

/* Runs a whole conversation with the real server at host. */
static void
echo_conversation(const char *host)
{
	static const char *const hdrs[] = { "Authorization: Bearer t0ken", NULL };
	static unsigned char big[300000];
	struct ws_opts o = { .headers = hdrs };
	struct tls_ctx *tls;
	struct evdns_base *dns;
	struct echo e;
	size_t i;

	for (i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 13);
	fx_make_certs();
	echo_start(&e, "srv");
	dns = echo_connect(&tls, host, e.port, &o);
	WAIT_FOR(rec.open || rec.term);
	ck_assert_msg(rec.open, "%s", rec.reason);
	ck_assert_int_eq(ws_send_text(rec.ws, "auth?", 5), 0);
	ck_assert_int_eq(ws_send_text(rec.ws, "h\xc3\xa9llo", 6), 0);
	ck_assert_int_eq(ws_send_binary(rec.ws, big, sizeof(big)), 0);
	ck_assert_int_eq(ws_ping(rec.ws, "p", 1), 0);
	WAIT_FOR(rec.nmsg == 3 || rec.term);
	ck_assert_int_eq(rec.nmsg, 3);
	ck_assert(rec.lens[0] == 12 && memcmp(rec.msgs[0], "Bearer t0ken", 12) == 0);
	ck_assert(rec.types[1] == WS_EV_TEXT && rec.lens[1] == 6);
	ck_assert(memcmp(rec.msgs[1], "h\xc3\xa9llo", 6) == 0);
	ck_assert(rec.types[2] == WS_EV_BINARY && rec.lens[2] == sizeof(big));
	ck_assert_int_eq(ws_send_text(rec.ws, "close:4003:see you", 18), 0);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.code, 4003);
	ck_assert_str_eq(rec.reason, "see you");
	echo_disconnect(dns, tls);
	echo_stop(&e);
}

START_TEST(test_tls_real_server)
{
	echo_conversation("127.0.0.1");
}
END_TEST

START_TEST(test_tls_real_server_by_name)
{
	echo_conversation("localhost");
}
END_TEST

START_TEST(test_tls_client_close)
{
	struct tls_ctx *tls;
	struct evdns_base *dns;
	struct echo e;

	fx_make_certs();
	echo_start(&e, "srv");
	dns = echo_connect(&tls, "127.0.0.1", e.port, NULL);
	WAIT_FOR(rec.open || rec.term);
	ck_assert_msg(rec.open, "%s", rec.reason);
	ck_assert_int_eq(ws_close(rec.ws, 1000, "bye"), 0);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.term, WS_EV_CLOSE);
	ck_assert_int_eq(rec.code, 1000);
	echo_disconnect(dns, tls);
	echo_stop(&e);
}
END_TEST

START_TEST(test_tls_wrong_host)
{
	struct tls_ctx *tls;
	struct evdns_base *dns;
	struct echo e;

	fx_make_certs();
	echo_start(&e, "wrong");        /* a certificate for other.invalid only */
	dns = echo_connect(&tls, "localhost", e.port, NULL);
	WAIT_FOR(rec.term != 0);
	ck_assert_int_eq(rec.open, 0);
	ck_assert_int_eq(rec.term, WS_EV_ERROR);
	ck_assert_msg(strstr(rec.reason, "verification failed") != NULL &&
	    strstr(rec.reason, "hostname mismatch") != NULL, "%s", rec.reason);
	echo_disconnect(dns, tls);
	echo_stop(&e);
}
END_TEST

static Suite *
ws_suite(void)
{
	Suite *s = suite_create("ws");
	TCase *tc = tcase_create("socketpair");
	TCase *tt = tcase_create("tls");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_accept_vector);
	tcase_add_test(tc, test_handshake_accepted);
	tcase_add_test(tc, test_key_is_random);
	tcase_add_loop_test(tc, test_handshake_refused, 0, (int)ARRAY_LEN(refusals));
	tcase_add_test(tc, test_oversized_header_refused);
	tcase_add_test(tc, test_text_and_binary_both_ways);
	tcase_add_test(tc, test_masking);
	tcase_add_test(tc, test_fragments_reassembled);
	tcase_add_test(tc, test_ping_pong);
	tcase_add_test(tc, test_frame_too_big);
	tcase_add_test(tc, test_message_too_big);
	tcase_add_test(tc, test_invalid_utf8);
	tcase_add_test(tc, test_truncated_utf8_across_fragments);
	tcase_add_test(tc, test_masked_server_frame);
	tcase_add_test(tc, test_unknown_opcode);
	tcase_add_test(tc, test_control_frame_too_long);
	tcase_add_test(tc, test_server_close_echoed);
	tcase_add_test(tc, test_server_close_without_code);
	tcase_add_test(tc, test_client_close_answered);
	tcase_add_test(tc, test_client_close_deadline);
	tcase_add_test(tc, test_close_arguments);
	tcase_add_test(tc, test_close_before_open);
	tcase_add_test(tc, test_eof_without_close);
	tcase_add_test(tc, test_eof_during_handshake);
	tcase_add_test(tc, test_idle_timeout);
	tcase_add_test(tc, test_idle_kept_alive_by_traffic);
	tcase_add_test(tc, test_handshake_timeout);
	tcase_add_test(tc, test_free_inside_message_callback);
	tcase_add_test(tc, test_free_inside_open_callback);
	tcase_add_test(tc, test_free_inside_terminal_callbacks);
	tcase_add_test(tc, test_calls_inside_callbacks);
	tcase_add_test(tc, test_partial_reads);
	tcase_add_test(tc, test_large_message);
	tcase_add_test(tc, test_unusable_arguments);
	tcase_add_test(tc, test_connection_refused);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(tt, setup, teardown);
	tcase_set_timeout(tt, 60);
	tcase_add_test(tt, test_tls_real_server);
	tcase_add_test(tt, test_tls_real_server_by_name);
	tcase_add_test(tt, test_tls_client_close);
	tcase_add_test(tt, test_tls_wrong_host);
	suite_add_tcase(s, tt);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(ws_suite());
	int failed;

	fx_make_certs();
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	fx_remove_certs();
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
