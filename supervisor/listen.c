/* listen.c - socket activation pass-through and --listen sockets. */
#include "listen.h"
#include "log.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void
listen_add(struct listen_set *ls, int fd, const char *name)
{
	ls->v = xrealloc(ls->v, (ls->n + 1) * sizeof(*ls->v));
	ls->v[ls->n].fd = fd;
	snprintf(ls->v[ls->n].name, sizeof(ls->v[ls->n].name), "%s", name);
	ls->n++;
}

void
listen_inherit(struct listen_set *ls)
{
	const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
	const char *names = getenv("LISTEN_FDNAMES");
	char *copy, *rest, *name;
	uint64_t p, n, i;

	if (pid == NULL || fds == NULL || parse_u64(pid, 4194304, &p) < 0 ||
	    (pid_t)p != getpid() || parse_u64(fds, 1000, &n) < 0)
		return;
	rest = copy = xstrdup(names != NULL ? names : "");
	for (i = 0; i < n; i++) {
		name = strsep(&rest, ":");
		listen_add(ls, 3 + (int)i, name != NULL && *name != '\0' ? name : "unknown");
		fd_set_cloexec(3 + (int)i, 1);
	}
	free(copy);
	log_info("took %zu socket(s) from socket activation", ls->n);
}

/* Fills ss from a numeric address and port. */
static int
fill_addr(const char *addr, unsigned port, struct sockaddr_storage *ss, socklen_t *sslen)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		*sslen = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		*sslen = sizeof(*s6);
		return 0;
	}
	return -1;
}

int
listen_parse(const char *spec, char *name, size_t namesz,
    struct sockaddr_storage *ss, socklen_t *sslen, char *err, size_t errsz)
{
	const char *eq = strchr(spec, '='), *colon = strrchr(spec, ':'), *a;
	char addr[64];
	uint64_t port;
	size_t alen;

	if (eq == NULL || eq == spec || (size_t)(eq - spec) >= namesz ||
	    strcspn(spec, ":=") != (size_t)(eq - spec)) {
		snprintf(err, errsz, "bad --listen %s: expected NAME=ADDR:PORT", spec);
		return -1;
	}
	snprintf(name, namesz, "%.*s", (int)(eq - spec), spec);
	a = eq + 1;
	if (colon == NULL || colon < a || parse_u64(colon + 1, 65535, &port) < 0 || port == 0) {
		snprintf(err, errsz, "bad --listen %s: missing or bad port", spec);
		return -1;
	}
	alen = (size_t)(colon - a);
	if (alen >= 2 && a[0] == '[' && a[alen - 1] == ']') {
		a++;
		alen -= 2;
	}
	if (alen >= sizeof(addr)) {
		snprintf(err, errsz, "bad --listen %s: address too long", spec);
		return -1;
	}
	memcpy(addr, a, alen);
	addr[alen] = '\0';
	if (fill_addr(addr, (unsigned)port, ss, sslen) < 0) {
		snprintf(err, errsz, "bad --listen %s: not a numeric address", spec);
		return -1;
	}
	return 0;
}

int
listen_open(struct listen_set *ls, const char *spec, char *err, size_t errsz)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	char name[LISTEN_NAME_MAX];
	int fd, one = 1;

	if (listen_parse(spec, name, sizeof(name), &ss, &sslen, err, errsz) < 0)
		return -1;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, SOMAXCONN) < 0) {
		snprintf(err, errsz, "cannot listen on %s: %s", spec, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	listen_add(ls, fd, name);
	return 0;
}

char *
listen_names(const struct listen_set *ls)
{
	size_t i, len = 1;
	char *s;

	for (i = 0; i < ls->n; i++)
		len += strlen(ls->v[i].name) + 1;
	s = xcalloc(1, len);
	for (i = 0; i < ls->n; i++) {
		if (i > 0)
			strcat(s, ":");
		strcat(s, ls->v[i].name);
	}
	return s;
}

void
listen_close(struct listen_set *ls)
{
	size_t i;

	for (i = 0; i < ls->n; i++)
		close(ls->v[i].fd);
	free(ls->v);
	ls->v = NULL;
	ls->n = 0;
}
