/*
 * test_lpoll.c - the long-poll driver against an in-process HTTP server:
 * the cursor is committed before the next poll, an empty answer that comes
 * at once never makes a hot loop, failures back off, a failed commit never
 * advances the cursor.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "agent.h"
#include "config.h"
#include "hub.h"
#include "json.h"
#include "kit.h"
#include "lpoll.h"
#include "util.h"
#include "unit_util.h"

/* The server: GET /poll?cursor=N answers {"next": N+k, "events": [...]}. */
struct server {
	struct evhttp *http;
	int port;
	int polls;
	int events_per_poll;            /* events in each answer (then none once out) */
	int events_left;
	int status;                     /* answer with this status (200 normal) */
	int cursor_mismatch;            /* a poll carried a cursor other than the committed one */
	int next_id;
};

struct plat {
	struct kit *kit;
	struct http_client *http;
	struct lpoll *lp;
	char url[128];
};

static struct event_base *base;
static struct agent *agent;
static struct config *cfg;
static struct hub *hub;
static char *dir;
static struct server srv;
static struct plat pl;
static int sent;

static void
srv_poll(struct evhttp_request *req, void *arg)
{
	struct server *s = arg;
	struct evkeyvalq q;
	struct evbuffer *out = evbuffer_new();
	const char *c;
	const char *committed = kit_cursor(pl.kit);
	long cur;
	int i, n;

	s->polls++;
	evhttp_parse_query_str(evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req)), &q);
	c = evhttp_find_header(&q, "cursor");
	cur = c != NULL ? atol(c) : 0;
	if ((committed == NULL && cur != 0) || (committed != NULL && cur != atol(committed)))
		s->cursor_mismatch++;
	if (s->status != 200) {
		evbuffer_add_printf(out, "{\"error\":\"down\"}");
		evhttp_send_reply(req, s->status, "Error", out);
	} else {
		n = s->events_left < s->events_per_poll ? s->events_left : s->events_per_poll;
		s->events_left -= n;
		evbuffer_add_printf(out, "{\"next\":\"%ld\",\"events\":[", cur + n);
		for (i = 0; i < n; i++)
			evbuffer_add_printf(out, "%s{\"id\":\"e%d\",\"text\":\"event %d\"}",
			    i ? "," : "", s->next_id, s->next_id), s->next_id++;
		evbuffer_add_printf(out, "]}");
		evhttp_send_reply(req, 200, "OK", out);
	}
	evhttp_clear_headers(&q);
	evbuffer_free(out);
}

static int
plat_build(void *p, const char *cursor, struct http_req *req)
{
	struct plat *pp = p;

	snprintf(pp->url, sizeof(pp->url), "http://127.0.0.1:%d/poll?cursor=%s", srv.port,
	    cursor != NULL ? cursor : "0");
	req->method = "GET";
	req->url = pp->url;
	req->timeout = 10;
	return 0;
}

static void
plat_done(void *p, const struct http_response *r, struct lpoll_answer *a)
{
	struct plat *pp = p;
	cJSON *o, *e;
	struct inbound m;

	if (r->status != 200) {
		a->verdict = LPOLL_FAIL;
		a->kind = LINK_TRANSIENT;
		snprintf(a->why, sizeof(a->why), "HTTP %d", r->status);
		return;
	}
	o = cJSON_ParseWithLength(r->body, r->body_len);
	ck_assert_ptr_nonnull(o);
	cJSON_ArrayForEach(e, json_arr(o, "events")) {
		memset(&m, 0, sizeof(m));
		m.chat_id = "c1";
		m.user_id = "u1";
		m.message_id = json_str(e, "id");
		m.text = json_str(e, "text");
		m.time = 1700000000;
		m.addressed = 1;
		if (kit_inbound(pp->kit, &m) == INTAKE_NEW)
			a->events++;
	}
	a->verdict = LPOLL_NEXT;
	a->cursor = xstrdup(json_str(o, "next"));
	cJSON_Delete(o);
}

static const struct lpoll_ops plat_lp_ops = { .build = plat_build, .done = plat_done };

static void
plat_connect(void *p)
{
	lpoll_start(((struct plat *)p)->lp);
}

static void
plat_send(void *p, const struct outq_piece *pc, struct outq_attempt *a)
{
	(void)p;
	(void)pc;
	sent++;
	outq_result(a, OUTQ_OK, 0, NULL);
}

static const struct kit_ops plat_kit_ops = {
	.connect = plat_connect, .send = plat_send,
	.limits = { .max_text = 4096, .chat_rate = 10000, .chat_burst = 10000,
		.global_rate = 10000, .global_burst = 10000 },
	.link = { .floor_usec = 1000, .backoff_min_usec = 200000, .backoff_max_usec = 400000 },
};

static struct platform_ops plat_ops = {
	.name = "console", .max_text = 4096, .start = kit_vt_start, .send = kit_vt_send,
	.stop = kit_vt_stop,
};

static void
worker_up(const struct lpoll_opts *lo)
{
	char err[512];
	char *text = xasprintf("{\"state_dir\": \"%s\", \"platforms\": {\"console\": "
	    "{\"allowed_users\": [\"u1\"]}}}", dir);
	char *sessions = xasprintf("%s/sessions", dir);
	struct hub_opts o;
	struct plat_env env;

	cfg = config_parse(text, "test", err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	free(text);
	ck_assert_int_eq(mkdir_p(sessions, 0700), 0);
	free(sessions);
	memset(&o, 0, sizeof(o));
	o.base = base;
	o.agent = agent;
	o.cfg = cfg;
	hub = hub_new(&o);
	memset(&env, 0, sizeof(env));
	env.base = base;
	env.hub = hub;
	env.name = "console";
	env.state_dir = dir;
	pl.kit = kit_new(&env, &plat_kit_ops, &pl);
	pl.http = http_client_new(base, NULL, NULL);
	pl.lp = lpoll_new(pl.kit, pl.http, &plat_lp_ops, lo, &pl);
	hub_add_platform(hub, config_platform(cfg, "console"), &plat_ops, &pl);
	hub_start(hub);
}

static void
setup(void)
{
	char err[256];
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	dir = tmpdir_new();
	setenv("HERMES_HOME", dir, 1);
	base = event_base_new();
	agent = agent_new(base, NULL, NULL, NULL, err, sizeof(err));
	memset(&srv, 0, sizeof(srv));
	memset(&pl, 0, sizeof(pl));
	sent = 0;
	srv.status = 200;
	srv.http = evhttp_new(base);
	bs = evhttp_bind_socket_with_handle(srv.http, "127.0.0.1", 0);
	ck_assert_ptr_nonnull(bs);
	getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl);
	srv.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	evhttp_set_cb(srv.http, "/poll", srv_poll, &srv);
}

static void
teardown(void)
{
	lpoll_free(pl.lp);
	hub_free(hub);
	kit_free(pl.kit);
	http_client_free(pl.http);
	config_free(cfg);
	evhttp_free(srv.http);
	agent_free(agent);
	event_base_free(base);
	tmpdir_free(dir);
}

static void
run_for(int ms)
{
	uint64_t end = mono_msec() + (uint64_t)ms;

	while (mono_msec() < end) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(200);
	}
}

static void
run_until(const int *v, int want, int ms)
{
	uint64_t end = mono_msec() + (uint64_t)ms;

	while (*v < want && mono_msec() < end) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(200);
	}
	ck_assert_int_ge(*v, want);
}

START_TEST(test_cursor_committed_before_next_poll)
{
	struct lpoll_opts lo = { .floor_usec = 20000 };

	srv.events_per_poll = 3;
	srv.events_left = 30;
	worker_up(&lo);
	run_until(&sent, 30, 10000);
	run_for(100);
	ck_assert_int_eq(srv.cursor_mismatch, 0);
	ck_assert_str_eq(kit_cursor(pl.kit), "30");
	ck_assert_int_eq(sent, 30);                     /* every event answered once */
	ck_assert_int_eq(link_state(kit_link(pl.kit)), LINK_UP);
}
END_TEST

/* A server that answers at once with nothing: polls no closer than the floor. */
START_TEST(test_no_hot_loop)
{
	struct lpoll_opts lo = { .floor_usec = 250000 };

	worker_up(&lo);
	run_for(1000);
	ck_assert_int_ge(srv.polls, 2);
	ck_assert_int_le(srv.polls, 6);                 /* 1 s / 250 ms, +1 */
}
END_TEST

START_TEST(test_failure_backs_off_then_recovers)
{
	struct lpoll_opts lo = { .floor_usec = 20000 };
	int before;

	srv.status = 503;
	worker_up(&lo);
	run_for(600);
	ck_assert_int_eq(link_state(kit_link(pl.kit)), LINK_BACKOFF);
	ck_assert_str_eq(link_detail(kit_link(pl.kit)), "HTTP 503");
	before = srv.polls;
	ck_assert_int_le(before, 5);                    /* backoff of 200-400 ms */
	srv.status = 200;
	srv.events_per_poll = 1;
	srv.events_left = 1;
	run_until(&sent, 1, 5000);
	ck_assert_int_eq(link_state(kit_link(pl.kit)), LINK_UP);
}
END_TEST

/* The journal cannot be written: the cursor does not move on, the same events come again. */
START_TEST(test_failed_commit_keeps_cursor)
{
	struct lpoll_opts lo = { .floor_usec = 20000 };
	struct rlimit rl;
	struct stat st;
	char *path;

	signal(SIGXFSZ, SIG_IGN);
	worker_up(&lo);
	run_for(100);
	path = xasprintf("%s/console.journal", dir);
	ck_assert_int_eq(stat(path, &st), 0);
	getrlimit(RLIMIT_FSIZE, &rl);
	rl.rlim_cur = (rlim_t)st.st_size;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	srv.events_per_poll = 2;
	srv.events_left = 2;
	run_for(600);
	ck_assert_int_eq(sent, 0);
	/* never past the events the journal could not hold */
	ck_assert(kit_cursor(pl.kit) == NULL || strcmp(kit_cursor(pl.kit), "0") == 0);
	/* the server would send them again from the old cursor */
	srv.events_left = 2;
	srv.next_id = 0;
	rl.rlim_cur = RLIM_INFINITY;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	run_until(&sent, 2, 8000);
	run_for(100);
	ck_assert_int_eq(sent, 2);
	ck_assert_int_eq(srv.cursor_mismatch, 0);
	free(path);
}
END_TEST

static Suite *
lpoll_suite(void)
{
	Suite *s = suite_create("lpoll");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_cursor_committed_before_next_poll);
	tcase_add_test(tc, test_no_hot_loop);
	tcase_add_test(tc, test_failure_backs_off_then_recovers);
	tcase_add_test(tc, test_failed_commit_keeps_cursor);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(lpoll_suite)
