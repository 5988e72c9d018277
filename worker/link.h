/*
 * link.h - one connection's life cycle, the same for every platform.
 *
 *   stopped -> connecting -> up <-> backoff, unauthorized, stopping
 *
 * The platform owns the protocol; the link owns when to (re)connect: one
 * jittered exponential backoff, a floor between two connection attempts
 * (so a server that accepts and drops at once never makes a hot loop), a
 * retry-after that wins when longer, slow retries while unauthorized.
 * State is reported only when it changes, and an error is logged once per
 * streak of identical failures (then at debug level) and once more when
 * the link is up again.
 */
#ifndef HERMES_LINK_H
#define HERMES_LINK_H

#include <stdint.h>

struct event_base;
struct link;

enum link_state {
	LINK_STOPPED = 0,
	LINK_CONNECTING,
	LINK_UP,
	LINK_BACKOFF,
	LINK_UNAUTHORIZED,
	LINK_STOPPING,
};

enum link_fail {
	LINK_TRANSIENT = 0,             /* network, 5xx, timeout, protocol error */
	LINK_RETRY_AFTER,               /* the server asked for a pause */
	LINK_UNAUTHORIZED_FAIL,         /* bad credentials: slow retries */
	LINK_FATAL,                     /* configuration the server refuses: stay down */
};

struct link_opts {
	uint64_t backoff_min_usec;      /* 0: 1 s */
	uint64_t backoff_max_usec;      /* 0: 60 s */
	uint64_t floor_usec;            /* least time between two attempts; 0: 1 s */
	uint64_t stable_usec;           /* up this long resets the backoff; 0: 30 s */
	uint64_t unauthorized_usec;     /* retry interval while unauthorized; 0: 5 min */
};

/* Starts one connection attempt (the platform calls link_up or link_fail later). */
typedef void (*link_connect_fn)(void *arg);
/* The state changed; detail is "" when there is nothing to say. */
typedef void (*link_report_fn)(void *arg, enum link_state st, const char *detail);

struct link *link_new(struct event_base *base, const char *name, const struct link_opts *o,
    link_connect_fn connect, link_report_fn report, void *arg);
/* NULL is a no-op; never inside connect/report of the same link. */
void link_free(struct link *l);

/* stopped -> connecting: connect is called from the loop, not from here. */
void link_start(struct link *l);
/* The connection works. */
void link_up(struct link *l);
/* The attempt or the connection failed; the next attempt is scheduled. */
void link_fail(struct link *l, enum link_fail kind, double retry_after, const char *why);
/* Connect again now (e.g. the server asked for a reconnect), within the floor. */
void link_reconnect(struct link *l, const char *why);
/* Stopping: no more attempts.  link_stopped() once the platform has closed. */
void link_stop(struct link *l);
void link_stopped(struct link *l);

enum link_state link_state(const struct link *l);
const char *link_detail(const struct link *l);
/* "stopped", "connecting", "up", "backoff", "unauthorized", "stopping". */
const char *link_state_name(enum link_state st);
/* Consecutive failed attempts. */
unsigned link_failures(const struct link *l);

/* The backoff for the given attempt: min * 2^attempt capped at max, jittered down
 * by at most half using rnd in [0, 1).  Exposed for tests. */
uint64_t link_backoff(const struct link_opts *o, unsigned attempt, double rnd);

#endif
