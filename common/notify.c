/* notify.c - sd_notify sender and strict datagram parser. */
#include "notify.h"
#include "util.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int
notify_addr(const char *spec, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n;

	if (spec == NULL || (spec[0] != '/' && spec[0] != '@'))
		return -1;
	n = strlen(spec);
	if (n < 2 || n >= sizeof(sa->sun_path))
		return -1;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, spec, n);
	if (spec[0] == '@') {
		sa->sun_path[0] = '\0';
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	return 0;
}

int
notify_send_to(const char *spec, const char *msg)
{
	struct sockaddr_un sa;
	socklen_t salen;
	ssize_t r;
	int fd, saved;

	if (notify_addr(spec, &sa, &salen) < 0) {
		errno = EINVAL;
		return -1;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	do {
		r = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
	} while (r < 0 && errno == EINTR);
	saved = errno;
	close(fd);
	errno = saved;
	return r < 0 ? -1 : 1;
}

int
notify_send(const char *msg)
{
	const char *spec = getenv("NOTIFY_SOCKET");

	if (spec == NULL || *spec == '\0')
		return 0;
	return notify_send_to(spec, msg);
}

/* Key names are upper-case ASCII, digits and '_', starting with a letter. */
static int
valid_key(const char *k, size_t n)
{
	size_t i;

	if (n == 0 || k[0] < 'A' || k[0] > 'Z')
		return 0;
	for (i = 0; i < n; i++)
		if (!((k[i] >= 'A' && k[i] <= 'Z') || (k[i] >= '0' && k[i] <= '9') || k[i] == '_'))
			return 0;
	return 1;
}

static int
key_is(const char *k, size_t n, const char *name)
{
	return strlen(name) == n && memcmp(k, name, n) == 0;
}

/* Parses a decimal value of the given length into *out (at most max). */
static int
value_u64(const char *v, size_t n, uint64_t max, uint64_t *out)
{
	char tmp[32];

	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, v, n);
	tmp[n] = '\0';
	return parse_u64(tmp, max, out);
}

static void
copy_status(struct notify_msg *m, const char *v, size_t n)
{
	size_t i;

	if (n > NOTIFY_MAX_STATUS)
		n = NOTIFY_MAX_STATUS;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];

		m->status[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
	}
	m->status[n] = '\0';
	m->has_status = 1;
}

/* Applies one KEY=VALUE line to m.  Returns 0 or -1 with *why set. */
static int
parse_line(struct notify_msg *m, const char *k, size_t kn, const char *v, size_t vn,
    const char **why)
{
	uint64_t u;

	if (key_is(k, kn, "READY") || key_is(k, kn, "RELOADING") || key_is(k, kn, "STOPPING")) {
		if (vn != 1 || v[0] != '1') {
			*why = "flag key with a value other than 1";
			return -1;
		}
		if (k[0] == 'R' && k[2] == 'A')
			m->ready = 1;
		else if (k[0] == 'R')
			m->reloading = 1;
		else
			m->stopping = 1;
	} else if (key_is(k, kn, "WATCHDOG")) {
		if (vn == 1 && v[0] == '1')
			m->watchdog = 1;
		else if (vn == 7 && memcmp(v, "trigger", 7) == 0)
			m->watchdog_trigger = 1;
		else {
			*why = "bad WATCHDOG value";
			return -1;
		}
	} else if (key_is(k, kn, "STATUS")) {
		copy_status(m, v, vn);
	} else if (key_is(k, kn, "ERRNO")) {
		if (value_u64(v, vn, 4095, &u) < 0) {
			*why = "bad ERRNO value";
			return -1;
		}
		m->errno_val = (int)u;
		m->has_errno = 1;
	} else if (key_is(k, kn, "EXTEND_TIMEOUT_USEC")) {
		if (value_u64(v, vn, UINT64_MAX, &m->extend_usec) < 0) {
			*why = "bad EXTEND_TIMEOUT_USEC value";
			return -1;
		}
		m->has_extend = 1;
	} else if (key_is(k, kn, "MONOTONIC_USEC")) {
		if (value_u64(v, vn, UINT64_MAX, &m->monotonic_usec) < 0) {
			*why = "bad MONOTONIC_USEC value";
			return -1;
		}
		m->has_monotonic = 1;
	} else if (key_is(k, kn, "WATCHDOG_USEC")) {
		if (value_u64(v, vn, UINT64_MAX, &m->watchdog_usec) < 0 || m->watchdog_usec == 0) {
			*why = "bad WATCHDOG_USEC value";
			return -1;
		}
		m->has_watchdog_usec = 1;
	} else if (key_is(k, kn, "MAINPID")) {
		if (value_u64(v, vn, 4194304, &u) < 0 || u == 0) {
			*why = "bad MAINPID value";
			return -1;
		}
		m->mainpid = (long)u;
		m->has_mainpid = 1;
	}
	return 0;
}

int
notify_parse(const char *buf, size_t len, struct notify_msg *m, const char **why)
{
	const char *p = buf, *end = buf + len;
	int lines = 0;

	memset(m, 0, sizeof(*m));
	*why = NULL;
	if (len == 0) {
		*why = "empty datagram";
		return -1;
	}
	if (len > NOTIFY_MAX_DGRAM) {
		*why = "oversized datagram";
		return -1;
	}
	if (memchr(buf, '\0', len) != NULL) {
		*why = "NUL byte in datagram";
		return -1;
	}
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *eol = nl != NULL ? nl : end;
		const char *eq = memchr(p, '=', (size_t)(eol - p));

		if (eol == p) {         /* empty line: tolerated, as systemd does */
			p = eol + 1;
			continue;
		}
		if (eq == NULL || !valid_key(p, (size_t)(eq - p))) {
			*why = "line is not KEY=VALUE";
			return -1;
		}
		if (parse_line(m, p, (size_t)(eq - p), eq + 1, (size_t)(eol - eq - 1), why) < 0)
			return -1;
		lines++;
		p = eol + 1;
	}
	if (lines == 0) {
		*why = "no KEY=VALUE line";
		return -1;
	}
	return 0;
}
