/* test_session.c - session keys, bounded histories and their persistence. */
#include <check.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "session.h"
#include "util.h"
#include "unit_util.h"

START_TEST(test_keys)
{
	struct inbound dm = { .chat_id = "c1", .chat_type = CHAT_DM, .user_id = "u1" };
	struct inbound grp = { .chat_id = "g1", .chat_type = CHAT_GROUP, .user_id = "u1" };
	struct inbound grp2 = { .chat_id = "g1", .chat_type = CHAT_GROUP, .user_id = "u2" };
	struct inbound thr = { .chat_id = "g1", .chat_type = CHAT_THREAD, .thread_id = "t9",
	    .user_id = "u1" };
	struct inbound thr2 = { .chat_id = "g1", .chat_type = CHAT_THREAD, .thread_id = "t9",
	    .user_id = "u2" };
	char *a, *b;

	a = session_key("tg", &dm);
	ck_assert_str_eq(a, "tg:c1");
	free(a);
	/* A group: one session per user. */
	a = session_key("tg", &grp);
	b = session_key("tg", &grp2);
	ck_assert_str_ne(a, b);
	free(a);
	free(b);
	/* A thread: one session for everyone in it. */
	a = session_key("tg", &thr);
	b = session_key("tg", &thr2);
	ck_assert_str_eq(a, b);
	ck_assert_ptr_nonnull(strstr(a, "t9"));
	free(a);
	free(b);
	/* Platforms never share a session. */
	a = session_key("console", &dm);
	ck_assert_str_eq(a, "console:c1");
	free(a);
}
END_TEST

START_TEST(test_file_names)
{
	char *n = session_file_name("console:c1");
	char big[400];

	ck_assert_str_eq(n, "console:c1.json");
	free(n);
	n = session_file_name("tg:../../etc/passwd");
	ck_assert_ptr_null(strchr(n, '/'));
	ck_assert_str_eq(n, "tg:..%2f..%2fetc%2fpasswd.json");
	free(n);
	n = session_file_name(".hidden");
	ck_assert(n[0] != '.');
	free(n);
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	n = session_file_name(big);
	ck_assert_uint_lt(strlen(n), 255);
	free(n);
}
END_TEST

START_TEST(test_history_round_trip)
{
	char *dir = tmpdir_new();
	struct session *s = session_open(dir, "console:c1");
	const cJSON *h;
	char *path = xasprintf("%s/console:c1.json", dir);
	struct stat st;

	ck_assert_uint_eq(session_length(s), 0);
	session_append(s, "user", "hi");
	session_append(s, "assistant", "hello \xc3\xa9");
	ck_assert_int_eq(session_dirty(s), 1);
	ck_assert_int_eq(session_save(s), 0);
	ck_assert_int_eq(session_dirty(s), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	session_free(s);

	s = session_open(dir, "console:c1");
	h = session_history(s);
	ck_assert_int_eq(cJSON_GetArraySize(h), 2);
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 0), "role")->valuestring, "user");
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(h, 1), "content")->valuestring,
	    "hello \xc3\xa9");
	ck_assert_str_eq(session_get_key(s), "console:c1");
	session_reset(s);
	ck_assert_uint_eq(session_length(s), 0);
	ck_assert_int_eq(stat(path, &st), -1);
	session_free(s);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_bounds)
{
	char *dir = tmpdir_new();
	struct session *s = session_open(dir, "k");
	char *big = xmalloc(100 * 1024);
	int i;
	char t[32];

	for (i = 0; i < SESSION_MAX_ENTRIES + 50; i++) {
		snprintf(t, sizeof(t), "m%d", i);
		session_append(s, "user", t);
	}
	ck_assert_uint_eq(session_length(s), SESSION_MAX_ENTRIES);
	/* The oldest went first. */
	ck_assert_str_eq(cJSON_GetObjectItem(cJSON_GetArrayItem(session_history(s), 0),
	    "content")->valuestring, "m50");
	memset(big, 'b', 100 * 1024 - 1);
	big[100 * 1024 - 1] = '\0';
	for (i = 0; i < 5; i++)
		session_append(s, "assistant", big);
	ck_assert_uint_le(session_length(s), 3);
	ck_assert_uint_ge(session_length(s), 1);
	free(big);
	session_free(s);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_damaged_file)
{
	char *dir = tmpdir_new();
	struct session *s;

	file_put(dir, "a.json", "{not json", 0600);
	s = session_open(dir, "a");
	ck_assert_uint_eq(session_length(s), 0);
	session_free(s);
	file_put(dir, "b.json", "[{\"role\":\"user\",\"content\":\"ok\"},{\"role\":1},\"x\"]", 0600);
	s = session_open(dir, "b");
	ck_assert_uint_eq(session_length(s), 1);
	ck_assert_int_eq(session_dirty(s), 0);
	session_free(s);
	tmpdir_free(dir);
}
END_TEST

/*
 * A link planted at a session's file name is neither read (its target's
 * text would become the history sent to the agent) nor written through;
 * a FIFO there does not hang the loop.
 */
START_TEST(test_planted_link_and_fifo)
{
	char *dir = tmpdir_new(), *outside = tmpdir_new();
	char *victim = xasprintf("%s/victim.json", outside);
	char *path = xasprintf("%s/console:c1.json", dir), *fifo = xasprintf("%s/k.json", dir);
	const char *secret = "[{\"role\":\"user\",\"content\":\"outside secret\"}]";
	char *text;
	struct session *s;
	struct stat st;

	file_put(outside, "victim.json", secret, 0600);
	ck_assert_int_eq(symlink(victim, path), 0);
	s = session_open(dir, "console:c1");
	ck_assert_uint_eq(session_length(s), 0);
	session_append(s, "user", "mine");
	ck_assert_int_eq(session_save(s), 0);
	session_free(s);
	text = read_file(victim, 4096, NULL);
	ck_assert_str_eq(text, secret);
	free(text);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	text = read_file(path, 4096, NULL);
	ck_assert_ptr_null(strstr(text, "outside secret"));
	free(text);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	s = session_open(dir, "k");
	ck_assert_uint_eq(session_length(s), 0);
	session_free(s);
	free(fifo);
	free(path);
	free(victim);
	tmpdir_free(outside);
	tmpdir_free(dir);
}
END_TEST

static Suite *
session_suite(void)
{
	Suite *s = suite_create("session");
	TCase *tc = tcase_create("session");

	tcase_add_test(tc, test_keys);
	tcase_add_test(tc, test_file_names);
	tcase_add_test(tc, test_history_round_trip);
	tcase_add_test(tc, test_bounds);
	tcase_add_test(tc, test_damaged_file);
	tcase_add_test(tc, test_planted_link_and_fifo);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(session_suite)
