/*
 * test_agent_openai.c - the openai backend against tests/fakes/fake_openai.py
 * (plain HTTP with an API key, and TLS with a test CA), driven in process.
 */
#include "net_fixture.h"

#include "agent.h"
#include "net/http.h"
#include "net/tls.h"
#include "agent_fixture.h"

#define KEY "sk-test-0123456789abcdef"

static struct fx_fake plain, tlsfake;
static char tlsdir[] = "/tmp/hermes-openai-XXXXXX";
static struct event_base *base;

static void
setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	setenv("HERMES_TEST_OPENAI_KEY", KEY, 1);
	setenv("HERMES_TEST_WRONG_KEY", "sk-wrong-key-987654321", 1);
	unsetenv("HERMES_TEST_UNSET_KEY");
	/* Secrets are looked up in $HERMES_HOME/.env too: keep the user's out. */
	setenv("HERMES_HOME", tlsdir, 1);
	unsetenv("CREDENTIALS_DIRECTORY");
	base = event_base_new();
}

static void
teardown(void)
{
	event_base_free(base);
}

/* An openai agent on url; extra is more JSON members (may be ""), overriding the defaults. */
static struct agent *
make_agent(const char *url, const char *extra, struct tls_ctx *tls, char *err, size_t errlen)
{
	char json[2048];
	cJSON *conf;
	struct agent *a;

	snprintf(json, sizeof(json), "{%s}", extra);
	conf = cJSON_Parse(json);
	ck_assert_msg(conf != NULL, "bad test JSON %s", json);
	if (!cJSON_HasObjectItem(conf, "backend"))
		cJSON_AddStringToObject(conf, "backend", "openai");
	if (!cJSON_HasObjectItem(conf, "base_url"))
		cJSON_AddStringToObject(conf, "base_url", url);
	if (!cJSON_HasObjectItem(conf, "model"))
		cJSON_AddStringToObject(conf, "model", "fake-model");
	if (!cJSON_HasObjectItem(conf, "api_key_env"))
		cJSON_AddStringToObject(conf, "api_key_env", "HERMES_TEST_OPENAI_KEY");
	err[0] = '\0';
	a = agent_new(base, NULL, tls, conf, err, errlen);
	cJSON_Delete(conf);
	return a;
}

/* Sends text (with history) and waits for the reply. */
static void
ask(struct agent *a, const char *text, const cJSON *history, struct reply *r)
{
	struct agent_req req = { .session = "console:c1", .platform = "console",
	    .chat_id = "c1", .user_id = "u1", .text = text, .history = history };

	memset(r, 0, sizeof(*r));
	ck_assert_ptr_nonnull(agent_call(a, &req, reply_cb, r));
	ck_assert_int_eq(r->done, 0);
	fx_run_until(base, &r->done, 20);
	ck_assert_msg(r->done, "no reply to %s", text);
	ck_assert_int_eq(r->calls, 1);
	/* Never a key in anything shown to a user. */
	ck_assert_ptr_null(strstr(r->text, KEY));
	ck_assert_ptr_null(strstr(r->text, "sk-wrong-key"));
}

/* One config, one question: asserts the reply. */
static void
expect(const char *extra, const char *text, int ok, const char *want)
{
	struct agent *a;
	struct reply r;
	char err[256];

	a = make_agent(plain.url, extra, NULL, err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ask(a, text, NULL, &r);
	ck_assert_msg(r.ok == ok && strstr(r.text, want) != NULL,
	    "%s: got ok=%d \"%s\", wanted ok=%d \"%s\"", text, r.ok, r.text, ok, want);
	if (!ok)
		ck_assert_msg(strncmp(r.text, "the agent is unreachable: ", 26) == 0, "%s", r.text);
	agent_free(a);
}

struct fetched {
	int done;
	cJSON *json;
};

static void
fetched_cb(void *arg, const struct http_response *r)
{
	struct fetched *f = arg;

	f->done = 1;
	ck_assert_int_eq(r->status, 200);
	f->json = cJSON_Parse(r->body);
}

/* The body (parsed) of the last request the plain fake got containing marker. */
static cJSON *
last_request_with(const char *marker, char *auth, size_t authlen)
{
	struct http_client *c = http_client_new(base, NULL, NULL);
	struct http_req req = { .method = "GET", .timeout = 10, .max_body = 16 << 20 };
	struct fetched f = { 0 };
	char url[256];
	cJSON *reqs, *it, *found = NULL;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/_fake/requests", plain.port);
	req.url = url;
	http_request(c, &req, fetched_cb, &f);
	fx_run_until(base, &f.done, 10);
	http_client_free(c);
	ck_assert_ptr_nonnull(f.json);
	reqs = cJSON_GetObjectItem(f.json, "requests");
	cJSON_ArrayForEach(it, reqs) {
		const char *body = cJSON_GetObjectItem(it, "body")->valuestring;
		const cJSON *au = cJSON_GetObjectItem(it, "authorization");

		if (strstr(body, marker) != NULL) {
			cJSON_Delete(found);
			found = cJSON_Parse(body);
			snprintf(auth, authlen, "%s", cJSON_IsString(au) ? au->valuestring : "");
		}
	}
	cJSON_Delete(f.json);
	ck_assert_msg(found != NULL, "no request with %s", marker);
	return found;
}

START_TEST(test_stream_ok_and_request_shape)
{
	const char *hist = "[{\"role\":\"user\",\"content\":\"h1\"},"
	    "{\"role\":\"assistant\",\"content\":\"h2\"},"
	    "{\"role\":\"bogus\",\"content\":\"skipped\"},"
	    "{\"role\":\"user\"},"
	    "{\"role\":\"user\",\"content\":\"h3\"},"
	    "{\"role\":\"assistant\",\"content\":\"h4\"}]";
	cJSON *history = cJSON_Parse(hist), *body, *msgs;
	struct agent *a;
	struct reply r;
	char err[256], auth[256];

	a = make_agent(plain.url, "\"system_prompt\":\"be brief\",\"max_history\":3", NULL,
	    err, sizeof(err));
	ck_assert_msg(a != NULL, "%s", err);
	ck_assert_str_eq(agent_backend(a), "openai");
	ask(a, "stream-ok \xc3\xa9\"quoted\"\nnewline", history, &r);
	ck_assert_int_eq(r.ok, 1);
	ck_assert_str_eq(r.text, "echo: stream-ok \xc3\xa9\"quoted\"\nnewline");

	body = last_request_with("stream-ok", auth, sizeof(auth));
	ck_assert_str_eq(auth, "Bearer " KEY);
	ck_assert_str_eq(cJSON_GetObjectItem(body, "model")->valuestring, "fake-model");
	ck_assert(cJSON_IsTrue(cJSON_GetObjectItem(body, "stream")));
	msgs = cJSON_GetObjectItem(body, "messages");
	/* system, the last 3 history entries (one malformed, skipped), the user text */
	ck_assert_int_eq(cJSON_GetArraySize(msgs), 4);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "role")->valuestring,
	    "system");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 0), "content")->valuestring,
	    "be brief");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 1), "content")->valuestring,
	    "h3");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 2), "content")->valuestring,
	    "h4");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(msgs, 3), "role")->valuestring,
	    "user");
	cJSON_Delete(body);
	cJSON_Delete(history);
	agent_free(a);
}
END_TEST

START_TEST(test_non_stream_ok)
{
	char auth[256];
	cJSON *body;

	expect("\"stream\":false,\"max_history\":0", "plain-ok", 1, "echo: plain-ok");
	body = last_request_with("plain-ok", auth, sizeof(auth));
	ck_assert(cJSON_IsFalse(cJSON_GetObjectItem(body, "stream")));
	ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItem(body, "messages")), 1);
	cJSON_Delete(body);
}
END_TEST

START_TEST(test_base_url_trailing_slash)
{
	struct agent *a;
	struct reply r;
	char err[256], url[256];

	snprintf(url, sizeof(url), "%s/", plain.url);
	a = make_agent(url, "", NULL, err, sizeof(err));
	ck_assert_ptr_nonnull(a);
	ask(a, "slash", NULL, &r);
	ck_assert_int_eq(r.ok, 1);
	agent_free(a);
}
END_TEST

START_TEST(test_wrong_key_401)
{
	struct agent *a;
	struct reply r;
	char err[256];
	char json[512];
	cJSON *conf;

	snprintf(json, sizeof(json), "{\"backend\":\"openai\",\"base_url\":\"%s\","
	    "\"model\":\"m\",\"api_key_env\":\"HERMES_TEST_WRONG_KEY\"}", plain.url);
	conf = cJSON_Parse(json);
	a = agent_new(base, NULL, NULL, conf, err, sizeof(err));
	cJSON_Delete(conf);
	ck_assert_ptr_nonnull(a);
	ask(a, "wrong key", NULL, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "HTTP 401: Incorrect API key provided: ***") != NULL,
	    "%s", r.text);
	agent_free(a);
}
END_TEST

START_TEST(test_http_errors)
{
	expect("", "fault:status:500", 0, "HTTP 500: The server had an error");
	expect("\"stream\":false", "fault:status:503", 0, "HTTP 503: The engine is currently");
	expect("", "fault:status:429", 0, "HTTP 429: Rate limit");
	expect("\"model\":\"nonexistent\"", "fault:status:404", 0,
	    "HTTP 404: The model `nonexistent` does not exist");
}
END_TEST

START_TEST(test_timeout)
{
	uint64_t t0 = mono_msec();

	expect("\"timeout\":0.5", "fault:hang", 0, "timed out after 0.5 s");
	ck_assert_uint_lt(mono_msec() - t0, 10000);
}
END_TEST

START_TEST(test_garbage)
{
	expect("", "fault:garbage", 0, "not JSON");
	expect("\"stream\":false", "fault:garbage", 0, "did not answer with JSON");
}
END_TEST

START_TEST(test_truncated)
{
	expect("", "fault:truncated", 0, "closed before a complete response");
	expect("\"stream\":false", "fault:truncated", 0, "closed before a complete response");
}
END_TEST

START_TEST(test_truncated_stream_message)
{
	expect("", "fault:cut", 0, "the stream ended before the reply was complete");
}
END_TEST

START_TEST(test_oversized)
{
	expect("\"stream\":false", "fault:huge:5000000", 0, "larger than");
	expect("", "fault:huge:1500000", 0, "larger than");
}
END_TEST

START_TEST(test_stream_error_event)
{
	expect("", "fault:stream_error", 0, "error in the stream: The server had an error");
}
END_TEST

START_TEST(test_empty_reply)
{
	expect("", "fault:empty", 0, "empty reply");
	expect("\"stream\":false", "fault:empty", 0, "empty reply");
}
END_TEST

START_TEST(test_server_ignores_stream)
{
	expect("", "fault:nostream", 1, "echo: fault:nostream");
}
END_TEST

START_TEST(test_slow_stream_ok)
{
	expect("", "fault:drip:0.1", 1, "echo: fault:drip:0.1");
}
END_TEST

START_TEST(test_connection_refused)
{
	struct agent *a;
	struct reply r;
	char err[256], url[128];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/v1", fx_closed_port());
	a = make_agent(url, "", NULL, err, sizeof(err));
	ask(a, "refused", NULL, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "the agent is unreachable: cannot connect") != NULL,
	    "%s", r.text);
	agent_free(a);
}
END_TEST

START_TEST(test_tls)
{
	struct tls_ctx *good, *bad;
	struct agent *a;
	struct reply r;
	char err[256];

	good = tls_ctx_new(tlsfake.ca, err, sizeof(err));
	ck_assert_msg(good != NULL, "%s", err);
	bad = tls_ctx_new(NULL, err, sizeof(err));
	ck_assert_ptr_nonnull(bad);
	a = make_agent(tlsfake.url, "", good, err, sizeof(err));
	ask(a, "over tls", NULL, &r);
	ck_assert_msg(r.ok == 1, "%s", r.text);
	ck_assert_str_eq(r.text, "echo: over tls");
	agent_free(a);
	a = make_agent(tlsfake.url, "", bad, err, sizeof(err));
	ask(a, "unknown ca", NULL, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "certificate verification failed") != NULL, "%s", r.text);
	agent_free(a);
	/* No TLS context given: the backend uses the system store, which refuses too. */
	a = make_agent(tlsfake.url, "", NULL, err, sizeof(err));
	ask(a, "system store", NULL, &r);
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "certificate verification failed") != NULL, "%s", r.text);
	agent_free(a);
	tls_ctx_free(good);
	tls_ctx_free(bad);
}
END_TEST

START_TEST(test_cancel_and_free_in_flight)
{
	struct agent_req req = { .text = "fault:slow:1" };
	struct reply r1 = { 0 }, r2 = { 0 }, r3 = { 0 };
	struct agent_call *c1;
	struct agent *a;
	char err[256];

	a = make_agent(plain.url, "", NULL, err, sizeof(err));
	c1 = agent_call(a, &req, reply_cb, &r1);
	req.text = "concurrent";
	agent_call(a, &req, reply_cb, &r2);
	fx_run_for(base, 0.2);
	agent_cancel(c1);
	fx_run_until(base, &r2.done, 10);
	ck_assert_int_eq(r2.ok, 1);
	ck_assert_str_eq(r2.text, "echo: concurrent");
	fx_run_for(base, 1.2);
	ck_assert_int_eq(r1.calls, 0);
	/* Freed with a call still running: no callback, no leak. */
	req.text = "fault:slow:1";
	agent_call(a, &req, reply_cb, &r3);
	fx_run_for(base, 0.1);
	agent_free(a);
	fx_run_for(base, 0.2);
	ck_assert_int_eq(r3.calls, 0);
}
END_TEST

START_TEST(test_bad_configs)
{
	static const struct {
		const char *extra;
		const char *want;
	} cases[] = {
		{ "\"model\":null", "agent.model: required" },
		{ "\"model\":7", "agent.model: must be a string" },
		{ "\"base_url\":\"ftp://x\"", "agent.base_url: must be an http" },
		{ "\"base_url\":\"http://\"", "agent.base_url: must be an http" },
		{ "\"max_history\":-1", "agent.max_history" },
		{ "\"max_history\":1.5", "agent.max_history" },
		{ "\"timeout\":\"x\"", "agent.timeout" },
		{ "\"timeout\":0", "agent.timeout" },
		{ "\"stream\":\"yes\"", "agent.stream: must be true or false" },
		{ "\"api_key_env\":\"HERMES_TEST_UNSET_KEY\"", "agent.api_key_env: the secret "
		    "HERMES_TEST_UNSET_KEY is not set" },
		{ "\"temperature\":0.5", "agent.temperature: unknown key for the openai backend" },
		{ "\"command\":[\"x\"]", "agent.command: unknown key" },
	};
	size_t i;
	char err[256];

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct agent *a = make_agent(plain.url, cases[i].extra, NULL, err, sizeof(err));

		ck_assert_msg(a == NULL, "accepted %s", cases[i].extra);
		ck_assert_msg(strstr(err, cases[i].want) != NULL, "%s: got \"%s\"",
		    cases[i].extra, err);
		ck_assert_ptr_null(strstr(err, KEY));
	}
	{
		cJSON *conf = cJSON_Parse("{\"backend\":\"openai\"}");

		ck_assert_ptr_null(agent_new(base, NULL, NULL, conf, err, sizeof(err)));
		ck_assert_msg(strstr(err, "agent.model") != NULL, "%s", err);
		cJSON_Delete(conf);
	}
}
END_TEST

START_TEST(test_no_key_configured)
{
	/* No api_key_env and no OPENAI_API_KEY: requests go without Authorization. */
	struct agent *a;
	struct reply r;
	char err[256], json[512], auth[256];
	cJSON *conf, *body;

	unsetenv("OPENAI_API_KEY");
	snprintf(json, sizeof(json), "{\"backend\":\"openai\",\"base_url\":\"%s\","
	    "\"model\":\"m\"}", plain.url);
	conf = cJSON_Parse(json);
	a = agent_new(base, NULL, NULL, conf, err, sizeof(err));
	cJSON_Delete(conf);
	ck_assert_msg(a != NULL, "%s", err);
	ask(a, "keyless", NULL, &r);
	/* The plain fake wants a key: 401, with nothing secret in the text. */
	ck_assert_int_eq(r.ok, 0);
	ck_assert_msg(strstr(r.text, "HTTP 401") != NULL, "%s", r.text);
	body = last_request_with("keyless", auth, sizeof(auth));
	ck_assert_str_eq(auth, "");
	cJSON_Delete(body);
	agent_free(a);
}
END_TEST

static Suite *
openai_suite(void)
{
	Suite *s = suite_create("agent_openai");
	TCase *tc = tcase_create("openai");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_stream_ok_and_request_shape);
	tcase_add_test(tc, test_non_stream_ok);
	tcase_add_test(tc, test_base_url_trailing_slash);
	tcase_add_test(tc, test_wrong_key_401);
	tcase_add_test(tc, test_http_errors);
	tcase_add_test(tc, test_timeout);
	tcase_add_test(tc, test_garbage);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_truncated_stream_message);
	tcase_add_test(tc, test_oversized);
	tcase_add_test(tc, test_stream_error_event);
	tcase_add_test(tc, test_empty_reply);
	tcase_add_test(tc, test_server_ignores_stream);
	tcase_add_test(tc, test_slow_stream_ok);
	tcase_add_test(tc, test_connection_refused);
	tcase_add_test(tc, test_tls);
	tcase_add_test(tc, test_cancel_and_free_in_flight);
	tcase_add_test(tc, test_bad_configs);
	tcase_add_test(tc, test_no_key_configured);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(openai_suite());
	char cmd[256];
	int failed;

	if (mkdtemp(tlsdir) == NULL)
		return 2;
	fx_fake_start(&plain, NULL, KEY);
	fx_fake_start(&tlsfake, tlsdir, NULL);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	fx_fake_stop(&plain);
	fx_fake_stop(&tlsfake);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tlsdir);
	if (system(cmd) != 0)
		failed++;
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
