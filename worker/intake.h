/*
 * intake.h - the durable journal of one platform, the kit's answer to
 * "nothing lost, nothing doubled".
 *
 * It holds, in one append-only file <dir>/<name>.journal:
 *   - inbound events not yet handled (an id, the platform's stable dedup
 *     key, and an opaque payload),
 *   - the platform's cursor (Telegram offset, Discord session+seq, a sync
 *     token, an IMAP uid...), an opaque string,
 *   - outbound messages not yet delivered (a key and an opaque payload),
 *   - the handled set: the ids of the last `handled_cap` handled events,
 *     so that an event the server delivers again is recognized.
 *
 * The protocol a platform follows: intake_add() for each event of a batch,
 * then intake_commit(); when its callback reports ok, the batch and the
 * cursor are on disk (one fdatasync for every commit requested in the same
 * loop turn) and the platform may acknowledge the batch to its server or
 * advance its cursor there.  When it reports failure, the batch's events
 * are forgotten, as if never added, and the platform must not acknowledge
 * (it backs off; the server delivers them again).  intake_done() marks an
 * event handled; it reaches the disk with the next sync, at most
 * `sync_delay_usec` later.
 *
 * A write that fails (disk full, read-only, EIO) leaves the journal
 * "broken": the state in memory is still complete, and the next sync
 * writes it whole as a fresh snapshot (temp file, fsync, rename), retried
 * on a timer until it succeeds.  Nothing that was committed is lost while
 * the worker lives, and nothing is committed that did not reach the disk.
 *
 * The file is made durable by fdatasync of the journal alone (and of the
 * directory after a snapshot's rename): never a call that flushes data
 * other than the gateway's own.  A flock on <dir>/<name>.lock keeps two
 * workers off one journal.
 *
 * Record format (one line each, so the file can be read with cat):
 *   <type> <crc32, 8 hex digits> <id> <data>\n
 * type: I inbound, H handled, O outbound, S sent, C cursor, V version.
 * The CRC covers "type id data".  A torn last line is dropped silently; a
 * damaged line elsewhere is counted and reported.
 */
#ifndef HERMES_INTAKE_H
#define HERMES_INTAKE_H

#include <stddef.h>
#include <stdint.h>

struct event_base;
struct intake;

/* Longest id accepted: printable bytes without spaces. */
#define INTAKE_MAX_ID   256
/* Longest payload accepted (no newline inside). */
#define INTAKE_MAX_DATA (4u << 20)

struct intake_opts {
	struct event_base *base;
	const char *dir;                /* the state directory (must exist) */
	const char *name;               /* files <name>.journal and <name>.lock */
	size_t handled_cap;             /* handled ids remembered; 0: 8192 */
	uint64_t sync_delay_usec;       /* done/out marks reach the disk within this; 0: 2 ms */
	size_t compact_bytes;           /* rewrite when dead records exceed this; 0: 4 MiB */
};

/* Called once per commit: ok = 1 durable, 0 failed (the batch is forgotten). */
typedef void (*intake_commit_fn)(void *arg, int ok);
/* Replay: one pending record, in the order it was added. */
typedef void (*intake_each_fn)(void *arg, const char *id, const char *data, size_t len);

/*
 * Takes the lock and loads the journal an earlier worker left.  Returns
 * NULL with a message in err when the lock is held by another process.
 * A journal that cannot be created or written is no error here: the
 * intake starts broken (intake_error() says why) and retries.
 */
struct intake *intake_open(const struct intake_opts *o, char *err, size_t errlen);
/* Writes what is pending (best effort, synced), unlocks and frees.  NULL is a no-op. */
void intake_free(struct intake *in);

/* The last committed cursor, or NULL when none. */
const char *intake_cursor(const struct intake *in);
/* Calls fn for every inbound event committed and not yet handled, oldest first. */
void intake_each_inbound(const struct intake *in, intake_each_fn fn, void *arg);
/* Calls fn for every outbound message not yet sent, oldest first. */
void intake_each_outbound(const struct intake *in, intake_each_fn fn, void *arg);

enum intake_add {
	INTAKE_NEW = 0,                 /* staged; part of the next commit */
	INTAKE_DUP,                     /* already pending, staged or handled: drop it */
	INTAKE_INVALID,                 /* an id or payload the journal cannot hold */
};
/* Stages one inbound event for the next commit. */
enum intake_add intake_add(struct intake *in, const char *id, const char *data, size_t len);
/*
 * Commits the staged events and cursor (NULL: unchanged).  cb is called
 * exactly once, never from inside this call: from the loop once the sync
 * has run, or from intake_free.
 */
void intake_commit(struct intake *in, const char *cursor, intake_commit_fn cb, void *arg);

/* Marks an inbound event handled: it leaves the pending set and joins the handled set. */
void intake_done(struct intake *in, const char *id);
/* 1 when id was handled (and is still remembered). */
int intake_handled(const struct intake *in, const char *id);

/* Keeps an outbound message until intake_sent(key).  Returns 0, or -1 when invalid. */
int intake_out_add(struct intake *in, const char *key, const char *data, size_t len);
/* The outbound message key was delivered (or given up on). */
void intake_sent(struct intake *in, const char *key);
/* Requests a sync of everything written so far; cb as for intake_commit. */
void intake_sync(struct intake *in, intake_commit_fn cb, void *arg);

/* Inbound events committed and not yet handled. */
size_t intake_backlog(const struct intake *in);
/* Outbound messages kept. */
size_t intake_outbox(const struct intake *in);
/* Why the journal cannot be written now, or NULL when it can. */
const char *intake_error(const struct intake *in);

#endif
