/* test_wnotify.c - the worker's sd_notify glue against a real datagram socket. */
#include <check.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "util.h"
#include "wnotify.h"
#include "unit_util.h"

static int
listener(const char *path)
{
	struct sockaddr_un sa;
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

	ck_assert_int_ge(fd, 0);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* Next datagram within 2 s, or "" when none. */
static void
recv_msg(int fd, char *buf, size_t len)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	buf[0] = '\0';
	if (poll(&p, 1, 2000) != 1)
		return;
	n = recv(fd, buf, len - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
}

static int
pending(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	return poll(&p, 1, 0) == 1;
}

START_TEST(test_interval)
{
	ck_assert_uint_eq(wnotify_interval(NULL, NULL, 10), 0);
	ck_assert_uint_eq(wnotify_interval("2000000", NULL, 10), 1000000);
	ck_assert_uint_eq(wnotify_interval("2000000", "10", 10), 1000000);
	ck_assert_uint_eq(wnotify_interval("2000000", "11", 10), 0);
	ck_assert_uint_eq(wnotify_interval("2000000", "", 10), 1000000);
	ck_assert_uint_eq(wnotify_interval("0", NULL, 10), 0);
	ck_assert_uint_eq(wnotify_interval("abc", NULL, 10), 0);
	ck_assert_uint_eq(wnotify_interval("-5", NULL, 10), 0);
	ck_assert_uint_eq(wnotify_interval("1", NULL, 10), 1);
}
END_TEST

START_TEST(test_messages)
{
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/notify", dir);
	int fd = listener(path);
	struct event_base *base = event_base_new();
	struct wnotify *n;
	char buf[1024];

	setenv("NOTIFY_SOCKET", path, 1);
	unsetenv("WATCHDOG_USEC");
	n = wnotify_new(base);
	ck_assert_uint_eq(wnotify_watchdog_interval(n), 0);
	wnotify_status(n, "console: connecting");
	recv_msg(fd, buf, sizeof(buf));
	ck_assert_str_eq(buf, "STATUS=console: connecting");
	/* The same status is not sent twice. */
	wnotify_status(n, "console: connecting");
	ck_assert_int_eq(pending(fd), 0);
	wnotify_ready(n);
	recv_msg(fd, buf, sizeof(buf));
	ck_assert_str_eq(buf, "READY=1\nSTATUS=console: connecting");
	wnotify_ready(n);
	ck_assert_int_eq(pending(fd), 0);
	/* A status cannot inject another key. */
	wnotify_status(n, "a\nREADY=1");
	recv_msg(fd, buf, sizeof(buf));
	ck_assert_str_eq(buf, "STATUS=a READY=1");
	wnotify_stopping(n);
	recv_msg(fd, buf, sizeof(buf));
	ck_assert_str_eq(buf, "STOPPING=1");
	wnotify_free(n);
	event_base_free(base);
	unsetenv("NOTIFY_SOCKET");
	close(fd);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_watchdog_pings)
{
	char *dir = tmpdir_new();
	char *path = xasprintf("%s/notify", dir);
	int fd = listener(path);
	struct event_base *base = event_base_new();
	struct timeval tv = { 0, 300000 };
	struct wnotify *n;
	char buf[1024], pid[32];
	int pings = 0;

	setenv("NOTIFY_SOCKET", path, 1);
	setenv("WATCHDOG_USEC", "100000", 1);
	snprintf(pid, sizeof(pid), "%ld", (long)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	n = wnotify_new(base);
	ck_assert_uint_eq(wnotify_watchdog_interval(n), 50000);
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
	while (pending(fd)) {
		recv_msg(fd, buf, sizeof(buf));
		ck_assert_str_eq(buf, "WATCHDOG=1");
		pings++;
	}
	ck_assert_int_ge(pings, 2);
	wnotify_free(n);
	/* Meant for another process: no pings. */
	setenv("WATCHDOG_PID", "1", 1);
	n = wnotify_new(base);
	ck_assert_uint_eq(wnotify_watchdog_interval(n), 0);
	wnotify_free(n);
	event_base_free(base);
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	close(fd);
	free(path);
	tmpdir_free(dir);
}
END_TEST

START_TEST(test_no_socket)
{
	struct event_base *base = event_base_new();
	struct wnotify *n;

	unsetenv("NOTIFY_SOCKET");
	n = wnotify_new(base);
	wnotify_ready(n);
	wnotify_status(n, "x");
	wnotify_stopping(n);
	wnotify_free(n);
	/* A socket nobody listens on: logged, not fatal. */
	setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
	n = wnotify_new(base);
	wnotify_ready(n);
	wnotify_stopping(n);
	wnotify_free(n);
	unsetenv("NOTIFY_SOCKET");
	event_base_free(base);
}
END_TEST

static Suite *
wnotify_suite(void)
{
	Suite *s = suite_create("wnotify");
	TCase *tc = tcase_create("wnotify");

	tcase_add_test(tc, test_interval);
	tcase_add_test(tc, test_messages);
	tcase_add_test(tc, test_watchdog_pings);
	tcase_add_test(tc, test_no_socket);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(wnotify_suite)
