/*
 * telegram.h - the Telegram platform: Bot API over HTTPS with long polling.
 *
 * Intake is at-least-once: every update received is written to a journal
 * in the state dir (state_dir/telegram.journal: the next offset to ask
 * Telegram for and the updates not yet handled) before the next getUpdates
 * confirms it to Telegram, and no getUpdates is made while the journal
 * cannot be written; an update leaves the journal once the hub calls its
 * done callback.  A new worker replays what the journal still holds (the
 * hub drops what it already handled, by message id) and resumes polling at
 * the journal's offset.
 *
 * Outbound messages are retried with backoff for send_retry_for seconds;
 * one that has to wait is kept in state_dir/telegram.outbox (synced before
 * the hub's sent callback says ok), across restarts; one given up is
 * logged with its chat.
 *
 * The pure helpers below (update parsing, addressing, API replies) are
 * exported for the unit tests.
 */
#ifndef HERMES_TELEGRAM_H
#define HERMES_TELEGRAM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "platform.h"

extern const struct platform_ops telegram_ops;

/* What the parser needs to know about the bot itself (from getMe). */
struct tg_bot {
	int64_t id;
	const char *username;           /* without '@' */
	int group_all;                  /* group_policy "all": every group message is addressed */
};

/* One inbound message, normalized; owned strings freed by tg_msg_clear(). */
struct tg_msg {
	char chat_id[32];
	char thread_id[32];             /* "" when none */
	char user_id[32];
	char message_id[72];            /* "<chat_id>:<message_id>", the dedup key */
	char *user_name;                /* NULL when the sender has no username */
	char *text;
	enum chat_type chat_type;
	time_t time;
	int addressed;
};

/*
 * Parses one Update object.  Returns 1 and fills m for a message the hub
 * should see; 0 when the update is to be skipped (why says which); -1 when
 * it is malformed.  Commands "/cmd@ourbot" become "/cmd"; a command for
 * another bot is skipped; a leading "@ourbot" mention is removed.
 */
int tg_update_parse(const cJSON *upd, const struct tg_bot *bot, struct tg_msg *m,
    const char **why);
void tg_msg_clear(struct tg_msg *m);

/* Byte offset in UTF-8 text s (length len) of the UTF-16 code unit offset units. */
size_t tg_utf16_offset(const char *s, size_t len, size_t units);

/* How a Bot API reply is to be treated. */
enum tg_reply {
	TG_OK = 0,                      /* "ok": true; *result set */
	TG_RETRY_AFTER,                 /* 429: wait *retry_after seconds */
	TG_CONFLICT,                    /* 409: another getUpdates poller */
	TG_UNAUTHORIZED,                /* 401/404: a wrong token */
	TG_CANT_PARSE,                  /* 400 "can't parse entities" */
	TG_REJECTED,                    /* another 4xx: do not retry */
	TG_TRANSIENT,                   /* 5xx, transport error, garbage: back off */
};

/*
 * Classifies a reply: HTTP status (0 for a transport error) and body.  On
 * TG_OK, *doc is the parsed reply (caller frees) and *result points into
 * it.  A short reason for the log or /status goes into why.
 */
enum tg_reply tg_reply_classify(int status, const char *body, size_t len, cJSON **doc,
    const cJSON **result, double *retry_after, char *why, size_t whylen);

/* The next backoff delay in microseconds: doubling from min, capped at max, jittered. */
uint64_t tg_backoff(unsigned attempt, uint64_t min_usec, uint64_t max_usec);

/*
 * The intake journal (exported for the unit tests): the updates not yet
 * handled and the next getUpdates offset, kept in a file of JSON lines.
 * tg_journal_new() pairs with tg_journal_free(); strings are copied.
 */
struct tg_journal;

struct tg_journal *tg_journal_new(const char *name, const char *path);
void tg_journal_free(struct tg_journal *j);
/*
 * Replays the file an earlier worker left (if any), whatever line a crash
 * stopped at, and rewrites it as one snapshot.  Returns the number of
 * damaged lines ignored.
 */
size_t tg_journal_load(struct tg_journal *j);
/* Takes the new updates of a getUpdates result (detached from it); returns how many. */
size_t tg_journal_take(struct tg_journal *j, cJSON *result);
/*
 * Makes what was taken durable (appended and synced, or a snapshot after
 * a failed write).  0, or -1 when it could not: nothing taken since the
 * last success may then be confirmed to Telegram.
 */
int tg_journal_commit(struct tg_journal *j);
/* Marks update id handled (-1 when not held); its line is written by tg_journal_write_done(). */
int tg_journal_done(struct tg_journal *j, int64_t id);
void tg_journal_write_done(struct tg_journal *j);
/* The offset the next getUpdates asks for (confirming everything below it). */
int64_t tg_journal_offset(const struct tg_journal *j);
/* How many entries with this update_id are held. */
size_t tg_journal_copies(const struct tg_journal *j, int64_t id);
/* Why the last write failed while the journal cannot be written; "" when it can. */
const char *tg_journal_error(const struct tg_journal *j);

#endif
