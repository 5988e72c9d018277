/*
 * listen.h - the listening sockets the supervisor keeps across worker
 * generations: inherited by socket activation or opened by --listen.
 * They are passed to every worker as fds 3.. with LISTEN_FDS/LISTEN_FDNAMES.
 */
#ifndef HERMES_SUP_LISTEN_H
#define HERMES_SUP_LISTEN_H

#include <stddef.h>
#include <sys/socket.h>

#define LISTEN_NAME_MAX 64

struct listen_fd {
	int fd;
	char name[LISTEN_NAME_MAX];
};

struct listen_set {
	struct listen_fd *v;
	size_t n;
};

/*
 * Takes the fds systemd passed ($LISTEN_PID equal to our pid) into ls.
 * (The worker never sees our LISTEN_* values: spawn sets its own.)
 */
void listen_inherit(struct listen_set *ls);

/*
 * Parses NAME=ADDR:PORT (ADDR an IPv4 address or [IPv6]).  Returns 0,
 * or -1 with a reason in err.
 */
int listen_parse(const char *spec, char *name, size_t namesz,
    struct sockaddr_storage *ss, socklen_t *sslen, char *err, size_t errsz);

/* Opens, binds and listens on spec, adding it to ls.  Returns 0 or -1 (err set). */
int listen_open(struct listen_set *ls, const char *spec, char *err, size_t errsz);

/* Returns "name1:name2..." (caller frees). */
char *listen_names(const struct listen_set *ls);

void listen_close(struct listen_set *ls);

#endif
