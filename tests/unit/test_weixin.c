/*
 * test_weixin.c - the iLink helpers Weixin and its login share: headers,
 * answers and their errors, the cursor, messages, client ids, the account
 * and context-token files (also as the Python gateway writes them), and
 * the QR code drawn in the terminal.
 */
#include <check.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <qrencode.h>

#include "net/http.h"
#include "platforms/ilink.h"
#include "platforms/weixin_login.h"
#include "unit_util.h"
#include "util.h"

/* The value of "Name: value" in the headers, or NULL. */
static const char *
hdr(const struct ilink_hdrs *h, const char *name)
{
	size_t i, n = strlen(name);

	for (i = 0; h->v[i] != NULL; i++)
		if (strncmp(h->v[i], name, n) == 0 && h->v[i][n] == ':')
			return h->v[i] + n + 2;
	return NULL;
}

START_TEST(test_headers_fresh_uin)
{
	struct ilink_hdrs a, b, c;
	unsigned char dec[32];
	int n;
	unsigned long v;
	char *end;

	ilink_headers(&a);
	ilink_headers(&b);
	ilink_headers(&c);
	ck_assert_str_eq(hdr(&a, "AuthorizationType"), "ilink_bot_token");
	ck_assert_str_eq(hdr(&a, "iLink-App-Id"), "bot");
	ck_assert_str_eq(hdr(&a, "iLink-App-ClientVersion"), "131584");
	ck_assert_ptr_null(a.v[4]);
	n = EVP_DecodeBlock(dec, (const unsigned char *)hdr(&a, "X-WECHAT-UIN"),
	    (int)strlen(hdr(&a, "X-WECHAT-UIN")));
	ck_assert_int_gt(n, 0);
	dec[n] = '\0';
	while (n > 0 && dec[n - 1] == '\0')     /* padding decodes to NULs */
		n--;
	ck_assert_int_eq((int)strspn((char *)dec, "0123456789"), n);
	v = strtoul((char *)dec, &end, 10);
	ck_assert(v <= 4294967295UL);
	/* new per request: three equal in a row would be a 1 in 2^64 chance */
	ck_assert(strcmp(a.uin, b.uin) != 0 || strcmp(b.uin, c.uin) != 0);
}
END_TEST

static enum ilink_err
answer(int status, const char *body, char *why, cJSON **o)
{
	struct http_response r = { .status = status, .error = status == 0 ? "timed out after 45 s" :
		NULL, .body = body, .body_len = strlen(body) };

	return ilink_answer("getupdates", &r, o, why, 300);
}

START_TEST(test_answer_classified)
{
	char why[300];
	cJSON *o;

	ck_assert_int_eq(answer(200, "{\"ret\":0,\"msgs\":[]}", why, &o), ILINK_OK);
	ck_assert_ptr_nonnull(o);
	ck_assert(cJSON_IsArray(cJSON_GetObjectItem(o, "msgs")));
	cJSON_Delete(o);
	ck_assert_int_eq(answer(200, "{\"msgs\":[]}", why, &o), ILINK_OK);
	cJSON_Delete(o);
	ck_assert_int_eq(answer(0, "", why, &o), ILINK_FAILED);
	ck_assert_ptr_null(o);
	ck_assert_str_eq(why, "getupdates: timed out after 45 s");
	ck_assert_int_eq(answer(502, "bad gateway", why, &o), ILINK_FAILED);
	ck_assert_str_eq(why, "getupdates: HTTP 502");
	ck_assert_int_eq(answer(401, "", why, &o), ILINK_EXPIRED);
	ck_assert_int_eq(answer(404, "", why, &o), ILINK_REFUSED);
	ck_assert_int_eq(answer(200, "<html>oops</html>", why, &o), ILINK_FAILED);
	ck_assert_str_eq(why, "getupdates: the answer is not a JSON object");
	ck_assert_int_eq(answer(200, "[1]", why, &o), ILINK_FAILED);
	/* errors come as HTTP 200 */
	ck_assert_int_eq(answer(200, "{\"ret\":-14,\"errcode\":-14,\"errmsg\":\"session timeout\"}",
	    why, &o), ILINK_EXPIRED);
	ck_assert_ptr_nonnull(strstr(why, "session expired"));
	ck_assert_ptr_nonnull(strstr(why, "hermes-worker login weixin"));
	ck_assert_ptr_nonnull(strstr(why, "(session timeout)"));
	ck_assert_int_eq(answer(200, "{\"ret\":0,\"errcode\":-14}", why, &o), ILINK_EXPIRED);
	ck_assert_int_eq(answer(200, "{\"ret\":-2,\"errmsg\":\"unknown error\"}", why, &o),
	    ILINK_LIMITED);
	ck_assert_ptr_nonnull(strstr(why, "rate limited or a stale context_token"));
	ck_assert_int_eq(answer(200, "{\"ret\":\"-2\"}", why, &o), ILINK_LIMITED);
	ck_assert_int_eq(answer(200, "{\"ret\":-1,\"errmsg\":\"bad\\nline\"}", why, &o),
	    ILINK_REFUSED);
	ck_assert_ptr_null(strchr(why, '\n'));          /* the server's text is escaped */
	ck_assert_ptr_nonnull(strstr(why, "ret -1"));
}
END_TEST

START_TEST(test_cursor_round_trip)
{
	static const char *const bufs[] = { "", "CgQIARAB", "a+b/c==", "two words",
		"line\nbreak", "tab\there", "\x7f\xc3\xa9" };
	size_t i;
	char *c, *back;

	for (i = 0; i < ARRAY_LEN(bufs); i++) {
		c = ilink_cursor_format(bufs[i]);
		ck_assert_ptr_null(strchr(c, '\n'));
		back = ilink_cursor_parse(c);
		ck_assert_ptr_nonnull(back);
		ck_assert_str_eq(back, bufs[i]);
		free(back);
		free(c);
	}
	c = ilink_cursor_format("CgQIARAB");
	ck_assert_str_eq(c, "w1 CgQIARAB");
	free(c);
	ck_assert_ptr_null(ilink_cursor_parse(NULL));
	ck_assert_ptr_null(ilink_cursor_parse("v1 abc 1 - -"));         /* another platform's */
	ck_assert_ptr_null(ilink_cursor_parse("w1x 0"));
	ck_assert_ptr_null(ilink_cursor_parse("w1x zz"));
	ck_assert_ptr_null(ilink_cursor_parse("w1x 6100"));             /* a NUL inside */
}
END_TEST

static cJSON *
js(const char *text)
{
	cJSON *o = cJSON_Parse(text);

	ck_assert_ptr_nonnull(o);
	return o;
}

#define SELF "bot1@im.bot"
#define TEXT_ITEMS "\"item_list\":[{\"type\":1,\"text_item\":{\"text\":\"hi there\"}}]"

static int
parse(const char *json, enum ilink_groups g, struct ilink_msg *m, const char **why)
{
	cJSON *o = js(json);
	int r;

	*why = NULL;
	r = ilink_msg_parse(o, SELF, g, m, why);
	/* the strings point into the message: copy what the test reads */
	if (r == 1) {
		static char chat[64], ctx[64];

		snprintf(chat, sizeof(chat), "%s", m->chat);
		snprintf(ctx, sizeof(ctx), "%s", m->context_token ? m->context_token : "");
		m->chat = chat;
		m->context_token = ctx;
		m->from = NULL;
	}
	cJSON_Delete(o);
	return r;
}

START_TEST(test_msg_dm)
{
	struct ilink_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"message_id\":7300000000000001,\"seq\":5,\"from_user_id\":"
	    "\"u1@im.wechat\",\"to_user_id\":\"" SELF "\",\"message_type\":1,\"message_state\":2,"
	    "\"create_time_ms\":1700000000123,\"context_token\":\"ctx1\"," TEXT_ITEMS "}",
	    ILINK_GROUPS_DISABLED, &m, &why), 1);
	ck_assert_str_eq(m.id, "7300000000000001");
	ck_assert_str_eq(m.chat, "u1@im.wechat");
	ck_assert_str_eq(m.context_token, "ctx1");
	ck_assert_str_eq(m.text, "hi there");
	ck_assert_int_eq(m.group, 0);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_int_eq((long)m.time, 1700000000);
	free(m.text);
}
END_TEST

START_TEST(test_msg_ids)
{
	struct ilink_msg m;
	const char *why;

	/* a message_id a double cannot hold exactly falls back to seq */
	ck_assert_int_eq(parse("{\"message_id\":18446744073709551615,\"seq\":77,\"from_user_id\":"
	    "\"u1\"," TEXT_ITEMS "}", ILINK_GROUPS_DISABLED, &m, &why), 1);
	ck_assert_str_eq(m.id, "seq:77");
	free(m.text);
	ck_assert_int_eq(parse("{\"message_id\":\"901\",\"from_user_id\":\"u1\"," TEXT_ITEMS "}",
	    ILINK_GROUPS_DISABLED, &m, &why), 1);
	ck_assert_str_eq(m.id, "901");
	free(m.text);
	ck_assert_int_eq(parse("{\"client_id\":\"abc\",\"from_user_id\":\"u1\"," TEXT_ITEMS "}",
	    ILINK_GROUPS_DISABLED, &m, &why), 1);
	ck_assert_str_eq(m.id, "c:abc");
	free(m.text);
	ck_assert_int_eq(parse("{\"from_user_id\":\"u1\"," TEXT_ITEMS "}", ILINK_GROUPS_DISABLED,
	    &m, &why), -1);
	ck_assert_int_eq(parse("{\"message_id\":3," TEXT_ITEMS "}", ILINK_GROUPS_DISABLED, &m,
	    &why), -1);
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"\"," TEXT_ITEMS "}",
	    ILINK_GROUPS_DISABLED, &m, &why), -1);
}
END_TEST

START_TEST(test_msg_skipped)
{
	struct ilink_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"" SELF "\"," TEXT_ITEMS "}",
	    ILINK_GROUPS_ALL, &m, &why), 0);
	ck_assert_str_eq(why, "our own message");
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"b2\",\"message_type\":2,"
	    TEXT_ITEMS "}", ILINK_GROUPS_ALL, &m, &why), 0);
	ck_assert_str_eq(why, "a bot's message");
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"message_state\":1,"
	    TEXT_ITEMS "}", ILINK_GROUPS_ALL, &m, &why), 0);
	ck_assert_str_eq(why, "a message still being generated");
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"item_list\":[{\"type\":"
	    "11}]}", ILINK_GROUPS_ALL, &m, &why), 0);
	ck_assert_str_eq(why, "a message without text");
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"group_id\":\"g1\","
	    TEXT_ITEMS "}", ILINK_GROUPS_DISABLED, &m, &why), 0);
	ck_assert_ptr_nonnull(strstr(why, "group"));
}
END_TEST

START_TEST(test_msg_groups)
{
	struct ilink_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"group_id\":\"g1\","
	    TEXT_ITEMS "}", ILINK_GROUPS_COMMANDS, &m, &why), 1);
	ck_assert_str_eq(m.chat, "g1");
	ck_assert_int_eq(m.group, 1);
	ck_assert_int_eq(m.addressed, 0);               /* chatter: the hub ignores it */
	free(m.text);
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"group_id\":\"g1\","
	    "\"item_list\":[{\"type\":1,\"text_item\":{\"text\":\"/ping\"}}]}",
	    ILINK_GROUPS_COMMANDS, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	free(m.text);
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"group_id\":\"g1\","
	    TEXT_ITEMS "}", ILINK_GROUPS_ALL, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	free(m.text);
}
END_TEST

START_TEST(test_msg_items)
{
	struct ilink_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"item_list\":[{\"type\":"
	    "3,\"voice_item\":{\"text\":\"call me\"}}]}", ILINK_GROUPS_DISABLED, &m, &why), 1);
	ck_assert_str_eq(m.text, "[voice, transcribed by Weixin] call me");
	free(m.text);
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"item_list\":[{\"type\":"
	    "2,\"image_item\":{}},{\"type\":1,\"text_item\":{\"text\":\"caption\"}}]}",
	    ILINK_GROUPS_DISABLED, &m, &why), 1);
	ck_assert_str_eq(m.text, "caption");            /* text wins */
	free(m.text);
	ck_assert_int_eq(parse("{\"message_id\":3,\"from_user_id\":\"u1\",\"item_list\":[{\"type\":"
	    "4,\"file_item\":{}}]}", ILINK_GROUPS_DISABLED, &m, &why), 1);
	ck_assert_str_eq(m.text, "[file]");
	free(m.text);
}
END_TEST

START_TEST(test_client_id)
{
	char a[48], b[48], c[48];

	ilink_client_id("r.7300000000000001.0.0", a);
	ilink_client_id("r.7300000000000001.0.0", b);
	ilink_client_id("r.7300000000000001.0.1", c);
	ck_assert_str_eq(a, b);
	ck_assert_str_ne(a, c);
	ck_assert_int_eq(strlen(a), 39);
	ck_assert_int_eq(strncmp(a, "hermes-", 7), 0);
	ck_assert_int_eq((int)strspn(a + 7, "0123456789abcdef"), 32);
}
END_TEST

START_TEST(test_send_body)
{
	char *b = ilink_send_body("u1@im.wechat", "r.9.0.0", "hello", "ctx1"), cid[48];
	cJSON *o = cJSON_Parse(b), *m = cJSON_GetObjectItem(o, "msg"), *it;

	ilink_client_id("r.9.0.0", cid);
	ck_assert_ptr_nonnull(m);
	ck_assert_str_eq(cJSON_GetObjectItem(m, "to_user_id")->valuestring, "u1@im.wechat");
	ck_assert_str_eq(cJSON_GetObjectItem(m, "from_user_id")->valuestring, "");
	ck_assert_str_eq(cJSON_GetObjectItem(m, "client_id")->valuestring, cid);
	ck_assert_int_eq(cJSON_GetObjectItem(m, "message_type")->valueint, 2);
	ck_assert_int_eq(cJSON_GetObjectItem(m, "message_state")->valueint, 2);
	ck_assert_str_eq(cJSON_GetObjectItem(m, "context_token")->valuestring, "ctx1");
	it = cJSON_GetArrayItem(cJSON_GetObjectItem(m, "item_list"), 0);
	ck_assert_int_eq(cJSON_GetObjectItem(it, "type")->valueint, 1);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(it, "text_item"), "text")->
	    valuestring, "hello");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "base_info"),
	    "channel_version")->valuestring, "2.2.0");
	cJSON_Delete(o);
	free(b);
	b = ilink_send_body("u1@im.wechat", "r.9.0.0", "hello", NULL);
	o = cJSON_Parse(b);
	ck_assert_ptr_null(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "msg"), "context_token"));
	cJSON_Delete(o);
	free(b);
}
END_TEST

START_TEST(test_account_path)
{
	char *p = ilink_account_path("/h", "e1c5a0d2b7f3@im.bot", ".json");

	ck_assert_str_eq(p, "/h/weixin/accounts/e1c5a0d2b7f3@im.bot.json");
	free(p);
	ck_assert_ptr_null(ilink_account_path("/h", NULL, ".json"));
	ck_assert_ptr_null(ilink_account_path("/h", "", ".json"));
	ck_assert_ptr_null(ilink_account_path("/h", "../../etc/x", ".json"));
	ck_assert_ptr_null(ilink_account_path("/h", "a/b", ".json"));
	ck_assert_ptr_null(ilink_account_path("/h", "a b", ".json"));
	ck_assert_ptr_null(ilink_account_path("/h", "a\nb", ".json"));
}
END_TEST

START_TEST(test_account_save_load)
{
	char *dir = tmpdir_new(), *path = ilink_account_path(dir, "bot@im.bot", ".json");
	struct ilink_account b;
	char err[600], *accounts = xasprintf("%s/weixin/accounts", dir);
	struct stat st;
	cJSON *o;

	ck_assert_int_eq(ilink_account_save(path, "tok:secret", "https://127.0.0.1:1",
	    "owner@im.wechat", err, sizeof(err)), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(stat(accounts, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	ck_assert_int_eq(ilink_account_load(path, &b, err, sizeof(err)), 0);
	ck_assert_str_eq(b.token, "tok:secret");
	ck_assert_str_eq(b.base_url, "https://127.0.0.1:1");
	ck_assert_str_eq(b.user_id, "owner@im.wechat");
	ilink_account_clear(&b);
	ck_assert_ptr_null(b.token);
	o = ilink_read_json(path);                      /* the Python gateway's keys */
	ck_assert_ptr_nonnull(cJSON_GetObjectItem(o, "saved_at"));
	ck_assert_int_eq(strlen(cJSON_GetObjectItem(o, "saved_at")->valuestring), 20);
	cJSON_Delete(o);
	free(path);
	free(accounts);
	tmpdir_free(dir);
}
END_TEST

/* Files as the Python gateway leaves them: a BOM, indentation, extra keys. */
START_TEST(test_account_python_files)
{
	char *dir = tmpdir_new(), path[512], err[600];
	struct ilink_account a;

	file_put(dir, "a.json", "\xef\xbb\xbf{\n  \"token\": \"py-token\",\n  \"base_url\": "
	    "\"https://ilinkai.weixin.qq.com\",\n  \"user_id\": \"\",\n  \"saved_at\": "
	    "\"2025-11-02T08:15:00Z\",\n  \"extra\": 1\n}\n", 0600);
	snprintf(path, sizeof(path), "%s/a.json", dir);
	ck_assert_int_eq(ilink_account_load(path, &a, err, sizeof(err)), 0);
	ck_assert_str_eq(a.token, "py-token");
	ck_assert_str_eq(a.base_url, "https://ilinkai.weixin.qq.com");
	ilink_account_clear(&a);
	file_put(dir, "b.json", "{\"base_url\": \"https://x\"}", 0600);
	snprintf(path, sizeof(path), "%s/b.json", dir);
	ck_assert_int_eq(ilink_account_load(path, &a, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "holds no token"));
	file_put(dir, "c.json", "not json", 0600);
	snprintf(path, sizeof(path), "%s/c.json", dir);
	ck_assert_int_eq(ilink_account_load(path, &a, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "not a JSON object"));
	snprintf(path, sizeof(path), "%s/missing.json", dir);
	ck_assert_int_eq(ilink_account_load(path, &a, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "No such file"));
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_tokens)
{
	char *dir = tmpdir_new(), path[512];
	cJSON *t, *u;
	struct stat st;
	int i;

	snprintf(path, sizeof(path), "%s/t.json", dir);
	t = ilink_tokens_load(path);                    /* missing: empty */
	ck_assert_ptr_null(t->child);
	ck_assert_int_eq(ilink_tokens_set(t, "u1", "a"), 1);
	ck_assert_int_eq(ilink_tokens_set(t, "u1", "a"), 0);
	ck_assert_int_eq(ilink_tokens_set(t, "u2", "b"), 1);
	ck_assert_int_eq(ilink_tokens_set(t, "u1", "c"), 1);
	ck_assert_int_eq(ilink_tokens_set(t, "u1", NULL), 0);
	ck_assert_int_eq(ilink_tokens_set(t, "u1", ""), 0);
	ck_assert_str_eq(t->child->string, "u2");       /* refreshed peers move last */
	ck_assert_int_eq(ilink_tokens_save(path, t), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	u = ilink_tokens_load(path);
	ck_assert_str_eq(cJSON_GetObjectItem(u, "u1")->valuestring, "c");
	ck_assert_str_eq(cJSON_GetObjectItem(u, "u2")->valuestring, "b");
	cJSON_Delete(u);
	cJSON_Delete(t);
	file_put(dir, "py.json", "{\"u1\": \"x\", \"u2\": 5, \"u3\": \"\"}", 0600);
	snprintf(path, sizeof(path), "%s/py.json", dir);
	t = ilink_tokens_load(path);
	ck_assert_int_eq(cJSON_GetArraySize(t), 1);     /* only usable tokens */
	for (i = 0; i < ILINK_MAX_PEERS + 5; i++) {
		char peer[32];

		snprintf(peer, sizeof(peer), "p%d", i);
		ilink_tokens_set(t, peer, "tok");
	}
	ck_assert_int_eq(cJSON_GetArraySize(t), ILINK_MAX_PEERS);
	ck_assert_ptr_null(cJSON_GetObjectItem(t, "u1"));       /* the oldest went */
	cJSON_Delete(t);
	file_put(dir, "bad.json", "[1,2]", 0600);
	snprintf(path, sizeof(path), "%s/bad.json", dir);
	t = ilink_tokens_load(path);
	ck_assert_ptr_null(t->child);
	cJSON_Delete(t);
	tmpdir_free(dir);
}
END_TEST

/* The drawing, read back cell by cell, is the code libqrencode makes (light = block). */
START_TEST(test_qr_drawn)
{
	static const char *const cells[] = { "\u2588", "\u2580", "\u2584", " " };
	const char *text = "https://liteapp.weixin.qq.com/q/7GiQu1?qrcode=abc&bot_type=3";
	QRcode *q = QRcode_encodeString(text, 0, QR_ECLEVEL_L, QR_MODE_8, 1);
	char *out = NULL, *p;
	size_t len = 0, k;
	FILE *f = open_memstream(&out, &len);
	int x, y, w, top, bot, rows = 0;

	ck_assert_ptr_nonnull(q);
	ck_assert_int_eq(weixin_login_draw(f, text), 0);
	fclose(f);
	w = q->width;
	p = out;
	for (y = -2; y < w + 2; y += 2, rows++) {
		for (x = -2; x < w + 2; x++) {
			top = x >= 0 && x < w && y >= 0 && y < w && (q->data[y * w + x] & 1);
			bot = x >= 0 && x < w && y + 1 < w && y + 1 >= 0 &&
			    (q->data[(y + 1) * w + x] & 1);
			k = (size_t)(top * 2 + bot);
			ck_assert_msg(strncmp(p, cells[k], strlen(cells[k])) == 0,
			    "cell %d,%d", x, y);
			p += strlen(cells[k]);
		}
		ck_assert_int_eq(*p++, '\n');
	}
	ck_assert_int_eq(*p, '\0');
	ck_assert_int_eq(rows, (w + 4 + 1) / 2);
	QRcode_free(q);
	free(out);
}
END_TEST

static Suite *
weixin_suite(void)
{
	Suite *s = suite_create("weixin");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_headers_fresh_uin);
	tcase_add_test(tc, test_answer_classified);
	tcase_add_test(tc, test_cursor_round_trip);
	tcase_add_test(tc, test_msg_dm);
	tcase_add_test(tc, test_msg_ids);
	tcase_add_test(tc, test_msg_skipped);
	tcase_add_test(tc, test_msg_groups);
	tcase_add_test(tc, test_msg_items);
	tcase_add_test(tc, test_client_id);
	tcase_add_test(tc, test_send_body);
	tcase_add_test(tc, test_account_path);
	tcase_add_test(tc, test_account_save_load);
	tcase_add_test(tc, test_account_python_files);
	tcase_add_test(tc, test_tokens);
	tcase_add_test(tc, test_qr_drawn);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(weixin_suite)
