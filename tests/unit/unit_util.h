/* unit_util.h - small helpers shared by the worker core's unit tests. */
#ifndef HERMES_UNIT_UTIL_H
#define HERMES_UNIT_UTIL_H

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A fresh temporary directory; the caller frees the string. */
static inline char *
tmpdir_new(void)
{
	char *d = strdup("/tmp/hermes-unit-XXXXXX");

	ck_assert_ptr_nonnull(d);
	ck_assert_ptr_nonnull(mkdtemp(d));
	return d;
}

/* Removes a temporary directory tree. */
static inline void
tmpdir_free(char *d)
{
	char cmd[512];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", d);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", d);
	free(d);
}

/* Writes text to dir/name with mode. */
static inline void
file_put(const char *dir, const char *name, const char *text, int mode)
{
	char path[512];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
	ck_assert_int_eq(chmod(path, (mode_t)mode), 0);
}

#define RUN_SUITE(fn)                                           \
	int main(void)                                          \
	{                                                       \
		SRunner *sr = srunner_create(fn());             \
		int failed;                                     \
		srunner_run_all(sr, CK_NORMAL);                 \
		failed = srunner_ntests_failed(sr);             \
		srunner_free(sr);                               \
		return failed == 0 ? 0 : 1;                     \
	}

#endif
