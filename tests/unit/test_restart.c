/* test_restart.c - the restart marker: round trip, damage, elapsed time. */
#include <check.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "restart.h"
#include "util.h"
#include "unit_util.h"

START_TEST(test_round_trip)
{
	char *dir = tmpdir_new();
	struct restart_marker m = { .platform = "telegram", .chat_id = "-100123",
	    .thread_id = "42", .message_id = "777", .generation = 5 };
	struct restart_marker *r;
	char *path = xasprintf("%s/restart.json", dir);
	struct stat st;

	ck_assert_ptr_null(restart_marker_read(dir));
	restart_marker_stamp(&m);
	ck_assert_int_eq(restart_marker_write(dir, &m), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	r = restart_marker_read(dir);
	ck_assert_ptr_nonnull(r);
	ck_assert_str_eq(r->platform, "telegram");
	ck_assert_str_eq(r->chat_id, "-100123");
	ck_assert_str_eq(r->thread_id, "42");
	ck_assert_str_eq(r->message_id, "777");
	ck_assert_uint_eq(r->generation, 5);
	ck_assert_uint_eq(r->mono_us, m.mono_us);
	ck_assert_uint_eq(r->wall_ms, m.wall_ms);
	ck_assert_str_eq(r->boot_id, m.boot_id);
	usleep(20000);
	ck_assert_uint_ge(restart_marker_elapsed_ms(r), 20);
	ck_assert_uint_lt(restart_marker_elapsed_ms(r), 60000);
	restart_marker_free(r);
	ck_assert_int_eq(restart_marker_delete(dir), 0);
	ck_assert_ptr_null(restart_marker_read(dir));
	ck_assert_int_eq(restart_marker_delete(dir), 0);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_no_thread)
{
	char *dir = tmpdir_new();
	struct restart_marker m = { .platform = "console", .chat_id = "c" };
	struct restart_marker *r;

	restart_marker_stamp(&m);
	ck_assert_int_eq(restart_marker_write(dir, &m), 0);
	r = restart_marker_read(dir);
	ck_assert_ptr_nonnull(r);
	ck_assert_ptr_null(r->thread_id);
	ck_assert_ptr_null(r->message_id);
	restart_marker_free(r);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_damaged_removed)
{
	static const char *const bad[] = {
		"{garbage", "[]", "{\"platform\": \"x\"}",
		"{\"platform\": 1, \"chat_id\": \"c\", \"wall_ms\": 1, \"mono_us\": 1, \"generation\": 0}",
		"{\"platform\": \"p\", \"chat_id\": \"c\", \"wall_ms\": \"1\", \"mono_us\": 1, \"generation\": 0}",
	};
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/restart.json", dir);
	size_t i;

	for (i = 0; i < ARRAY_LEN(bad); i++) {
		file_put(dir, "restart.json", bad[i], 0600);
		ck_assert_ptr_null(restart_marker_read(dir));
		ck_assert_int_eq(access(path, F_OK), -1);
	}
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_out_of_range_numbers_removed)
{
	/* Values a cast to uint64_t or unsigned long would overflow: damage, not numbers. */
	static const char *const bad[] = {
		"\"wall_ms\": 1e300, \"mono_us\": 1, \"generation\": 0",
		"\"wall_ms\": 1, \"mono_us\": 1e400, \"generation\": 0",
		"\"wall_ms\": 1, \"mono_us\": 1, \"generation\": 1e20",
		"\"wall_ms\": 18446744073709551616, \"mono_us\": 1, \"generation\": 0",
		"\"wall_ms\": 1, \"mono_us\": 1.5, \"generation\": 0",
		"\"wall_ms\": 1, \"mono_us\": 1, \"generation\": -1",
		"\"wall_ms\": 9007199254740994, \"mono_us\": 1, \"generation\": 0",
	};
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/restart.json", dir);
	struct restart_marker *r;
	size_t i;

	for (i = 0; i < ARRAY_LEN(bad); i++) {
		char *text = xasprintf("{\"platform\": \"p\", \"chat_id\": \"c\", %s}", bad[i]);

		file_put(dir, "restart.json", text, 0600);
		ck_assert_msg(restart_marker_read(dir) == NULL, "accepted %s", bad[i]);
		ck_assert_int_eq(access(path, F_OK), -1);
		free(text);
	}
	/* The largest values that convert exactly are kept. */
	file_put(dir, "restart.json", "{\"platform\": \"p\", \"chat_id\": \"c\", "
	    "\"wall_ms\": 9007199254740992, \"mono_us\": 0, \"generation\": 4294967295}", 0600);
	r = restart_marker_read(dir);
	ck_assert_ptr_nonnull(r);
	ck_assert_uint_eq(r->wall_ms, 9007199254740992ULL);
	ck_assert_uint_eq(r->generation, 4294967295UL);
	restart_marker_free(r);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_elapsed_other_boot)
{
	struct restart_marker m = { .platform = "p", .chat_id = "c" };

	restart_marker_stamp(&m);
	/* Another boot: monotonic times mean nothing, the wall clock is used. */
	snprintf(m.boot_id, sizeof(m.boot_id), "other");
	m.mono_us = 1;
	m.wall_ms -= 1500;
	ck_assert_uint_ge(restart_marker_elapsed_ms(&m), 1500);
	ck_assert_uint_lt(restart_marker_elapsed_ms(&m), 60000);
}
END_TEST

static Suite *
restart_suite(void)
{
	Suite *s = suite_create("restart");
	TCase *tc = tcase_create("marker");

	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_no_thread);
	tcase_add_test(tc, test_damaged_removed);
	tcase_add_test(tc, test_out_of_range_numbers_removed);
	tcase_add_test(tc, test_elapsed_other_boot);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(restart_suite)
