/*
 * fuzz_notify.c - the sd_notify datagram parser (common/notify.c) and the
 * supervisor's inbox (supervisor/inbox.c), which receives it over a socket.
 *
 * Invariants: an accepted datagram is within the size limit and NUL-free;
 * every field it yields is within its documented range and the STATUS text
 * is bounded and free of control characters; printing the parsed message
 * back as a datagram and parsing that gives the same message; a refusal
 * always says why.  The inbox accepts exactly what the parser accepts (from
 * the worker's pid only), drops the rest, and closes any file descriptor a
 * sender passed along.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fz_util.h"
#include "supervisor/inbox.h"
#include "notify.h"

static int fz_sock[2] = { -1, -1 };

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	int one = 1, big = 1 << 20;

	(void)argc;
	(void)argv;
	fz_setup();
	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, fz_sock) < 0 ||
	    setsockopt(fz_sock[0], SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0) {
		perror("socketpair");
		abort();
	}
	setsockopt(fz_sock[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
	setsockopt(fz_sock[0], SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	return 0;
}

/* Prints m back as a datagram the parser must read as the same message. */
static size_t
notify_print(const struct notify_msg *m, char *buf, size_t sz)
{
	size_t n = 0;

#define P(...) (n += (size_t)snprintf(buf + n, sz - n, __VA_ARGS__))
	if (m->ready)
		P("READY=1\n");
	if (m->reloading)
		P("RELOADING=1\n");
	if (m->stopping)
		P("STOPPING=1\n");
	if (m->watchdog)
		P("WATCHDOG=1\n");
	if (m->watchdog_trigger)
		P("WATCHDOG=trigger\n");
	if (m->has_status)
		P("STATUS=%s\n", m->status);
	if (m->has_errno)
		P("ERRNO=%d\n", m->errno_val);
	if (m->has_extend)
		P("EXTEND_TIMEOUT_USEC=%" PRIu64 "\n", m->extend_usec);
	if (m->has_monotonic)
		P("MONOTONIC_USEC=%" PRIu64 "\n", m->monotonic_usec);
	if (m->has_watchdog_usec)
		P("WATCHDOG_USEC=%" PRIu64 "\n", m->watchdog_usec);
	if (m->has_mainpid)
		P("MAINPID=%ld\n", m->mainpid);
#undef P
	if (n == 0)
		n = (size_t)snprintf(buf, sz, "X_UNKNOWN=1\n");
	return n;
}

static int
notify_equal(const struct notify_msg *a, const struct notify_msg *b)
{
	return a->ready == b->ready && a->reloading == b->reloading &&
	    a->stopping == b->stopping && a->watchdog == b->watchdog &&
	    a->watchdog_trigger == b->watchdog_trigger && a->has_status == b->has_status &&
	    strcmp(a->status, b->status) == 0 && a->has_errno == b->has_errno &&
	    a->errno_val == b->errno_val && a->has_extend == b->has_extend &&
	    a->extend_usec == b->extend_usec && a->has_monotonic == b->has_monotonic &&
	    a->monotonic_usec == b->monotonic_usec && a->has_mainpid == b->has_mainpid &&
	    a->mainpid == b->mainpid && a->has_watchdog_usec == b->has_watchdog_usec &&
	    a->watchdog_usec == b->watchdog_usec;
}

/* The ranges notify.h promises for an accepted message. */
static void
check_fields(const struct notify_msg *m)
{
	size_t i, n = strlen(m->status);

	FZ_CHECK(n <= NOTIFY_MAX_STATUS, "status of %zu bytes", n);
	FZ_CHECK(m->has_status || n == 0, "status text without has_status");
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)m->status[i];

		FZ_CHECK(c >= 0x20 && c != 0x7f, "control byte 0x%02x in STATUS", c);
	}
	FZ_CHECK(!m->has_errno || (m->errno_val >= 0 && m->errno_val <= 4095), "ERRNO %d",
	    m->errno_val);
	FZ_CHECK(!m->has_mainpid || (m->mainpid >= 1 && m->mainpid <= 4194304), "MAINPID %ld",
	    m->mainpid);
	FZ_CHECK(!m->has_watchdog_usec || m->watchdog_usec > 0, "WATCHDOG_USEC=0 accepted");
}

/* Sends data as one datagram, with an fd attached when pass_fd. */
static void
send_dgram(const uint8_t *data, size_t size, int pass_fd)
{
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(int))]; } cm;
	struct iovec iov = { (void *)data, size };
	struct msghdr mh;
	int fd = -1;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	if (pass_fd) {
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		FZ_CHECK(fd >= 0, "open /dev/null");
		memset(&cm, 0, sizeof(cm));
		mh.msg_control = cm.b;
		mh.msg_controllen = sizeof(cm.b);
		CMSG_FIRSTHDR(&mh)->cmsg_level = SOL_SOCKET;
		CMSG_FIRSTHDR(&mh)->cmsg_type = SCM_RIGHTS;
		CMSG_FIRSTHDR(&mh)->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(CMSG_FIRSTHDR(&mh)), &fd, sizeof(int));
	}
	FZ_CHECK(sendmsg(fz_sock[1], &mh, MSG_NOSIGNAL) == (ssize_t)size, "sendmsg: %s",
	    strerror(errno));
	if (fd >= 0)
		close(fd);
}

/* The lowest free descriptor: an fd the inbox failed to close would take it. */
static int
lowest_free_fd(void)
{
	int fd = dup(0);

	close(fd);
	return fd;
}

/* Passes data through the inbox, as the worker (or a stranger) would send it. */
static void
check_inbox(const uint8_t *data, size_t size, int parsed, const struct notify_msg *want)
{
	struct notify_msg got;
	int stranger = size > 0 && (data[0] & 1), pass_fd = size > 0 && (data[size - 1] & 1);
	int low = lowest_free_fd(), r;

	send_dgram(data, size, pass_fd);
	r = inbox_recv(fz_sock[0], stranger ? getpid() + 1 : getpid(), &got);
	if (stranger)
		FZ_CHECK(r == 0, "a datagram from another pid was not dropped (%d)", r);
	else if (parsed)
		FZ_CHECK(r == 1 && notify_equal(&got, want), "inbox and parser disagree (%d)", r);
	else
		FZ_CHECK(r == 0, "inbox took a datagram the parser refuses (%d)", r);
	FZ_CHECK(inbox_recv(fz_sock[0], getpid(), &got) == -1, "a second datagram appeared");
	FZ_CHECK(lowest_free_fd() == low, "a passed file descriptor stayed open");
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct notify_msg m, again;
	const char *why = "unset";
	char buf[2 * NOTIFY_MAX_DGRAM];
	size_t n;
	int r;

	r = notify_parse((const char *)data, size, &m, &why);
	if (r == 0) {
		FZ_CHECK(why == NULL, "accepted with a reason");
		FZ_CHECK(size > 0 && size <= NOTIFY_MAX_DGRAM, "accepted %zu bytes", size);
		FZ_CHECK(memchr(data, '\0', size) == NULL, "accepted a NUL byte");
		check_fields(&m);
		n = notify_print(&m, buf, sizeof(buf));
		FZ_CHECK(notify_parse(buf, n, &again, &why) == 0, "own print refused: %s", why);
		FZ_CHECK(notify_equal(&m, &again), "print and parse again differ: %.*s", (int)n,
		    buf);
	} else {
		FZ_CHECK(r == -1 && why != NULL && why[0] != '\0', "refused without a reason");
	}
	if (size <= 65536)
		check_inbox(data, size, r == 0, &m);
	return 0;
}
