/* test_retention.c - the disk retention policy of session files, on a fake clock. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "retention.h"
#include "util.h"
#include "unit_util.h"

/* The fake "now" every test measures ages against. */
#define NOW ((time_t)1700000000)
#define DAY 86400

static char *dir;

static void
setup(void)
{
	dir = tmpdir_new();
}

static void
teardown(void)
{
	tmpdir_free(dir);
}

/* Creates dir/name with size bytes, last modified age seconds before NOW. */
static void
put_aged(const char *name, size_t size, time_t age)
{
	char *path = xasprintf("%s/%s", dir, name), *buf = xmalloc(size + 1);
	struct timespec ts[2];

	memset(buf, 'x', size);
	buf[size] = '\0';
	file_put(dir, name, buf, 0600);
	ts[0].tv_sec = ts[1].tv_sec = NOW - age;
	ts[0].tv_nsec = ts[1].tv_nsec = 0;
	ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
	free(buf);
	free(path);
}

static int
exists(const char *name)
{
	char *path = xasprintf("%s/%s", dir, name);
	struct stat st;
	int r = lstat(path, &st) == 0;

	free(path);
	return r;
}

START_TEST(test_max_age)
{
	struct retention_policy p = { 30 * DAY, 0, 0 };
	struct retention_result r;

	put_aged("old.json", 10, 31 * DAY);
	put_aged("edge.json", 10, 30 * DAY);
	put_aged("young.json", 10, 29 * DAY);
	put_aged("future.json", 10, -DAY);      /* the clock went back */
	ck_assert_int_eq(retention_apply(dir, &p, NOW, &r), 0);
	ck_assert(!exists("old.json"));
	ck_assert(exists("edge.json"));
	ck_assert(exists("young.json"));
	ck_assert(exists("future.json"));
	ck_assert_uint_eq(r.removed, 1);
	ck_assert_uint_eq(r.removed_bytes, 10);
	ck_assert_uint_eq(r.kept, 3);
	ck_assert_uint_eq(r.kept_bytes, 30);
	/* A day later the edge goes too. */
	ck_assert_int_eq(retention_apply(dir, &p, NOW + DAY, &r), 0);
	ck_assert(!exists("edge.json"));
	ck_assert(exists("young.json"));
	ck_assert_uint_eq(r.removed, 1);
}
END_TEST

START_TEST(test_max_count_oldest_first)
{
	struct retention_policy p = { 0, 2, 0 };
	struct retention_result r;

	put_aged("a.json", 10, 500);
	put_aged("b.json", 10, 100);
	put_aged("c.json", 10, 400);
	put_aged("d.json", 10, 200);
	put_aged("e.json", 10, 300);
	ck_assert_int_eq(retention_apply(dir, &p, NOW, &r), 0);
	ck_assert(exists("b.json"));
	ck_assert(exists("d.json"));
	ck_assert(!exists("a.json"));
	ck_assert(!exists("c.json"));
	ck_assert(!exists("e.json"));
	ck_assert_uint_eq(r.removed, 3);
	ck_assert_uint_eq(r.kept, 2);
}
END_TEST

START_TEST(test_max_bytes)
{
	struct retention_policy p = { 0, 0, 200 };
	struct retention_result r;

	put_aged("a.json", 100, 30);
	put_aged("b.json", 100, 20);
	put_aged("c.json", 100, 10);
	put_aged("d.json", 40, 5);
	ck_assert_int_eq(retention_apply(dir, &p, NOW, &r), 0);
	/* 340 bytes: the two oldest go, leaving 140 (240 is still above). */
	ck_assert(!exists("a.json"));
	ck_assert(!exists("b.json"));
	ck_assert(exists("c.json"));
	ck_assert(exists("d.json"));
	ck_assert_uint_eq(r.removed_bytes, 200);
	ck_assert_uint_eq(r.kept_bytes, 140);
}
END_TEST

/* Equal times: the name decides, so the choice never depends on readdir order. */
START_TEST(test_ties_by_name)
{
	struct retention_policy p = { 0, 1, 0 };

	put_aged("z.json", 1, 60);
	put_aged("m.json", 1, 60);
	put_aged("a.json", 1, 60);
	ck_assert_int_eq(retention_apply(dir, &p, NOW, NULL), 0);
	ck_assert(!exists("a.json"));
	ck_assert(!exists("m.json"));
	ck_assert(exists("z.json"));
}
END_TEST

/* Only regular session files are counted and removed; links are never followed. */
START_TEST(test_leaves_other_files_and_links)
{
	struct retention_policy p = { DAY, 0, 0 };
	char *outside = tmpdir_new(), *victim = xasprintf("%s/victim.json", outside);
	char *link = xasprintf("%s/link.json", dir), *sub = xasprintf("%s/sub.json", dir);
	struct timespec ts[2] = { { NOW - 9 * DAY, 0 }, { NOW - 9 * DAY, 0 } };
	struct retention_result r;

	file_put(outside, "victim.json", "[]", 0600);
	ck_assert_int_eq(utimensat(AT_FDCWD, victim, ts, 0), 0);
	ck_assert_int_eq(symlink(victim, link), 0);
	ck_assert_int_eq(utimensat(AT_FDCWD, link, ts, AT_SYMLINK_NOFOLLOW), 0);
	put_aged("notes.txt", 5, 9 * DAY);
	put_aged(".hidden.json", 5, 9 * DAY);
	put_aged("old.json", 5, 9 * DAY);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	ck_assert_int_eq(retention_apply(dir, &p, NOW, &r), 0);
	ck_assert(!exists("old.json"));
	ck_assert(exists("link.json"));
	ck_assert(exists("notes.txt"));
	ck_assert(exists(".hidden.json"));
	ck_assert(exists("sub.json"));
	ck_assert_int_eq(access(victim, F_OK), 0);
	ck_assert_uint_eq(r.removed, 1);
	ck_assert_uint_eq(r.kept, 0);
	free(sub);
	free(link);
	free(victim);
	tmpdir_free(outside);
}
END_TEST

/* A temporary left by an interrupted save is removed once surely stale. */
START_TEST(test_stale_temporaries)
{
	struct retention_policy p = { 0, 0, 0 };
	struct retention_result r;

	put_aged("a.json.tmp.12.00ff00ff00ff00ff", 5, RETENTION_TMP_AGE_SEC + 1);
	put_aged("b.json.tmp.13.00ff00ff00ff00ff", 5, 10);
	put_aged("keep.json", 5, 100 * DAY);
	ck_assert_int_eq(retention_apply(dir, &p, NOW, &r), 0);
	ck_assert(!exists("a.json.tmp.12.00ff00ff00ff00ff"));
	ck_assert(exists("b.json.tmp.13.00ff00ff00ff00ff"));
	/* No limit set: every session file stays. */
	ck_assert(exists("keep.json"));
	ck_assert_uint_eq(r.removed, 0);
	ck_assert_uint_eq(r.kept, 1);
}
END_TEST

START_TEST(test_empty_dir)
{
	struct retention_policy p = { DAY, 1, 1 };
	struct retention_result r;

	ck_assert_int_eq(retention_apply(dir, &p, NOW, &r), 0);
	ck_assert_uint_eq(r.kept, 0);
	ck_assert_uint_eq(r.removed, 0);
}
END_TEST

START_TEST(test_missing_dir)
{
	struct retention_policy p = { DAY, 0, 0 };
	char *gone = xasprintf("%s/none", dir);

	ck_assert_int_eq(retention_apply(gone, &p, NOW, NULL), -1);
	ck_assert_int_eq(errno, ENOENT);
	free(gone);
}
END_TEST

START_TEST(test_interval)
{
	struct retention_policy p = { 0, 100, 0 };

	ck_assert_uint_eq(retention_interval_sec(&p), 3600);
	p.max_age_sec = 30 * DAY;
	ck_assert_uint_eq(retention_interval_sec(&p), 3600);
	p.max_age_sec = 10;
	ck_assert_uint_eq(retention_interval_sec(&p), 5);
	p.max_age_sec = 1;
	ck_assert_uint_eq(retention_interval_sec(&p), 1);
}
END_TEST

static Suite *
retention_suite(void)
{
	Suite *s = suite_create("retention");
	TCase *tc = tcase_create("retention");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_max_age);
	tcase_add_test(tc, test_max_count_oldest_first);
	tcase_add_test(tc, test_max_bytes);
	tcase_add_test(tc, test_ties_by_name);
	tcase_add_test(tc, test_leaves_other_files_and_links);
	tcase_add_test(tc, test_stale_temporaries);
	tcase_add_test(tc, test_empty_dir);
	tcase_add_test(tc, test_missing_dir);
	tcase_add_test(tc, test_interval);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(retention_suite)
