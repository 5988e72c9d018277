/* inbox.c - the worker's notify socket, with sender credential checks. */
#include "inbox.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int
inbox_open(const char *dir, char *spec, size_t specsz)
{
	struct sockaddr_un sa;
	socklen_t len;
	int fd, one = 1;

	if (snprintf(spec, specsz, "%s/notify", dir) >= (int)sizeof(sa.sun_path))
		snprintf(spec, specsz, "@hermes-supervisor/%ld/%llu", (long)getpid(),
		    (unsigned long long)mono_usec());
	if (notify_addr(spec, &sa, &len) < 0) {
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	if (spec[0] == '/')
		unlink(spec);
	if (setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Closes any fds a sender passed along (we keep none) and finds its credentials. */
static const struct ucred *
scan_cmsgs(struct msghdr *mh)
{
	const struct ucred *cred = NULL;
	struct cmsghdr *c;

	for (c = CMSG_FIRSTHDR(mh); c != NULL; c = CMSG_NXTHDR(mh, c)) {
		if (c->cmsg_level != SOL_SOCKET)
			continue;
		if (c->cmsg_type == SCM_CREDENTIALS && c->cmsg_len >= CMSG_LEN(sizeof(*cred))) {
			cred = (const struct ucred *)(void *)CMSG_DATA(c);
		} else if (c->cmsg_type == SCM_RIGHTS) {
			const int *fds = (const int *)(void *)CMSG_DATA(c);
			size_t i, n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);

			for (i = 0; i < n; i++)
				close(fds[i]);
		}
	}
	return cred;
}

/* Logs a dropped datagram, at most once a second, so a flood cannot flood the log. */
static void __attribute__((format(printf, 1, 2)))
dropped(const char *fmt, ...)
{
	static uint64_t last;
	static unsigned suppressed;
	uint64_t now = mono_usec();
	char msg[256];
	va_list ap;

	if (last != 0 && now - last < 1000000) {
		suppressed++;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (suppressed > 0)
		log_warnx("notify: %s (and %u more dropped before)", msg, suppressed);
	else
		log_warnx("notify: %s", msg);
	last = now;
	suppressed = 0;
}

int
inbox_recv(int fd, pid_t pid, struct notify_msg *m)
{
	char buf[NOTIFY_MAX_DGRAM + 1], esc[128];
	union { struct cmsghdr h; char b[CMSG_SPACE(sizeof(struct ucred)) +
	    CMSG_SPACE(16 * sizeof(int))]; } cm;
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr mh;
	const struct ucred *cred;
	const char *why;
	ssize_t n;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = cm.b;
	mh.msg_controllen = sizeof(cm.b);
	do {
		n = recvmsg(fd, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC | MSG_TRUNC);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -1;
	cred = scan_cmsgs(&mh);
	if (cred == NULL || pid <= 0 || cred->pid != pid) {
		dropped("dropped a datagram from pid %ld (not the worker %ld)",
		    cred != NULL ? (long)cred->pid : -1L, (long)pid);
		return 0;
	}
	if ((mh.msg_flags & MSG_TRUNC) || (size_t)n > NOTIFY_MAX_DGRAM) {
		dropped("dropped an oversized datagram (%zd bytes)", n);
		return 0;
	}
	if (notify_parse(buf, (size_t)n, m, &why) < 0) {
		dropped("dropped a malformed datagram (%s): \"%s\"", why,
		    log_escape(esc, sizeof(esc), buf, (size_t)n));
		return 0;
	}
	return 1;
}

void
inbox_close(int fd, const char *spec)
{
	if (fd >= 0)
		close(fd);
	if (spec != NULL && spec[0] == '/')
		unlink(spec);
}
