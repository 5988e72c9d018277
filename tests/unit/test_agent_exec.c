/* test_agent_exec.c - the exec backend with small /bin/sh scripts in a temp dir. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent.h"
#include "util.h"
#include "agent_fixture.h"
#include "unit_util.h"

static char dir[] = "/tmp/hermes-exec-XXXXXX";
static struct event_base *base;

static void
setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	base = event_base_new();
}

static void
teardown(void)
{
	event_base_free(base);
}

/* Writes an executable /bin/sh script dir/name with body; returns its path. */
static const char *
script(const char *name, const char *body)
{
	static char path[4][512];
	static int slot;
	char *p = path[slot++ % 4];
	FILE *f;

	snprintf(p, sizeof(path[0]), "%s/%s", dir, name);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "#!/bin/sh\n%s\n", body);
	fclose(f);
	chmod(p, 0755);
	return p;
}

/* An exec agent with command json (an array) and extra members. */
static struct agent *
make_agent(const char *command, const char *extra, char *err, size_t errlen)
{
	char json[2048];
	cJSON *conf;
	struct agent *a;

	snprintf(json, sizeof(json), "{\"backend\":\"exec\",\"command\":%s%s%s}", command,
	    extra[0] ? "," : "", extra);
	conf = cJSON_Parse(json);
	ck_assert_msg(conf != NULL, "bad test JSON %s", json);
	err[0] = '\0';
	a = agent_new(base, NULL, NULL, conf, err, errlen);
	cJSON_Delete(conf);
	return a;
}

/* A command array naming one script. */
static const char *
cmd(const char *path)
{
	static char b[4][600];
	static int slot;
	char *p = b[slot++ % 4];

	snprintf(p, sizeof(b[0]), "[\"%s\"]", path);
	return p;
}

static void
ask(struct agent *a, const char *text, const cJSON *history, struct reply *r)
{
	struct agent_req req = { .session = "console:c1", .platform = "console",
	    .chat_id = "c1", .user_id = "u1", .text = text, .history = history };

	memset(r, 0, sizeof(*r));
	ck_assert_ptr_nonnull(agent_call(a, &req, reply_cb, r));
	ck_assert_int_eq(r->done, 0);
	{
		uint64_t end = mono_msec() + 20000;

		while (!r->done && mono_msec() < end) {
			struct timeval tv = { 0, 20000 };

			event_base_loopexit(base, &tv);
			event_base_loop(base, EVLOOP_ONCE);
		}
	}
	ck_assert_msg(r->done, "no reply to %s", text);
	ck_assert_int_eq(r->calls, 1);
}

static void
run_for(double secs)
{
	uint64_t end = mono_msec() + (uint64_t)(secs * 1000);

	while (mono_msec() < end) {
		struct timeval tv = { 0, 20000 };

		event_base_loopexit(base, &tv);
		event_base_loop(base, EVLOOP_ONCE);
	}
}

/* One script, one question, one expected reply. */
static void
expect(const char *body, const char *extra, const char *text, int ok, const char *want)
{
	struct agent *a;
	struct reply r;
	char err[256];

	a = make_agent(cmd(script("s.sh", body)), extra, err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ask(a, text, NULL, &r);
	ck_assert_msg(r.ok == ok && strstr(r.text, want) != NULL,
	    "got ok=%d \"%s\", wanted ok=%d \"%s\"", r.ok, r.text, ok, want);
	if (!ok)
		ck_assert_msg(strncmp(r.text, "the agent is unreachable: ", 26) == 0, "%s", r.text);
	agent_free(a);
}

/* Reads a small file into buf. */
static void
slurp(const char *name, char *buf, size_t len)
{
	char path[512];
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	ck_assert_msg(f != NULL, "no %s", path);
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
}

/* Whether pid names a live process (neither gone nor a zombie waiting for init). */
static int
proc_alive(pid_t pid)
{
	char path[64], buf[512], *rp, state;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	if ((f = fopen(path, "r")) == NULL)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	rp = strrchr(buf, ')');
	return rp != NULL && sscanf(rp + 1, " %c", &state) == 1 && state != 'Z';
}

/*
 * Runs the loop until the pid written in dir/name is gone (10 s at most):
 * reaped, or for a process left to init, at least dead.  One still alive
 * at the end is killed, so that a failing test leaves nothing behind.
 */
static int
wait_gone(const char *name, int reaped)
{
	char buf[32];
	pid_t pid;
	uint64_t end = mono_msec() + 10000;

	slurp(name, buf, sizeof(buf));
	pid = (pid_t)atoi(buf);
	ck_assert_int_gt(pid, 1);
	while (mono_msec() < end) {
		if (reaped ? kill(pid, 0) < 0 && errno == ESRCH : !proc_alive(pid))
			return 1;
		run_for(0.05);
	}
	kill(pid, SIGKILL);
	return 0;
}

/* The command's own process: killed and reaped. */
static int
pid_gone(const char *name)
{
	return wait_gone(name, 1);
}

/* A process the command left behind (init reaps it). */
static int
left_gone(const char *name)
{
	return wait_gone(name, 0);
}

START_TEST(test_reply_and_input)
{
	char body[512], input[8192];
	cJSON *history = cJSON_Parse("[{\"role\":\"user\",\"content\":\"before\"},"
	    "{\"role\":\"assistant\",\"content\":\"answer\"}]");
	cJSON *in;
	struct agent *a;
	struct reply r;
	char err[256];

	snprintf(body, sizeof(body), "cat > %s/input.json\nprintf 'line one\\nline two\\n\\n'",
	    dir);
	a = make_agent(cmd(script("ok.sh", body)), "", err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert_str_eq(agent_backend(a), "exec");
	ask(a, "hello \"quoted\" \xc3\xa9", history, &r);
	ck_assert_int_eq(r.ok, 1);
	ck_assert_str_eq(r.text, "line one\nline two");
	slurp("input.json", input, sizeof(input));
	in = cJSON_Parse(input);
	ck_assert_msg(in != NULL, "input not JSON: %s", input);
	ck_assert_str_eq(cJSON_GetObjectItem(in, "session")->valuestring, "console:c1");
	ck_assert_str_eq(cJSON_GetObjectItem(in, "platform")->valuestring, "console");
	ck_assert_str_eq(cJSON_GetObjectItem(in, "chat")->valuestring, "c1");
	ck_assert_str_eq(cJSON_GetObjectItem(in, "user")->valuestring, "u1");
	ck_assert_str_eq(cJSON_GetObjectItem(in, "text")->valuestring,
	    "hello \"quoted\" \xc3\xa9");
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(in, "history")), 2);
	cJSON_Delete(in);
	/* Without history: an empty array. */
	ask(a, "no history", NULL, &r);
	slurp("input.json", input, sizeof(input));
	in = cJSON_Parse(input);
	ck_assert(cJSON_IsArray(cJSON_GetObjectItem(in, "history")));
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(in, "history")), 0);
	cJSON_Delete(in);
	cJSON_Delete(history);
	agent_free(a);
}
END_TEST

START_TEST(test_argv_without_shell)
{
	struct agent *a;
	struct reply r;
	char err[256];

	a = make_agent("[\"echo\", \"a  b\", \"$HOME\", \";\", \"`id`\", \"*\"]", "",
	    err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ask(a, "x", NULL, &r);
	ck_assert_int_eq(r.ok, 1);
	ck_assert_str_eq(r.text, "a  b $HOME ; `id` *");
	agent_free(a);
}
END_TEST

/* The value of NAME in the output of env(1), or NULL; static storage. */
static const char *
env_value(const char *out, const char *name)
{
	static char v[256];
	const char *p = out;
	size_t n = strlen(name);

	while (p != NULL && *p != '\0') {
		if (strncmp(p, name, n) == 0 && p[n] == '=') {
			size_t len = strcspn(p + n + 1, "\n");

			snprintf(v, sizeof(v), "%.*s", (int)len, p + n + 1);
			return v;
		}
		p = strchr(p, '\n');
		p = p != NULL ? p + 1 : NULL;
	}
	return NULL;
}

START_TEST(test_environment_scrubbed)
{
	static const char *const secrets[][2] = {
		{ "TELEGRAM_BOT_TOKEN", "123456:tg-secret-value" },
		{ "OPENAI_API_KEY", "sk-secret-openai-value" },
		{ "HERMES_CONSOLE_TOKEN", "console-secret-value" },
		{ "HERMES_EXEC_TEST_VAR", "not-allowlisted-value" },
		{ "NOTIFY_SOCKET", "/run/hermes/notify" },
		{ "WATCHDOG_USEC", "1000000" },
		{ "LISTEN_FDS", "1" },
	};
	struct agent *a;
	struct reply r;
	char err[256], extra[512];
	size_t i;

	for (i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		setenv(secrets[i][0], secrets[i][1], 1);
	setenv("HOME", "/home/hermes-test", 1);
	setenv("LANG", "C.UTF-8", 1);
	setenv("LC_TIME", "C", 1);
	setenv("TZ", "UTC", 1);
	setenv("HERMES_PASSED", "passed-value", 1);
	setenv("HERMES_HOME", dir, 1);
	file_put(dir, ".env", "DOTENV_ONLY=from-dotenv\n", 0600);
	snprintf(extra, sizeof(extra), "\"pass_env\":[\"HERMES_PASSED\",\"DOTENV_ONLY\","
	    "\"HERMES_NEVER_SET\"],\"env\":{\"FIXED\":\"fixed value\",\"LANG\":\"C\"}");
	a = make_agent("[\"env\"]", extra, err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ask(a, "x", NULL, &r);
	ck_assert_int_eq(r.ok, 1);
	for (i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++) {
		ck_assert_msg(strstr(r.text, secrets[i][1]) == NULL, "%s leaked: %s",
		    secrets[i][0], r.text);
		ck_assert_ptr_null(env_value(r.text, secrets[i][0]));
	}
	/* The allowlist, what pass_env names (from the environment or .env), and env over both. */
	ck_assert_ptr_nonnull(env_value(r.text, "PATH"));
	ck_assert_str_eq(env_value(r.text, "HOME"), "/home/hermes-test");
	ck_assert_str_eq(env_value(r.text, "LC_TIME"), "C");
	ck_assert_str_eq(env_value(r.text, "TZ"), "UTC");
	ck_assert_str_eq(env_value(r.text, "HERMES_PASSED"), "passed-value");
	ck_assert_str_eq(env_value(r.text, "DOTENV_ONLY"), "from-dotenv");
	ck_assert_str_eq(env_value(r.text, "FIXED"), "fixed value");
	ck_assert_str_eq(env_value(r.text, "LANG"), "C");
	ck_assert_ptr_null(env_value(r.text, "HERMES_NEVER_SET"));
	ck_assert_ptr_null(env_value(r.text, "HERMES_HOME"));
	agent_free(a);
	for (i = 0; i < sizeof(secrets) / sizeof(secrets[0]); i++)
		unsetenv(secrets[i][0]);
	unsetenv("HERMES_HOME");
}
END_TEST

START_TEST(test_nonzero_exit)
{
	expect("cat >/dev/null; echo partial; echo 'bad thing happened' >&2; echo more >&2; exit 3",
	    "", "x", 0, "the command exited with status 3: bad thing happened");
	expect("exit 1", "", "x", 0, "the command exited with status 1");
}
END_TEST

START_TEST(test_stderr_line_bounded_and_escaped)
{
	struct agent *a;
	struct reply r;
	char err[256];

	a = make_agent(cmd(script("long.sh",
	    "printf '\\033[31mred\\n' >&2; exit 2")), "", err, sizeof(err));
	ask(a, "x", NULL, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "status 2: \\x1b[31mred") != NULL, "%s", r.text);
	agent_free(a);
	a = make_agent(cmd(script("long2.sh",
	    "head -c 100000 /dev/zero | tr '\\0' e >&2; exit 4")), "", err, sizeof(err));
	ask(a, "x", NULL, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "status 4: eeee") != NULL, "%s", r.text);
	ck_assert_uint_lt(strlen(r.text), 400);
	agent_free(a);
}
END_TEST

START_TEST(test_killed_by_signal)
{
	expect("kill -TERM $$", "", "x", 0, "the command was killed by signal 15");
}
END_TEST

START_TEST(test_timeout_kills_child)
{
	char body[256];
	uint64_t t0 = mono_msec();

	snprintf(body, sizeof(body), "echo $$ > %s/pid\nexec sleep 30", dir);
	expect(body, "\"timeout\":0.3", "x", 0, "the command timed out after 0.3 s");
	ck_assert_uint_lt(mono_msec() - t0, 10000);
	ck_assert(pid_gone("pid"));
}
END_TEST

START_TEST(test_output_cap)
{
	expect("yes", "\"max_output\":10000", "x", 0, "the command's output exceeded 10000 bytes");
	expect("head -c 10000 /dev/zero | tr '\\0' o", "\"max_output\":10000", "x", 1, "ooo");
}
END_TEST

START_TEST(test_output_made_valid_utf8)
{
	/* Valid UTF-8 kept; a stray byte, a truncated sequence, an overlong form,
	 * a surrogate and a NUL each become U+FFFD. */
	expect("printf 'ok \\303\\251 \\377 \\342\\202 \\300\\257 \\355\\240\\200 a\\000b'",
	    "", "x", 1, "ok \xc3\xa9 \xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd \xef\xbf\xbd\xef\xbf\xbd "
	    "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd a\xef\xbf\xbd" "b");
}
END_TEST

START_TEST(test_empty_output)
{
	expect("cat >/dev/null", "", "x", 0, "the command gave no output");
	expect("printf '  \\n\\t\\n'", "", "x", 0, "the command gave no output");
}
END_TEST

START_TEST(test_not_found)
{
	struct agent *a;
	struct reply r;
	char err[256];

	a = make_agent("[\"/nonexistent/agent-program\"]", "", err, sizeof(err));
	ck_assert_ptr_nonnull(a);
	ask(a, "x", NULL, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "cannot run /nonexistent/agent-program: No such file") !=
	    NULL, "%s", r.text);
	agent_free(a);
	/* Not executable. */
	a = make_agent(cmd(script("noexec.sh", "echo hi")), "", err, sizeof(err));
	chmod(script("noexec.sh", "echo hi"), 0644);
	ask(a, "x", NULL, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "Permission denied") != NULL, "%s", r.text);
	agent_free(a);
}
END_TEST

START_TEST(test_large_input_and_unread_input)
{
	cJSON *history = cJSON_CreateArray(), *m;
	char *big = xmalloc(300001);
	struct agent *a;
	struct reply r;
	char err[256];

	memset(big, 'h', 300000);
	big[300000] = '\0';
	m = cJSON_CreateObject();
	cJSON_AddStringToObject(m, "role", "user");
	cJSON_AddStringToObject(m, "content", big);
	cJSON_AddItemToArray(history, m);
	/* The whole document arrives, however large. */
	a = make_agent(cmd(script("wc.sh", "wc -c")), "", err, sizeof(err));
	ask(a, "x", history, &r);
	ck_assert_int_eq(r.ok, 1);
	ck_assert_int_gt(atoi(r.text), 300000);
	agent_free(a);
	/* A command that never reads its input still replies. */
	a = make_agent(cmd(script("noread.sh", "echo ignored input")), "", err, sizeof(err));
	ask(a, "x", history, &r);
	ck_assert_int_eq(r.ok, 1);
	ck_assert_str_eq(r.text, "ignored input");
	agent_free(a);
	cJSON_Delete(history);
	free(big);
}
END_TEST

START_TEST(test_leftover_background_process)
{
	/* A background process keeps stdout open: the reply comes anyway. */
	expect("echo early; sleep 3 &", "\"timeout\":20", "x", 1, "early");
	/* One that escaped the group (a session of its own) is waited for briefly. */
	expect("echo escaped; setsid sleep 3 &", "\"timeout\":20", "x", 1, "escaped");
}
END_TEST

START_TEST(test_cancel_kills_child)
{
	char body[384], err[256];
	struct agent_req req = { .text = "x" };
	struct reply r = { 0 };
	struct agent_call *c;
	struct agent *a;

	/* The command and what it left behind both go. */
	snprintf(body, sizeof(body), "sleep 1000 >/dev/null 2>&1 &\necho $! > %s/lpid\n"
	    "echo $$ > %s/cpid.tmp && mv %s/cpid.tmp %s/cpid\nexec sleep 30", dir, dir, dir, dir);
	a = make_agent(cmd(script("cancel.sh", body)), "", err, sizeof(err));
	c = agent_call(a, &req, reply_cb, &r);
	{
		char path[512];
		uint64_t end = mono_msec() + 10000;

		snprintf(path, sizeof(path), "%s/cpid", dir);
		while (access(path, F_OK) != 0 && mono_msec() < end)
			run_for(0.02);
	}
	agent_cancel(c);
	ck_assert(pid_gone("cpid"));
	ck_assert_msg(left_gone("lpid"), "a cancelled command's leftover survived");
	run_for(0.2);
	ck_assert_int_eq(r.calls, 0);
	agent_free(a);
}
END_TEST

START_TEST(test_free_kills_children)
{
	char body[256], err[256], path[512];
	struct agent_req req = { .text = "x" };
	struct reply r = { 0 };
	struct agent *a;
	uint64_t end = mono_msec() + 10000;

	snprintf(body, sizeof(body), "echo $$ > %s/fpid.tmp && mv %s/fpid.tmp %s/fpid\n"
	    "exec sleep 30", dir, dir, dir);
	a = make_agent(cmd(script("free.sh", body)), "", err, sizeof(err));
	agent_call(a, &req, reply_cb, &r);
	snprintf(path, sizeof(path), "%s/fpid", dir);
	while (access(path, F_OK) != 0 && mono_msec() < end)
		run_for(0.02);
	agent_free(a);
	ck_assert(pid_gone("fpid"));
	ck_assert_int_eq(r.calls, 0);
}
END_TEST

static void
tick_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	*(int *)arg = 1;
}

START_TEST(test_loop_not_blocked_and_concurrent)
{
	struct agent_req req = { .text = "x" };
	struct reply r1 = { 0 }, r2 = { 0 };
	struct timeval tv = { 0, 100000 };
	int ticked = 0, ticked_first = 0;
	struct agent *a;
	char err[256];

	a = make_agent(cmd(script("slow.sh", "cat >/dev/null; sleep 1; echo slow done")), "",
	    err, sizeof(err));
	agent_call(a, &req, reply_cb, &r1);
	agent_call(a, &req, reply_cb, &r2);
	event_base_once(base, -1, EV_TIMEOUT, tick_cb, &ticked, &tv);
	{
		uint64_t end = mono_msec() + 20000;

		while (!(r1.done && r2.done) && mono_msec() < end) {
			run_for(0.01);
			if (ticked && !r1.done && !r2.done)
				ticked_first = 1;
		}
	}
	ck_assert_int_eq(ticked_first, 1);
	ck_assert_str_eq(r1.text, "slow done");
	ck_assert_str_eq(r2.text, "slow done");
	agent_free(a);
}
END_TEST

START_TEST(test_leftovers_killed_with_the_group)
{
	char body[512];

	/* One leftover lets go of stdout, one keeps it: neither outlives the call. */
	snprintf(body, sizeof(body), "sleep 1000 >/dev/null 2>&1 &\necho $! > %s/bg1\n"
	    "sleep 1000 &\necho $! > %s/bg2\necho done", dir, dir);
	expect(body, "", "x", 1, "done");
	ck_assert_msg(left_gone("bg1"), "a background process outlived its command");
	ck_assert_msg(left_gone("bg2"), "a background process holding stdout outlived its command");
	/* A command killed at its timeout takes its leftovers along too. */
	snprintf(body, sizeof(body), "sleep 1000 >/dev/null 2>&1 &\necho $! > %s/bg3\n"
	    "exec sleep 30", dir);
	expect(body, "\"timeout\":0.5", "x", 0, "timed out");
	ck_assert_msg(left_gone("bg3"), "a timed-out command's leftover survived");
}
END_TEST

struct lateness {
	struct event *ev;
	uint64_t due;                   /* when the timer should fire next, ms */
	uint64_t worst;                 /* the largest delay seen, ms */
	unsigned ticks;
};

#define TICK_MS 10

static void
late_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lateness *l = arg;
	uint64_t now = mono_msec();
	struct timeval tv = { 0, TICK_MS * 1000 };

	(void)fd;
	(void)what;
	if (now > l->due && now - l->due > l->worst)
		l->worst = now - l->due;
	l->ticks++;
	l->due = now + TICK_MS;
	evtimer_add(l->ev, &tv);
}

START_TEST(test_stderr_flood_bounded)
{
	struct lateness l = { 0 };
	struct timeval tv = { 0, TICK_MS * 1000 };
	struct agent *a;
	struct reply r;
	char err[256];

	/* Hundreds of MB on stderr, never a newline: the loop keeps its timers. */
	a = make_agent(cmd(script("flood.sh", "echo first line >&2\n"
	    "head -c 400000000 /dev/zero >&2\nprintf '\\nlast words\\n' >&2\nexit 5")),
	    "\"timeout\":120", err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	l.ev = evtimer_new(base, late_cb, &l);
	l.due = mono_msec() + TICK_MS;
	evtimer_add(l.ev, &tv);
	ask(a, "x", NULL, &r);
	event_free(l.ev);
	fprintf(stderr, "stderr flood: %u ticks, worst timer delay %llu ms\n", l.ticks,
	    (unsigned long long)l.worst);
	/* Generous: a loaded machine delays timers, a starved loop by seconds. */
	ck_assert_msg(l.worst < 700, "a timer was %llu ms late", (unsigned long long)l.worst);
	ck_assert_int_eq(r.ok, 0);
	/* The message still has the first line and the last, bounded. */
	ck_assert_msg(strstr(r.text, "status 5: first line ... last words") != NULL, "%s", r.text);
	ck_assert_uint_lt(strlen(r.text), 2000);
	agent_free(a);
}
END_TEST

START_TEST(test_bad_configs)
{
	static const struct {
		const char *command;
		const char *extra;
		const char *want;
	} cases[] = {
		{ "null", "", "agent.command: required" },
		{ "\"/bin/echo hi\"", "", "agent.command: must be a non-empty array" },
		{ "[]", "", "agent.command: must be a non-empty array" },
		{ "[\"/bin/echo\", 3]", "", "agent.command: element 1 must be a non-empty string" },
		{ "[\"\"]", "", "agent.command: element 0" },
		{ "[\"/bin/cat\"]", "\"timeout\":-1", "agent.timeout" },
		{ "[\"/bin/cat\"]", "\"timeout\":\"5\"", "agent.timeout" },
		{ "[\"/bin/cat\"]", "\"max_output\":0", "agent.max_output" },
		{ "[\"/bin/cat\"]", "\"max_output\":1e12", "agent.max_output" },
		{ "[\"/bin/cat\"]", "\"model\":\"x\"", "agent.model: unknown key for the exec" },
		{ "[\"/bin/cat\"]", "\"pass_env\":\"HOME\"", "agent.pass_env: must be an array" },
		{ "[\"/bin/cat\"]", "\"pass_env\":[3]", "agent.pass_env: every element" },
		{ "[\"/bin/cat\"]", "\"pass_env\":[\"1BAD\"]", "agent.pass_env: \"1BAD\" is not" },
		{ "[\"/bin/cat\"]", "\"pass_env\":[\"A=B\"]", "agent.pass_env: \"A=B\" is not" },
		{ "[\"/bin/cat\"]", "\"pass_env\":[\"\"]", "agent.pass_env: \"\" is not" },
		{ "[\"/bin/cat\"]", "\"pass_env\":[\"NOTIFY_SOCKET\"]",
		    "agent.pass_env: NOTIFY_SOCKET belongs to the worker" },
		{ "[\"/bin/cat\"]", "\"env\":[\"A\"]", "agent.env: must be an object" },
		{ "[\"/bin/cat\"]", "\"env\":{\"A\":3}", "agent.env: A must be a string" },
		{ "[\"/bin/cat\"]", "\"env\":{\"A B\":\"x\"}", "agent.env: \"A B\" is not" },
		{ "[\"/bin/cat\"]", "\"env\":{\"WATCHDOG_USEC\":\"1\"}",
		    "agent.env: WATCHDOG_USEC belongs to the worker" },
	};
	size_t i;
	char err[256];

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct agent *a = make_agent(cases[i].command, cases[i].extra, err, sizeof(err));

		ck_assert_msg(a == NULL, "accepted %s %s", cases[i].command, cases[i].extra);
		ck_assert_msg(strstr(err, cases[i].want) != NULL, "%s %s: got \"%s\"",
		    cases[i].command, cases[i].extra, err);
	}
}
END_TEST

static Suite *
exec_suite(void)
{
	Suite *s = suite_create("agent_exec");
	TCase *tc = tcase_create("exec");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_reply_and_input);
	tcase_add_test(tc, test_argv_without_shell);
	tcase_add_test(tc, test_environment_scrubbed);
	tcase_add_test(tc, test_nonzero_exit);
	tcase_add_test(tc, test_stderr_line_bounded_and_escaped);
	tcase_add_test(tc, test_killed_by_signal);
	tcase_add_test(tc, test_timeout_kills_child);
	tcase_add_test(tc, test_output_cap);
	tcase_add_test(tc, test_empty_output);
	tcase_add_test(tc, test_output_made_valid_utf8);
	tcase_add_test(tc, test_not_found);
	tcase_add_test(tc, test_large_input_and_unread_input);
	tcase_add_test(tc, test_leftover_background_process);
	tcase_add_test(tc, test_cancel_kills_child);
	tcase_add_test(tc, test_free_kills_children);
	tcase_add_test(tc, test_loop_not_blocked_and_concurrent);
	tcase_add_test(tc, test_leftovers_killed_with_the_group);
	tcase_add_test(tc, test_stderr_flood_bounded);
	tcase_add_test(tc, test_bad_configs);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(exec_suite());
	char rm[256];
	int failed;

	if (mkdtemp(dir) == NULL)
		return 2;
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	snprintf(rm, sizeof(rm), "rm -rf %s", dir);
	if (system(rm) != 0)
		failed++;
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
