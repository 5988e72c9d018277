/* test_dedup.c - the bounded, persisted set of handled message ids. */
#include <check.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dedup.h"
#include "util.h"
#include "unit_util.h"

START_TEST(test_add_has)
{
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/x.handled", dir);
	struct dedup *d = dedup_new(path, 10);

	ck_assert_int_eq(dedup_has(d, "1"), 0);
	ck_assert_int_eq(dedup_dirty(d), 0);
	dedup_add(d, "1");
	dedup_add(d, "1");
	ck_assert_int_eq(dedup_has(d, "1"), 1);
	ck_assert_uint_eq(dedup_count(d), 1);
	ck_assert_int_eq(dedup_dirty(d), 1);
	ck_assert_int_eq(dedup_has(d, NULL), 0);
	dedup_free(d);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_oldest_forgotten)
{
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/x.handled", dir);
	struct dedup *d = dedup_new(path, 100);
	char id[32];
	int i;

	for (i = 0; i < 250; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		dedup_add(d, id);
	}
	ck_assert_uint_eq(dedup_count(d), 100);
	ck_assert_int_eq(dedup_has(d, "m149"), 0);
	ck_assert_int_eq(dedup_has(d, "m150"), 1);
	ck_assert_int_eq(dedup_has(d, "m249"), 1);
	dedup_free(d);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_persisted)
{
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/x.handled", dir);
	struct dedup *d = dedup_new(path, 5);
	struct stat st;
	int i;
	char id[16];

	for (i = 0; i < 8; i++) {
		snprintf(id, sizeof(id), "%d", i);
		dedup_add(d, id);
	}
	ck_assert_int_eq(dedup_save(d), 0);
	ck_assert_int_eq(dedup_dirty(d), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	dedup_free(d);

	d = dedup_new(path, 5);
	ck_assert_uint_eq(dedup_count(d), 5);
	ck_assert_int_eq(dedup_has(d, "2"), 0);
	ck_assert_int_eq(dedup_has(d, "3"), 1);
	ck_assert_int_eq(dedup_has(d, "7"), 1);
	/* Loading keeps the order: the next add forgets the oldest loaded id. */
	dedup_add(d, "8");
	ck_assert_int_eq(dedup_has(d, "3"), 0);
	ck_assert_int_eq(dedup_has(d, "4"), 1);
	dedup_free(d);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_unrecordable_and_damaged)
{
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/x.handled", dir);
	char longid[DEDUP_MAX_ID + 10];
	struct dedup *d;

	file_put(dir, "x.handled", "ok1\n\n\x01\x02\nok2\r\nok3", 0600);
	d = dedup_new(path, 10);
	ck_assert_int_eq(dedup_has(d, "ok1"), 1);
	ck_assert_int_eq(dedup_has(d, "ok3"), 1);
	ck_assert_int_eq(dedup_has(d, "ok2\r"), 0);
	ck_assert_uint_eq(dedup_count(d), 2);
	memset(longid, 'a', sizeof(longid) - 1);
	longid[sizeof(longid) - 1] = '\0';
	dedup_add(d, longid);
	dedup_add(d, "with\nnewline");
	dedup_add(d, "");
	ck_assert_uint_eq(dedup_count(d), 2);
	ck_assert_int_eq(dedup_dirty(d), 0);
	dedup_free(d);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_nul_in_file_keeps_newer_ids)
{
	/* A NUL in a damaged file: the lines after it (the newest ids) still count. */
	static const char text[] = "old1\nbad\0junk\nnew1\nnew2\n";
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/x.handled", dir);
	struct dedup *d;
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, sizeof(text) - 1, f), sizeof(text) - 1);
	fclose(f);
	d = dedup_new(path, 10);
	ck_assert_int_eq(dedup_has(d, "old1"), 1);
	ck_assert_int_eq(dedup_has(d, "new1"), 1);
	ck_assert_int_eq(dedup_has(d, "new2"), 1);
	ck_assert_int_eq(dedup_has(d, "bad"), 0);
	ck_assert_uint_eq(dedup_count(d), 3);
	dedup_free(d);
	free(path);
	tmpdir_free(dir);
}
END_TEST

static Suite *
dedup_suite(void)
{
	Suite *s = suite_create("dedup");
	TCase *tc = tcase_create("dedup");

	tcase_add_test(tc, test_add_has);
	tcase_add_test(tc, test_oldest_forgotten);
	tcase_add_test(tc, test_persisted);
	tcase_add_test(tc, test_unrecordable_and_damaged);
	tcase_add_test(tc, test_nul_in_file_keeps_newer_ids);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(dedup_suite)
