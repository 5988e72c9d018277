/*
 * fuzz_console_api.c - the console platform's HTTP API
 * (worker/platforms/console.c), driven through its public entry,
 * console_ops: a console started on an inherited loopback socket, fed the
 * input's bytes as HTTP requests on up to three connections, stopped and
 * freed; the hub is fz_hub.c's stand-in.
 *
 * Input: a byte of flags (how the hub handles messages, echo replies, a
 * bearer token, no status, connections kept open rather than half-closed
 * after the requests), then the bytes of each connection, separated by
 * "\n%%\n".
 * Invariants: every message handed to the hub has valid ids (1 to 128
 * bytes of UTF-8 without control characters), a numeric, unique, growing
 * message id and a non-blank UTF-8 text; with a token configured, nothing
 * reaches the hub unless the input carries the token; the token never
 * appears in an answer; every answer is an HTTP response; every send's callback
 * runs once; and after the stop, nothing is lost: the journal is empty,
 * console.inbox.json holds exactly the messages the hub did not finish
 * (with their texts), console.outbox.json holds every reply sent, and the
 * id counter on disk is above every id handed out.
 */
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include <cjson/cJSON.h>

#include "fz_hub.h"
#include "fz_plat.h"
#include "fz_util.h"
#include "platforms/console.h"
#include "util.h"

#define TOKEN           "fuzz-token-7Qx"
#define NCONN           3
#define QUIET_USEC      20000

struct client {
	struct bufferevent *bev;
	struct evbuffer *got;
	int eof;
	int half_close;                 /* nothing to send: shut down once connected */
};

static struct event_base *fz_base;
static int fz_listen_fd = -1;
static struct sockaddr_in fz_addr;
static char *fz_state;
static struct event *fz_quiet_ev;
static int fz_quiet;

static void quiet_cb(evutil_socket_t fd, short what, void *arg);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_base = fz_plat_init(&fz_state);
	fz_listen_fd = fz_listen_loopback(&fz_addr);
	fz_quiet_ev = evtimer_new(fz_base, quiet_cb, NULL);
	return 0;
}

/* ---- the clients ------------------------------------------------------ */

static void
quiet_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fz_quiet = 1;
}

/* Something happened: the run is quiet again only QUIET_USEC from now. */
static void
touch(void)
{
	struct timeval tv = { 0, QUIET_USEC };

	fz_quiet = 0;
	evtimer_add(fz_quiet_ev, &tv);
}

static void
cl_read(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	evbuffer_add_buffer(c->got, bufferevent_get_input(bev));
	touch();
}

static void
cl_write(struct bufferevent *bev, void *arg)
{
	(void)arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		shutdown(bufferevent_getfd(bev), SHUT_WR);
}

static void
cl_event(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;

	if ((what & BEV_EVENT_CONNECTED) && c->half_close)
		shutdown(bufferevent_getfd(bev), SHUT_WR);
	if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		c->eof = 1;
		bufferevent_disable(bev, EV_READ | EV_WRITE);
	}
	touch();
}

/* Connects and sends data; half-closes after it unless keep (evhttp drops pipelined requests then). */
static void
cl_open(struct client *c, const uint8_t *data, size_t len, int keep)
{
	c->bev = bufferevent_socket_new(fz_base, -1, BEV_OPT_CLOSE_ON_FREE);
	c->got = evbuffer_new();
	c->half_close = len == 0 && !keep;
	FZ_CHECK(c->bev != NULL, "bufferevent");
	bufferevent_setcb(c->bev, cl_read, keep ? NULL : cl_write, cl_event, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	if (len > 0)
		bufferevent_write(c->bev, data, len);
	FZ_CHECK(bufferevent_socket_connect(c->bev, (struct sockaddr *)&fz_addr,
	    sizeof(fz_addr)) == 0, "connect: %s", strerror(errno));
}

static int
all_closed(const struct client *c, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!c[i].eof)
			return 0;
	return 1;
}

/* ---- checks ----------------------------------------------------------- */

static void
check_messages(int token, int carries_token)
{
	uint64_t last = 0, id;
	size_t i;

	FZ_CHECK(!token || carries_token || fz_hub_count() == 0,
	    "%zu message(s) passed without the token", fz_hub_count());
	for (i = 0; i < fz_hub_count(); i++) {
		const struct fz_hub_msg *m = fz_hub_get(i);

		FZ_CHECK(strcmp(m->platform, "console") == 0, "platform %s", m->platform);
		FZ_CHECK(fz_console_ident_ok(m->chat_id) && fz_console_ident_ok(m->user_id) &&
		    (m->user_name == NULL || fz_console_ident_ok(m->user_name)), "message %zu: a bad id", i);
		FZ_CHECK(fz_utf8_valid(m->text, strlen(m->text)) &&
		    m->text[strspn(m->text, " \t\r\n")] != '\0', "message %zu: a bad text", i);
		FZ_CHECK(m->chat_type == CHAT_DM && m->thread_id == NULL && m->addressed,
		    "message %zu: not a direct message", i);
		FZ_CHECK(parse_u64(m->message_id, UINT64_MAX, &id) == 0 && id > last,
		    "message id %s after %" PRIu64, m->message_id, last);
		last = id;
	}
}

static const cJSON *
saved_find(const cJSON *arr, const char *id)
{
	const cJSON *it;
	uint64_t want;

	if (parse_u64(id, UINT64_MAX, &want) < 0)
		return NULL;
	cJSON_ArrayForEach(it, arr) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(it, "id");

		if (cJSON_IsNumber(v) && v->valuedouble == (double)want)
			return it;
	}
	return NULL;
}

static cJSON *
state_json(const char *name)
{
	cJSON *j = fz_read_json(fz_state, name);

	FZ_CHECK(cJSON_IsObject(j), "%s is missing or not a JSON object after the stop", name);
	return j;
}

static const char *
jstr(const cJSON *o, const char *k)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(v) ? v->valuestring : "";
}

/* Nothing lost at the stop: unfinished messages saved, replies logged, ids reserved. */
static void
check_saved(void)
{
	cJSON *in = state_json("console.inbox.json"), *out = state_json("console.outbox.json");
	const cJSON *pend = cJSON_GetObjectItemCaseSensitive(in, "messages");
	const cJSON *log = cJSON_GetObjectItemCaseSensitive(out, "messages"), *it;
	char *journal = fz_read(fz_state, "console.journal", NULL), *seq;
	size_t i, unfinished = 0;
	uint64_t mark = 0, id;

	FZ_CHECK(journal != NULL && journal[0] == '\0', "the journal is not empty after a stop");
	free(journal);
	for (i = 0; i < fz_hub_count(); i++) {
		const struct fz_hub_msg *m = fz_hub_get(i);
		const cJSON *s = saved_find(pend, m->message_id);

		if (m->finished) {
			FZ_CHECK(s == NULL, "message %s finished but saved to replay", m->message_id);
			continue;
		}
		unfinished++;
		FZ_CHECK(s != NULL, "unfinished message %s lost at the stop", m->message_id);
		FZ_CHECK(strcmp(jstr(s, "text"), m->text) == 0 &&
		    strcmp(jstr(s, "chat_id"), m->chat_id) == 0, "message %s saved wrong",
		    m->message_id);
	}
	FZ_CHECK((size_t)cJSON_GetArraySize(pend) == unfinished, "%d saved, %zu unfinished",
	    cJSON_GetArraySize(pend), unfinished);
	i = 0;
	cJSON_ArrayForEach(it, log) {
		FZ_CHECK(strncmp(jstr(it, "text"), "echo: ", 6) == 0, "a reply nobody sent");
		i++;
	}
	FZ_CHECK(i == fz_hub_sends(), "%zu replies logged, %zu sent", i, fz_hub_sends());
	seq = fz_read(fz_state, "console.seq", NULL);
	FZ_CHECK(seq != NULL && sscanf(seq, "%" SCNu64, &mark) == 1, "no console.seq");
	for (i = 0; i < fz_hub_count(); i++)
		if (parse_u64(fz_hub_get(i)->message_id, UINT64_MAX, &id) == 0)
			FZ_CHECK(id < mark, "id %" PRIu64 " not below the reserved %" PRIu64, id, mark);
	free(seq);
	cJSON_Delete(in);
	cJSON_Delete(out);
}

static void
check_answers(const struct client *c, size_t n)
{
	size_t i, len;

	for (i = 0; i < n; i++) {
		const char *s = (const char *)evbuffer_pullup(c[i].got, -1);

		len = evbuffer_get_length(c[i].got);
		fz_trace("connection %zu answers:\n%.*s", i, (int)len, s != NULL ? s : "");
		/* evhttp answers in the request's version, "HTTP/0.1" included. */
		FZ_CHECK(len == 0 || (len >= 9 && memcmp(s, "HTTP/", 5) == 0),
		    "connection %zu: an answer that is not HTTP", i);
		FZ_CHECK(len == 0 || memmem(s, len, TOKEN, strlen(TOKEN)) == NULL,
		    "connection %zu: the token in an answer", i);
	}
}

/* ---- one run ------------------------------------------------------------ */

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t flags = fz_u8(&in);
	const uint8_t *part[NCONN];
	size_t len[NCONN], n, i;
	struct client cl[NCONN];
	int carries = memmem(data, size, TOKEN, strlen(TOKEN)) != NULL;
	struct fz_hub_conf hc = {
		.base = fz_base, .mode = (flags & 3) == 3 ? FZ_HUB_LATER : (enum fz_hub_mode)(flags & 3),
		.echo = (flags >> 2) & 1, .no_status = (flags >> 4) & 1, .ops = &console_ops,
	};
	void *self;

	n = fz_split(&in, part, len, NCONN);
	fz_clear_dir(fz_state);
	self = fz_console_up(&hc, fz_state, fz_listen_fd, flags & 8 ? TOKEN : NULL);
	memset(cl, 0, sizeof(cl));
	for (i = 0; i < n; i++)
		cl_open(&cl[i], part[i], len[i], (flags >> 5) & 1);
	touch();
	while (!(all_closed(cl, n) || fz_quiet) || fz_hub_pending())
		event_base_loop(fz_base, EVLOOP_ONCE);
	fz_platform_down(fz_base, &console_ops, self);
	evtimer_del(fz_quiet_ev);
	fz_trace("%zu message(s), %zu repl(ies), answers of %zu connection(s)", fz_hub_count(),
	    fz_hub_sends(), n);
	check_messages(flags & 8, carries);
	check_saved();
	check_answers(cl, n);
	for (i = 0; i < n; i++) {
		bufferevent_free(cl[i].bev);
		evbuffer_free(cl[i].got);
	}
	event_base_loop(fz_base, EVLOOP_NONBLOCK);
	fz_hub_end();
	return 0;
}
