/*
 * lpoll.h - the long-poll loop of a platform on the kit (Telegram's
 * getUpdates, Weixin's getupdates, Matrix's /sync, Signal's event stream).
 *
 * One request in flight.  The platform builds each request and parses each
 * answer: it stages the events with kit_inbound() and returns the cursor to
 * commit.  The driver commits (one fdatasync) and only then polls again
 * with the new cursor, so the server's cursor never passes an event the
 * journal does not hold.  It backs off through the kit's link on failure,
 * keeps a floor between two polls that come back at once with nothing (a
 * proxy or a broken server answering immediately never makes a hot loop),
 * and pauses while the intake backlog is above its limit.
 */
#ifndef HERMES_LPOLL_H
#define HERMES_LPOLL_H

#include <stddef.h>
#include <stdint.h>

#include "link.h"
#include "net/http.h"

struct kit;
struct lpoll;

enum lpoll_verdict {
	LPOLL_NEXT = 0,                 /* events staged (maybe none): commit cursor, poll again */
	LPOLL_FAIL,                     /* back off: kind, retry_after and why say how */
};

struct lpoll_answer {
	enum lpoll_verdict verdict;
	char *cursor;                   /* NEXT: the cursor to commit, allocated (the driver
	                                 * frees it); NULL: unchanged */
	size_t events;                  /* NEXT: how many events the answer held */
	enum link_fail kind;            /* FAIL */
	double retry_after;             /* FAIL: seconds, 0 for the backoff */
	char why[256];                  /* FAIL: for the log and /status */
};

struct lpoll_ops {
	/*
	 * Fills req for the next poll from cursor (NULL at first); strings it
	 * points to must stay valid until the call returns (the platform may
	 * keep them in its own struct).  Returns 0, or -1 to fail the attempt.
	 */
	int (*build)(void *plat, const char *cursor, struct http_req *req);
	/* Parses one answer into a. */
	void (*done)(void *plat, const struct http_response *r, struct lpoll_answer *a);
};

struct lpoll_opts {
	uint64_t floor_usec;            /* least time between two empty polls; 0: 1 s */
	double quick_fraction;          /* "at once": sooner than this part of req.timeout; 0: 0.5 */
	size_t max_backlog;             /* pause while the intake holds more; 0: 1000 */
};

struct lpoll *lpoll_new(struct kit *kit, struct http_client *http, const struct lpoll_ops *ops,
    const struct lpoll_opts *o, void *plat);
/* Cancels the request in flight.  NULL is a no-op. */
void lpoll_free(struct lpoll *lp);

/* Starts polling (the link's connect op calls it). */
void lpoll_start(struct lpoll *lp);
/* Stops polling: the request in flight is cancelled, nothing more is asked. */
void lpoll_stop(struct lpoll *lp);
/* Polls made so far (for tests and status). */
unsigned long lpoll_count(const struct lpoll *lp);

#endif
