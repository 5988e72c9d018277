/*
 * notify.h - the sd_notify protocol, both ends, written by hand (no libsystemd).
 *
 * The sending side is used by the worker (towards the supervisor or
 * systemd) and by the supervisor (towards systemd).  The parsing side is
 * used by the supervisor on datagrams from its worker: it is strict,
 * because those bytes come from another process.
 */
#ifndef HERMES_NOTIFY_H
#define HERMES_NOTIFY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

/* Largest datagram the parser accepts; larger ones are dropped. */
#define NOTIFY_MAX_DGRAM 4096
/* Longest STATUS= text kept. */
#define NOTIFY_MAX_STATUS 512

/*
 * Fills sa/len from a NOTIFY_SOCKET value: an absolute path, or "@name"
 * for an abstract socket (leading NUL, exact length).  Returns 0, or -1
 * when spec is empty, relative or too long.
 */
int notify_addr(const char *spec, struct sockaddr_un *sa, socklen_t *len);

/*
 * Sends one datagram of newline-separated KEY=VALUE lines to
 * $NOTIFY_SOCKET.  Returns 1 when sent, 0 when NOTIFY_SOCKET is unset,
 * -1 on error (errno set).  Never blocks.
 */
int notify_send(const char *msg);
/* The same to an explicit NOTIFY_SOCKET value. */
int notify_send_to(const char *spec, const char *msg);

/* What one datagram said.  Fields not present keep their zero value. */
struct notify_msg {
	unsigned ready : 1;
	unsigned reloading : 1;
	unsigned stopping : 1;
	unsigned watchdog : 1;          /* WATCHDOG=1 */
	unsigned watchdog_trigger : 1;  /* WATCHDOG=trigger */
	unsigned has_status : 1;
	unsigned has_errno : 1;
	unsigned has_extend : 1;
	unsigned has_monotonic : 1;
	unsigned has_mainpid : 1;
	unsigned has_watchdog_usec : 1;
	int errno_val;
	uint64_t extend_usec;
	uint64_t monotonic_usec;
	uint64_t watchdog_usec;
	long mainpid;
	char status[NOTIFY_MAX_STATUS + 1];
};

/*
 * Parses one datagram strictly: every line must be KEY=VALUE with an
 * upper-case key; known keys must carry a well-formed value; NUL bytes
 * and datagrams over NOTIFY_MAX_DGRAM are rejected.  Unknown keys are
 * ignored, as systemd does.  STATUS text is truncated to
 * NOTIFY_MAX_STATUS with control characters replaced by '?'.
 * Returns 0, or -1 with a short reason in *why.
 */
int notify_parse(const char *buf, size_t len, struct notify_msg *m, const char **why);

#endif
