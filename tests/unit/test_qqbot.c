/* test_qqbot.c - QQ Bot's pure helpers: cursor, chat ids, events, close codes, replies. */
#include <check.h>
#include <string.h>

#include "platforms/qqbot.h"
#include "unit_util.h"

static cJSON *
js(const char *text)
{
	cJSON *o = cJSON_Parse(text);

	ck_assert_ptr_nonnull(o);
	return o;
}

START_TEST(test_session_round_trip)
{
	struct qq_session a = { .seq = 4711 }, b;
	char buf[300];

	snprintf(a.id, sizeof(a.id), "5c9e0d1e-aaaa");
	snprintf(a.self_id, sizeof(a.self_id), "11000000000000000001");
	qq_session_format(&a, buf, sizeof(buf));
	ck_assert_int_eq(qq_session_parse(buf, &b), 0);
	ck_assert_str_eq(b.id, "5c9e0d1e-aaaa");
	ck_assert_int_eq(b.seq, 4711);
	ck_assert_str_eq(b.self_id, "11000000000000000001");

	memset(&a, 0, sizeof(a));               /* no session yet */
	qq_session_format(&a, buf, sizeof(buf));
	ck_assert_int_eq(qq_session_parse(buf, &b), 0);
	ck_assert_str_eq(b.id, "");
	ck_assert_str_eq(b.self_id, "");

	ck_assert_int_eq(qq_session_parse(NULL, &b), -1);
	ck_assert_int_eq(qq_session_parse("", &b), -1);
	ck_assert_int_eq(qq_session_parse("v1 a 1 b c", &b), -1);   /* Discord's form */
	ck_assert_int_eq(qq_session_parse("q1 a -5 b", &b), -1);
	ck_assert_int_eq(qq_session_parse("q1 a 1", &b), -1);
}
END_TEST

START_TEST(test_chat_ids)
{
	const char *t = NULL;

	ck_assert_int_eq(qq_chat_parse("c2c:ABC", &t), QQ_C2C);
	ck_assert_str_eq(t, "ABC");
	ck_assert_int_eq(qq_chat_parse("group:G1", &t), QQ_GROUP);
	ck_assert_int_eq(qq_chat_parse("guild:123", &t), QQ_GUILD);
	ck_assert_int_eq(qq_chat_parse("dm:456", &t), QQ_DM);
	ck_assert_str_eq(t, "456");
	ck_assert_int_eq(qq_chat_parse("c2c:", &t), -1);
	ck_assert_int_eq(qq_chat_parse("ABC", &t), -1);
	ck_assert_int_eq(qq_chat_parse("telegram:1", &t), -1);
	ck_assert_int_eq(qq_chat_parse("c2c:a/../b", &t), -1);       /* never a path */
	ck_assert_int_eq(qq_chat_parse("group:a?x=1", &t), -1);
	ck_assert_str_eq(qq_api_default(1), "https://sandbox.api.sgroup.qq.com");
	ck_assert_str_eq(qq_api_default(0), "https://api.sgroup.qq.com");
	ck_assert_int_eq(qq_reply_window(QQ_C2C), 3600);
	ck_assert_int_eq(qq_reply_window(QQ_GROUP), 300);
}
END_TEST

START_TEST(test_time_parse)
{
	time_t t = 0;

	ck_assert_int_eq(qq_time_parse("2024-05-01T12:00:00+08:00", &t), 0);
	ck_assert_int_eq((long long)t, 1714536000LL);
	ck_assert_int_eq(qq_time_parse("2024-05-01T04:00:00Z", &t), 0);
	ck_assert_int_eq((long long)t, 1714536000LL);
	ck_assert_int_eq(qq_time_parse("2024-05-01T04:00:00.123456+00:00", &t), 0);
	ck_assert_int_eq((long long)t, 1714536000LL);
	ck_assert_int_eq(qq_time_parse("2024-04-30T23:30:00-04:30", &t), 0);
	ck_assert_int_eq((long long)t, 1714536000LL);
	ck_assert_int_eq(qq_time_parse("2024-05-01T12:00:00", &t), -1);      /* no zone */
	ck_assert_int_eq(qq_time_parse("2024-13-01T12:00:00Z", &t), -1);
	ck_assert_int_eq(qq_time_parse("2024-05-01T12:00:00+08:00x", &t), -1);
	ck_assert_int_eq(qq_time_parse("yesterday", &t), -1);
	ck_assert_int_eq(qq_time_parse(NULL, &t), -1);
}
END_TEST

START_TEST(test_c2c_and_group_messages)
{
	cJSON *c = js("{\"id\":\"ROBOT1.0_a\",\"content\":\"hello \",\"timestamp\":"
	    "\"2024-05-01T12:00:00+08:00\",\"author\":{\"id\":\"U1\",\"user_openid\":\"U1\"}}");
	cJSON *g = js("{\"id\":\"ROBOT1.0_b\",\"content\":\" what now\",\"group_openid\":\"G1\","
	    "\"author\":{\"member_openid\":\"M1\"}}");
	struct qq_msg m;
	const char *why = NULL;

	ck_assert_int_eq(qq_message_parse("C2C_MESSAGE_CREATE", c, "", 1714600000, &m, &why), 1);
	ck_assert_str_eq(m.chat, "c2c:U1");
	ck_assert_int_eq(m.kind, QQ_C2C);
	ck_assert_str_eq(m.user, "U1");
	ck_assert_str_eq(m.id, "ROBOT1.0_a");
	ck_assert_str_eq(m.text, "hello");
	ck_assert_int_eq((long long)m.time, 1714536000LL);
	free(m.text);
	/* no timestamp: now */
	ck_assert_int_eq(qq_message_parse("GROUP_AT_MESSAGE_CREATE", g, "", 1714600000, &m, &why),
	    1);
	ck_assert_str_eq(m.chat, "group:G1");
	ck_assert_str_eq(m.user, "M1");
	ck_assert_str_eq(m.text, "what now");
	ck_assert_int_eq((long long)m.time, 1714600000LL);
	free(m.text);
	/* a timestamp from the future is not believed either */
	ck_assert_int_eq(qq_message_parse("C2C_MESSAGE_CREATE", c, "", 1714500000, &m, &why), 1);
	ck_assert_int_eq((long long)m.time, 1714500000LL);
	free(m.text);
	cJSON_Delete(c);
	cJSON_Delete(g);
}
END_TEST

START_TEST(test_guild_messages)
{
	cJSON *at = js("{\"id\":\"m1\",\"channel_id\":\"C1\",\"guild_id\":\"G9\",\"content\":"
	    "\"<@!999> ping <@999>\",\"author\":{\"id\":\"30\",\"username\":\"ann\"}}");
	cJSON *dm = js("{\"id\":\"m2\",\"channel_id\":\"C2\",\"guild_id\":\"D7\",\"content\":"
	    "\"hi\",\"author\":{\"id\":\"31\"}}");
	struct qq_msg m;
	const char *why = NULL;

	ck_assert_int_eq(qq_message_parse("AT_MESSAGE_CREATE", at, "999", 0, &m, &why), 1);
	ck_assert_str_eq(m.chat, "guild:C1");
	ck_assert_str_eq(m.text, "ping");
	ck_assert_str_eq(m.user_name, "ann");
	free(m.text);
	ck_assert_int_eq(qq_message_parse("DIRECT_MESSAGE_CREATE", dm, "999", 0, &m, &why), 1);
	ck_assert_str_eq(m.chat, "dm:D7");             /* the DM session's guild */
	ck_assert_int_eq(m.kind, QQ_DM);
	free(m.text);
	cJSON_Delete(at);
	cJSON_Delete(dm);
}
END_TEST

START_TEST(test_skipped_and_malformed)
{
	cJSON *bot = js("{\"id\":\"m\",\"guild_id\":\"D\",\"content\":\"x\","
	    "\"author\":{\"id\":\"5\",\"bot\":true}}");
	cJSON *own = js("{\"id\":\"m\",\"guild_id\":\"D\",\"content\":\"x\",\"author\":{\"id\":\"999\"}}");
	cJSON *empty = js("{\"id\":\"m\",\"content\":\"<@!999>  \",\"channel_id\":\"C\","
	    "\"author\":{\"id\":\"5\"}}");
	cJSON *nochat = js("{\"id\":\"m\",\"content\":\"x\",\"author\":{\"member_openid\":\"M\"}}");
	cJSON *badchat = js("{\"id\":\"m\",\"content\":\"x\",\"group_openid\":\"a/b\","
	    "\"author\":{\"member_openid\":\"M\"}}");
	struct qq_msg m;
	const char *why = NULL;

	ck_assert_int_eq(qq_message_parse("DIRECT_MESSAGE_CREATE", bot, "999", 0, &m, &why), 0);
	ck_assert_str_eq(why, "a bot's message");
	ck_assert_int_eq(qq_message_parse("DIRECT_MESSAGE_CREATE", own, "999", 0, &m, &why), 0);
	ck_assert_int_eq(qq_message_parse("AT_MESSAGE_CREATE", empty, "999", 0, &m, &why), 0);
	ck_assert_ptr_null(m.text);
	ck_assert_int_eq(qq_message_parse("GROUP_AT_MESSAGE_CREATE", nochat, "", 0, &m, &why), -1);
	ck_assert_int_eq(qq_message_parse("GROUP_AT_MESSAGE_CREATE", badchat, "", 0, &m, &why), -1);
	ck_assert_int_eq(qq_message_parse("READY", bot, "", 0, &m, &why), -1);
	ck_assert_int_eq(qq_event_kind("MESSAGE_CREATE"), -1);       /* private bots only */
	ck_assert_int_eq(qq_event_kind(NULL), -1);
	cJSON_Delete(bot);
	cJSON_Delete(own);
	cJSON_Delete(empty);
	cJSON_Delete(nochat);
	cJSON_Delete(badchat);
}
END_TEST

START_TEST(test_close_codes)
{
	ck_assert_int_eq(qq_close_action(4009), QQ_CLOSE_RESUME);
	ck_assert_int_eq(qq_close_action(1006), QQ_CLOSE_RESUME);
	ck_assert_int_eq(qq_close_action(4004), QQ_CLOSE_REFRESH);
	ck_assert_int_eq(qq_close_action(4008), QQ_CLOSE_BACKOFF);
	ck_assert_int_eq(qq_close_action(4006), QQ_CLOSE_IDENTIFY);
	ck_assert_int_eq(qq_close_action(4007), QQ_CLOSE_IDENTIFY);
	ck_assert_int_eq(qq_close_action(4900), QQ_CLOSE_IDENTIFY);
	ck_assert_int_eq(qq_close_action(4913), QQ_CLOSE_IDENTIFY);
	ck_assert_int_eq(qq_close_action(4014), QQ_CLOSE_UNAUTHORIZED);
	ck_assert_int_eq(qq_close_action(4914), QQ_CLOSE_STOP);
	ck_assert_int_eq(qq_close_action(4915), QQ_CLOSE_STOP);
	ck_assert_int_eq(qq_close_action(4013), QQ_CLOSE_STOP);
	ck_assert_ptr_nonnull(strstr(qq_close_reason(4914), "delisted"));
	ck_assert_ptr_nonnull(strstr(qq_close_reason(4915), "banned"));
	ck_assert_str_eq(qq_close_reason(4905), "internal error");
	ck_assert_str_eq(qq_close_reason(1006), "");
}
END_TEST

START_TEST(test_msg_seq)
{
	uint32_t a = qq_msg_seq("r.ROBOT1_0_x.0.0"), b = qq_msg_seq("r.ROBOT1_0_x.0.1");
	int i;
	char key[32];

	ck_assert_uint_eq(a, qq_msg_seq("r.ROBOT1_0_x.0.0"));
	ck_assert_uint_ne(a, b);
	for (i = 0; i < 1000; i++) {
		snprintf(key, sizeof(key), "w1.%d.%d", i, i * 7);
		ck_assert_uint_ge(qq_msg_seq(key), 1);
		ck_assert_uint_le(qq_msg_seq(key), 999999999);
	}
	ck_assert_uint_ge(qq_msg_seq(""), 1);
}
END_TEST

START_TEST(test_token_parse)
{
	cJSON *s = js("{\"access_token\":\"tok\",\"expires_in\":\"7200\"}");
	cJSON *n = js("{\"access_token\":\"tok2\",\"expires_in\":59}");
	cJSON *e = js("{\"code\":100016,\"message\":\"invalid appid or secret\"}");
	cJSON *z = js("{\"access_token\":\"tok\",\"expires_in\":\"0\"}");
	cJSON *w = js("{\"access_token\":\"to k\",\"expires_in\":60}");
	char tok[16];
	int64_t exp = 0;

	ck_assert_int_eq(qq_token_parse(s, tok, sizeof(tok), &exp), 0);
	ck_assert_str_eq(tok, "tok");
	ck_assert_int_eq(exp, 7200);
	ck_assert_int_eq(qq_token_parse(n, tok, sizeof(tok), &exp), 0);
	ck_assert_int_eq(exp, 59);
	ck_assert_int_eq(qq_token_parse(e, tok, sizeof(tok), &exp), -1);
	ck_assert_int_eq(qq_token_parse(z, tok, sizeof(tok), &exp), -1);
	ck_assert_int_eq(qq_token_parse(w, tok, sizeof(tok), &exp), -1);
	ck_assert_int_eq(qq_token_parse(s, tok, 3, &exp), -1);      /* does not fit */
	ck_assert_int_eq(qq_token_parse(NULL, tok, sizeof(tok), &exp), -1);
	cJSON_Delete(s);
	cJSON_Delete(n);
	cJSON_Delete(e);
	cJSON_Delete(z);
	cJSON_Delete(w);
}
END_TEST

START_TEST(test_send_classify)
{
	const char *why;

	ck_assert_int_eq(qq_send_classify(200, 0, &why), OUTQ_OK);
	ck_assert_int_eq(qq_send_classify(400, 40054005, &why), OUTQ_OK);   /* sent before */
	ck_assert_int_eq(qq_send_classify(400, 304027, &why), OUTQ_REJECTED);
	ck_assert_ptr_nonnull(strstr(why, "reply window"));
	ck_assert_int_eq(qq_send_classify(400, 304026, &why), OUTQ_REJECTED);
	ck_assert_int_eq(qq_send_classify(400, 22009, &why), OUTQ_REJECTED);
	ck_assert_int_eq(qq_send_classify(400, 304018, &why), OUTQ_TRANSIENT);
	ck_assert_int_eq(qq_send_classify(401, 11241, &why), OUTQ_TRANSIENT);
	ck_assert_ptr_nonnull(strstr(why, "token"));
	ck_assert_int_eq(qq_send_classify(429, 22007, &why), OUTQ_RETRY_AFTER);
	ck_assert_int_eq(qq_send_classify(502, 0, &why), OUTQ_TRANSIENT);
	ck_assert_int_eq(qq_send_classify(0, 0, &why), OUTQ_TRANSIENT);
	ck_assert_int_eq(qq_send_classify(403, 0, &why), OUTQ_REJECTED);
	ck_assert_int_eq(qq_send_classify(200, 12345, &why), OUTQ_REJECTED);  /* error in a 200 */
}
END_TEST

START_TEST(test_handles)
{
	struct qq_handle h = { .time = 1000000, .used = 0 };
	char why[200], chat[300];

	snprintf(h.msg_id, sizeof(h.msg_id), "ROBOT1.0_a");
	ck_assert_int_eq(qq_handle_usable(QQ_C2C, &h, 1000000 + 3599, why, sizeof(why)), 1);
	ck_assert_int_eq(qq_handle_usable(QQ_C2C, &h, 1000000 + 3601, why, sizeof(why)), 0);
	ck_assert_ptr_nonnull(strstr(why, "past its reply window"));
	ck_assert_int_eq(qq_handle_usable(QQ_GROUP, &h, 1000000 + 299, why, sizeof(why)), 1);
	ck_assert_int_eq(qq_handle_usable(QQ_GROUP, &h, 1000000 + 301, why, sizeof(why)), 0);
	h.used = QQ_MAX_REPLIES;
	ck_assert_int_eq(qq_handle_usable(QQ_C2C, &h, 1000000, why, sizeof(why)), 0);
	ck_assert_ptr_nonnull(strstr(why, "5 replies"));

	ck_assert_int_eq(qq_handle_line_parse("group:G1 ROBOT1.0_b 1714536000 2", chat,
	    sizeof(chat), &h), 0);
	ck_assert_str_eq(chat, "group:G1");
	ck_assert_str_eq(h.msg_id, "ROBOT1.0_b");
	ck_assert_int_eq(h.time, 1714536000);
	ck_assert_uint_eq(h.used, 2);
	ck_assert_int_eq(qq_handle_line_parse("nochat:G1 m 1 0", chat, sizeof(chat), &h), -1);
	ck_assert_int_eq(qq_handle_line_parse("c2c:U m -1 0", chat, sizeof(chat), &h), -1);
	ck_assert_int_eq(qq_handle_line_parse("c2c:U m 1e300 0", chat, sizeof(chat), &h), -1);
	ck_assert_int_eq(qq_handle_line_parse("c2c:U m 1 0 extra", chat, sizeof(chat), &h), -1);
	ck_assert_int_eq(qq_handle_line_parse("c2c:U m", chat, sizeof(chat), &h), -1);
	ck_assert_int_eq(qq_handle_line_parse("c2c:U m 1 0", chat, 4, &h), -1);
}
END_TEST

static Suite *
qqbot_suite(void)
{
	Suite *s = suite_create("qqbot");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_session_round_trip);
	tcase_add_test(tc, test_chat_ids);
	tcase_add_test(tc, test_time_parse);
	tcase_add_test(tc, test_c2c_and_group_messages);
	tcase_add_test(tc, test_guild_messages);
	tcase_add_test(tc, test_skipped_and_malformed);
	tcase_add_test(tc, test_close_codes);
	tcase_add_test(tc, test_msg_seq);
	tcase_add_test(tc, test_token_parse);
	tcase_add_test(tc, test_send_classify);
	tcase_add_test(tc, test_handles);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(qqbot_suite)
