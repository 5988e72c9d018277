/* test_sup_args.c - the supervisor's command line. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "supervisor/args.h"

#define ARGV(...) ((char *[]){ "hermes-supervisor", __VA_ARGS__, NULL })

/* Parses a NULL-terminated argv. */
static int
parse(struct sup_args *a, char **argv, char *err)
{
	int argc = 0;

	while (argv[argc] != NULL)
		argc++;
	return args_parse(a, argc, argv, err, 256);
}

START_TEST(test_defaults)
{
	struct sup_args a;
	char err[256], *argv[] = { "hermes-supervisor", NULL };

	ck_assert_int_eq(parse(&a, argv, err), 0);
	ck_assert_int_eq(a.cmd, CMD_RUN);
	ck_assert(!a.foreground && !a.replace && a.config == NULL && a.runtime_dir == NULL);
	ck_assert(a.stop_timeout == 30000000 && a.backoff_max == 30000000 && a.watchdog == 0);
	ck_assert(a.crash_limit == 5 && a.crash_window == 60000000);
	ck_assert(a.worker_argv == NULL && a.nlisten == 0);
	args_free(&a);
}
END_TEST

START_TEST(test_everything)
{
	struct sup_args a;
	char err[256];
	char **v = ARGV("--foreground", "-c", "/etc/g.json", "--runtime-dir=/run/x",
	    "--pidfile", "/p", "--stop-timeout", "0.5", "--watchdog=2.25", "--backoff-max", "10",
	    "--crash-limit", "3/120.5", "--listen", "console=127.0.0.1:8642",
	    "--listen=web=[::1]:80", "--replace", "--", "/bin/w", "--x", "--", "y");

	ck_assert_int_eq(parse(&a, v, err), 0);
	ck_assert(a.foreground && a.replace);
	ck_assert_str_eq(a.config, "/etc/g.json");
	ck_assert_str_eq(a.runtime_dir, "/run/x");
	ck_assert_str_eq(a.pidfile, "/p");
	ck_assert(a.stop_timeout == 500000 && a.watchdog == 2250000 && a.backoff_max == 10000000);
	ck_assert(a.crash_limit == 3 && a.crash_window == 120500000);
	ck_assert_uint_eq(a.nlisten, 2);
	ck_assert_str_eq(a.listen[0], "console=127.0.0.1:8642");
	ck_assert_str_eq(a.listen[1], "web=[::1]:80");
	ck_assert_str_eq(a.worker_argv[0], "/bin/w");
	ck_assert_str_eq(a.worker_argv[2], "--");
	ck_assert_ptr_null(a.worker_argv[4]);
	args_free(&a);
}
END_TEST

START_TEST(test_subcommands)
{
	struct sup_args a;
	char err[256];

	ck_assert_int_eq(parse(&a, ARGV("status", "--runtime-dir", "/d"), err), 0);
	ck_assert_int_eq(a.cmd, CMD_STATUS);
	ck_assert_str_eq(a.runtime_dir, "/d");
	ck_assert_int_eq(parse(&a, ARGV("restart"), err), 0);
	ck_assert_int_eq(a.cmd, CMD_RESTART);
	ck_assert_int_eq(parse(&a, ARGV("stop"), err), 0);
	ck_assert_int_eq(a.cmd, CMD_STOP);
	ck_assert_int_eq(parse(&a, ARGV("install-service", "--anything"), err), 0);
	ck_assert_int_eq(a.cmd, CMD_INSTALL);
	ck_assert_int_eq(parse(&a, ARGV("uninstall-service"), err), 0);
	ck_assert_int_eq(a.cmd, CMD_UNINSTALL);
	ck_assert_int_eq(parse(&a, ARGV("--help"), err), 0);
	ck_assert_int_eq(a.cmd, CMD_HELP);
	ck_assert_int_eq(parse(&a, ARGV("--version"), err), 0);
	ck_assert_int_eq(a.cmd, CMD_VERSION);
}
END_TEST

static const struct { const char *opt, *val, *msg; } bad[] = {
	{ "--stop-timeout", "abc", "bad value for --stop-timeout: abc" },
	{ "--stop-timeout", "-1", "bad value for --stop-timeout: -1" },
	{ "--stop-timeout", "1.", "bad value for --stop-timeout: 1." },
	{ "--stop-timeout", ".5", "bad value for --stop-timeout: .5" },
	{ "--watchdog", "0", "bad value for --watchdog: 0" },
	{ "--watchdog", "0.0001", "bad value for --watchdog: 0.0001" },
	{ "--backoff-max", "1e3", "bad value for --backoff-max: 1e3" },
	{ "--crash-limit", "5", "bad value for --crash-limit: 5" },
	{ "--crash-limit", "0/60", "bad value for --crash-limit: 0/60" },
	{ "--crash-limit", "5/0", "bad value for --crash-limit: 5/0" },
	{ "--crash-limit", "/60", "bad value for --crash-limit: /60" },
	{ "--crash-limit", "x/60", "bad value for --crash-limit: x/60" },
	{ "--crash-limit", "5/", "bad value for --crash-limit: 5/" },
	{ "--bogus", "1", "unknown option: --bogus" },
	{ "-x", "1", "unknown option: -x" },
};

START_TEST(test_bad_values)
{
	struct sup_args a;
	char err[256];

	ck_assert_int_eq(parse(&a, ARGV((char *)bad[_i].opt, (char *)bad[_i].val), err), -1);
	ck_assert_str_eq(err, bad[_i].msg);
	args_free(&a);
}
END_TEST

START_TEST(test_structural_errors)
{
	struct sup_args a;
	char err[256];

	ck_assert_int_eq(parse(&a, ARGV("--stop-timeout"), err), -1);
	ck_assert_str_eq(err, "option --stop-timeout needs a value");
	ck_assert_int_eq(parse(&a, ARGV("--"), err), -1);
	ck_assert_str_eq(err, "-- must be followed by a worker command");
	ck_assert_int_eq(parse(&a, ARGV("status", "--"), err), -1);
	ck_assert_int_eq(parse(&a, ARGV("worker"), err), -1);
	ck_assert_str_eq(err, "unexpected argument: worker");
	ck_assert_int_eq(parse(&a, ARGV("--foreground", "status"), err), -1);
	ck_assert_int_eq(parse(&a, ARGV("--stop-timeout-and-more-much-longer-name=1"), err), -1);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("sup_args");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_defaults);
	tcase_add_test(tc, test_everything);
	tcase_add_test(tc, test_subcommands);
	tcase_add_loop_test(tc, test_bad_values, 0, (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, test_structural_errors);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
