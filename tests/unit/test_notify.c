/* test_notify.c - the sd_notify parser (every malformed case) and sender. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "notify.h"

static int
parse(const char *s, struct notify_msg *m, const char **why)
{
	return notify_parse(s, strlen(s), m, why);
}

START_TEST(test_ready_status)
{
	struct notify_msg m;
	const char *why;

	ck_assert_int_eq(parse("READY=1\nSTATUS=all good", &m, &why), 0);
	ck_assert(m.ready && m.has_status && !m.stopping && !m.reloading);
	ck_assert_str_eq(m.status, "all good");
}
END_TEST

START_TEST(test_all_keys)
{
	struct notify_msg m;
	const char *why;

	ck_assert_int_eq(parse("RELOADING=1\nMONOTONIC_USEC=123\nSTOPPING=1\nWATCHDOG=1\n"
	    "ERRNO=5\nEXTEND_TIMEOUT_USEC=5000000\nMAINPID=42\nWATCHDOG_USEC=30000000\n",
	    &m, &why), 0);
	ck_assert(m.reloading && m.stopping && m.watchdog && !m.ready);
	ck_assert(m.has_monotonic && m.monotonic_usec == 123);
	ck_assert(m.has_errno && m.errno_val == 5);
	ck_assert(m.has_extend && m.extend_usec == 5000000);
	ck_assert(m.has_mainpid && m.mainpid == 42);
	ck_assert(m.has_watchdog_usec && m.watchdog_usec == 30000000);
}
END_TEST

START_TEST(test_watchdog_trigger_and_unknown_keys)
{
	struct notify_msg m;
	const char *why;

	ck_assert_int_eq(parse("WATCHDOG=trigger\nFDSTORE=1\nX_CUSTOM=anything=goes", &m, &why), 0);
	ck_assert(m.watchdog_trigger && !m.watchdog);
}
END_TEST

START_TEST(test_empty_lines_tolerated)
{
	struct notify_msg m;
	const char *why;

	ck_assert_int_eq(parse("\nREADY=1\n\n", &m, &why), 0);
	ck_assert(m.ready);
}
END_TEST

START_TEST(test_status_truncated_and_sanitized)
{
	struct notify_msg m;
	const char *why;
	char buf[NOTIFY_MAX_STATUS + 100];

	memcpy(buf, "STATUS=", 7);
	memset(buf + 7, 'x', sizeof(buf) - 8);
	buf[sizeof(buf) - 1] = '\0';
	ck_assert_int_eq(parse(buf, &m, &why), 0);
	ck_assert_uint_eq(strlen(m.status), NOTIFY_MAX_STATUS);
	ck_assert_int_eq(parse("STATUS=a\tb\x1b[31mc\x7f", &m, &why), 0);
	ck_assert_str_eq(m.status, "a?b?[31mc?");
	ck_assert_int_eq(parse("STATUS=", &m, &why), 0);
	ck_assert(m.has_status);
	ck_assert_str_eq(m.status, "");
}
END_TEST

/* Every malformed datagram is refused with a reason. */
static const struct { const char *in; const char *why; } bad[] = {
	{ "", "empty datagram" },
	{ "\n\n", "no KEY=VALUE line" },
	{ "READY", "line is not KEY=VALUE" },
	{ "=1", "line is not KEY=VALUE" },
	{ "ready=1", "line is not KEY=VALUE" },
	{ "1READY=1", "line is not KEY=VALUE" },
	{ "RE-ADY=1", "line is not KEY=VALUE" },
	{ "READY =1", "line is not KEY=VALUE" },
	{ "READY=1\ngarbage", "line is not KEY=VALUE" },
	{ "READY=0", "flag key with a value other than 1" },
	{ "READY=", "flag key with a value other than 1" },
	{ "READY=11", "flag key with a value other than 1" },
	{ "RELOADING=yes", "flag key with a value other than 1" },
	{ "STOPPING=2", "flag key with a value other than 1" },
	{ "WATCHDOG=0", "bad WATCHDOG value" },
	{ "WATCHDOG=", "bad WATCHDOG value" },
	{ "WATCHDOG=triggered", "bad WATCHDOG value" },
	{ "ERRNO=", "bad ERRNO value" },
	{ "ERRNO=-1", "bad ERRNO value" },
	{ "ERRNO=4096", "bad ERRNO value" },
	{ "ERRNO=1x", "bad ERRNO value" },
	{ "EXTEND_TIMEOUT_USEC=", "bad EXTEND_TIMEOUT_USEC value" },
	{ "EXTEND_TIMEOUT_USEC=1.5", "bad EXTEND_TIMEOUT_USEC value" },
	{ "EXTEND_TIMEOUT_USEC=99999999999999999999999", "bad EXTEND_TIMEOUT_USEC value" },
	{ "MONOTONIC_USEC=abc", "bad MONOTONIC_USEC value" },
	{ "WATCHDOG_USEC=0", "bad WATCHDOG_USEC value" },
	{ "WATCHDOG_USEC=+5", "bad WATCHDOG_USEC value" },
	{ "MAINPID=0", "bad MAINPID value" },
	{ "MAINPID=99999999", "bad MAINPID value" },
	{ "MAINPID= 5", "bad MAINPID value" },
};

START_TEST(test_malformed)
{
	struct notify_msg m;
	const char *why = NULL;

	ck_assert_int_eq(parse(bad[_i].in, &m, &why), -1);
	ck_assert_ptr_nonnull(why);
	ck_assert_str_eq(why, bad[_i].why);
}
END_TEST

START_TEST(test_nul_and_oversized)
{
	struct notify_msg m;
	const char *why;
	char *big = malloc(NOTIFY_MAX_DGRAM + 1);

	ck_assert_int_eq(notify_parse("READY=1\0X", 9, &m, &why), -1);
	ck_assert_str_eq(why, "NUL byte in datagram");
	memset(big, 'A', NOTIFY_MAX_DGRAM + 1);
	memcpy(big, "STATUS=", 7);
	ck_assert_int_eq(notify_parse(big, NOTIFY_MAX_DGRAM + 1, &m, &why), -1);
	ck_assert_str_eq(why, "oversized datagram");
	ck_assert_int_eq(notify_parse(big, NOTIFY_MAX_DGRAM, &m, &why), 0);
	free(big);
}
END_TEST

START_TEST(test_addr)
{
	struct sockaddr_un sa;
	socklen_t len;
	char longp[200];

	ck_assert_int_eq(notify_addr("/run/x", &sa, &len), 0);
	ck_assert_str_eq(sa.sun_path, "/run/x");
	ck_assert_int_eq(notify_addr("@abs", &sa, &len), 0);
	ck_assert(sa.sun_path[0] == '\0' && memcmp(sa.sun_path + 1, "abs", 3) == 0);
	ck_assert_uint_eq(len, offsetof(struct sockaddr_un, sun_path) + 4);
	ck_assert_int_eq(notify_addr("relative", &sa, &len), -1);
	ck_assert_int_eq(notify_addr("", &sa, &len), -1);
	ck_assert_int_eq(notify_addr("@", &sa, &len), -1);
	ck_assert_int_eq(notify_addr(NULL, &sa, &len), -1);
	memset(longp, 'a', sizeof(longp) - 1);
	longp[0] = '/';
	longp[sizeof(longp) - 1] = '\0';
	ck_assert_int_eq(notify_addr(longp, &sa, &len), -1);
}
END_TEST

/* notify_send_to reaches a bound socket, path and abstract; unset env -> 0. */
START_TEST(test_send_roundtrip)
{
	char spec[64], buf[64];
	struct sockaddr_un sa;
	socklen_t len;
	int fd, i;

	for (i = 0; i < 2; i++) {
		if (i == 0)
			snprintf(spec, sizeof(spec), "/tmp/hermes-test-notify.%ld", (long)getpid());
		else
			snprintf(spec, sizeof(spec), "@hermes-test-notify.%ld", (long)getpid());
		ck_assert_int_eq(notify_addr(spec, &sa, &len), 0);
		fd = socket(AF_UNIX, SOCK_DGRAM, 0);
		unlink(spec);
		ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, len), 0);
		ck_assert_int_eq(notify_send_to(spec, "READY=1"), 1);
		ck_assert_int_eq((int)recv(fd, buf, sizeof(buf), 0), 7);
		ck_assert(memcmp(buf, "READY=1", 7) == 0);
		setenv("NOTIFY_SOCKET", spec, 1);
		ck_assert_int_eq(notify_send("STOPPING=1"), 1);
		ck_assert_int_eq((int)recv(fd, buf, sizeof(buf), 0), 10);
		close(fd);
		if (i == 0)
			unlink(spec);
	}
	ck_assert_int_eq(notify_send_to("/nonexistent/sock", "READY=1"), -1);
	ck_assert_int_eq(notify_send_to("bad", "READY=1"), -1);
	ck_assert_int_eq(errno, EINVAL);
	unsetenv("NOTIFY_SOCKET");
	ck_assert_int_eq(notify_send("READY=1"), 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("notify");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_ready_status);
	tcase_add_test(tc, test_all_keys);
	tcase_add_test(tc, test_watchdog_trigger_and_unknown_keys);
	tcase_add_test(tc, test_empty_lines_tolerated);
	tcase_add_test(tc, test_status_truncated_and_sanitized);
	tcase_add_loop_test(tc, test_malformed, 0, (int)(sizeof(bad) / sizeof(bad[0])));
	tcase_add_test(tc, test_nul_and_oversized);
	tcase_add_test(tc, test_addr);
	tcase_add_test(tc, test_send_roundtrip);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
