/* test_util.c - common/util: number parsing, buffers, atomic files. */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "unit_util.h"

START_TEST(test_parse_seconds)
{
	uint64_t us = 0;

	ck_assert_int_eq(parse_seconds("30", UINT64_MAX, &us), 0);
	ck_assert_uint_eq(us, 30000000u);
	ck_assert_int_eq(parse_seconds("0.5", UINT64_MAX, &us), 0);
	ck_assert_uint_eq(us, 500000u);
	ck_assert_int_eq(parse_seconds("1.25", UINT64_MAX, &us), 0);
	ck_assert_uint_eq(us, 1250000u);
	ck_assert_int_eq(parse_seconds("0.0000019", UINT64_MAX, &us), 0);
	ck_assert_uint_eq(us, 1u);
	ck_assert_int_eq(parse_seconds("", UINT64_MAX, &us), -1);
	ck_assert_int_eq(parse_seconds(".5", UINT64_MAX, &us), -1);
	ck_assert_int_eq(parse_seconds("5.", UINT64_MAX, &us), -1);
	ck_assert_int_eq(parse_seconds("-1", UINT64_MAX, &us), -1);
	ck_assert_int_eq(parse_seconds("1e3", UINT64_MAX, &us), -1);
	ck_assert_int_eq(parse_seconds("10 ", UINT64_MAX, &us), -1);
	ck_assert_int_eq(parse_seconds("11", 10000000u, &us), -1);
	ck_assert_int_eq(parse_seconds("10.5", 10000000u, &us), -1);
	ck_assert_int_eq(parse_seconds("99999999999999999999999", UINT64_MAX, &us), -1);
}
END_TEST

START_TEST(test_parse_u64)
{
	uint64_t v = 0;

	ck_assert_int_eq(parse_u64("0", 10, &v), 0);
	ck_assert_uint_eq(v, 0);
	ck_assert_int_eq(parse_u64("18446744073709551615", UINT64_MAX, &v), 0);
	ck_assert_uint_eq(v, UINT64_MAX);
	ck_assert_int_eq(parse_u64("18446744073709551616", UINT64_MAX, &v), -1);
	ck_assert_int_eq(parse_u64("11", 10, &v), -1);
	ck_assert_int_eq(parse_u64("+1", 10, &v), -1);
	ck_assert_int_eq(parse_u64("1x", 10, &v), -1);
	ck_assert_int_eq(parse_u64("", 10, &v), -1);
	ck_assert_int_eq(parse_u64(NULL, 10, &v), -1);
}
END_TEST

START_TEST(test_buf_append_caps)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	int i;

	for (i = 0; i < 100; i++)
		ck_assert_int_eq(buf_append(&buf, &len, &cap, 1000, "0123456789", 10), 0);
	ck_assert_uint_eq(len, 1000);
	ck_assert_uint_eq(strlen(buf), 1000);
	ck_assert_int_eq(buf_append(&buf, &len, &cap, 1000, "x", 1), -1);
	ck_assert_uint_eq(len, 1000);
	ck_assert_int_eq(memcmp(buf + 990, "0123456789", 10), 0);
	ck_assert_int_eq(buf_append(&buf, &len, &cap, 1000, "", 0), 0);
	ck_assert_int_eq(buf_append(&buf, &len, &cap, 1000, "x", SIZE_MAX), -1);
	free(buf);
}
END_TEST

/* The number of entries in dir besides . and .. */
static int
count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)) != NULL)
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

/* Both writers replace the file whole and leave no temporary behind. */
START_TEST(test_atomic_writes)
{
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/state.json", dir);
	struct stat st;
	size_t len = 0;
	char *text;

	ck_assert_int_eq(write_file_atomic(path, "first", 5, 0600), 0);
	ck_assert_int_eq(write_file_replace(path, "second!", 7, 0600), 0);
	text = read_file(path, 100, &len);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, "second!");
	ck_assert_uint_eq(len, 7);
	free(text);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(sync_dir(dir), 0);
	ck_assert_int_eq(count_entries(dir), 1);
	/* A directory that does not exist: an error, no file. */
	free(path);
	path = xasprintf("%s/missing/state.json", dir);
	ck_assert_int_eq(write_file_atomic(path, "x", 1, 0600), -1);
	ck_assert_int_eq(errno, ENOENT);
	free(path);
	tmpdir_free(dir);
}
END_TEST

/* Reads dir/name as a string (the test fails when it cannot). */
static char *
slurp(const char *dir, const char *name)
{
	char *path = xasprintf("%s/%s", dir, name);
	char *text = read_file(path, 4096, NULL);

	ck_assert_msg(text != NULL, "cannot read %s", path);
	free(path);
	return text;
}

/*
 * A link planted where the writer puts its temporary file (the name it
 * used to derive from the pid) or at the target itself never redirects
 * the write outside the directory.
 */
START_TEST(test_atomic_write_planted_links)
{
	char *dir = tmpdir_new(), *outside = tmpdir_new();
	char *victim = xasprintf("%s/victim", outside), *path = xasprintf("%s/state.json", dir);
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid()), *text;
	struct stat st;

	file_put(outside, "victim", "precious", 0600);
	ck_assert_int_eq(symlink(victim, tmp), 0);
	ck_assert_int_eq(write_file_atomic(path, "new", 3, 0600), 0);
	ck_assert_int_eq(write_file_replace(path, "newer", 5, 0600), 0);
	text = slurp(outside, "victim");
	ck_assert_str_eq(text, "precious");
	free(text);
	text = slurp(dir, "state.json");
	ck_assert_str_eq(text, "newer");
	free(text);
	/* A link at the target name is replaced, not followed. */
	ck_assert_int_eq(unlink(path), 0);
	ck_assert_int_eq(symlink(victim, path), 0);
	ck_assert_int_eq(write_file_atomic(path, "mine", 4, 0600), 0);
	text = slurp(outside, "victim");
	ck_assert_str_eq(text, "precious");
	free(text);
	ck_assert_int_eq(lstat(path, &st), 0);
	ck_assert(S_ISREG(st.st_mode));
	/* Only the planted link and the file: no temporary left behind. */
	ck_assert_int_eq(count_entries(dir), 2);
	free(tmp);
	free(path);
	free(victim);
	tmpdir_free(outside);
	tmpdir_free(dir);
}
END_TEST

/* State files are read without following a link or waiting on a FIFO. */
START_TEST(test_read_file_nofollow)
{
	char *dir = tmpdir_new();
	char *link = xasprintf("%s/link", dir), *fifo = xasprintf("%s/fifo", dir);
	char *real = xasprintf("%s/real", dir), *text;

	file_put(dir, "real", "content", 0600);
	ck_assert_int_eq(symlink(real, link), 0);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	text = read_file_nofollow(real, 100, NULL);
	ck_assert_ptr_nonnull(text);
	ck_assert_str_eq(text, "content");
	free(text);
	ck_assert_ptr_null(read_file_nofollow(link, 100, NULL));
	ck_assert_int_eq(errno, ELOOP);
	ck_assert_ptr_null(read_file_nofollow(fifo, 100, NULL));
	ck_assert_int_eq(errno, EINVAL);
	ck_assert_ptr_null(read_file_nofollow(dir, 100, NULL));
	/* The ordinary reader still follows links (a config may be one). */
	text = read_file(link, 100, NULL);
	ck_assert_ptr_nonnull(text);
	free(text);
	free(link);
	free(fifo);
	free(real);
	tmpdir_free(dir);
}
END_TEST

/* dir_ensure(): created private, and every reason it refuses is said. */
START_TEST(test_dir_ensure)
{
	char *dir = tmpdir_new(), *sub = xasprintf("%s/a/b", dir);
	char *file = xasprintf("%s/file", dir), *under = xasprintf("%s/file/x", dir);
	char err[256] = "";
	struct stat st;

	ck_assert_int_eq(dir_ensure(sub, 0700, 1, err, sizeof(err)), 0);
	ck_assert_int_eq(stat(sub, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0700);
	ck_assert_int_eq(count_entries(sub), 0);        /* the write probe is gone */
	file_put(dir, "file", "x", 0600);
	ck_assert_int_eq(dir_ensure(file, 0700, 1, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "not a directory") != NULL, "%s", err);
	ck_assert_int_eq(dir_ensure(under, 0700, 1, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "cannot create it: Not a directory") != NULL, "%s", err);
	ck_assert_int_eq(chmod(sub, 0777), 0);
	ck_assert_int_eq(dir_ensure(sub, 0700, 1, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, "writable by group or others (mode 0777)") != NULL, "%s", err);
	ck_assert_int_eq(dir_ensure(sub, 0700, 0, err, sizeof(err)), 0);
	ck_assert_int_eq(chmod(sub, 0720), 0);
	ck_assert_int_eq(dir_ensure(sub, 0700, 1, err, sizeof(err)), -1);
	ck_assert_int_eq(chmod(sub, 0755), 0);
	ck_assert_int_eq(dir_ensure(sub, 0700, 1, err, sizeof(err)), 0);
	if (geteuid() == 0) {
		ck_assert_int_eq(chown(sub, 65534, 65534), 0);
		ck_assert_int_eq(dir_ensure(sub, 0700, 1, err, sizeof(err)), -1);
		ck_assert_msg(strstr(err, "owned by uid 65534, not by this user (uid 0)") != NULL,
		    "%s", err);
	}
	free(sub);
	free(file);
	free(under);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_read_file_cap)
{
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/big", dir);
	char big[10000];

	memset(big, 'a', sizeof(big));
	ck_assert_int_eq(write_file_atomic(path, big, sizeof(big), 0600), 0);
	ck_assert_ptr_null(read_file(path, 9999, NULL));
	ck_assert_int_eq(errno, EFBIG);
	free(read_file(path, 10000, NULL));
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_mkdir_p)
{
	char *dir = tmpdir_new();
	char *deep = xasprintf("%s/a/b/c", dir);
	struct stat st;

	ck_assert_int_eq(mkdir_p(deep, 0700), 0);
	ck_assert_int_eq(mkdir_p(deep, 0700), 0);
	ck_assert_int_eq(stat(deep, &st), 0);
	ck_assert(S_ISDIR(st.st_mode));
	free(deep);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_log_escape)
{
	char out[64];

	ck_assert_str_eq(log_escape(out, sizeof(out), "ok text", 7), "ok text");
	ck_assert_str_eq(log_escape(out, sizeof(out), "a\nb\x01\\", 5), "a\\x0ab\\x01\\x5c");
	ck_assert_str_eq(log_escape(out, sizeof(out), "\xc3\xa9", 2), "\\xc3\\xa9");
	/* Truncation never splits an escape and always terminates. */
	ck_assert_str_eq(log_escape(out, 6, "ab\ncd", 5), "ab");
	ck_assert_str_eq(log_escape(out, 4, "abcdef", 6), "abc");
}
END_TEST

static Suite *
util_suite(void)
{
	Suite *s = suite_create("util");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_parse_seconds);
	tcase_add_test(tc, test_parse_u64);
	tcase_add_test(tc, test_buf_append_caps);
	tcase_add_test(tc, test_atomic_writes);
	tcase_add_test(tc, test_atomic_write_planted_links);
	tcase_add_test(tc, test_read_file_nofollow);
	tcase_add_test(tc, test_dir_ensure);
	tcase_add_test(tc, test_read_file_cap);
	tcase_add_test(tc, test_mkdir_p);
	tcase_add_test(tc, test_log_escape);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(util_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
