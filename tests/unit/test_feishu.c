/* test_feishu.c - Feishu's pure helpers: events, mentions, uuids, errors, the endpoint. */
#include <check.h>
#include <string.h>

#include "platforms/feishu.h"
#include "unit_util.h"

#define BOT "ou_bot1"

static cJSON *
event(const char *chat_type, const char *sender, const char *sender_type, const char *type,
    const char *content, const char *extra)
{
	char buf[4096];
	cJSON *o;

	snprintf(buf, sizeof(buf), "{\"schema\":\"2.0\",\"header\":{\"event_id\":\"e1\","
	    "\"event_type\":\"im.message.receive_v1\"},\"event\":{\"sender\":{\"sender_id\":"
	    "{\"open_id\":\"%s\"},\"sender_type\":\"%s\"},\"message\":{\"message_id\":\"om_1\","
	    "\"chat_id\":\"oc_1\",\"chat_type\":\"%s\",\"message_type\":\"%s\","
	    "\"create_time\":\"1700000000123\",\"content\":%s%s}}}", sender, sender_type,
	    chat_type, type, content, extra);
	o = cJSON_Parse(buf);
	ck_assert_msg(o != NULL, "bad test JSON: %s", buf);
	return o;
}

START_TEST(test_p2p_text)
{
	cJSON *ev = event("p2p", "ou_u1", "user", "text", "\"{\\\"text\\\":\\\" hello \\\"}\"", "");
	struct fs_msg m;
	const char *why = NULL;

	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), 1);
	ck_assert_str_eq(m.event_id, "e1");
	ck_assert_str_eq(m.message_id, "om_1");
	ck_assert_str_eq(m.chat_id, "oc_1");
	ck_assert_str_eq(m.user_id, "ou_u1");
	ck_assert_str_eq(m.text, "hello");
	ck_assert_int_eq(m.group, 0);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_ptr_null(m.thread);
	ck_assert_int_eq((long)m.time, 1700000000L);
	free(m.text);
	cJSON_Delete(ev);
}
END_TEST

#define MENTIONS ",\"mentions\":[{\"key\":\"@_user_1\",\"id\":{\"open_id\":\"ou_bot1\"}," \
	"\"name\":\"hermes\"},{\"key\":\"@_user_10\",\"id\":{\"open_id\":\"ou_x\"}," \
	"\"name\":\"alice\"}]"

START_TEST(test_group_mentions)
{
	cJSON *ev = event("group", "ou_u1", "user", "text",
	    "\"{\\\"text\\\":\\\"@_user_1 ask @_user_10 about @_user_1 it\\\"}\"", MENTIONS);
	struct fs_msg m;
	const char *why = NULL;

	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), 1);
	ck_assert_int_eq(m.group, 1);
	ck_assert_int_eq(m.addressed, 1);
	/* ours removed (no double blank), the longest key wins (@_user_10 is not @_user_1 + 0) */
	ck_assert_str_eq(m.text, "ask @alice about it");
	free(m.text);
	cJSON_Delete(ev);

	ev = event("group", "ou_u1", "user", "text",
	    "\"{\\\"text\\\":\\\"@_user_10 chatter\\\"}\"", MENTIONS);
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 0);
	ck_assert_str_eq(m.text, "@alice chatter");
	free(m.text);
	ck_assert_int_eq(fs_event_parse(ev, BOT, 0, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);               /* require_mention off */
	free(m.text);
	cJSON_Delete(ev);

	ev = event("group", "ou_u1", "user", "text", "\"{\\\"text\\\":\\\"/status\\\"}\"", "");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);               /* a command */
	free(m.text);
	cJSON_Delete(ev);
}
END_TEST

START_TEST(test_threads)
{
	cJSON *ev = event("group", "ou_u1", "user", "text", "\"{\\\"text\\\":\\\"x\\\"}\"",
	    ",\"root_id\":\"om_root\",\"parent_id\":\"om_p\",\"thread_id\":\"omt_1\"");
	struct fs_msg m;
	const char *why = NULL;

	ck_assert_int_eq(fs_event_parse(ev, BOT, 0, &m, &why), 1);
	ck_assert_str_eq(m.thread, "om_root");
	free(m.text);
	cJSON_Delete(ev);
	/* the first message of a topic: it is the root itself */
	ev = event("group", "ou_u1", "user", "text", "\"{\\\"text\\\":\\\"x\\\"}\"",
	    ",\"root_id\":\"\",\"thread_id\":\"omt_2\"");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 0, &m, &why), 1);
	ck_assert_str_eq(m.thread, "om_1");
	free(m.text);
	cJSON_Delete(ev);
	/* a quote reply outside any thread is no thread */
	ev = event("group", "ou_u1", "user", "text", "\"{\\\"text\\\":\\\"x\\\"}\"",
	    ",\"root_id\":\"om_root\",\"parent_id\":\"om_root\",\"thread_id\":\"\"");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 0, &m, &why), 1);
	ck_assert_ptr_null(m.thread);
	free(m.text);
	cJSON_Delete(ev);
}
END_TEST

START_TEST(test_skipped_and_malformed)
{
	struct fs_msg m;
	const char *why = NULL;
	cJSON *ev;

	ev = event("group", BOT, "app", "text", "\"{\\\"text\\\":\\\"x\\\"}\"", "");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), 0);
	ck_assert_str_eq(why, "our own message");
	cJSON_Delete(ev);
	ev = event("group", "ou_other", "app", "text", "\"{\\\"text\\\":\\\"x\\\"}\"", "");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), 0);
	ck_assert_str_eq(why, "an app's message");
	cJSON_Delete(ev);
	ev = event("p2p", "ou_u1", "user", "image", "\"{\\\"image_key\\\":\\\"k\\\"}\"", "");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), 0);
	ck_assert_str_eq(why, "a message that is not text");
	cJSON_Delete(ev);
	/* content that is not JSON, or JSON without text */
	ev = event("p2p", "ou_u1", "user", "text", "\"hello\"", "");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), -1);
	cJSON_Delete(ev);
	ev = event("p2p", "ou_u1", "user", "text", "\"{\\\"text\\\":5}\"", "");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), -1);
	cJSON_Delete(ev);
	ev = event("p2p", "ou_u1", "user", "text", "{\"text\":\"not a string\"}", "");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), -1);
	cJSON_Delete(ev);
	ev = cJSON_Parse("{\"event\":{\"message\":{}}}");
	ck_assert_int_eq(fs_event_parse(ev, BOT, 1, &m, &why), -1);
	cJSON_Delete(ev);
}
END_TEST

START_TEST(test_uuid)
{
	char a[37], b[37], c[37];

	fs_uuid("r.om_1.0.0", a);
	fs_uuid("r.om_1.0.0", b);
	fs_uuid("r.om_1.0.1", c);
	ck_assert_str_eq(a, b);
	ck_assert_str_ne(a, c);
	ck_assert_uint_eq(strlen(a), 36);
	ck_assert(a[8] == '-' && a[13] == '-' && a[18] == '-' && a[23] == '-');
}
END_TEST

START_TEST(test_send_classify)
{
	int refresh, all;

	ck_assert_int_eq(fs_send_classify(200, 0, 0, &refresh, &all), OUTQ_OK);
	ck_assert_int_eq(fs_send_classify(200, 99991663, 0, &refresh, &all), OUTQ_TRANSIENT);
	ck_assert_int_eq(refresh, 1);
	ck_assert_int_eq(fs_send_classify(400, 99991668, 1, &refresh, &all), OUTQ_TRANSIENT);
	ck_assert_int_eq(refresh, 1);
	ck_assert_int_eq(fs_send_classify(429, 99991400, 0, &refresh, &all), OUTQ_RETRY_AFTER);
	ck_assert_int_eq(all, 1);
	ck_assert_int_eq(refresh, 0);
	ck_assert_int_eq(fs_send_classify(200, 230020, 0, &refresh, &all), OUTQ_RETRY_AFTER);
	ck_assert_int_eq(all, 0);
	ck_assert_int_eq(fs_send_classify(200, 230011, 1, &refresh, &all), OUTQ_VARIANT);
	ck_assert_int_eq(fs_send_classify(200, 231003, 1, &refresh, &all), OUTQ_VARIANT);
	ck_assert_int_eq(fs_send_classify(200, 230011, 0, &refresh, &all), OUTQ_REJECTED);
	/* errors with HTTP 200: a checker of the status alone would call these sent */
	ck_assert_int_eq(fs_send_classify(200, 230002, 0, &refresh, &all), OUTQ_REJECTED);
	ck_assert_int_eq(fs_send_classify(200, 230001, 1, &refresh, &all), OUTQ_REJECTED);
	ck_assert_int_eq(fs_send_classify(200, 99991672, 0, &refresh, &all), OUTQ_UNAUTHORIZED);
	ck_assert_int_eq(fs_send_classify(200, -1, 0, &refresh, &all), OUTQ_REJECTED);
	ck_assert_int_eq(fs_send_classify(502, -1, 0, &refresh, &all), OUTQ_TRANSIENT);
	ck_assert_int_eq(fs_send_classify(0, -1, 0, &refresh, &all), OUTQ_TRANSIENT);
	ck_assert_int_eq(fs_send_classify(500, 0, 0, &refresh, &all), OUTQ_TRANSIENT);
	ck_assert_int_eq(fs_send_classify(429, -1, 0, &refresh, &all), OUTQ_RETRY_AFTER);
	ck_assert_int_eq(fs_send_classify(403, -1, 0, &refresh, &all), OUTQ_UNAUTHORIZED);
}
END_TEST

static int
endpoint(int status, const char *body, struct fs_endpoint *e, char *why)
{
	return fs_endpoint_parse(status, body, strlen(body), e, why, 300);
}

START_TEST(test_endpoint)
{
	struct fs_endpoint e;
	char why[300];

	ck_assert_int_eq(endpoint(200, "{\"code\":0,\"data\":{\"URL\":\"wss://h/ws/v2?device_id=7"
	    "&service_id=33554678&ticket=t\",\"ClientConfig\":{\"PingInterval\":90}}}", &e, why),
	    0);
	ck_assert_int_eq(e.service_id, 33554678);
	ck_assert_uint_eq(e.ping_sec, 90);
	ck_assert_str_eq(e.url, "wss://h/ws/v2?device_id=7&service_id=33554678&ticket=t");
	free(e.url);
	ck_assert_int_eq(endpoint(200, "{\"code\":0,\"data\":{\"URL\":\"wss://h/?service_id=5\"}}",
	    &e, why), 0);
	ck_assert_uint_eq(e.ping_sec, 0);
	free(e.url);
	ck_assert_int_eq(endpoint(200, "{\"code\":1,\"msg\":\"busy\"}", &e, why), 1);
	ck_assert_int_eq(endpoint(200, "{\"code\":1000040343}", &e, why), 1);
	ck_assert_int_eq(endpoint(503, "", &e, why), 1);
	ck_assert_int_eq(endpoint(200, "not json", &e, why), 1);
	ck_assert_int_eq(endpoint(200, "{\"code\":1000040345,\"msg\":\"no\"}", &e, why), -1);
	ck_assert_ptr_nonnull(strstr(why, "1000040345"));
	/* no URL, no service_id, a service_id that is no int32 */
	ck_assert_int_eq(endpoint(200, "{\"code\":0,\"data\":{}}", &e, why), 1);
	ck_assert_int_eq(endpoint(200, "{\"code\":0,\"data\":{\"URL\":\"wss://h/?device_id=1\"}}",
	    &e, why), 1);
	ck_assert_int_eq(endpoint(200, "{\"code\":0,\"data\":{\"URL\":\"wss://h/?service_id=9x\"}}",
	    &e, why), 1);
	ck_assert_int_eq(endpoint(200, "{\"code\":0,\"data\":{\"URL\":"
	    "\"wss://h/?service_id=99999999999\"}}", &e, why), 1);
	ck_assert_ptr_null(e.url);
}
END_TEST

START_TEST(test_client_config_and_domain)
{
	char *d;

	ck_assert_uint_eq(fs_client_config_ping("{\"PingInterval\":5}", 18), 5);
	ck_assert_uint_eq(fs_client_config_ping("{\"PingInterval\":0}", 18), 0);
	ck_assert_uint_eq(fs_client_config_ping("{\"PingInterval\":99999}", 22), 0);
	ck_assert_uint_eq(fs_client_config_ping("nope", 4), 0);
	d = fs_domain_url("feishu");
	ck_assert_str_eq(d, "https://open.feishu.cn");
	free(d);
	d = fs_domain_url("lark");
	ck_assert_str_eq(d, "https://open.larksuite.com");
	free(d);
	d = fs_domain_url("https://127.0.0.1:8443//");
	ck_assert_str_eq(d, "https://127.0.0.1:8443");
	free(d);
	ck_assert_ptr_null(fs_domain_url("open.feishu.cn"));
	ck_assert_ptr_null(fs_domain_url("https://x/?a"));
	ck_assert_ptr_null(fs_domain_url("Feishu"));
}
END_TEST

static Suite *
feishu_suite(void)
{
	Suite *s = suite_create("feishu");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_p2p_text);
	tcase_add_test(tc, test_group_mentions);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_skipped_and_malformed);
	tcase_add_test(tc, test_uuid);
	tcase_add_test(tc, test_send_classify);
	tcase_add_test(tc, test_endpoint);
	tcase_add_test(tc, test_client_config_and_domain);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(feishu_suite)
