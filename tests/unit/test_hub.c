/*
 * test_hub.c - the hub against a scripted platform and the echo agent:
 * authorization, sessions, ordering, commands, splitting, dedup, the
 * /restart transaction and the online notice.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent.h"
#include "commands.h"
#include "config.h"
#include "hub.h"
#include "restart.h"
#include "util.h"
#include "unit_util.h"

#define MAX_SENT 256

struct pending_cb {
	void (*cb)(void *, int);
	void *arg;
	int ok;
};

struct sent {
	char chat[64], thread[64], reply_to[64];
	char text[8192];
};

struct fake {
	struct event_base *base;
	struct hub *hub;
	struct sent sent[MAX_SENT];
	int nsent;
	int async;                      /* send callbacks from the loop, not inline */
	int hold;                       /* send callbacks only when stopping */
	struct pending_cb *held[MAX_SENT];
	int nheld;
	int fail_sends;
	int stop_calls;
	int dones_at_stop;
	int *dones;                     /* the test's done counter */
};

static struct fake fk;
static int dones;
static int finished_code;
static int stopping_code;
static char last_status[512];
static struct event_base *base;
static struct agent *agent;
static struct config *cfg;
static struct hub *hub;
static char *dir;
static uint64_t idle_ms;

static void
fake_start(void *self)
{
	struct fake *f = self;

	hub_platform_state(f->hub, "console", PLAT_UP, NULL);
}

static void
deliver(evutil_socket_t fd, short ev, void *arg)
{
	struct pending_cb *p = arg;

	(void)fd;
	(void)ev;
	p->cb(p->arg, p->ok);
	free(p);
}

static void
fake_send(void *self, const struct outbound *m, plat_sent_fn cb, void *arg)
{
	struct fake *f = self;
	struct sent *s;

	ck_assert_int_lt(f->nsent, MAX_SENT);
	s = &f->sent[f->nsent++];
	snprintf(s->chat, sizeof(s->chat), "%s", m->chat_id);
	snprintf(s->thread, sizeof(s->thread), "%s", m->thread_id != NULL ? m->thread_id : "");
	snprintf(s->reply_to, sizeof(s->reply_to), "%s", m->reply_to != NULL ? m->reply_to : "");
	snprintf(s->text, sizeof(s->text), "%s", m->text);
	if (f->hold) {
		struct pending_cb *p = xcalloc(1, sizeof(*p));

		p->cb = cb;
		p->arg = arg;
		f->held[f->nheld++] = p;
	} else if (f->async) {
		struct pending_cb *p = xcalloc(1, sizeof(*p));
		struct timeval tv = { 0, 1000 };

		p->cb = cb;
		p->arg = arg;
		p->ok = !f->fail_sends;
		ck_assert_int_eq(event_base_once(f->base, -1, EV_TIMEOUT, deliver, p, &tv), 0);
	} else
		cb(arg, !f->fail_sends);
}

static void
fake_stop(void *self, plat_stopped_fn cb, void *arg)
{
	struct fake *f = self;

	f->stop_calls++;
	f->dones_at_stop = dones;
	/* Sends still queued end (undelivered) when the platform stops. */
	while (f->nheld > 0) {
		struct pending_cb *p = f->held[--f->nheld];

		p->cb(p->arg, 0);
		free(p);
	}
	hub_platform_state(f->hub, "console", PLAT_STOPPED, NULL);
	cb(arg);
}

static void
fake_free(void *self)
{
	(void)self;
}

static struct platform_ops fake_ops = {
	.name = "console",
	.max_text = 4096,
	.start = fake_start,
	.send = fake_send,
	.stop = fake_stop,
	.free = fake_free,
};

static void
on_status(void *arg, const char *line)
{
	(void)arg;
	snprintf(last_status, sizeof(last_status), "%s", line);
}

static void
on_stopping(void *arg, int code)
{
	(void)arg;
	stopping_code = code;
}

static void
on_finished(void *arg, int code)
{
	(void)arg;
	finished_code = code;
}

static void
count_done(void *arg)
{
	int *n = arg;

	(*n)++;
}

/* Builds the hub on a config text (state_dir is filled in). */
static void
hub_up(const char *platform_json, unsigned long generation)
{
	char err[512];
	char *text = xasprintf("{\"state_dir\": \"%s\", \"drain_timeout\": 1, "
	    "\"platforms\": {\"console\": %s}}", dir, platform_json);
	struct hub_opts o;
	char *sessions = xasprintf("%s/sessions", dir);

	cfg = config_parse(text, "test", err, sizeof(err));
	ck_assert_msg(cfg != NULL, "%s", err);
	free(text);
	ck_assert_int_eq(mkdir_p(sessions, 0700), 0);
	free(sessions);
	memset(&o, 0, sizeof(o));
	o.base = base;
	o.agent = agent;
	o.cfg = cfg;
	o.supervisor_pid = 4242;
	o.generation = generation;
	o.session_idle_ms = idle_ms;
	o.cb.status = on_status;
	o.cb.stopping = on_stopping;
	o.cb.finished = on_finished;
	hub = hub_new(&o);
	fk.hub = hub;
	hub_add_platform(hub, config_platform(cfg, "console"), &fake_ops, &fk);
	hub_start(hub);
}

static void
hub_down(void)
{
	hub_free(hub);
	config_free(cfg);
	hub = NULL;
	cfg = NULL;
}

static void
setup(void)
{
	char err[256];

	unsetenv("GATEWAY_ALLOWED_USERS");
	unsetenv("GATEWAY_ALLOW_ALL_USERS");
	dir = tmpdir_new();
	setenv("HERMES_HOME", dir, 1);
	base = event_base_new();
	agent = agent_new(base, NULL, NULL, NULL, err, sizeof(err));
	ck_assert_ptr_nonnull(agent);
	memset(&fk, 0, sizeof(fk));
	fk.base = base;
	fake_ops.max_text = 4096;
	fake_ops.typing = NULL;
	dones = 0;
	idle_ms = 0;
	finished_code = -1;
	stopping_code = -1;
	last_status[0] = '\0';
}

static void
teardown(void)
{
	if (hub != NULL)
		hub_down();
	agent_free(agent);
	event_base_free(base);
	tmpdir_free(dir);
}

/* Runs the loop until *counter reaches want (or 15 s pass). */
static void
run_until(const int *counter, int want)
{
	uint64_t end = mono_msec() + 15000;

	while (*counter < want && mono_msec() < end) {
		event_base_loop(base, EVLOOP_NONBLOCK);
		if (*counter < want)
			usleep(500);
	}
}

/* Runs the loop for ms milliseconds. */
static void
run_for(int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

static void
post(const char *id, const char *chat, enum chat_type type, const char *user,
    const char *uname, const char *text, int addressed)
{
	struct inbound m = {
		.chat_id = chat, .chat_type = type, .user_id = user, .user_name = uname,
		.message_id = id, .text = text, .addressed = addressed,
		.thread_id = type == CHAT_THREAD ? "th1" : NULL,
	};

	hub_inbound(hub, "console", &m, count_done, &dones);
}

static void
dm(const char *id, const char *user, const char *text)
{
	post(id, "c1", CHAT_DM, user, NULL, text, 1);
}

START_TEST(test_echo_reply_after_send)
{
	hub_up("{\"allowed_users\": [\"alice\"]}", 0);
	fk.async = 1;
	dm("1", "alice", "hello there");
	/* done waits for the reply to be sent. */
	ck_assert_int_eq(dones, 0);
	run_until(&dones, 1);
	ck_assert_int_eq(dones, 1);
	ck_assert_int_eq(fk.nsent, 1);
	ck_assert_str_eq(fk.sent[0].text, "hello there");
	ck_assert_str_eq(fk.sent[0].chat, "c1");
	ck_assert_str_eq(fk.sent[0].reply_to, "1");
	ck_assert_ptr_nonnull(strstr(last_status, "console: up"));
}
END_TEST

static int typings;
static char typing_chat[64];

static void
fake_typing(void *self, const char *chat, const char *thread)
{
	(void)self;
	(void)thread;
	typings++;
	snprintf(typing_chat, sizeof(typing_chat), "%s", chat);
}

/* The hub shows "typing" while an agent call runs, refreshed, and stops with the reply. */
START_TEST(test_typing_while_agent_works)
{
	char err[256];
	cJSON *conf = cJSON_Parse("{\"backend\":\"exec\",\"command\":[\"/bin/sh\",\"-c\","
	    "\"sleep 1; cat\"]}");
	int after;

	agent_free(agent);
	agent = agent_new(base, NULL, NULL, conf, err, sizeof(err));
	ck_assert_msg(agent != NULL, "%s", err);
	cJSON_Delete(conf);
	fake_ops.typing = fake_typing;
	fake_ops.typing_every_ms = 200;
	typings = 0;
	hub_up("{\"allowed_users\": [\"alice\"]}", 0);
	dm("1", "alice", "think about it");
	run_until(&dones, 1);
	ck_assert_int_eq(fk.nsent, 1);
	ck_assert_str_eq(typing_chat, "c1");
	ck_assert_int_ge(typings, 3);           /* at the start, then every 200 ms for 1 s */
	ck_assert_int_le(typings, 8);
	after = typings;
	run_for(500);
	ck_assert_int_eq(typings, after);       /* not after the reply */
	fake_ops.typing = NULL;
	fake_ops.typing_every_ms = 0;
}
END_TEST

START_TEST(test_unauthorized)
{
	hub_up("{\"allowed_users\": [\"alice\", \"@Bob\"]}", 0);
	dm("1", "mallory", "hi");
	run_until(&dones, 1);
	ck_assert_int_eq(fk.nsent, 1);
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "not authorized"));
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "mallory"));
	/* In a group: silence, but done. */
	post("2", "g1", CHAT_GROUP, "mallory", NULL, "hi all", 1);
	run_until(&dones, 2);
	ck_assert_int_eq(dones, 2);
	ck_assert_int_eq(fk.nsent, 1);
	/* A user name matches "@name", case-insensitively. */
	post("3", "c2", CHAT_DM, "999", "bob", "from bob", 1);
	run_until(&dones, 3);
	ck_assert_int_eq(fk.nsent, 2);
	ck_assert_str_eq(fk.sent[1].text, "from bob");
	/* A refused user's commands are refused too. */
	dm("4", "mallory", "/status");
	run_until(&dones, 4);
	ck_assert_int_eq(fk.nsent, 3);
	ck_assert_ptr_nonnull(strstr(fk.sent[2].text, "not authorized"));
}
END_TEST

START_TEST(test_gateway_allowed_users)
{
	setenv("GATEWAY_ALLOWED_USERS", "carol", 1);
	hub_up("{\"allowed_users\": []}", 0);
	dm("1", "carol", "hey");
	dm("2", "dave", "hey");
	run_until(&dones, 2);
	ck_assert_int_eq(fk.nsent, 2);
	/* The refusal leaves at once; the agent's answer comes from the loop. */
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "not authorized"));
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "(user id dave)"));
	ck_assert_str_eq(fk.sent[1].text, "hey");
}
END_TEST

START_TEST(test_group_addressing)
{
	hub_up("{\"allowed_users\": [\"*\"]}", 0);
	post("1", "g1", CHAT_GROUP, "u1", NULL, "chatter", 0);
	ck_assert_int_eq(dones, 1);
	ck_assert_int_eq(fk.nsent, 0);
	post("2", "g1", CHAT_GROUP, "u1", NULL, "@bot hi", 1);
	run_until(&dones, 2);
	ck_assert_int_eq(fk.nsent, 1);
	post("3", "g1", CHAT_THREAD, "u1", NULL, "in a thread", 1);
	run_until(&dones, 3);
	ck_assert_int_eq(fk.nsent, 2);
	ck_assert_str_eq(fk.sent[1].thread, "th1");
}
END_TEST

START_TEST(test_duplicates)
{
	hub_up("{}", 0);
	fk.async = 1;
	dm("7", "local", "once");
	/* The same id while the first copy is in progress: done at once, no second answer. */
	dm("7", "local", "once");
	ck_assert_int_eq(dones, 1);
	run_until(&dones, 2);
	/* And again after it was handled. */
	dm("7", "local", "once");
	ck_assert_int_eq(dones, 3);
	run_for(50);
	ck_assert_int_eq(fk.nsent, 1);
}
END_TEST

START_TEST(test_order_within_session)
{
	char id[8], text[16];
	int i;

	hub_up("{}", 0);
	fk.async = 1;
	for (i = 0; i < 20; i++) {
		snprintf(id, sizeof(id), "%d", i);
		snprintf(text, sizeof(text), "msg %d", i);
		dm(id, "local", text);
	}
	run_until(&dones, 20);
	ck_assert_int_eq(fk.nsent, 20);
	for (i = 0; i < 20; i++) {
		snprintf(text, sizeof(text), "msg %d", i);
		ck_assert_str_eq(fk.sent[i].text, text);
	}
}
END_TEST

START_TEST(test_history_persisted)
{
	char *path, *text;

	hub_up("{}", 0);
	dm("1", "local", "remember me");
	run_until(&dones, 1);
	hub_shutdown(hub, 0);
	run_until(&finished_code, 0);
	ck_assert_int_eq(finished_code, 0);
	path = xasprintf("%s/sessions/console:c1.json", dir);
	text = read_file(path, 1 << 20, NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_nonnull(strstr(text, "\"role\":\"user\",\"content\":\"remember me\""));
	ck_assert_ptr_nonnull(strstr(text, "\"role\":\"assistant\""));
	free(text);
	/* /new forgets it. */
	hub_down();
	hub_up("{}", 1);
	dm("2", "local", "/new");
	run_until(&dones, 2);
	ck_assert_ptr_nonnull(strstr(fk.sent[fk.nsent - 1].text, "new conversation"));
	ck_assert_int_eq(access(path, F_OK), -1);
	free(path);
}
END_TEST

START_TEST(test_commands)
{
	hub_up("{\"admins\": [\"boss\"]}", 3);
	dm("1", "local", "/ping");
	dm("2", "local", "/whoami");
	dm("3", "local", "/status");
	dm("4", "local", "/help");
	dm("5", "local", "/stop");
	dm("6", "local", "/unknowncmd");
	run_until(&dones, 6);
	ck_assert_int_eq(fk.nsent, 6);
	ck_assert_str_eq(fk.sent[0].text, "pong");
	ck_assert_str_eq(fk.sent[0].reply_to, "1");
	ck_assert_ptr_nonnull(strstr(fk.sent[1].text, "user id: local"));
	ck_assert_ptr_nonnull(strstr(fk.sent[1].text, "admin: no"));
	ck_assert_ptr_nonnull(strstr(fk.sent[2].text, "supervisor pid: 4242"));
	ck_assert_ptr_nonnull(strstr(fk.sent[2].text, "generation: 3"));
	ck_assert_ptr_nonnull(strstr(fk.sent[2].text, "console: up"));
	ck_assert_ptr_nonnull(strstr(fk.sent[2].text, "agent: echo"));
	ck_assert_ptr_nonnull(strstr(fk.sent[3].text, "/restart"));
	ck_assert_ptr_nonnull(strstr(fk.sent[4].text, "Nothing is running"));
	/* Unknown commands go to the agent (the echo answers them). */
	ck_assert_str_eq(fk.sent[5].text, "/unknowncmd");
}
END_TEST

/* The hub's count of running agent calls. */
static int
hub_running(void)
{
	cJSON *st = hub_status_json(hub);
	int n = cJSON_GetObjectItem(st, "running")->valueint;

	cJSON_Delete(st);
	return n;
}

/* Replaces the echo agent with one whose calls run until cancelled. */
static void
use_slow_agent(void)
{
	cJSON *conf = cJSON_Parse("{\"backend\": \"exec\", \"timeout\": 60, "
	    "\"command\": [\"/bin/sleep\", \"30\"]}");
	char err[256];

	agent_free(agent);
	agent = agent_new(base, NULL, NULL, conf, err, sizeof(err));
	ck_assert_msg(agent != NULL, "%s", err);
	cJSON_Delete(conf);
}

START_TEST(test_stop_only_own_call_in_shared_session)
{
	use_slow_agent();
	hub_up("{\"allowed_users\": [\"*\"], \"admins\": [\"boss\"]}", 0);
	/* A forum topic: one session shared by its members. */
	post("1", "g1", CHAT_THREAD, "alice", NULL, "a long question", 1);
	ck_assert_int_eq(hub_running(), 1);
	post("2", "g1", CHAT_THREAD, "mallory", NULL, "/stop", 1);
	run_until(&dones, 1);
	ck_assert_int_eq(fk.nsent, 1);
	ck_assert_str_eq(fk.sent[0].text, CMD_STOP_REFUSED);
	ck_assert_int_eq(hub_running(), 1);
	/* Its owner may. */
	post("3", "g1", CHAT_THREAD, "alice", NULL, "/stop", 1);
	run_until(&dones, 3);
	ck_assert_int_eq(hub_running(), 0);
	ck_assert_str_eq(fk.sent[1].text, "Stopped the agent's running answer.");
	/* So may an admin, anyone's. */
	post("4", "g1", CHAT_THREAD, "alice", NULL, "another long one", 1);
	ck_assert_int_eq(hub_running(), 1);
	post("5", "g1", CHAT_THREAD, "boss", NULL, "/stop", 1);
	run_until(&dones, 5);
	ck_assert_int_eq(hub_running(), 0);
	ck_assert_str_eq(fk.sent[2].text, "Stopped the agent's running answer.");
}
END_TEST

START_TEST(test_split_to_max_text)
{
	char big[200];
	int i;
	size_t total = 0;

	fake_ops.max_text = 16;
	hub_up("{}", 0);
	big[0] = '\0';
	for (i = 0; i < 20; i++)
		strcat(big, i ? " word" : "word");
	dm("1", "local", big);
	run_until(&dones, 1);
	ck_assert_int_gt(fk.nsent, 3);
	for (i = 0; i < fk.nsent; i++) {
		ck_assert_uint_le(strlen(fk.sent[i].text), 16);
		ck_assert_str_eq(fk.sent[i].reply_to, "1");
		total += strlen(fk.sent[i].text) + 1;
	}
	ck_assert_uint_eq(total - 1, strlen(big));
	/* A piece that fails ends the text (no tail without its beginning); still done. */
	fk.nsent = 0;
	fk.fail_sends = 1;
	dm("2", "local", big);
	run_until(&dones, 2);
	ck_assert_int_eq(dones, 2);
	ck_assert_int_eq(fk.nsent, 1);
}
END_TEST

START_TEST(test_restart_refused_for_non_admin)
{
	hub_up("{\"allowed_users\": [\"*\"], \"admins\": [\"boss\"]}", 0);
	dm("1", "someone", "/restart");
	run_until(&dones, 1);
	ck_assert_int_eq(fk.nsent, 1);
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "Only an admin"));
	run_for(30);
	ck_assert_int_eq(finished_code, -1);
	ck_assert_int_eq(stopping_code, -1);
	ck_assert_int_eq(fk.stop_calls, 0);
	/* Everyone allowed and no admins: nobody may restart. */
	hub_down();
	hub_up("{\"allowed_users\": [\"*\"], \"admins\": []}", 0);
	dm("2", "someone", "/restart");
	run_until(&dones, 2);
	ck_assert_ptr_nonnull(strstr(fk.sent[1].text, "Only an admin"));
	/* An explicit allowlist and no admins: its users may (as the Python gateway did). */
	hub_down();
	hub_up("{\"allowed_users\": [\"alice\"], \"admins\": []}", 0);
	dm("3", "alice", "/restart");
	run_until(&finished_code, 75);
	ck_assert_int_eq(finished_code, 75);
}
END_TEST

START_TEST(test_restart_transaction)
{
	struct restart_marker *mk;
	char *handled, *path;
	int before;

	hub_up("{\"admins\": [\"boss\"], \"allowed_users\": [\"*\"]}", 6);
	fk.async = 1;
	post("41", "g9", CHAT_THREAD, "boss", NULL, "/restart", 1);
	run_until(&finished_code, 75);
	ck_assert_int_eq(finished_code, 75);
	ck_assert_int_eq(stopping_code, 75);
	ck_assert_int_eq(fk.nsent, 1);
	ck_assert_str_eq(fk.sent[0].text, "Restarting the gateway...");
	ck_assert_str_eq(fk.sent[0].thread, "th1");
	/* The /restart was done (acknowledged) before the platform was stopped. */
	ck_assert_int_eq(dones, 1);
	ck_assert_int_eq(fk.stop_calls, 1);
	ck_assert_int_eq(fk.dones_at_stop, 1);
	mk = restart_marker_read(dir);
	ck_assert_ptr_nonnull(mk);
	ck_assert_str_eq(mk->platform, "console");
	ck_assert_str_eq(mk->chat_id, "g9");
	ck_assert_str_eq(mk->thread_id, "th1");
	ck_assert_str_eq(mk->message_id, "41");
	ck_assert_uint_eq(mk->generation, 6);
	restart_marker_free(mk);
	path = xasprintf("%s/console.handled", dir);
	handled = read_file(path, 1 << 20, NULL);
	ck_assert_ptr_nonnull(handled);
	ck_assert_ptr_nonnull(strstr(handled, "41\n"));
	free(handled);
	free(path);
	ck_assert_ptr_nonnull(strstr(last_status, "restarting"));
	/* While restarting nothing new is taken: done is never called. */
	before = dones;
	dm("42", "boss", "late message");
	run_for(20);
	ck_assert_int_eq(dones, before);

	/* The next generation: the redelivered /restart is recognized and not run again. */
	hub_down();
	finished_code = -1;
	memset(&fk.sent, 0, sizeof(fk.sent));
	fk.nsent = 0;
	hub_up("{\"admins\": [\"boss\"], \"allowed_users\": [\"*\"]}", 7);
	run_until(&fk.nsent, 1);
	ck_assert_int_eq(fk.nsent, 1);
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "Gateway online (generation 7, restarted in "));
	ck_assert_str_eq(fk.sent[0].chat, "g9");
	ck_assert_str_eq(fk.sent[0].thread, "th1");
	run_for(20);
	ck_assert_ptr_null(restart_marker_read(dir));
	before = dones;
	post("41", "g9", CHAT_THREAD, "boss", NULL, "/restart", 1);
	ck_assert_int_eq(dones, before + 1);
	run_for(30);
	ck_assert_int_eq(finished_code, -1);
	ck_assert_int_eq(fk.nsent, 1);
}
END_TEST

START_TEST(test_restart_without_marker)
{
	char *blocker = xasprintf("%s/restart.json", dir);
	int i, home = 0;

	/* A directory where the marker goes: it cannot be written. */
	ck_assert_int_eq(mkdir(blocker, 0700), 0);
	hub_up("{\"admins\": [\"boss\"], \"home_channel\": \"home1\"}", 0);
	dm("7", "boss", "/restart");
	run_until(&finished_code, 75);
	ck_assert_int_eq(finished_code, 75);
	ck_assert_int_eq(fk.nsent, 1);
	ck_assert_str_eq(fk.sent[0].chat, "c1");
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "Restarting the gateway..."));
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "marker could not be saved"));
	ck_assert_ptr_nonnull(strstr(fk.sent[0].text, "no \"Gateway online\" notice will follow"));

	/* The next worker knows no chat, but the home channel hears it is back, once. */
	hub_down();
	finished_code = -1;
	memset(&fk.sent, 0, sizeof(fk.sent));
	fk.nsent = 0;
	fk.fail_sends = 1;
	hub_up("{\"admins\": [\"boss\"], \"home_channel\": \"home1\"}", 4);
	run_for(20);
	fk.fail_sends = 0;
	fk.nsent = 0;
	hub_platform_state(hub, "console", PLAT_BACKOFF, "reconnecting");
	hub_platform_state(hub, "console", PLAT_UP, NULL);
	run_for(20);
	hub_platform_state(hub, "console", PLAT_BACKOFF, "again");
	hub_platform_state(hub, "console", PLAT_UP, NULL);
	run_for(20);
	for (i = 0; i < fk.nsent; i++) {
		ck_assert_str_eq(fk.sent[i].chat, "home1");
		ck_assert_str_eq(fk.sent[i].text, "Gateway online (generation 4)");
		home++;
	}
	ck_assert_int_eq(home, 1);

	/* A home channel that asked gets the plain reply: its notice will come. */
	hub_down();
	memset(&fk.sent, 0, sizeof(fk.sent));
	fk.nsent = 0;
	hub_up("{\"admins\": [\"boss\"], \"home_channel\": \"c1\"}", 0);
	dm("8", "boss", "/restart");
	run_until(&finished_code, 75);
	ck_assert_str_eq(fk.sent[0].text, "Restarting the gateway...");
	/* No home channel, no marker: a restarted worker stays silent. */
	hub_down();
	memset(&fk.sent, 0, sizeof(fk.sent));
	fk.nsent = 0;
	hub_up("{}", 5);
	run_for(20);
	ck_assert_int_eq(fk.nsent, 0);
	rmdir(blocker);
	free(blocker);
}
END_TEST

START_TEST(test_restart_ack_wait_is_bounded)
{
	uint64_t t0;
	struct restart_marker *mk;

	hub_up("{}", 0);
	/*
	 * The platform never confirms the "Restarting..." reply: the restart
	 * goes on after HUB_ACK_WAIT_USEC, and teardown waits HUB_SEND_WAIT_USEC
	 * for that send before stopping the platform (about 10 s in all).
	 */
	fk.hold = 1;
	t0 = mono_msec();
	dm("5", "local", "/restart");
	run_until(&finished_code, 75);
	ck_assert_int_eq(finished_code, 75);
	ck_assert_uint_ge(mono_msec() - t0, HUB_ACK_WAIT_USEC / 1000 - 50);
	ck_assert_int_eq(dones, 1);
	ck_assert_int_eq(fk.dones_at_stop, 1);
	mk = restart_marker_read(dir);
	ck_assert_ptr_nonnull(mk);
	ck_assert_str_eq(mk->message_id, "5");
	restart_marker_free(mk);
}
END_TEST

START_TEST(test_online_notice_home_channel_and_retry)
{
	struct restart_marker m = { .platform = "console", .chat_id = "c5", .message_id = "9" };
	struct restart_marker *r;
	int i, home = 0, chat = 0;

	restart_marker_stamp(&m);
	ck_assert_int_eq(restart_marker_write(dir, &m), 0);
	/* The notice fails: the marker stays for a later attempt. */
	fk.fail_sends = 1;
	hub_up("{\"home_channel\": \"home1\"}", 2);
	run_for(20);
	r = restart_marker_read(dir);
	ck_assert_ptr_nonnull(r);
	restart_marker_free(r);
	/* The platform comes up again and the notice goes through. */
	fk.fail_sends = 0;
	fk.nsent = 0;
	hub_platform_state(hub, "console", PLAT_BACKOFF, "reconnecting");
	hub_platform_state(hub, "console", PLAT_UP, NULL);
	run_for(20);
	for (i = 0; i < fk.nsent; i++) {
		ck_assert_ptr_nonnull(strstr(fk.sent[i].text, "Gateway online (generation 2"));
		if (strcmp(fk.sent[i].chat, "home1") == 0)
			home++;
		if (strcmp(fk.sent[i].chat, "c5") == 0)
			chat++;
	}
	ck_assert_int_eq(home, 1);
	ck_assert_int_eq(chat, 1);
	ck_assert_ptr_null(restart_marker_read(dir));
	/* Once only. */
	hub_platform_state(hub, "console", PLAT_BACKOFF, "again");
	hub_platform_state(hub, "console", PLAT_UP, NULL);
	run_for(20);
	ck_assert_int_eq(fk.nsent, 2);
}
END_TEST

/*
 * A /restart that arrives while the previous restart's online notice is still
 * in flight: that notice, once delivered, must not remove the new marker.
 */
START_TEST(test_restart_during_online_notice_keeps_new_marker)
{
	struct restart_marker m = { .platform = "console", .chat_id = "c5", .message_id = "9" };
	struct restart_marker *r;
	struct pending_cb *p;

	restart_marker_stamp(&m);
	ck_assert_int_eq(restart_marker_write(dir, &m), 0);
	fk.hold = 1;
	hub_up("{\"admins\": [\"boss\"], \"allowed_users\": [\"*\"]}", 2);
	run_for(20);
	ck_assert_int_eq(fk.nheld, 1);                 /* the online notice, in flight */
	dm("50", "boss", "/restart");
	run_for(20);
	r = restart_marker_read(dir);
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(r->message_id, "50");
	restart_marker_free(r);
	/* the old notice is delivered now */
	p = fk.held[0];
	memmove(fk.held, fk.held + 1, (size_t)--fk.nheld * sizeof(fk.held[0]));
	p->cb(p->arg, 1);
	free(p);
	run_for(20);
	r = restart_marker_read(dir);
	ck_assert_msg(r != NULL, "the new /restart's marker was removed");
	ck_assert_str_eq(r->message_id, "50");
	restart_marker_free(r);
	/* nor is the old notice sent again while restarting */
	hub_platform_state(hub, "console", PLAT_BACKOFF, "reconnecting");
	hub_platform_state(hub, "console", PLAT_UP, NULL);
	run_for(20);
	ck_assert_int_eq(fk.nsent, 2);
}
END_TEST

START_TEST(test_marker_for_other_platform_stays)
{
	struct restart_marker m = { .platform = "telegram", .chat_id = "c5" };
	struct restart_marker *r;

	restart_marker_stamp(&m);
	ck_assert_int_eq(restart_marker_write(dir, &m), 0);
	hub_up("{}", 1);
	run_for(20);
	ck_assert_int_eq(fk.nsent, 0);
	r = restart_marker_read(dir);
	ck_assert_ptr_nonnull(r);
	restart_marker_free(r);
}
END_TEST

START_TEST(test_status_json)
{
	cJSON *st;

	hub_up("{}", 9);
	dm("1", "local", "hi");
	run_until(&dones, 1);
	hub_platform_state(hub, "console", PLAT_BACKOFF, "connection refused");
	st = hub_status_json(hub);
	ck_assert_int_eq((int)cJSON_GetObjectItem(st, "worker_pid")->valuedouble, (int)getpid());
	ck_assert_int_eq((int)cJSON_GetObjectItem(st, "supervisor_pid")->valuedouble, 4242);
	ck_assert_int_eq((int)cJSON_GetObjectItem(st, "generation")->valuedouble, 9);
	ck_assert(cJSON_IsNumber(cJSON_GetObjectItem(st, "uptime")));
	ck_assert_str_eq(cJSON_GetObjectItem(st, "agent")->valuestring, "echo");
	ck_assert_int_eq((int)cJSON_GetObjectItem(st, "sessions")->valuedouble, 1);
	ck_assert_int_gt((int)cJSON_GetObjectItem(st, "memory_kb")->valuedouble, 0);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(st,
	    "platforms"), 0), "state")->valuestring, "backoff");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(st,
	    "platforms"), 0), "detail")->valuestring, "connection refused");
	ck_assert_str_eq(last_status, "console: backoff (connection refused)");
	cJSON_Delete(st);
}
END_TEST

START_TEST(test_idle_sessions_leave_memory)
{
	cJSON *st;
	char *path;

	idle_ms = 60;
	hub_up("{}", 0);
	dm("1", "local", "keep this");
	run_until(&dones, 1);
	st = hub_status_json(hub);
	ck_assert_int_eq((int)cJSON_GetObjectItem(st, "sessions")->valuedouble, 1);
	cJSON_Delete(st);
	run_for(300);
	st = hub_status_json(hub);
	ck_assert_int_eq((int)cJSON_GetObjectItem(st, "sessions")->valuedouble, 0);
	cJSON_Delete(st);
	/* Saved before it left, and loaded again when the chat goes on. */
	path = xasprintf("%s/sessions/console:c1.json", dir);
	ck_assert_int_eq(access(path, F_OK), 0);
	free(path);
	dm("2", "local", "more");
	run_until(&dones, 2);
	ck_assert_int_eq(fk.nsent, 2);
	hub_shutdown(hub, 0);
	run_until(&finished_code, 0);
	path = xasprintf("%s/sessions/console:c1.json", dir);
	{
		char *text = read_file(path, 1 << 20, NULL);

		ck_assert_ptr_nonnull(strstr(text, "keep this"));
		ck_assert_ptr_nonnull(strstr(text, "more"));
		free(text);
	}
	free(path);
}
END_TEST

START_TEST(test_signal_restart_and_stop)
{
	hub_up("{}", 0);
	hub_restart(hub);
	run_until(&finished_code, 75);
	ck_assert_int_eq(finished_code, 75);
	ck_assert_int_eq(fk.stop_calls, 1);
	/* No chat: no marker. */
	ck_assert_ptr_null(restart_marker_read(dir));
	hub_down();
	finished_code = -1;
	hub_up("{}", 0);
	hub_shutdown(hub, 0);
	hub_shutdown(hub, 0);
	run_until(&finished_code, 0);
	ck_assert_int_eq(finished_code, 0);
	ck_assert_int_eq(fk.stop_calls, 2);
}
END_TEST

static Suite *
hub_suite(void)
{
	Suite *s = suite_create("hub");
	TCase *tc = tcase_create("hub");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_echo_reply_after_send);
	tcase_add_test(tc, test_unauthorized);
	tcase_add_test(tc, test_gateway_allowed_users);
	tcase_add_test(tc, test_group_addressing);
	tcase_add_test(tc, test_duplicates);
	tcase_add_test(tc, test_order_within_session);
	tcase_add_test(tc, test_history_persisted);
	tcase_add_test(tc, test_commands);
	tcase_add_test(tc, test_stop_only_own_call_in_shared_session);
	tcase_add_test(tc, test_split_to_max_text);
	tcase_add_test(tc, test_restart_refused_for_non_admin);
	tcase_add_test(tc, test_restart_transaction);
	tcase_add_test(tc, test_restart_without_marker);
	tcase_add_test(tc, test_restart_ack_wait_is_bounded);
	tcase_add_test(tc, test_online_notice_home_channel_and_retry);
	tcase_add_test(tc, test_restart_during_online_notice_keeps_new_marker);
	tcase_add_test(tc, test_marker_for_other_platform_stays);
	tcase_add_test(tc, test_status_json);
	tcase_add_test(tc, test_idle_sessions_leave_memory);
	tcase_add_test(tc, test_signal_restart_and_stop);
	tcase_add_test(tc, test_typing_while_agent_works);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(hub_suite)
