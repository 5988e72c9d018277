/*
 * fuzz_telegram_journal.c - the Telegram platform's intake, driven through
 * its public entry, telegram_ops: the journal of a previous worker
 * (telegram.journal) is replayed at start, and a getUpdates answer is
 * taken in, journaled and dispatched.  A fake Bot API on 127.0.0.1 in the
 * same loop answers getMe, the first getUpdates (with the input; on the
 * second start with 500), the next one (500, so the platform backs off),
 * sendChatAction and sendMessage;
 * the hub is fz_hub.c's stand-in.
 *
 * Input: a byte of flags (the hub holds or finishes messages, echoes,
 * group policy), then the journal and the getUpdates body separated by
 * "\n%%\n".
 * Invariants: each message handed to the hub has numeric ids, the id
 * "<chat>:<message_id>", a text, no bot named in a command, and is
 * addressed when private; every sendMessage text is within Telegram's
 * 4096 bytes and every send completes once; after the stop the journal is
 * one snapshot line (offset, time, pending updates with distinct ids)
 * holding exactly the updates the hub did not finish; and it is a fixed
 * point: a second start replays the same messages and writes the same
 * journal again.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>

#include <cjson/cJSON.h>

#include "fz_hub.h"
#include "fz_plat.h"
#include "fz_util.h"
#include "platforms/telegram.h"
#include "util.h"

#define TOKEN   "123:FUZZtoken"

static struct event_base *fz_base;
static struct evdns_base *fz_dns;
static struct evhttp *fz_http;
static char *fz_state, fz_api[64];

/* What the fake answers this round. */
static struct {
	const char *updates;            /* the first getUpdates body; NULL: 500 from the first */
	size_t updates_len;
	int polls;                      /* getUpdates answered */
	int sends;                      /* sendMessage seen */
	int quiet;                      /* no call for QUIET_USEC */
} fz_api_state;
static struct event *fz_quiet_ev;

/*
 * A poll that brought nothing new makes the next one wait a second: the
 * round ends QUIET_USEC after the last call instead.
 */
#define QUIET_USEC 20000

static void
quiet_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	fz_api_state.quiet = 1;
}

static const char *
method_of(struct evhttp_request *req)
{
	const char *uri = evhttp_request_get_uri(req), *slash;

	if (uri == NULL || strncmp(uri, "/bot" TOKEN "/", 5 + strlen(TOKEN)) != 0)
		return "";
	slash = strrchr(uri, '/');
	return slash + 1;
}

/* Checks what the platform sends, the way Telegram would refuse it. */
static void
check_send(struct evhttp_request *req)
{
	struct evbuffer *b = evhttp_request_get_input_buffer(req);
	cJSON *j = cJSON_ParseWithLength((const char *)evbuffer_pullup(b, -1), evbuffer_get_length(b));
	const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");

	FZ_CHECK(cJSON_IsString(text) && text->valuestring[0] != '\0' &&
	    strlen(text->valuestring) <= 4096, "sendMessage with a text of %zu bytes",
	    cJSON_IsString(text) ? strlen(text->valuestring) : 0);
	FZ_CHECK(cJSON_GetObjectItemCaseSensitive(j, "chat_id") != NULL, "sendMessage without chat");
	cJSON_Delete(j);
	fz_api_state.sends++;
}

/* The fake Bot API. */
static void
api_cb(struct evhttp_request *req, void *arg)
{
	const char *m = method_of(req);
	struct evbuffer *out = evbuffer_new();
	struct timeval tv = { 0, QUIET_USEC };
	int code = 200;

	(void)arg;
	fz_api_state.quiet = 0;
	evtimer_add(fz_quiet_ev, &tv);
	if (strcmp(m, "getMe") == 0) {
		evbuffer_add_printf(out, "{\"ok\":true,\"result\":{\"id\":4242,\"is_bot\":true,"
		    "\"username\":\"fuzzbot\"}}");
	} else if (strcmp(m, "getUpdates") == 0) {
		if (fz_api_state.polls++ == 0 && fz_api_state.updates != NULL) {
			evbuffer_add(out, fz_api_state.updates, fz_api_state.updates_len);
		} else {
			code = 500;
			evbuffer_add_printf(out, "{\"ok\":false,\"error_code\":500}");
		}
	} else if (strcmp(m, "sendMessage") == 0) {
		check_send(req);
		evbuffer_add_printf(out, "{\"ok\":true,\"result\":{\"message_id\":1}}");
	} else if (strcmp(m, "sendChatAction") == 0) {
		evbuffer_add_printf(out, "{\"ok\":true,\"result\":true}");
	} else {
		code = 404;
		evbuffer_add_printf(out, "{\"ok\":false,\"error_code\":404}");
	}
	evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", out);
	evbuffer_free(out);
}

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct sockaddr_in addr;
	int fd;

	(void)argc;
	(void)argv;
	fz_base = fz_plat_init(&fz_state);
	fz_dns = evdns_base_new(fz_base, 0);
	fz_http = evhttp_new(fz_base);
	fd = fz_listen_loopback(&addr);
	if (fz_dns == NULL || fz_http == NULL || evhttp_accept_socket(fz_http, fd) < 0)
		abort();
	evhttp_set_gencb(fz_http, api_cb, NULL);
	fz_quiet_ev = evtimer_new(fz_base, quiet_cb, NULL);
	snprintf(fz_api, sizeof(fz_api), "http://127.0.0.1:%d/", ntohs(addr.sin_port));
	return 0;
}

/* ---- one start and stop ---------------------------------------------- */

struct round {
	size_t n;
	char **line;                    /* each message handed over, as one line */
	char *journal;                  /* after the stop */
};

static void
round_free(struct round *r)
{
	size_t i;

	for (i = 0; i < r->n; i++)
		free(r->line[i]);
	free(r->line);
	free(r->journal);
	memset(r, 0, sizeof(*r));
}

static void
round_messages(struct round *r)
{
	size_t i, tok;

	r->n = fz_hub_count();
	r->line = xcalloc(r->n + 1, sizeof(char *));
	for (i = 0; i < r->n; i++) {
		const struct fz_hub_msg *m = fz_hub_get(i);
		size_t cl = strlen(m->chat_id);

		FZ_CHECK(fz_is_int(m->chat_id) && fz_is_int(m->user_id), "ids %s %s", m->chat_id,
		    m->user_id);
		FZ_CHECK(strncmp(m->message_id, m->chat_id, cl) == 0 && m->message_id[cl] == ':' &&
		    fz_is_int(m->message_id + cl + 1), "message id %s", m->message_id);
		FZ_CHECK(m->text[0] != '\0', "an empty text");
		tok = strcspn(m->text, " \t\n");
		FZ_CHECK(m->text[0] != '/' || memchr(m->text, '@', tok) == NULL,
		    "a command naming a bot reached the hub: %.60s", m->text);
		FZ_CHECK(m->chat_type != CHAT_DM || m->addressed, "a private message not addressed");
		FZ_CHECK((m->chat_type == CHAT_THREAD) == (m->thread_id != NULL), "thread id");
		/* Not the time: an update without a date gets the time of each start. */
		r->line[i] = xasprintf("%s|%s|%s|%d|%d|%s|%s", m->message_id, m->user_id,
		    m->thread_id != NULL ? m->thread_id : "-", (int)m->chat_type, m->addressed,
		    m->user_name != NULL ? m->user_name : "-", m->text);
	}
}

/* The journal after a stop: one snapshot with distinct pending ids; returns how many. */
static size_t
check_journal(const char *text)
{
	size_t len = strlen(text), n = 0;
	cJSON *j, *it, *jt;
	const cJSON *pend;

	FZ_CHECK(len > 0 && text[len - 1] == '\n' && strchr(text, '\n') == text + len - 1,
	    "the journal is not one line after a stop");
	j = cJSON_ParseWithLength(text, len - 1);
	FZ_CHECK(cJSON_IsObject(j) && cJSON_IsNumber(cJSON_GetObjectItem(j, "offset")) &&
	    cJSON_IsNumber(cJSON_GetObjectItem(j, "time")), "the snapshot lacks offset or time");
	pend = cJSON_GetObjectItemCaseSensitive(j, "pending");
	FZ_CHECK(cJSON_IsArray(pend), "the snapshot lacks pending");
	cJSON_ArrayForEach(it, pend) {
		const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "update_id");

		FZ_CHECK(cJSON_IsNumber(id), "a pending update without update_id");
		for (jt = pend->child; jt != it; jt = jt->next)
			FZ_CHECK(cJSON_GetObjectItemCaseSensitive(jt, "update_id")->valuedouble !=
			    id->valuedouble, "update %g pending twice", id->valuedouble);
		n++;
	}
	cJSON_Delete(j);
	return n;
}

static void *
tg_up(enum fz_hub_mode mode, uint8_t flags)
{
	cJSON *conf = cJSON_CreateObject();
	struct fz_hub_conf hc = {
		.base = fz_base, .mode = mode, .echo = (flags >> 1) & 1, .ops = &telegram_ops,
	};
	struct plat_env env = {
		.base = fz_base, .dns = fz_dns, .name = "telegram", .state_dir = fz_state,
		.listen_fd = -1,
	};
	char err[256] = "";
	void *self;

	cJSON_AddStringToObject(conf, "token", TOKEN);
	cJSON_AddStringToObject(conf, "api_url", fz_api);
	cJSON_AddNumberToObject(conf, "poll_timeout", 1);
	cJSON_AddNumberToObject(conf, "retry_max", 1);
	cJSON_AddNumberToObject(conf, "rate_chat", 1e6);
	cJSON_AddNumberToObject(conf, "rate_global", 1e6);
	cJSON_AddStringToObject(conf, "group_policy", (flags & 4) ? "all" : "addressed");
	env.conf = conf;
	env.hub = fz_hub_begin(&hc);
	self = telegram_ops.create(&env, err, sizeof(err));
	FZ_CHECK(self != NULL, "create: %s", err);
	cJSON_Delete(conf);
	fz_hub_set_self(self);
	telegram_ops.start(self);
	return self;
}

static void
deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(int *)arg = 1;
}

/* One start, intake until the platform backs off after its polls (or goes quiet), and stop. */
static void
round_run(struct round *r, enum fz_hub_mode mode, uint8_t flags, const char *updates,
    size_t len)
{
	struct timeval tv = { 10, 0 };
	int late = 0;
	struct event *deadline = evtimer_new(fz_base, deadline_cb, &late);
	void *self;
	size_t pending, i, unfinished = 0;

	memset(&fz_api_state, 0, sizeof(fz_api_state));
	fz_api_state.updates = updates;
	fz_api_state.updates_len = len;
	evtimer_add(deadline, &tv);
	self = tg_up(mode, flags);
	while (!(fz_api_state.polls > 0 && (fz_api_state.quiet || fz_hub_state() == PLAT_BACKOFF ||
	    fz_hub_state() == PLAT_UNAUTHORIZED)) || fz_hub_pending()) {
		FZ_CHECK(!late, "the platform never settled (%d polls, state %d)",
		    fz_api_state.polls, (int)fz_hub_state());
		event_base_loop(fz_base, EVLOOP_ONCE);
	}
	event_free(deadline);
	evtimer_del(fz_quiet_ev);
	fz_trace("settled after %d poll(s)", fz_api_state.polls);
	fz_platform_down(fz_base, &telegram_ops, self);
	event_base_loop(fz_base, EVLOOP_NONBLOCK);
	round_messages(r);
	r->journal = fz_read(fz_state, "telegram.journal", NULL);
	FZ_CHECK(r->journal != NULL, "no journal after a stop");
	pending = check_journal(r->journal);
	for (i = 0; i < r->n; i++)
		unfinished += !fz_hub_get(i)->finished;
	FZ_CHECK(pending == unfinished, "%zu update(s) pending in the journal, %zu unfinished",
	    pending, unfinished);
	fz_trace("%zu message(s), %zu pending, %d send(s)", r->n, pending, fz_api_state.sends);
	fz_hub_end();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t flags = fz_u8(&in);
	enum fz_hub_mode mode = (flags & 1) ? FZ_HUB_LATER : FZ_HUB_HOLD;
	const uint8_t *part[2];
	size_t len[2], i;
	struct round first, second;

	fz_split(&in, part, len, 2);
	fz_clear_dir(fz_state);
	if (len[0] > 0)
		fz_write(fz_state, "telegram.journal", part[0], len[0], 0);
	round_run(&first, mode, flags, (const char *)part[1], len[1]);
	/* No new update the second time (an empty answer would pace the next poll). */
	round_run(&second, FZ_HUB_HOLD, flags & ~2, NULL, 0);
	FZ_CHECK(strcmp(first.journal, second.journal) == 0, "the journal changed on a second "
	    "start:\n%.300s\nthen\n%.300s", first.journal, second.journal);
	if (mode == FZ_HUB_HOLD) {
		FZ_CHECK(first.n == second.n, "%zu messages, then %zu replayed", first.n, second.n);
		for (i = 0; i < first.n; i++)
			FZ_CHECK(strcmp(first.line[i], second.line[i]) == 0,
			    "message %zu: %.80s / %.80s", i, first.line[i], second.line[i]);
	} else {
		FZ_CHECK(second.n == 0, "%zu finished message(s) replayed again", second.n);
	}
	round_free(&first);
	round_free(&second);
	return 0;
}
