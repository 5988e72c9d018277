/* test_telegram.c - Telegram update parsing, addressing rules, API replies, backoff, journal. */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "platforms/telegram.h"
#include "unit_util.h"
#include "util.h"

#define BOT_ID 7000001

static const struct tg_bot bot = { BOT_ID, "hermes_test_bot", 0 };

/* Parses a JSON update given as text; returns the parser's result. */
static int
parse(const char *json, const struct tg_bot *b, struct tg_msg *m, const char **why)
{
	cJSON *u = cJSON_Parse(json);
	int rc;

	ck_assert_ptr_nonnull(u);
	rc = tg_update_parse(u, b, m, why);
	cJSON_Delete(u);
	return rc;
}

#define FROM "\"from\":{\"id\":42,\"is_bot\":false,\"first_name\":\"A\",\"username\":\"alice\"}"
#define DM "\"chat\":{\"id\":42,\"type\":\"private\"}"
#define GROUP "\"chat\":{\"id\":-1001234567890,\"type\":\"supergroup\",\"title\":\"G\"}"

START_TEST(test_private_message)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":17," FROM "," DM
	    ",\"date\":1700000000,\"text\":\"hello\"}}", &bot, &m, &why), 1);
	ck_assert_str_eq(m.chat_id, "42");
	ck_assert_str_eq(m.user_id, "42");
	ck_assert_str_eq(m.user_name, "alice");
	ck_assert_str_eq(m.message_id, "42:17");
	ck_assert_str_eq(m.text, "hello");
	ck_assert_str_eq(m.thread_id, "");
	ck_assert_int_eq(m.chat_type, CHAT_DM);
	ck_assert_int_eq(m.addressed, 1);
	ck_assert_int_eq((long)m.time, 1700000000L);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_group_not_addressed)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"just chatting\"}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.chat_type, CHAT_GROUP);
	ck_assert_str_eq(m.chat_id, "-1001234567890");
	ck_assert_str_eq(m.message_id, "-1001234567890:3");
	ck_assert_int_eq(m.addressed, 0);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_group_policy_all)
{
	struct tg_bot all = bot;
	struct tg_msg m;
	const char *why;

	all.group_all = 1;
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"just chatting\"}}", &all, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_group_command_for_us)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"/status@Hermes_Test_Bot now\",\"entities\":[{\"type\":"
	    "\"bot_command\",\"offset\":0,\"length\":23}]}}", &bot, &m, &why), 1);
	ck_assert_str_eq(m.text, "/status now");
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"/help\"}}", &bot, &m, &why), 1);
	ck_assert_str_eq(m.text, "/help");
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_command_for_other_bot)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"/status@other_bot\"}}", &bot, &m, &why), 0);
	ck_assert_str_eq(why, "a command for another bot");
	ck_assert_ptr_null(m.text);
	/* A longer name that starts like ours is another bot too. */
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," DM
	    ",\"date\":1,\"text\":\"/status@hermes_test_bot2\"}}", &bot, &m, &why), 0);
}
END_TEST

START_TEST(test_mention_entity_utf16)
{
	struct tg_msg m;
	const char *why;

	/* "é😀 @hermes_test_bot hi": é is 1 UTF-16 unit, the emoji 2, so the mention is at 4. */
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"\\u00e9\\ud83d\\ude00 @hermes_test_bot hi\",\"entities\":"
	    "[{\"type\":\"mention\",\"offset\":4,\"length\":16}]}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
	/* The same entity at a wrong offset does not address us. */
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"\\u00e9\\ud83d\\ude00 @hermes_test_bot hi\",\"entities\":"
	    "[{\"type\":\"mention\",\"offset\":3,\"length\":16}]}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 0);
	tg_msg_clear(&m);
	/* A mention of someone else. */
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"hi @bob\",\"entities\":"
	    "[{\"type\":\"mention\",\"offset\":3,\"length\":4}]}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 0);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_text_mention)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"Hermes, hi\",\"entities\":[{\"type\":\"text_mention\","
	    "\"offset\":0,\"length\":6,\"user\":{\"id\":7000001,\"is_bot\":true,"
	    "\"first_name\":\"Hermes\"}}]}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_leading_mention_stripped)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"@hermes_test_bot, /restart\"}}", &bot, &m, &why), 1);
	ck_assert_str_eq(m.text, "/restart");
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
	/* Only the mention: the text stays as it was. */
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"@hermes_test_bot\"}}", &bot, &m, &why), 1);
	ck_assert_str_eq(m.text, "@hermes_test_bot");
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
	/* "@hermes_test_botx" is not us. */
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"@hermes_test_botx hi\"}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 0);
	ck_assert_str_eq(m.text, "@hermes_test_botx hi");
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_reply_to_us)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"and then?\",\"reply_to_message\":{\"message_id\":2,"
	    "\"from\":{\"id\":7000001,\"is_bot\":true},\"text\":\"...\"}}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"text\":\"and then?\",\"reply_to_message\":{\"message_id\":2,"
	    "\"from\":{\"id\":99,\"is_bot\":false},\"text\":\"...\"}}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.addressed, 0);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_forum_topic)
{
	struct tg_msg m;
	const char *why;

	/* In a topic the bot created, every message "replies" to the creation: not addressed. */
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":30," FROM ","
	    "\"chat\":{\"id\":-100555,\"type\":\"supergroup\",\"is_forum\":true},\"date\":1,"
	    "\"text\":\"hello\",\"message_thread_id\":77,\"is_topic_message\":true,"
	    "\"reply_to_message\":{\"message_id\":77,\"from\":{\"id\":7000001,\"is_bot\":true},"
	    "\"forum_topic_created\":{\"name\":\"T\",\"icon_color\":1}}}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.chat_type, CHAT_THREAD);
	ck_assert_str_eq(m.thread_id, "77");
	ck_assert_str_eq(m.message_id, "-100555:30");
	ck_assert_int_eq(m.addressed, 0);
	tg_msg_clear(&m);
	/* A reply thread in a group that is not a forum is no topic. */
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":30," FROM "," GROUP
	    ",\"date\":1,\"text\":\"/ping\",\"message_thread_id\":12}}", &bot, &m, &why), 1);
	ck_assert_int_eq(m.chat_type, CHAT_GROUP);
	ck_assert_str_eq(m.thread_id, "");
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_caption)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," GROUP
	    ",\"date\":1,\"photo\":[],\"caption\":\"@hermes_test_bot look\",\"caption_entities\":"
	    "[{\"type\":\"mention\",\"offset\":0,\"length\":16}]}}", &bot, &m, &why), 1);
	ck_assert_str_eq(m.text, "look");
	ck_assert_int_eq(m.addressed, 1);
	tg_msg_clear(&m);
}
END_TEST

START_TEST(test_skipped)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("{\"update_id\":5,\"edited_message\":{\"message_id\":3," FROM ","
	    DM ",\"date\":1,\"text\":\"x\"}}", &bot, &m, &why), 0);
	ck_assert_str_eq(why, "not a new message");
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM "," DM
	    ",\"date\":1,\"sticker\":{}}}", &bot, &m, &why), 0);
	ck_assert_str_eq(why, "no text");
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3,\"from\":{\"id\":9,"
	    "\"is_bot\":true}," GROUP ",\"date\":1,\"text\":\"/x\"}}", &bot, &m, &why), 0);
	ck_assert_str_eq(why, "sent by a bot");
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3,\"sender_chat\":"
	    "{\"id\":-1},\"chat\":{\"id\":-100,\"type\":\"channel\"},\"date\":1,\"text\":\"x\"}}",
	    &bot, &m, &why), 0);
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":3," FROM ","
	    "\"chat\":{\"id\":-100,\"type\":\"channel\"},\"date\":1,\"text\":\"x\"}}", &bot, &m,
	    &why), 0);
}
END_TEST

START_TEST(test_malformed)
{
	struct tg_msg m;
	const char *why;

	ck_assert_int_eq(parse("[1]", &bot, &m, &why), -1);
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":\"x\"," FROM "," DM
	    ",\"text\":\"x\"}}", &bot, &m, &why), -1);
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":{\"message_id\":1," FROM ","
	    "\"chat\":{\"id\":1.5,\"type\":\"private\"},\"text\":\"x\"}}", &bot, &m, &why), -1);
	ck_assert_int_eq(parse("{\"update_id\":5,\"message\":7}", &bot, &m, &why), -1);
}
END_TEST

START_TEST(test_utf16_offset)
{
	const char *s = "a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80z";   /* a é € 😀 z */
	size_t len = strlen(s);

	ck_assert_uint_eq(tg_utf16_offset(s, len, 0), 0);
	ck_assert_uint_eq(tg_utf16_offset(s, len, 1), 1);
	ck_assert_uint_eq(tg_utf16_offset(s, len, 2), 3);
	ck_assert_uint_eq(tg_utf16_offset(s, len, 3), 6);
	ck_assert_uint_eq(tg_utf16_offset(s, len, 5), 10);
	ck_assert_uint_eq(tg_utf16_offset(s, len, 6), 11);
	ck_assert_uint_eq(tg_utf16_offset(s, len, 100), len);
	/* A truncated sequence never runs past the end. */
	ck_assert_uint_eq(tg_utf16_offset("\xf0\x9f", 2, 5), 2);
}
END_TEST

/* Classifies a reply given as text. */
static enum tg_reply
classify(int status, const char *body, double *ra, char *why, size_t len)
{
	const cJSON *result;
	cJSON *doc;
	enum tg_reply k;

	k = tg_reply_classify(status, body, strlen(body), &doc, &result, ra, why, len);
	if (k == TG_OK) {
		ck_assert_ptr_nonnull(doc);
		ck_assert_ptr_nonnull(result);
	} else
		ck_assert_ptr_null(doc);
	cJSON_Delete(doc);
	return k;
}

START_TEST(test_reply_classify)
{
	double ra;
	char why[200];

	ck_assert_int_eq(classify(200, "{\"ok\":true,\"result\":[]}", &ra, why, sizeof(why)), TG_OK);
	ck_assert_int_eq(classify(409, "{\"ok\":false,\"error_code\":409,\"description\":"
	    "\"Conflict: terminated by other getUpdates request\"}", &ra, why, sizeof(why)),
	    TG_CONFLICT);
	ck_assert_str_eq(why, "409 Conflict: another getUpdates poller");
	ck_assert_int_eq(classify(429, "{\"ok\":false,\"error_code\":429,\"description\":"
	    "\"Too Many Requests: retry after 7\",\"parameters\":{\"retry_after\":7}}", &ra, why,
	    sizeof(why)), TG_RETRY_AFTER);
	ck_assert(ra == 7.0);
	ck_assert_int_eq(classify(429, "{\"ok\":false,\"error_code\":429}", &ra, why, sizeof(why)),
	    TG_RETRY_AFTER);
	ck_assert(ra == 1.0);
	ck_assert_int_eq(classify(401, "{\"ok\":false,\"error_code\":401,\"description\":"
	    "\"Unauthorized\"}", &ra, why, sizeof(why)), TG_UNAUTHORIZED);
	ck_assert_str_eq(why, "401 Unauthorized");
	ck_assert_int_eq(classify(404, "<html>not found</html>", &ra, why, sizeof(why)),
	    TG_UNAUTHORIZED);
	ck_assert_int_eq(classify(400, "{\"ok\":false,\"error_code\":400,\"description\":"
	    "\"Bad Request: can't parse entities: Can't find end of the entity starting at byte "
	    "offset 3\"}", &ra, why, sizeof(why)), TG_CANT_PARSE);
	ck_assert_int_eq(classify(400, "{\"ok\":false,\"error_code\":400,\"description\":"
	    "\"Bad Request: chat not found\"}", &ra, why, sizeof(why)), TG_REJECTED);
	ck_assert_int_eq(classify(403, "{\"ok\":false,\"error_code\":403,\"description\":"
	    "\"Forbidden: bot was blocked by the user\"}", &ra, why, sizeof(why)), TG_REJECTED);
	ck_assert_int_eq(classify(500, "{\"ok\":false,\"error_code\":500,\"description\":"
	    "\"Internal Server Error\"}", &ra, why, sizeof(why)), TG_TRANSIENT);
	ck_assert_int_eq(classify(502, "<html>Bad Gateway</html>", &ra, why, sizeof(why)),
	    TG_TRANSIENT);
	ck_assert_int_eq(classify(200, "<html>garbage</html>", &ra, why, sizeof(why)),
	    TG_TRANSIENT);
	ck_assert_int_eq(classify(200, "{\"ok\":true,\"result\":[{\"upd", &ra, why, sizeof(why)),
	    TG_TRANSIENT);
	ck_assert_int_eq(classify(200, "{\"ok\":false}", &ra, why, sizeof(why)), TG_TRANSIENT);
	ck_assert_int_eq(classify(200, "{\"ok\":true}", &ra, why, sizeof(why)), TG_TRANSIENT);
	ck_assert_int_eq(classify(200, "", &ra, why, sizeof(why)), TG_TRANSIENT);
	/* Control bytes in a description are escaped before they reach a log line. */
	ck_assert_int_eq(classify(400, "{\"ok\":false,\"error_code\":400,\"description\":"
	    "\"bad\\nline\"}", &ra, why, sizeof(why)), TG_REJECTED);
	ck_assert_ptr_null(strchr(why, '\n'));
}
END_TEST

START_TEST(test_backoff)
{
	unsigned a;
	uint64_t d, cap;

	for (a = 0; a < 40; a++) {
		cap = 1000000ULL << (a < 6 ? a : 6);
		if (cap > 60000000)
			cap = 60000000;
		d = tg_backoff(a, 1000000, 60000000);
		ck_assert_uint_ge(d, cap / 2);
		ck_assert_uint_le(d, cap);
	}
}
END_TEST


/* ---- the journal ---------------------------------------------------------- */

/* A getUpdates result of the updates with ids from..to (a text that says the id). */
static cJSON *
updates(int64_t from, int64_t to)
{
	cJSON *arr = cJSON_CreateArray();
	char js[256];
	int64_t id;

	for (id = from; id <= to; id++) {
		snprintf(js, sizeof(js), "{\"update_id\":%lld,\"message\":{\"message_id\":%lld,"
		    FROM "," DM ",\"date\":1,\"text\":\"m%lld\"}}", (long long)id, (long long)id,
		    (long long)id);
		cJSON_AddItemToArray(arr, cJSON_Parse(js));
	}
	return arr;
}

/* Takes (and frees) a result; returns how many updates were new. */
static size_t
take(struct tg_journal *j, cJSON *result)
{
	size_t n = tg_journal_take(j, result);

	cJSON_Delete(result);
	return n;
}

static char *
path_in(const char *dir, const char *name)
{
	char *p = xasprintf("%s/%s", dir, name);

	return p;
}

#define SEQ_FIRST 10
#define SEQ_LAST 15

/*
 * Writes the journal of a worker's life through the real code: three
 * batches, a few handled in between.  Returns the file's text.
 */
static char *
write_sequence(const char *dir, size_t *len)
{
	char *path = path_in(dir, "seq.journal"), *text;
	struct tg_journal *j = tg_journal_new("test", path);

	tg_journal_load(j);
	ck_assert_uint_eq(take(j, updates(10, 11)), 2);
	ck_assert_int_eq(tg_journal_commit(j), 0);
	ck_assert_int_eq(tg_journal_done(j, 10), 0);
	tg_journal_write_done(j);
	ck_assert_uint_eq(take(j, updates(12, 13)), 2);
	ck_assert_int_eq(tg_journal_commit(j), 0);
	ck_assert_int_eq(tg_journal_done(j, 11), 0);
	ck_assert_int_eq(tg_journal_done(j, 12), 0);
	tg_journal_write_done(j);
	ck_assert_uint_eq(take(j, updates(14, 15)), 2);
	ck_assert_int_eq(tg_journal_commit(j), 0);
	tg_journal_free(j);
	text = read_file(path, 1 << 20, len);
	ck_assert_ptr_nonnull(text);
	free(path);
	return text;
}

/* 1 when the first len bytes of text hold a complete {"done":id} line. */
static int
done_in(const char *text, size_t len, int64_t id)
{
	char needle[48], *copy = xstrndup(text, len);
	int found;

	snprintf(needle, sizeof(needle), "{\"done\":%lld}\n", (long long)id);
	found = strstr(copy, needle) != NULL;
	free(copy);
	return found;
}

/*
 * A worker crashed after len bytes of the sequence; the next one loads
 * the journal and polls, and Telegram returns every update at or above
 * the offset asked for (it forgets the ones below).  Every update not
 * handled must be held exactly once, a handled one at most once; and
 * after the rest is handled and the worker crashes again, the one left
 * unhandled must still be there.
 */
static void
check_crash_point(const char *dir, const char *text, size_t len)
{
	char *path = path_in(dir, "crash.journal");
	struct tg_journal *j;
	int64_t id, keep = 0;
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	fclose(f);
	j = tg_journal_new("test", path);
	tg_journal_load(j);
	if (tg_journal_offset(j) <= SEQ_LAST)
		take(j, updates(tg_journal_offset(j) > SEQ_FIRST ? tg_journal_offset(j) : SEQ_FIRST,
		    SEQ_LAST));
	ck_assert_int_eq(tg_journal_commit(j), 0);
	for (id = SEQ_FIRST; id <= SEQ_LAST; id++) {
		size_t copies = tg_journal_copies(j, id);

		ck_assert_msg(copies <= 1, "crash after %zu bytes: update %lld held %zu times",
		    len, (long long)id, copies);
		if (!done_in(text, len, id)) {
			ck_assert_msg(copies == 1, "crash after %zu bytes: update %lld lost", len,
			    (long long)id);
			if (keep == 0)
				keep = id;      /* the one whose agent call never finished */
			else
				ck_assert_int_eq(tg_journal_done(j, id), 0);
		}
	}
	tg_journal_write_done(j);
	tg_journal_free(j);
	j = tg_journal_new("test", path);
	tg_journal_load(j);
	if (keep != 0)
		ck_assert_msg(tg_journal_copies(j, keep) == 1,
		    "crash after %zu bytes, then again: update %lld lost", len, (long long)keep);
	tg_journal_free(j);
	free(path);
}

START_TEST(test_journal_every_crash_point)
{
	char *dir = tmpdir_new(), *text;
	size_t len, i, points = 0;

	text = write_sequence(dir, &len);
	for (i = 0; i <= len; i++) {
		/* Every line boundary, and the middle of every line (a torn write). */
		if (i == len || i == 0 || text[i - 1] == '\n' ||
		    (i > 1 && text[i - 2] == '\n' && i + 1 < len)) {
			check_crash_point(dir, text, i);
			points++;
		}
	}
	ck_assert_uint_ge(points, 20);
	free(text);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_journal_torn_batch)
{
	char *dir = tmpdir_new(), *path = path_in(dir, "j"), *u40, *u41, *text;
	struct tg_journal *j;
	cJSON *batch = updates(40, 41);

	/* The batch's update lines made it to disk, its offset line did not. */
	u40 = cJSON_PrintUnformatted(cJSON_GetArrayItem(batch, 0));
	u41 = cJSON_PrintUnformatted(cJSON_GetArrayItem(batch, 1));
	text = xasprintf("{\"offset\":40,\"time\":1,\"pending\":[]}\n{\"update\":%s}\n"
	    "{\"update\":%s}\n", u40, u41);
	file_put(dir, "j", text, 0600);
	j = tg_journal_new("test", path);
	ck_assert_uint_eq(tg_journal_load(j), 0);
	/* The next getUpdates confirms them rather than asking for them again. */
	ck_assert_int_eq(tg_journal_offset(j), 42);
	ck_assert_uint_eq(take(j, updates(40, 42)), 1);
	ck_assert_uint_eq(tg_journal_copies(j, 40), 1);
	ck_assert_uint_eq(tg_journal_copies(j, 41), 1);
	tg_journal_free(j);
	cJSON_Delete(batch);
	free(u40);
	free(u41);
	free(text);
	free(path);
	tmpdir_free(dir);
}
END_TEST

/* Makes every write that would grow a file beyond max bytes fail (EFBIG). */
static void
limit_file_size(rlim_t max)
{
	struct rlimit rl;

	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
	rl.rlim_cur = max;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
}

START_TEST(test_journal_write_failure_confirms_nothing)
{
	char *dir = tmpdir_new(), *path = path_in(dir, "j"), *text;
	struct tg_journal *j = tg_journal_new("test", path), *r;
	struct rlimit rl;
	size_t len;

	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &rl), 0);
	tg_journal_load(j);
	take(j, updates(30, 31));
	ck_assert_int_eq(tg_journal_commit(j), 0);
	ck_assert_str_eq(tg_journal_error(j), "");
	text = read_file(path, 1 << 20, &len);
	free(text);
	limit_file_size(len + 100);     /* room for part of a line, not for a batch */
	take(j, updates(32, 35));
	ck_assert_int_eq(tg_journal_commit(j), -1);
	ck_assert_str_eq(tg_journal_error(j), strerror(EFBIG));
	ck_assert_int_eq(tg_journal_commit(j), -1);
	/* What is on disk never claims the batch: its offset still asks for it. */
	r = tg_journal_new("test", path);
	tg_journal_load(r);
	ck_assert_int_eq(tg_journal_offset(r), 32);
	ck_assert_uint_eq(tg_journal_copies(r, 31), 1);
	tg_journal_free(r);
	/* Writable again: the whole state is written, nothing torn is appended to. */
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	ck_assert_int_eq(tg_journal_commit(j), 0);
	ck_assert_str_eq(tg_journal_error(j), "");
	tg_journal_free(j);
	r = tg_journal_new("test", path);
	ck_assert_uint_eq(tg_journal_load(r), 0);
	ck_assert_int_eq(tg_journal_offset(r), 36);
	ck_assert_uint_eq(tg_journal_copies(r, 30), 1);
	ck_assert_uint_eq(tg_journal_copies(r, 35), 1);
	tg_journal_free(r);
	free(path);
	tmpdir_free(dir);
}
END_TEST

static Suite *
telegram_suite(void)
{
	Suite *s = suite_create("telegram");
	TCase *tc = tcase_create("parse");

	tcase_add_test(tc, test_private_message);
	tcase_add_test(tc, test_group_not_addressed);
	tcase_add_test(tc, test_group_policy_all);
	tcase_add_test(tc, test_group_command_for_us);
	tcase_add_test(tc, test_command_for_other_bot);
	tcase_add_test(tc, test_mention_entity_utf16);
	tcase_add_test(tc, test_text_mention);
	tcase_add_test(tc, test_leading_mention_stripped);
	tcase_add_test(tc, test_reply_to_us);
	tcase_add_test(tc, test_forum_topic);
	tcase_add_test(tc, test_caption);
	tcase_add_test(tc, test_skipped);
	tcase_add_test(tc, test_malformed);
	tcase_add_test(tc, test_utf16_offset);
	tcase_add_test(tc, test_reply_classify);
	tcase_add_test(tc, test_backoff);
	suite_add_tcase(s, tc);
	tc = tcase_create("journal");
	tcase_add_test(tc, test_journal_every_crash_point);
	tcase_add_test(tc, test_journal_torn_batch);
	tcase_add_test(tc, test_journal_write_failure_confirms_nothing);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(telegram_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
