/* test_discord.c - Discord's pure helpers: session cursor, message parsing, nonces. */
#include <check.h>
#include <string.h>

#include "platforms/discord.h"
#include "unit_util.h"

START_TEST(test_session_round_trip)
{
	struct dc_session a = { .seq = 4711 }, b;
	char buf[800];

	snprintf(a.id, sizeof(a.id), "abc123");
	snprintf(a.self_id, sizeof(a.self_id), "999");
	snprintf(a.resume_url, sizeof(a.resume_url), "wss://127.0.0.1:4444/resume");
	dc_session_format(&a, buf, sizeof(buf));
	ck_assert_int_eq(dc_session_parse(buf, &b), 0);
	ck_assert_str_eq(b.id, "abc123");
	ck_assert_int_eq(b.seq, 4711);
	ck_assert_str_eq(b.self_id, "999");
	ck_assert_str_eq(b.resume_url, "wss://127.0.0.1:4444/resume");

	memset(&a, 0, sizeof(a));               /* no session yet */
	dc_session_format(&a, buf, sizeof(buf));
	ck_assert_int_eq(dc_session_parse(buf, &b), 0);
	ck_assert_str_eq(b.id, "");
	ck_assert_str_eq(b.resume_url, "");

	ck_assert_int_eq(dc_session_parse(NULL, &b), -1);
	ck_assert_int_eq(dc_session_parse("", &b), -1);
	ck_assert_int_eq(dc_session_parse("v2 a 1 b c", &b), -1);
	ck_assert_int_eq(dc_session_parse("v1 a -5 b c", &b), -1);
	ck_assert_int_eq(dc_session_parse("v1 a 1 b", &b), -1);
}
END_TEST

static cJSON *
msg(const char *json)
{
	cJSON *o = cJSON_Parse(json);

	ck_assert_ptr_nonnull(o);
	return o;
}

START_TEST(test_dm_always_addressed)
{
	cJSON *d = msg("{\"id\":\"10\",\"channel_id\":\"20\",\"type\":0,\"content\":\"hello\","
	    "\"author\":{\"id\":\"30\",\"username\":\"ann\"}}");
	struct dc_msg m;
	const char *why = NULL;

	ck_assert_int_eq(dc_message_parse(d, "999", 1, &m, &why), 1);
	ck_assert_int_eq(m.dm, 1);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_str_eq(m.text, "hello");
	ck_assert_str_eq(m.id, "10");
	ck_assert_str_eq(m.channel_id, "20");
	ck_assert_str_eq(m.author_id, "30");
	ck_assert_str_eq(m.author_name, "ann");
	free(m.text);
	cJSON_Delete(d);
}
END_TEST

START_TEST(test_guild_mention_stripped)
{
	cJSON *d = msg("{\"id\":\"10\",\"channel_id\":\"20\",\"guild_id\":\"5\",\"type\":0,"
	    "\"content\":\"<@999> what is <@!999> up\",\"mentions\":[{\"id\":\"999\"}],"
	    "\"author\":{\"id\":\"30\"}}");
	struct dc_msg m;
	const char *why = NULL;

	ck_assert_int_eq(dc_message_parse(d, "999", 1, &m, &why), 1);
	ck_assert_int_eq(m.dm, 0);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_str_eq(m.text, "what is  up");
	free(m.text);
	cJSON_Delete(d);
}
END_TEST

START_TEST(test_guild_chatter_not_addressed)
{
	cJSON *d = msg("{\"id\":\"10\",\"channel_id\":\"20\",\"guild_id\":\"5\",\"type\":0,"
	    "\"content\":\"just talking <@123>\",\"mentions\":[{\"id\":\"123\"}],"
	    "\"author\":{\"id\":\"30\"}}");
	struct dc_msg m;
	const char *why = NULL;

	ck_assert_int_eq(dc_message_parse(d, "999", 1, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 0);
	free(m.text);
	ck_assert_int_eq(dc_message_parse(d, "999", 0, &m, &why), 1);  /* require_mention off */
	ck_assert_int_eq(m.addressed, 1);
	free(m.text);
	cJSON_Delete(d);
}
END_TEST

START_TEST(test_reply_to_us_and_command_addressed)
{
	cJSON *d = msg("{\"id\":\"10\",\"channel_id\":\"20\",\"guild_id\":\"5\",\"type\":19,"
	    "\"content\":\"and then?\",\"author\":{\"id\":\"30\"},"
	    "\"referenced_message\":{\"id\":\"9\",\"author\":{\"id\":\"999\"}}}");
	cJSON *c = msg("{\"id\":\"11\",\"channel_id\":\"20\",\"guild_id\":\"5\","
	    "\"content\":\"/status\",\"author\":{\"id\":\"30\"}}");
	struct dc_msg m;
	const char *why = NULL;

	ck_assert_int_eq(dc_message_parse(d, "999", 1, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	free(m.text);
	ck_assert_int_eq(dc_message_parse(c, "999", 1, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_str_eq(m.text, "/status");
	free(m.text);
	cJSON_Delete(d);
	cJSON_Delete(c);
}
END_TEST

START_TEST(test_skipped_and_malformed)
{
	cJSON *own = msg("{\"id\":\"10\",\"channel_id\":\"20\",\"content\":\"x\","
	    "\"author\":{\"id\":\"999\"}}");
	cJSON *bot = msg("{\"id\":\"10\",\"channel_id\":\"20\",\"content\":\"x\","
	    "\"author\":{\"id\":\"31\",\"bot\":true}}");
	cJSON *sys = msg("{\"id\":\"10\",\"channel_id\":\"20\",\"content\":\"x\",\"type\":7,"
	    "\"author\":{\"id\":\"31\"}}");
	cJSON *bad = msg("{\"id\":\"10\",\"content\":\"x\",\"author\":{\"id\":\"31\"}}");
	cJSON *nocontent = msg("{\"id\":\"10\",\"channel_id\":\"20\",\"author\":{\"id\":\"31\"}}");
	struct dc_msg m;
	const char *why = NULL;

	ck_assert_int_eq(dc_message_parse(own, "999", 1, &m, &why), 0);
	ck_assert_str_eq(why, "our own message");
	ck_assert_int_eq(dc_message_parse(bot, "999", 1, &m, &why), 0);
	ck_assert_str_eq(why, "a bot's message");
	ck_assert_int_eq(dc_message_parse(sys, "999", 1, &m, &why), 0);
	ck_assert_int_eq(dc_message_parse(bad, "999", 1, &m, &why), -1);
	ck_assert_int_eq(dc_message_parse(nocontent, "999", 1, &m, &why), -1);
	cJSON_Delete(own);
	cJSON_Delete(bot);
	cJSON_Delete(sys);
	cJSON_Delete(bad);
	cJSON_Delete(nocontent);
}
END_TEST

START_TEST(test_close_codes)
{
	ck_assert_int_eq(dc_close_ends_session(1000), 1);
	ck_assert_int_eq(dc_close_ends_session(1001), 1);
	ck_assert_int_eq(dc_close_ends_session(4007), 1);
	ck_assert_int_eq(dc_close_ends_session(4009), 1);
	ck_assert_int_eq(dc_close_ends_session(4014), 1);
	ck_assert_int_eq(dc_close_ends_session(4000), 0);
	ck_assert_int_eq(dc_close_ends_session(4008), 0);
	ck_assert_int_eq(dc_close_ends_session(1006), 0);
}
END_TEST

START_TEST(test_nonce)
{
	char a[26], b[26], c[26];

	dc_nonce("r.123.0.0", a);
	dc_nonce("r.123.0.0", b);
	dc_nonce("r.123.0.1", c);
	ck_assert_str_eq(a, b);
	ck_assert_str_ne(a, c);
	ck_assert_uint_le(strlen(a), 25);
	ck_assert_uint_ge(strlen(a), 16);
}
END_TEST

static Suite *
discord_suite(void)
{
	Suite *s = suite_create("discord");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_session_round_trip);
	tcase_add_test(tc, test_dm_always_addressed);
	tcase_add_test(tc, test_guild_mention_stripped);
	tcase_add_test(tc, test_guild_chatter_not_addressed);
	tcase_add_test(tc, test_reply_to_us_and_command_addressed);
	tcase_add_test(tc, test_skipped_and_malformed);
	tcase_add_test(tc, test_close_codes);
	tcase_add_test(tc, test_nonce);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(discord_suite)
