/* test_sup_policy.c - exit classification, backoff, crash window, listen specs. */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "supervisor/listen.h"
#include "supervisor/policy.h"

/* waitpid() statuses built the way the kernel encodes them. */
#define EXITED(c) (((c) & 0xff) << 8)
#define SIGNALED(s) ((s) & 0x7f)

START_TEST(test_classify)
{
	ck_assert_int_eq(policy_classify(EXITED(0), 1, 0), ACT_EXIT_OK);
	ck_assert_int_eq(policy_classify(EXITED(0), 0, 0), ACT_EXIT_OK);
	ck_assert_int_eq(policy_classify(EXITED(78), 0, 0), ACT_EXIT_CONFIG);
	ck_assert_int_eq(policy_classify(EXITED(75), 1, 0), ACT_RESPAWN);
	ck_assert_int_eq(policy_classify(EXITED(75), 0, 0), ACT_BACKOFF);    /* restart loop */
	ck_assert_int_eq(policy_classify(EXITED(75), 1, 1), ACT_BACKOFF);    /* we killed it */
	ck_assert_int_eq(policy_classify(EXITED(0), 1, 1), ACT_BACKOFF);
	ck_assert_int_eq(policy_classify(EXITED(1), 1, 0), ACT_BACKOFF);
	ck_assert_int_eq(policy_classify(EXITED(127), 0, 0), ACT_BACKOFF);
	ck_assert_int_eq(policy_classify(EXITED(255), 1, 0), ACT_BACKOFF);
	ck_assert_int_eq(policy_classify(SIGNALED(9), 1, 0), ACT_BACKOFF);
	ck_assert_int_eq(policy_classify(SIGNALED(15), 1, 0), ACT_BACKOFF);
	ck_assert(WIFEXITED(EXITED(75)) && WEXITSTATUS(EXITED(75)) == 75);
	ck_assert(WIFSIGNALED(SIGNALED(9)) && WTERMSIG(SIGNALED(9)) == 9);
}
END_TEST

START_TEST(test_backoff)
{
	uint64_t cap = 30000000;

	ck_assert_uint_eq(policy_backoff(1, cap), 100000);
	ck_assert_uint_eq(policy_backoff(2, cap), 200000);
	ck_assert_uint_eq(policy_backoff(3, cap), 400000);
	ck_assert_uint_eq(policy_backoff(9, cap), 25600000);
	ck_assert_uint_eq(policy_backoff(10, cap), cap);
	ck_assert_uint_eq(policy_backoff(1000000, cap), cap);   /* no overflow */
	ck_assert_uint_eq(policy_backoff(1, 50000), 50000);     /* cap below the first delay */
	ck_assert_uint_eq(policy_backoff(3, 0), 0);
}
END_TEST

START_TEST(test_crash_window)
{
	struct crashwin w;
	uint64_t s = 1000000;

	crashwin_init(&w, 3, 10 * s);
	ck_assert_int_eq(crashwin_add(&w, 100 * s), 0);
	ck_assert_int_eq(crashwin_add(&w, 105 * s), 0);
	ck_assert_int_eq(crashwin_add(&w, 111 * s), 0);   /* the first fell out of the window */
	ck_assert_int_eq(crashwin_add(&w, 130 * s), 0);
	ck_assert_int_eq(crashwin_add(&w, 131 * s), 0);
	ck_assert_int_eq(crashwin_add(&w, 132 * s), 1);   /* three within 10 s */
	crashwin_free(&w);
	crashwin_init(&w, 1, s);
	ck_assert_int_eq(crashwin_add(&w, 5 * s), 1);
	crashwin_free(&w);
}
END_TEST

START_TEST(test_listen_parse)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char name[LISTEN_NAME_MAX], err[256];
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

	ck_assert_int_eq(listen_parse("console=127.0.0.1:8642", name, sizeof(name), &ss, &len,
	    err, sizeof(err)), 0);
	ck_assert_str_eq(name, "console");
	ck_assert(s4->sin_family == AF_INET && ntohs(s4->sin_port) == 8642);
	ck_assert_int_eq(listen_parse("web=[::1]:80", name, sizeof(name), &ss, &len, err,
	    sizeof(err)), 0);
	ck_assert(s6->sin6_family == AF_INET6 && ntohs(s6->sin6_port) == 80);
	ck_assert_int_eq(listen_parse("w=::1:80", name, sizeof(name), &ss, &len, err,
	    sizeof(err)), 0);
}
END_TEST

static const char *const bad_specs[] = {
	"127.0.0.1:80", "=127.0.0.1:80", "a:b=127.0.0.1:80", "web=127.0.0.1", "web=127.0.0.1:0",
	"web=127.0.0.1:65536", "web=127.0.0.1:8x", "web=localhost:80", "web=:80",
	"web=[::1:80", "web=1.2.3.4.5:80",
	"a-name-that-is-much-longer-than-sixty-four-characters-for-sure-yes-it-is=1.2.3.4:5",
};

START_TEST(test_listen_parse_bad)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char name[LISTEN_NAME_MAX], err[256] = "";

	ck_assert_int_eq(listen_parse(bad_specs[_i], name, sizeof(name), &ss, &len, err,
	    sizeof(err)), -1);
	ck_assert(strstr(err, "bad --listen") != NULL);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("sup_policy");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_classify);
	tcase_add_test(tc, test_backoff);
	tcase_add_test(tc, test_crash_window);
	tcase_add_test(tc, test_listen_parse);
	tcase_add_loop_test(tc, test_listen_parse_bad, 0,
	    (int)(sizeof(bad_specs) / sizeof(bad_specs[0])));
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
