/* test_sup_inbox.c - the worker's notify socket: credentials, size, fds. */
#include <check.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"
#include "supervisor/inbox.h"

static char dir[64], spec[128];
static int fd;

static void
setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/hermes-inbox.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	fd = inbox_open(dir, spec, sizeof(spec));
	ck_assert_int_ge(fd, 0);
}

static void
teardown(void)
{
	inbox_close(fd, spec);
	rmdir(dir);
}

/* Sends len bytes to the socket, optionally passing an fd along. */
static void
send_raw(const char *buf, size_t len, int pass_fd)
{
	struct sockaddr_un sa;
	socklen_t salen;
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } cm;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh;
	int s = socket(AF_UNIX, SOCK_DGRAM, 0);

	ck_assert_int_eq(notify_addr(spec, &sa, &salen), 0);
	memset(&mh, 0, sizeof(mh));
	mh.msg_name = &sa;
	mh.msg_namelen = salen;
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (pass_fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = cm.b;
		mh.msg_controllen = sizeof(cm.b);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	}
	ck_assert_int_eq((int)sendmsg(s, &mh, 0), (int)len);
	close(s);
}

START_TEST(test_path_and_accept)
{
	struct notify_msg m;
	char want[128];

	snprintf(want, sizeof(want), "%s/notify", dir);
	ck_assert_str_eq(spec, want);
	send_raw("READY=1\nSTATUS=up", 17, -1);
	ck_assert_int_eq(inbox_recv(fd, getpid(), &m), 1);
	ck_assert(m.ready);
	ck_assert_str_eq(m.status, "up");
	ck_assert_int_eq(inbox_recv(fd, getpid(), &m), -1);    /* nothing more */
}
END_TEST

START_TEST(test_other_sender_dropped)
{
	struct notify_msg m;

	send_raw("READY=1", 7, -1);
	ck_assert_int_eq(inbox_recv(fd, getpid() + 1, &m), 0);
	send_raw("READY=1", 7, -1);
	ck_assert_int_eq(inbox_recv(fd, 0, &m), 0);       /* no worker at all */
}
END_TEST

START_TEST(test_malformed_and_oversized_dropped)
{
	struct notify_msg m;
	char *big = malloc(NOTIFY_MAX_DGRAM + 100);

	send_raw("nonsense", 8, -1);
	ck_assert_int_eq(inbox_recv(fd, getpid(), &m), 0);
	memset(big, 'x', NOTIFY_MAX_DGRAM + 100);
	memcpy(big, "STATUS=", 7);
	send_raw(big, NOTIFY_MAX_DGRAM + 100, -1);
	ck_assert_int_eq(inbox_recv(fd, getpid(), &m), 0);
	send_raw("WATCHDOG=1", 10, -1);          /* the socket still works */
	ck_assert_int_eq(inbox_recv(fd, getpid(), &m), 1);
	ck_assert(m.watchdog);
	free(big);
}
END_TEST

START_TEST(test_passed_fds_are_closed)
{
	struct notify_msg m;
	int p[2], before, after;

	ck_assert_int_eq(pipe(p), 0);
	send_raw("READY=1", 7, p[0]);
	close(p[0]);
	before = dup(0);
	close(before);
	ck_assert_int_eq(inbox_recv(fd, getpid(), &m), 1);
	after = dup(0);                 /* the received copy must not linger */
	close(after);
	ck_assert_int_eq(before, after);
	close(p[1]);
}
END_TEST

START_TEST(test_long_dir_falls_back_to_abstract)
{
	char longdir[200], sp[128];
	int f;

	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[0] = '/';
	longdir[sizeof(longdir) - 1] = '\0';
	f = inbox_open(longdir, sp, sizeof(sp));
	ck_assert_int_ge(f, 0);
	ck_assert(sp[0] == '@');
	inbox_close(f, sp);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("sup_inbox");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_path_and_accept);
	tcase_add_test(tc, test_other_sender_dropped);
	tcase_add_test(tc, test_malformed_and_oversized_dropped);
	tcase_add_test(tc, test_passed_fds_are_closed);
	tcase_add_test(tc, test_long_dir_falls_back_to_abstract);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
