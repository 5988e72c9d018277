/* test_slack.c - Slack's pure helpers: events, addressing, entities, error classes. */
#include <check.h>
#include <string.h>

#include "platforms/slack.h"
#include "unit_util.h"

#define SELF "U0BOT"

static cJSON *
ev(const char *json)
{
	cJSON *o = cJSON_Parse(json);

	ck_assert_ptr_nonnull(o);
	return o;
}

/* Parses json with require_mention rm; returns the parser's result. */
static int
parse(const char *json, int rm, struct sl_msg *m, const char **why)
{
	cJSON *o = ev(json);
	int r;

	*why = NULL;
	r = sl_event_parse(o, SELF, rm, m, why);
	if (r == 1) {
		/* the strings point into the event: keep copies the test can read */
		m->channel = strdup(m->channel);
		m->user = strdup(m->user);
		m->ts = strdup(m->ts);
		m->thread_ts = m->thread_ts != NULL ? strdup(m->thread_ts) : NULL;
	}
	cJSON_Delete(o);
	return r;
}

static void
msg_free(struct sl_msg *m)
{
	free((char *)m->channel);
	free((char *)m->user);
	free((char *)m->ts);
	free((char *)m->thread_ts);
	free(m->text);
}

START_TEST(test_dm_always_addressed)
{
	struct sl_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D024BE91L\",\"user\":"
	    "\"U2147483697\",\"text\":\"hello\",\"ts\":\"1355517523.000005\",\"channel_type\":"
	    "\"im\"}", 1, &m, &why), 1);
	ck_assert_int_eq(m.dm, 1);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_str_eq(m.text, "hello");
	ck_assert_str_eq(m.id, "D024BE91L:1355517523.000005");
	ck_assert_str_eq(m.user, "U2147483697");
	ck_assert_ptr_null(m.thread_ts);
	msg_free(&m);

	/* no channel_type (app_mention has none): a D channel is a DM */
	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D1\",\"user\":\"U1\","
	    "\"text\":\"x\",\"ts\":\"1.2\"}", 1, &m, &why), 1);
	ck_assert_int_eq(m.dm, 1);
	msg_free(&m);
}
END_TEST

START_TEST(test_channel_mention_stripped)
{
	struct sl_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"C1\",\"user\":\"U1\","
	    "\"text\":\"<@U0BOT> what is <@U0BOT|hermes> up, <@U0BOTX>?\",\"ts\":\"5.6\","
	    "\"channel_type\":\"channel\"}", 1, &m, &why), 1);
	ck_assert_int_eq(m.dm, 0);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_str_eq(m.text, "what is  up, <@U0BOTX>?");
	msg_free(&m);

	/* app_mention addresses us even without the markup left in the text */
	ck_assert_int_eq(parse("{\"type\":\"app_mention\",\"channel\":\"C1\",\"user\":\"U1\","
	    "\"text\":\"hi\",\"ts\":\"5.6\"}", 1, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_str_eq(m.id, "C1:5.6");       /* the same key as its message event */
	msg_free(&m);
}
END_TEST

START_TEST(test_channel_chatter_not_addressed)
{
	struct sl_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"C1\",\"user\":\"U1\","
	    "\"text\":\"just chatting about <@U0BOTS>\",\"ts\":\"5.6\",\"channel_type\":"
	    "\"channel\"}", 1, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 0);
	msg_free(&m);
	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"C1\",\"user\":\"U1\","
	    "\"text\":\"just chatting\",\"ts\":\"5.6\",\"channel_type\":\"channel\"}", 0, &m,
	    &why), 1);
	ck_assert_int_eq(m.addressed, 1);       /* require_mention off */
	msg_free(&m);
}
END_TEST

START_TEST(test_thread_and_broadcast)
{
	struct sl_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"type\":\"message\",\"subtype\":\"thread_broadcast\","
	    "\"channel\":\"C1\",\"user\":\"U1\",\"text\":\"<@U0BOT> in a thread\",\"ts\":"
	    "\"7.8\",\"thread_ts\":\"7.1\",\"channel_type\":\"channel\"}", 1, &m, &why), 1);
	ck_assert_str_eq(m.thread_ts, "7.1");
	ck_assert_str_eq(m.id, "C1:7.8");
	ck_assert_str_eq(m.text, "in a thread");
	msg_free(&m);
}
END_TEST

START_TEST(test_entities_and_bang_commands)
{
	struct sl_msg m;
	const char *why;
	char *e;

	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D1\",\"user\":\"U1\","
	    "\"text\":\"a &lt; b &amp;&amp; c &gt; d &amp;lt; &nbsp;\",\"ts\":\"1.2\"}", 1, &m,
	    &why), 1);
	ck_assert_str_eq(m.text, "a < b && c > d &lt; &nbsp;");
	msg_free(&m);
	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"C1\",\"user\":\"U1\","
	    "\"text\":\"<@U0BOT> !restart\",\"ts\":\"1.2\"}", 1, &m, &why), 1);
	ck_assert_str_eq(m.text, "/restart");
	msg_free(&m);
	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D1\",\"user\":\"U1\","
	    "\"text\":\"!!! wow\",\"ts\":\"1.2\"}", 1, &m, &why), 1);
	ck_assert_str_eq(m.text, "!!! wow");
	msg_free(&m);

	e = sl_escape("<!channel> & <@U1> > 0");
	ck_assert_str_eq(e, "&lt;!channel&gt; &amp; &lt;@U1&gt; &gt; 0");
	sl_unescape(e);
	ck_assert_str_eq(e, "<!channel> & <@U1> > 0");
	free(e);
	e = sl_escape("");
	ck_assert_str_eq(e, "");
	free(e);
}
END_TEST

START_TEST(test_skipped_and_malformed)
{
	struct sl_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D1\",\"user\":\"U0BOT\","
	    "\"bot_id\":\"B1\",\"text\":\"mine\",\"ts\":\"1.2\"}", 1, &m, &why), 0);
	ck_assert_str_eq(why, "our own message");
	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D1\",\"user\":\"U9\","
	    "\"bot_id\":\"B9\",\"text\":\"a bot\",\"ts\":\"1.2\"}", 1, &m, &why), 0);
	ck_assert_str_eq(why, "a bot's message");
	ck_assert_int_eq(parse("{\"type\":\"message\",\"subtype\":\"bot_message\",\"channel\":"
	    "\"D1\",\"text\":\"legacy bot\",\"ts\":\"1.2\"}", 1, &m, &why), 0);
	ck_assert_int_eq(parse("{\"type\":\"message\",\"subtype\":\"message_changed\","
	    "\"channel\":\"D1\",\"message\":{},\"ts\":\"1.2\"}", 1, &m, &why), 0);
	ck_assert_int_eq(parse("{\"type\":\"reaction_added\",\"user\":\"U1\"}", 1, &m, &why),
	    0);
	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D1\",\"user\":\"U1\","
	    "\"ts\":\"1.2\"}", 1, &m, &why), -1);   /* no text */
	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D 1\",\"user\":\"U1\","
	    "\"text\":\"x\",\"ts\":\"1.2\"}", 1, &m, &why), -1);
	ck_assert_int_eq(parse("{\"type\":\"message\",\"channel\":\"D1\",\"user\":\"U1\","
	    "\"text\":\"x\",\"ts\":7}", 1, &m, &why), -1);
	ck_assert_int_eq(sl_event_parse(NULL, SELF, 1, &m, &why), 0);
}
END_TEST

START_TEST(test_error_classes)
{
	ck_assert_int_eq(sl_error_class("invalid_auth"), OUTQ_UNAUTHORIZED);
	ck_assert_int_eq(sl_error_class("not_authed"), OUTQ_UNAUTHORIZED);
	ck_assert_int_eq(sl_error_class("token_revoked"), OUTQ_UNAUTHORIZED);
	ck_assert_int_eq(sl_error_class("ratelimited"), OUTQ_RETRY_AFTER);
	ck_assert_int_eq(sl_error_class("channel_not_found"), OUTQ_REJECTED);
	ck_assert_int_eq(sl_error_class("not_in_channel"), OUTQ_REJECTED);
	ck_assert_int_eq(sl_error_class("msg_too_long"), OUTQ_REJECTED);
	ck_assert_int_eq(sl_error_class("some_future_error"), OUTQ_REJECTED);
	ck_assert_int_eq(sl_error_class("internal_error"), OUTQ_TRANSIENT);
	ck_assert_int_eq(sl_error_class("service_unavailable"), OUTQ_TRANSIENT);
	ck_assert_int_eq(sl_error_class(NULL), OUTQ_TRANSIENT);
}
END_TEST

START_TEST(test_retry_after)
{
	ck_assert(sl_retry_after("3", 30) == 3);
	ck_assert(sl_retry_after("0.5", 30) == 0.5);
	ck_assert(sl_retry_after(NULL, 30) == 30);
	ck_assert(sl_retry_after("", 30) == 30);
	ck_assert(sl_retry_after("soon", 30) == 30);
	ck_assert(sl_retry_after("-1", 30) == 30);
	ck_assert(sl_retry_after("nan", 30) == 30);
	ck_assert(sl_retry_after("99999", 30) == 3600);
}
END_TEST

static Suite *
slack_suite(void)
{
	Suite *s = suite_create("slack");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_dm_always_addressed);
	tcase_add_test(tc, test_channel_mention_stripped);
	tcase_add_test(tc, test_channel_chatter_not_addressed);
	tcase_add_test(tc, test_thread_and_broadcast);
	tcase_add_test(tc, test_entities_and_bang_commands);
	tcase_add_test(tc, test_skipped_and_malformed);
	tcase_add_test(tc, test_error_classes);
	tcase_add_test(tc, test_retry_after);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(slack_suite)
