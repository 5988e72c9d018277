/*
 * test_kit.c - a platform on the kit against the real hub and the echo
 * agent: commit then delivery, replay after a crash with the same reply
 * key, failed commits never delivered, the stop sequence.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent.h"
#include "config.h"
#include "hub.h"
#include "kit.h"
#include "util.h"
#include "unit_util.h"

#define MAXSENT 64

/* A platform that is only the kit: it records send attempts and answers them. */
struct fakeplat {
	struct kit *kit;
	int manual;                     /* hold attempts instead of answering */
	struct outq_attempt *held[MAXSENT];
	int nheld;
	int nsent;
	char keys[MAXSENT][64], texts[MAXSENT][128], chats[MAXSENT][64];
	int connects, closes;
};

static struct event_base *base;
static struct agent *agent;
static struct config *cfg;
static struct hub *hub;
static char *dir;
static struct fakeplat fp;
static int commits_ok, commits_failed;

static void
fp_connect(void *plat)
{
	struct fakeplat *p = plat;

	p->connects++;
	link_up(kit_link(p->kit));
}

static void
fp_send(void *plat, const struct outq_piece *pc, struct outq_attempt *a)
{
	struct fakeplat *p = plat;
	int i = p->nsent++;

	ck_assert_int_lt(i, MAXSENT);
	snprintf(p->keys[i], sizeof(p->keys[i]), "%s", pc->key);
	snprintf(p->texts[i], sizeof(p->texts[i]), "%s", pc->text);
	snprintf(p->chats[i], sizeof(p->chats[i]), "%s", pc->chat_id);
	if (p->manual)
		p->held[p->nheld++] = a;
	else
		outq_result(a, OUTQ_OK, 0, NULL);
}

static void
fp_close(void *plat)
{
	struct fakeplat *p = plat;

	p->closes++;
	kit_closed(p->kit);
}

static const struct kit_ops fp_kit_ops = {
	.connect = fp_connect, .send = fp_send, .close = fp_close,
	.limits = { .max_text = 4096, .chat_rate = 1000, .chat_burst = 1000 },
	.link = { .floor_usec = 1000 },
};

static void *
fp_create(const struct plat_env *env, char *err, size_t errlen)
{
	(void)err;
	(void)errlen;
	fp.kit = kit_new(env, &fp_kit_ops, &fp);
	return &fp;
}

static void
fp_start(void *self)
{
	kit_start(((struct fakeplat *)self)->kit);
}

static void
fp_vsend(void *self, const struct outbound *m, plat_sent_fn cb, void *arg)
{
	kit_send(((struct fakeplat *)self)->kit, m, cb, arg);
}

static void
fp_stop(void *self, plat_stopped_fn cb, void *arg)
{
	kit_stop(((struct fakeplat *)self)->kit, cb, arg);
}

static void
fp_free(void *self)
{
	struct fakeplat *p = self;

	kit_free(p->kit);
	p->kit = NULL;
}

static struct platform_ops fp_ops = {
	.name = "console", .max_text = 4096, .create = fp_create, .start = fp_start,
	.send = fp_vsend, .stop = fp_stop, .free = fp_free,
};

static int finished_code;

static void
on_finished(void *arg, int code)
{
	(void)arg;
	finished_code = code;
}

/* A worker: the hub, the platform on the kit, started. */
static void
worker_up(void)
{
	char err[512];
	char *text = xasprintf("{\"state_dir\": \"%s\", \"drain_timeout\": 1, "
	    "\"platforms\": {\"console\": {\"allowed_users\": [\"u1\"]}}}", dir);
	char *sessions = xasprintf("%s/sessions", dir);
	struct hub_opts o;
	struct plat_env env;
	void *self;

	cfg = config_parse(text, "test", err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	free(text);
	ck_assert_int_eq(mkdir_p(sessions, 0700), 0);
	free(sessions);
	memset(&o, 0, sizeof(o));
	o.base = base;
	o.agent = agent;
	o.cfg = cfg;
	o.generation = 1;
	o.cb.finished = on_finished;
	hub = hub_new(&o);
	memset(&env, 0, sizeof(env));
	env.base = base;
	env.hub = hub;
	env.name = "console";
	env.state_dir = dir;
	env.listen_fd = -1;
	self = fp_create(&env, err, sizeof(err));
	ck_assert_msg(self != NULL, "%s", err);
	hub_add_platform(hub, config_platform(cfg, "console"), &fp_ops, self);
	hub_start(hub);
}

/* The worker goes away without a teardown (as a killed one would, but its
 * file descriptors are closed cleanly). */
static void
worker_gone(void)
{
	int i;

	hub_free(hub);
	fp_free(&fp);
	for (i = 0; i < fp.nheld; i++)  /* late answers land nowhere */
		outq_result(fp.held[i], OUTQ_OK, 0, NULL);
	fp.nheld = 0;
	config_free(cfg);
	hub = NULL;
	cfg = NULL;
}

static void
setup(void)
{
	char err[256];

	unsetenv("GATEWAY_ALLOWED_USERS");
	dir = tmpdir_new();
	setenv("HERMES_HOME", dir, 1);
	base = event_base_new();
	agent = agent_new(base, NULL, NULL, NULL, err, sizeof(err));
	ck_assert_ptr_nonnull(agent);
	memset(&fp, 0, sizeof(fp));
	commits_ok = commits_failed = 0;
	finished_code = -1;
}

static void
teardown(void)
{
	if (hub != NULL)
		worker_gone();
	agent_free(agent);
	event_base_free(base);
	tmpdir_free(dir);
}

static void
run_until_int(const int *v, int want)
{
	uint64_t end = mono_msec() + 10000;

	while (*v < want && mono_msec() < end) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (*v < want)
			usleep(300);
	}
	ck_assert_int_ge(*v, want);
}

static void
run_for(int ms)
{
	uint64_t end = mono_msec() + (uint64_t)ms;

	while (mono_msec() < end) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(300);
	}
}

static void
on_commit(void *arg, int ok)
{
	(void)arg;
	if (ok)
		commits_ok++;
	else
		commits_failed++;
}

static void
inbound(const char *id, const char *chat, const char *text, enum intake_add want)
{
	struct inbound m = { .chat_id = chat, .chat_type = CHAT_DM, .user_id = "u1",
		.message_id = id, .text = text, .time = 1700000000, .addressed = 1 };

	ck_assert_int_eq(kit_inbound(fp.kit, &m), want);
}

START_TEST(test_commit_then_answer)
{
	worker_up();
	inbound("m1", "c1", "hello", INTAKE_NEW);
	inbound("m2", "c2", "world", INTAKE_NEW);
	ck_assert_int_eq(fp.nsent, 0);
	kit_commit(fp.kit, "cursor-7", on_commit, NULL);
	run_until_int(&fp.nsent, 2);
	ck_assert_int_eq(commits_ok, 1);
	ck_assert_str_eq(fp.keys[0], "r.m1.0.0");
	ck_assert_str_eq(fp.texts[0], "hello");
	ck_assert_str_eq(fp.chats[1], "c2");
	ck_assert_str_eq(kit_cursor(fp.kit), "cursor-7");
	run_for(50);                    /* done marks reach the journal */
	inbound("m1", "c1", "hello", INTAKE_DUP);       /* handled: the server's redelivery */
	worker_gone();

	memset(&fp, 0, sizeof(fp));
	worker_up();
	run_for(100);
	ck_assert_int_eq(fp.nsent, 0);  /* nothing replayed */
	ck_assert_str_eq(kit_cursor(fp.kit), "cursor-7");
	inbound("m2", "c2", "world", INTAKE_DUP);
}
END_TEST

/* The reply was out when the worker went: the next answers again, posting once. */
START_TEST(test_replay_same_reply_key)
{
	int i, n = 0;

	worker_up();
	fp.manual = 1;
	inbound("m1", "c1", "hello", INTAKE_NEW);
	kit_commit(fp.kit, NULL, on_commit, NULL);
	run_until_int(&fp.nsent, 1);
	ck_assert_str_eq(fp.keys[0], "r.m1.0.0");
	run_for(20);
	worker_gone();                  /* the attempt never got its answer */

	memset(&fp, 0, sizeof(fp));
	worker_up();
	run_for(300);
	for (i = 0; i < fp.nsent; i++)
		if (strcmp(fp.keys[i], "r.m1.0.0") == 0)
			n++;
	ck_assert_int_eq(n, 1);         /* the kept piece and the new answer are one */
	ck_assert_int_eq(fp.nsent, 1);
	run_for(50);
	worker_gone();
	memset(&fp, 0, sizeof(fp));
	worker_up();
	run_for(200);
	ck_assert_int_eq(fp.nsent, 0);  /* handled for good */
}
END_TEST

/* A commit that cannot reach the disk: the hub never sees the message. */
START_TEST(test_failed_commit_not_delivered)
{
	struct rlimit rl;
	struct stat st;
	char *path, big[4096];

	signal(SIGXFSZ, SIG_IGN);
	worker_up();
	path = xasprintf("%s/console.journal", dir);
	ck_assert_int_eq(stat(path, &st), 0);
	getrlimit(RLIMIT_FSIZE, &rl);
	rl.rlim_cur = (rlim_t)st.st_size;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	inbound("m1", "c1", big, INTAKE_NEW);
	kit_commit(fp.kit, "c-new", on_commit, NULL);
	run_until_int(&commits_failed, 1);
	run_for(100);
	ck_assert_int_eq(fp.nsent, 0);
	ck_assert_ptr_null(kit_cursor(fp.kit));
	rl.rlim_cur = RLIM_INFINITY;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	/* the server delivers it again: now it is taken */
	inbound("m1", "c1", "again", INTAKE_NEW);
	kit_commit(fp.kit, "c-new", on_commit, NULL);
	run_until_int(&fp.nsent, 1);
	ck_assert_str_eq(fp.texts[0], "again");
	free(path);
}
END_TEST

START_TEST(test_stop_drains_then_closes)
{
	worker_up();
	run_until_int(&fp.connects, 1);
	inbound("m1", "c1", "bye", INTAKE_NEW);
	kit_commit(fp.kit, NULL, on_commit, NULL);
	run_until_int(&fp.nsent, 1);
	hub_shutdown(hub, 0);
	run_until_int(&finished_code, 0);
	ck_assert_int_eq(fp.closes, 1);
	ck_assert_int_eq(link_state(kit_link(fp.kit)), LINK_STOPPED);
}
END_TEST

/* Two long inbound ids with a common start: their replies' keys differ. */
START_TEST(test_long_ids_distinct_keys)
{
	char a[160], b[160];

	memset(a, 'x', 150);
	a[150] = '\0';
	memcpy(b, a, sizeof(b));
	a[149] = '1';
	b[149] = '2';
	worker_up();
	inbound(a, "c1", "one", INTAKE_NEW);
	inbound(b, "c1", "two", INTAKE_NEW);
	kit_commit(fp.kit, NULL, on_commit, NULL);
	run_until_int(&fp.nsent, 2);
	ck_assert_str_ne(fp.keys[0], fp.keys[1]);
	ck_assert_uint_lt(strlen(fp.keys[0]), 64);
}
END_TEST

/* Another process holds the journal: the platform waits, then takes it. */
START_TEST(test_journal_held_then_free)
{
	struct intake_opts io = { .base = base, .dir = dir, .name = "console" };
	char err[256];
	struct intake *other = intake_open(&io, err, sizeof(err));

	ck_assert_ptr_nonnull(other);
	worker_up();
	ck_assert_ptr_null(kit_intake(fp.kit));
	ck_assert_int_eq(fp.connects, 0);
	intake_free(other);
	run_until_int(&fp.connects, 1);         /* the retry (1 s) found it free */
	ck_assert_ptr_nonnull(kit_intake(fp.kit));
}
END_TEST

START_TEST(test_invalid_inbound)
{
	struct inbound m = { .chat_id = "c1", .user_id = "u1", .message_id = "has space",
		.text = "x" };

	worker_up();
	ck_assert_ptr_nonnull(kit_intake(fp.kit));
	ck_assert_int_eq(kit_inbound(fp.kit, &m), INTAKE_INVALID);
	m.message_id = NULL;
	ck_assert_int_eq(kit_inbound(fp.kit, &m), INTAKE_INVALID);
}
END_TEST

/* The "limits" object: known keys in range apply; anything else is a clear error. */
START_TEST(test_conf_limits)
{
	struct plat_env env = { .base = base, .name = "discord", .state_dir = "/nonexistent" };
	const char *bad[] = { "{\"limits\": 3}", "{\"limits\": {\"chat_rat\": 1}}",
		"{\"limits\": {\"chat_rate\": 0}}", "{\"limits\": {\"inflight\": \"8\"}}",
		"{\"limits\": {\"retry_for\": 1e9}}" };
	const char *want[] = { "platforms.discord.limits: must be an object",
		"platforms.discord.limits.chat_rat: unknown key",
		"platforms.discord.limits.chat_rate: must be a number from 0.001 to 1e+06",
		"platforms.discord.limits.inflight: must be a number from 1 to 1024",
		"platforms.discord.limits.retry_for: must be a number from 1 to 604800" };
	char err[256];
	struct kit *k;
	cJSON *conf;
	size_t i;

	for (i = 0; i < ARRAY_LEN(bad); i++) {
		conf = cJSON_Parse(bad[i]);
		env.conf = conf;
		k = kit_new(&env, &fp_kit_ops, &fp);
		err[0] = '\0';
		ck_assert_int_eq(kit_conf_limits(&env, k, err, sizeof(err)), -1);
		ck_assert_str_eq(err, want[i]);
		kit_free(k);
		cJSON_Delete(conf);
	}
	conf = cJSON_Parse("{\"limits\": {\"chat_rate\": 100, \"inflight\": 2}}");
	env.conf = conf;
	k = kit_new(&env, &fp_kit_ops, &fp);
	ck_assert_int_eq(kit_conf_limits(&env, k, err, sizeof(err)), 0);
	ck_assert(outq_get_limits(kit_outq(k))->chat_rate == 100);
	ck_assert_uint_eq(outq_get_limits(kit_outq(k))->inflight, 2);
	ck_assert_uint_eq(outq_get_limits(kit_outq(k))->max_text, 4096);
	ck_assert(outq_get_limits(kit_outq(k))->global_rate == fp_kit_ops.limits.global_rate);
	kit_free(k);
	cJSON_Delete(conf);
}
END_TEST

static Suite *
kit_suite(void)
{
	Suite *s = suite_create("kit");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_commit_then_answer);
	tcase_add_test(tc, test_replay_same_reply_key);
	tcase_add_test(tc, test_failed_commit_not_delivered);
	tcase_add_test(tc, test_stop_drains_then_closes);
	tcase_add_test(tc, test_journal_held_then_free);
	tcase_add_test(tc, test_invalid_inbound);
	tcase_add_test(tc, test_conf_limits);
	tcase_add_test(tc, test_long_ids_distinct_keys);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(kit_suite)
