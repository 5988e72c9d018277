/*
 * outq.h - the outbound queue of one platform, the same for every platform.
 *
 * A message pushed is split once to the platform's max_text and each piece
 * kept in the platform's intake journal until delivered, so a restart or a
 * crash during an outage loses no reply; the next worker's queue sends what
 * is left with the same idempotency keys.  Pieces go out FIFO per chat
 * (thread), one in flight per chat, under a per-chat and a global token
 * bucket and a cap on attempts in flight.  The platform's send is one
 * attempt that reports a classified result; the queue retries transient
 * failures with a jittered backoff for up to give_up_usec, pauses on
 * retry-after (one chat, or all with outq_pause), tries the platform's
 * next variant (e.g. plain text after Markdown was refused), and drops a
 * rejected piece with a log line naming its chat.
 */
#ifndef HERMES_OUTQ_H
#define HERMES_OUTQ_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct intake;
struct outq;
struct outq_attempt;

enum outq_result {
	OUTQ_OK = 0,
	OUTQ_RETRY_AFTER,               /* this chat (or route) waits retry_after seconds */
	OUTQ_TRANSIENT,                 /* network, 5xx, timeout: retry with backoff */
	OUTQ_REJECTED,                  /* the server refuses it for good: drop */
	OUTQ_VARIANT,                   /* refused in this form: try the next variant */
	OUTQ_UNAUTHORIZED,              /* credentials refused: retry slowly */
};

struct outq_limits {
	size_t max_text;                /* bytes per piece (required) */
	double chat_rate, chat_burst;   /* pieces per second per chat; 0: 1/s, burst 3 */
	double global_rate, global_burst; /* 0: 30/s, burst 30 */
	unsigned inflight;              /* attempts at once; 0: 8 */
	unsigned variants;              /* forms a piece can take (>= 1); 0: 1 */
	uint64_t retry_min_usec;        /* 0: 1 s */
	uint64_t retry_max_usec;        /* 0: 60 s */
	uint64_t give_up_usec;          /* keep retrying this long; 0: 10 minutes */
};

/* One attempt at one piece, as the platform's send sees it.  Borrowed for the call. */
struct outq_piece {
	const char *key;                /* idempotency key: the same on every retry and restart */
	const char *chat_id;
	const char *thread_id;          /* NULL when none */
	const char *reply_to;           /* the first piece only; NULL otherwise */
	const char *text;
	unsigned index, count;          /* which piece of how many */
	unsigned variant;               /* 0 first, then after each OUTQ_VARIANT */
	unsigned attempt;               /* 0 first */
};

/* Starts one attempt; the platform calls outq_result(a, ...) exactly once, maybe later. */
typedef void (*outq_send_fn)(void *plat, const struct outq_piece *p, struct outq_attempt *a);
/* A whole message was delivered (ok = 1) or given up on (0). */
typedef void (*outq_done_fn)(void *arg, int ok);
/* The queue's health changed: why is NULL when sending works, else the last failure. */
typedef void (*outq_health_fn)(void *plat, const char *why);

struct outq *outq_new(struct event_base *base, const char *name, const struct outq_limits *lim,
    struct intake *journal, outq_send_fn send, outq_health_fn health, void *plat);
/*
 * Frees the queue; attempts still out are answered into nothing, and the
 * done callbacks of messages not finished never run (their pieces stay in
 * the journal for the next worker).  NULL is a no-op.
 */
void outq_free(struct outq *q);

/*
 * Queues text for chat (thread may be NULL; reply_to goes with the first
 * piece).  key identifies the message: pieces are "<key>.<i>".  done (may
 * be NULL) is called once, from the loop.  Returns the number of pieces,
 * or -1 when the key is already queued or not valid.
 */
int outq_push(struct outq *q, const char *chat, const char *thread, const char *reply_to,
    const char *text, const char *key, outq_done_fn done, void *arg);
/* The limits in force. */
const struct outq_limits *outq_get_limits(const struct outq *q);
/* Replaces the limits (max_text stays). */
void outq_set_limits(struct outq *q, const struct outq_limits *lim);
/* Journals pieces from now on (those pushed before are not kept across a restart). */
void outq_set_journal(struct outq *q, struct intake *journal);
/* Queues what an earlier worker left in the journal.  Returns the pieces queued. */
size_t outq_restore(struct outq *q);

/* The platform's answer to one attempt; why (may be NULL) is logged and shown. */
void outq_result(struct outq_attempt *a, enum outq_result r, double retry_after, const char *why);
/* Pauses one chat (thread may be NULL) for seconds (a route's bucket ran dry). */
void outq_pause_chat(struct outq *q, const char *chat, const char *thread, double seconds);
/* Pauses every chat for seconds (a global rate limit). */
void outq_pause(struct outq *q, double seconds);

/* Pieces queued or in flight. */
size_t outq_depth(const struct outq *q);
/* Attempts in flight. */
size_t outq_inflight(const struct outq *q);
/* "sending fails: <reason>" while the last attempt failed, else NULL. */
const char *outq_error(const struct outq *q);

/*
 * Calls cb once the queue is empty or deadline_usec (mono_usec) has come;
 * what is left stays in the journal for the next worker.
 */
void outq_drain(struct outq *q, uint64_t deadline_usec, void (*cb)(void *), void *arg);

#endif
