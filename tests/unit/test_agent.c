/* test_agent.c - the agent front and the echo backend. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "agent.h"
#include "agent_fixture.h"

/* Builds an agent from a JSON text (NULL: no config); err gets the message. */
static struct agent *
agent_from(struct event_base *base, const char *json, char *err, size_t errlen)
{
	cJSON *conf = json != NULL ? cJSON_Parse(json) : NULL;
	struct agent *a;

	if (json != NULL)
		ck_assert_ptr_nonnull(conf);
	err[0] = '\0';
	a = agent_new(base, NULL, NULL, conf, err, errlen);
	cJSON_Delete(conf);
	return a;
}

START_TEST(test_echo_default)
{
	struct event_base *base = event_base_new();
	struct agent_req req = { .session = "s", .platform = "console", .chat_id = "c",
	    .user_id = "u", .text = "hello \xc3\xa9 world\nline 2" };
	struct reply r = { 0 };
	char err[256];
	struct agent *a = agent_from(base, NULL, err, sizeof(err));

	ck_assert_ptr_nonnull(a);
	ck_assert_str_eq(agent_backend(a), "echo");
	ck_assert_ptr_nonnull(agent_call(a, &req, reply_cb, &r));
	/* Never answered from inside agent_call(). */
	ck_assert_int_eq(r.calls, 0);
	event_base_dispatch(base);
	ck_assert_int_eq(r.calls, 1);
	ck_assert_int_eq(r.ok, 1);
	ck_assert_str_eq(r.text, "hello \xc3\xa9 world\nline 2");
	agent_free(a);
	event_base_free(base);
}
END_TEST

START_TEST(test_echo_copies_request)
{
	struct event_base *base = event_base_new();
	char text[] = "original";
	struct agent_req req = { .text = text };
	struct reply r = { 0 };
	char err[256];
	struct agent *a = agent_from(base, "{\"backend\":\"echo\"}", err, sizeof(err));

	ck_assert_ptr_nonnull(a);
	agent_call(a, &req, reply_cb, &r);
	strcpy(text, "changed!");
	event_base_dispatch(base);
	ck_assert_str_eq(r.text, "original");
	agent_free(a);
	event_base_free(base);
}
END_TEST

START_TEST(test_echo_cancel)
{
	struct event_base *base = event_base_new();
	struct agent_req req = { .text = "one" };
	struct agent_req req2 = { .text = "two" };
	struct reply r1 = { 0 }, r2 = { 0 };
	char err[256];
	struct agent *a = agent_from(base, "{\"backend\":\"echo\"}", err, sizeof(err));
	struct agent_call *c1;

	c1 = agent_call(a, &req, reply_cb, &r1);
	agent_call(a, &req2, reply_cb, &r2);
	agent_cancel(c1);
	event_base_dispatch(base);
	ck_assert_int_eq(r1.calls, 0);
	ck_assert_int_eq(r2.calls, 1);
	ck_assert_str_eq(r2.text, "two");
	agent_free(a);
	event_base_free(base);
}
END_TEST

START_TEST(test_free_cancels_running_calls)
{
	struct event_base *base = event_base_new();
	struct agent_req req = { .text = "x" };
	struct reply r = { 0 };
	char err[256];
	struct agent *a = agent_from(base, NULL, err, sizeof(err));

	agent_call(a, &req, reply_cb, &r);
	agent_call(a, &req, reply_cb, &r);
	agent_free(a);
	event_base_dispatch(base);
	ck_assert_int_eq(r.calls, 0);
	event_base_free(base);
}
END_TEST

START_TEST(test_empty_text)
{
	struct event_base *base = event_base_new();
	struct agent_req req = { .text = NULL };
	struct reply r = { 0 };
	char err[256];
	struct agent *a = agent_from(base, NULL, err, sizeof(err));

	agent_call(a, &req, reply_cb, &r);
	event_base_dispatch(base);
	ck_assert_int_eq(r.calls, 1);
	ck_assert_str_eq(r.text, "");
	agent_free(a);
	event_base_free(base);
}
END_TEST

START_TEST(test_bad_configs)
{
	static const struct {
		const char *json;
		const char *want;
	} cases[] = {
		{ "{\"backend\":\"nope\"}", "agent.backend: unknown backend \"nope\"" },
		{ "{\"backend\":42}", "agent.backend: must be a string" },
		{ "[1]", "agent: must be an object" },
		{ "\"echo\"", "agent: must be an object" },
		{ "{\"backend\":\"echo\",\"model\":\"x\"}", "agent.model: unknown key" },
		{ "{\"bogus\":1}", "agent.bogus: unknown key" },
	};
	struct event_base *base = event_base_new();
	char err[256];
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct agent *a = agent_from(base, cases[i].json, err, sizeof(err));

		ck_assert_msg(a == NULL, "accepted %s", cases[i].json);
		ck_assert_msg(strstr(err, cases[i].want) != NULL, "%s: got \"%s\"",
		    cases[i].json, err);
	}
	event_base_free(base);
}
END_TEST

static Suite *
agent_suite(void)
{
	Suite *s = suite_create("agent");
	TCase *tc = tcase_create("echo");

	tcase_add_test(tc, test_echo_default);
	tcase_add_test(tc, test_echo_copies_request);
	tcase_add_test(tc, test_echo_cancel);
	tcase_add_test(tc, test_free_cancels_running_calls);
	tcase_add_test(tc, test_empty_text);
	tcase_add_test(tc, test_bad_configs);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(agent_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
