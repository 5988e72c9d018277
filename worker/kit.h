/*
 * kit.h - what every platform shares, behind one handle: its intake
 * journal, its outbound queue and its connection's life cycle, tied to
 * the hub.  A platform on the kit is its protocol only: it parses events
 * into struct inbound, hands them over with kit_inbound() and
 * kit_commit(), acknowledges its server (or persists its cursor there)
 * only in the commit's callback, and implements one send attempt.
 *
 *   server -> platform parse -> kit_inbound (staged) -> kit_commit (one
 *   fdatasync) -> ack the server / advance the cursor, and the hub gets
 *   the messages -> reply -> kit_send -> outq (journaled, keyed) ->
 *   ops.send (one attempt) -> outq_result
 *
 * What the next worker gets: every committed event not yet handled, in
 * order and with the same ids (the hub answers it; the handled set drops
 * what the server delivers again), every reply piece not yet delivered
 * (sent again with the same idempotency key), and the last cursor.
 * Reply keys derive from the inbound message's id, so a reply that a
 * killed worker had sent, when the next worker answers the replayed
 * message again, carries the same key: a platform with an idempotency key
 * (Discord nonce, Matrix txnId, Feishu uuid) posts it once.
 */
#ifndef HERMES_KIT_H
#define HERMES_KIT_H

#include <stdint.h>

#include "intake.h"
#include "link.h"
#include "outq.h"
#include "platform.h"

struct kit;

struct kit_ops {
	/* One connection attempt; the platform calls link_up / link_fail on kit_link(). */
	void (*connect)(void *plat);
	/* One send attempt (see outq.h). */
	outq_send_fn send;
	/*
	 * Closes the connection for a stop (e.g. with a close code that keeps
	 * a resumable session); the platform calls kit_closed() when it is
	 * down.  NULL: nothing to close.
	 */
	void (*close)(void *plat);
	struct outq_limits limits;      /* defaults for this platform */
	struct link_opts link;
};

/*
 * Creates the queue and link (no I/O: the platform's create may call it).
 * plat is handed back to every op.
 */
struct kit *kit_new(const struct plat_env *env, const struct kit_ops *ops, void *plat);
/* Only after the stop has completed.  NULL is a no-op. */
void kit_free(struct kit *k);

/*
 * Opens the platform's journal (<state_dir>/<name>.journal; retried while
 * another process holds it), hands the previous worker's pending messages
 * to the hub, restores its unsent replies, and starts the link.
 */
void kit_start(struct kit *k);

struct link *kit_link(struct kit *k);
struct event_base *kit_base(struct kit *k);
/* NULL until the journal is open. */
struct intake *kit_intake(struct kit *k);
struct outq *kit_outq(struct kit *k);
const char *kit_name(const struct kit *k);

/* Stages one event (copied).  INTAKE_DUP: already pending or handled; ack it and drop it. */
enum intake_add kit_inbound(struct kit *k, const struct inbound *m);
/*
 * Commits what was staged and the cursor (NULL: unchanged).  On ok the
 * messages go to the hub and the platform may acknowledge; on failure
 * they are forgotten (the platform must not acknowledge, and backs off).
 * cb (may be NULL) runs from the loop.
 */
void kit_commit(struct kit *k, const char *cursor, intake_commit_fn cb, void *arg);
/* The cursor the last commit left (an earlier worker's at start), or NULL. */
const char *kit_cursor(const struct kit *k);

/* The platform vtable's send: queues one outbound piece; cb(arg, ok) once. */
void kit_send(struct kit *k, const struct outbound *msg, plat_sent_fn cb, void *arg);

/*
 * The platform vtable's stop: replies in flight get a short drain, then
 * ops.close, then the journal is synced and cb runs (bounded in time).
 */
void kit_stop(struct kit *k, plat_stopped_fn cb, void *arg);
/* The platform's connection is down (after ops.close, or on its own). */
void kit_closed(struct kit *k);
/* 1 once kit_stop has been called. */
int kit_stopping(const struct kit *k);

/*
 * Vtable entries for a platform whose struct begins with its struct kit
 * pointer: start, send and stop go straight to the kit.
 */
void kit_vt_start(void *self);
void kit_vt_send(void *self, const struct outbound *msg, plat_sent_fn cb, void *arg);
void kit_vt_stop(void *self, plat_stopped_fn cb, void *arg);

/*
 * The config getters of a platform's section: a missing key leaves *out
 * as it is (the default); a value of the wrong type is an error naming
 * "platforms.<name>.<key>" in err.  Return 0 or -1.
 */
int kit_conf_str(const struct plat_env *env, const char *key, const char **out, char *err,
    size_t errlen);
int kit_conf_bool(const struct plat_env *env, const char *key, int *out, char *err,
    size_t errlen);
/* An http(s):// URL, trailing slashes removed; *out is newly allocated. */
int kit_conf_url(const struct plat_env *env, const char *key, const char *dflt, char **out,
    char *err, size_t errlen);
/*
 * The optional "limits" object of the section overrides the platform's
 * send limits: chat_rate, chat_burst, global_rate, global_burst (per
 * second), inflight, retry_for (seconds a reply is retried before it is
 * given up).  Applies them to the kit's queue.
 */
int kit_conf_limits(const struct plat_env *env, struct kit *k, char *err, size_t errlen);
/* A secret from the section or else the environment variable envname (or
 * the secrets config_secret() reads); *out is newly allocated.  Missing or
 * holding blanks: an error naming both. */
int kit_conf_secret(const struct plat_env *env, const char *key, const char *envname,
    char **out, char *err, size_t errlen);

#endif
