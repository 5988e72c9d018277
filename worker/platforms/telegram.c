/*
 * telegram.c - the Telegram platform: getUpdates long polling, a journal of
 * unhandled updates, and a persistent, rate-limited sendMessage queue.
 *
 * Why a journal rather than leaving updates unconfirmed at Telegram: an
 * unconfirmed update is returned by every getUpdates at once, so keeping
 * one unconfirmed while the agent works would turn the long poll into a
 * busy loop, and a hundred slow ones would block every newer update
 * (getUpdates returns at most 100).  So each batch is appended to
 * state_dir/telegram.journal (and synced) before the next getUpdates
 * confirms it, and an update leaves the journal only when the hub calls
 * its done callback.  While the journal cannot be written, no getUpdates
 * is made at all (it would confirm what is not on disk): Telegram keeps the
 * updates until the journal works again.  Nothing is lost on a crash or a
 * restart; what is replayed twice the hub recognizes by message id.
 *
 * An outbound message is retried with backoff for send_retry_for.  One
 * that has to wait (its first attempt failed, sends fail, the worker
 * stops) goes to state_dir/telegram.outbox, synced before the hub is told
 * it is sent, so a restart keeps it; the others are told to the hub on
 * delivery.  A delivered piece is recorded the moment its response
 * arrives: sendMessage has no idempotency key, so a worker killed between
 * Telegram's answer and that record sends it again.
 *
 * Three pieces are kept apart, for a later move into shared modules: the
 * journal (tg_journal_*, over the state files of tg_file_*), the outbox
 * file (tg_outbox_*) and the backoff (tg_backoff, tg_retry_usec,
 * tg_delay).  The rest is the Bot API protocol.
 */
#include "platforms/telegram.h"

#include <sys/file.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <fcntl.h>

#include <event2/event.h>

#include "config.h"
#include "hub.h"
#include "log.h"
#include "net/http.h"
#include "text.h"
#include "util.h"

#define TG_DEFAULT_API          "https://api.telegram.org"
#define TG_MAX_TEXT             4096
#define TG_POLL_MAX_BODY        (8u << 20)
#define TG_API_MAX_BODY         (1u << 20)
#define TG_JOURNAL_MAX          (64u << 20)
#define TG_PENDING_MAX          2000            /* stop polling beyond this many unhandled */
#define TG_JOURNAL_COMPACT      (1u << 20)
#define TG_OUTBOX_MAX           5000            /* sends kept on disk; beyond, in memory only */
#define TG_OUTBOX_BYTES         (8u << 20)      /* their text (escaped at most 6 times as long) */
/*
 * Telegram picks the next update_id at random after a week without
 * updates, possibly below an offset we kept: an offset that old is not sent.
 */
#define TG_OFFSET_STALE_SEC     (6 * 24 * 3600)
#define TG_SEND_TIMEOUT         30.0
#define TG_MAX_INFLIGHT         8
#define TG_MAX_TYPING_INFLIGHT  4               /* best effort: skipped beyond, the timer retries */
#define TG_CHAT_BURST           3.0
#define TG_TYPING_USEC          4000000
#define TG_FLUSH_USEC           200000
#define TG_DONE_USEC            2000            /* gathers "done" journal lines */
#define TG_STOP_USEC            3000000

struct tg;
struct tg_chat;

/* Every delay, rate and cap of the platform: defaults below, config overrides. */
struct tg_limits {
	unsigned poll_timeout;          /* seconds Telegram holds a getUpdates */
	double rate_chat;               /* messages per second to one chat */
	double rate_global;             /* messages per second overall */
	uint64_t retry_min_usec;        /* first backoff of every retry loop */
	uint64_t retry_max_usec;        /* longest backoff of every retry loop */
	uint64_t floor_usec;            /* shortest wait of any retry loop */
	uint64_t poll_floor_usec;       /* wait after a poll that came back empty too soon */
	uint64_t send_retry_sec;        /* how long a reply is retried before it is given up */
};

static const struct tg_limits tg_default_limits = {
	.poll_timeout = 30,
	.rate_chat = 1,
	.rate_global = 30,
	.retry_min_usec = 1000000,
	.retry_max_usec = 60000000,
	.floor_usec = 500000,
	.poll_floor_usec = 1000000,
	.send_retry_sec = 600,
};

/* One update received and not yet handled: a journal entry. */
struct tg_update {
	TAILQ_ENTRY(tg_update) link;
	struct tg *tg;
	int64_t id;
	cJSON *json;
	int journaled;                  /* durable in the journal */
	int handed;                     /* given to the hub (or skipped) */
	int done;                       /* the hub called done */
	struct tg_typing *typing;
};

TAILQ_HEAD(tg_update_list, tg_update);

/* An append-only state file of JSON lines (see "state files" below). */
struct tg_file {
	char *name;                     /* the platform's, for messages */
	char *path;
	int fd;                         /* open for appending; -1 when not */
	size_t size;
	int broken;                     /* a write failed: only a snapshot may follow */
	char err[160];                  /* why the last write failed */
};

/*
 * The journal: the updates not yet handled and the next getUpdates offset,
 * in memory and in its file (see the journal section for the format).
 */
struct tg_journal {
	struct tg_file file;
	int dirty;                      /* taken since the last durable write */
	int unsynced;                   /* "done" lines written since the last sync */
	int64_t next_offset;            /* the offset of the next getUpdates */
	time_t offset_time;             /* when an update last arrived (wall clock) */
	struct tg_update_list updates;
	size_t n;
	size_t ndone;                   /* handled, not yet dropped from the list */
	char *done_buf;                 /* "done" lines not yet written */
	size_t done_len;
	size_t done_cap;
};

/* The outbox file: every send not yet finished, as JSON records. */
struct tg_outbox {
	struct tg_file file;
	int dirty;                      /* lines written since the last sync */
	uint64_t next_id;
	cJSON *live;                    /* array of the records not yet finished */
	size_t nlive;
	size_t bytes;                   /* the text of their pieces */
};

/* A "typing" indicator kept alive while messages of one chat/topic are worked on. */
struct tg_typing {
	LIST_ENTRY(tg_typing) link;
	struct tg *tg;
	char *chat_id;
	char *thread_id;                /* NULL when none */
	unsigned refs;
	struct event *timer;
	struct http_call *call;
};

/* One outbound message (possibly several pieces), queued in its chat. */
struct tg_send {
	TAILQ_ENTRY(tg_send) link;
	TAILQ_ENTRY(tg_send) ack_link;  /* in tg->acks until the outbox is synced */
	struct tg_chat *chat;
	uint64_t oid;                   /* its outbox record; 0 when in memory only */
	uint64_t ack_seq;
	int acking;                     /* in tg->acks */
	char *thread_id;                /* NULL when none */
	int64_t reply_to;               /* 0 when none */
	char **pieces;
	size_t npieces;
	size_t next;
	int plain;                      /* Markdown was refused: send as plain text */
	int failed;
	unsigned attempts;
	time_t queued;                  /* wall clock: when it was first queued */
	plat_sent_fn cb;                /* NULL once called, and for an earlier worker's send */
	void *arg;
	struct http_call *call;
};

/* The outbound queue and rate state of one chat. */
struct tg_chat {
	TAILQ_ENTRY(tg_chat) link;
	struct tg *tg;
	char *chat_id;
	TAILQ_HEAD(, tg_send) queue;
	double tokens;
	uint64_t refill_usec;
	uint64_t paused_until;
	int busy;
};

struct tg {
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct hub *hub;
	char *name;
	char *lock_path;
	int lock_fd;                    /* flock'ed while this worker owns the journal */
	int begun;                      /* the journal and outbox are ours and loaded */
	char *token;
	char *api_url;
	struct tg_limits lim;

	struct http_client *http;
	struct tg_bot bot;
	char *bot_username;
	int have_me;

	struct tg_journal *journal;
	struct tg_outbox *outbox;
	int poll_blocked;
	struct event *done_ev;

	struct http_call *poll_call;
	uint64_t poll_started;          /* mono_usec() of the running getUpdates */
	struct http_call *me_call;
	struct event *retry_ev;
	struct event *flush_ev;
	struct event *pump_ev;
	struct event *ack_ev;
	struct event *stop_ev;
	unsigned fails;
	unsigned journal_fails;
	unsigned ack_fails;

	/* The state is the intake's, unless the journal, the outbox or sending fail. */
	enum plat_state state;
	char detail[480];
	enum plat_state intake_state;
	char intake_detail[200];
	char send_err[200];             /* the last send failure while sends fail */

	double gtokens;
	uint64_t grefill_usec;
	unsigned inflight;
	unsigned typing_inflight;
	TAILQ_HEAD(tg_chat_list, tg_chat) chats;
	TAILQ_HEAD(tg_ack_list, tg_send) acks;
	uint64_t ack_seq;
	LIST_HEAD(, tg_typing) typing;
	int pumping;                    /* tg_pump is running: a nested call only asks again */
	int repump;
	int probe;                      /* after a failure: a short poll first, to know we are up */

	int started;
	int stopping;
	int stopped;
	plat_stopped_fn stop_cb;
	void *stop_arg;
};

static const char *const tg_keys[] = {
	"token", "api_url", "poll_timeout", "group_policy", "rate_chat", "rate_global",
	"retry_max", "send_retry_for", NULL,
};

static void tg_poll(struct tg *tg);
static void tg_getme(struct tg *tg);
static void tg_begin(struct tg *tg);
static void tg_pump(struct tg *tg);
static void tg_stop_check(struct tg *tg);
static void tg_send_persist(struct tg *tg, struct tg_send *s);

/* ---- pure helpers (unit-tested) ------------------------------------ */

/* Reads an integral JSON number into *out.  Returns 0, or -1 when it is not one. */
static int
tg_json_i64(const cJSON *item, int64_t *out)
{
	double v;

	if (!cJSON_IsNumber(item))
		return -1;
	v = item->valuedouble;
	if (v != v || v > 9007199254740992.0 || v < -9007199254740992.0 || (double)(int64_t)v != v)
		return -1;
	*out = (int64_t)v;
	return 0;
}

static const cJSON *
tg_get(const cJSON *obj, const char *key)
{
	return cJSON_GetObjectItemCaseSensitive(obj, key);
}

size_t
tg_utf16_offset(const char *s, size_t len, size_t units)
{
	size_t i = 0, u = 0, n;
	unsigned char c;

	while (i < len && u < units) {
		c = (unsigned char)s[i];
		if (c < 0x80)
			n = 1;
		else if ((c >> 5) == 6)
			n = 2;
		else if ((c >> 4) == 14)
			n = 3;
		else if ((c >> 3) == 30)
			n = 4;
		else
			n = 1;
		u += n == 4 ? 2 : 1;
		i += n;
	}
	return i > len ? len : i;
}

static int
tg_name_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

/* 1 when text (at p, within len) holds "@username" as a whole word. */
static int
tg_is_our_mention(const char *p, size_t avail, const char *username)
{
	size_t ulen = strlen(username);

	if (avail < ulen + 1 || p[0] != '@' || strncasecmp(p + 1, username, ulen) != 0)
		return 0;
	return avail == ulen + 1 || !tg_name_char(p[ulen + 1]);
}

/* 1 when one of the message's entities mentions the bot. */
static int
tg_mentions_us(const char *text, const cJSON *entities, const struct tg_bot *bot)
{
	const cJSON *e;
	size_t len = strlen(text), off, end;
	int64_t o, l, uid;

	cJSON_ArrayForEach(e, entities) {
		const cJSON *type = tg_get(e, "type");

		if (!cJSON_IsString(type))
			continue;
		if (strcmp(type->valuestring, "text_mention") == 0) {
			if (tg_json_i64(tg_get(tg_get(e, "user"), "id"), &uid) == 0 && uid == bot->id)
				return 1;
			continue;
		}
		if (strcmp(type->valuestring, "mention") != 0 || bot->username == NULL)
			continue;
		if (tg_json_i64(tg_get(e, "offset"), &o) < 0 || tg_json_i64(tg_get(e, "length"), &l) < 0 ||
		    o < 0 || l <= 0)
			continue;
		off = tg_utf16_offset(text, len, (size_t)o);
		end = tg_utf16_offset(text, len, (size_t)(o + l));
		if (end - off == strlen(bot->username) + 1 &&
		    tg_is_our_mention(text + off, end - off, bot->username))
			return 1;
	}
	return 0;
}

/* 1 when the message replies to one of the bot's own messages (not a topic's creation). */
static int
tg_replies_to_us(const cJSON *msg, const struct tg_bot *bot)
{
	const cJSON *r = tg_get(msg, "reply_to_message");
	int64_t uid;

	if (!cJSON_IsObject(r) || tg_get(r, "forum_topic_created") != NULL)
		return 0;
	return tg_json_i64(tg_get(tg_get(r, "from"), "id"), &uid) == 0 && uid == bot->id;
}

/*
 * Rewrites the text for the hub: drops a leading "@ourbot" and turns
 * "/cmd@ourbot" into "/cmd".  Returns 1 when the text addressed us, 0 when
 * not, -1 when it is a command for another bot.
 */
static int
tg_rewrite_text(char *t, const struct tg_bot *bot)
{
	size_t ulen = bot->username != NULL ? strlen(bot->username) : 0;
	size_t n = strlen(t), tok, skip = 0;
	int addressed = 0;
	char *at;

	if (ulen > 0 && tg_is_our_mention(t, n, bot->username)) {
		skip = ulen + 1;
		while (t[skip] == ' ' || t[skip] == ',' || t[skip] == ':' || t[skip] == '\n')
			skip++;
		if (t[skip] != '\0') {
			memmove(t, t + skip, n - skip + 1);
			n -= skip;
		}
		addressed = 1;
	}
	if (t[0] != '/')
		return addressed;
	tok = strcspn(t, " \t\n");
	at = memchr(t, '@', tok);
	if (at == NULL)
		return 1;
	if (ulen == 0 || (size_t)(t + tok - at - 1) != ulen || strncasecmp(at + 1, bot->username, ulen) != 0)
		return -1;
	memmove(at, t + tok, n - tok + 1);
	return 1;
}

static void
tg_fmt_i64(char *dst, size_t len, int64_t v)
{
	snprintf(dst, len, "%" PRId64, v);
}

void
tg_msg_clear(struct tg_msg *m)
{
	free(m->user_name);
	free(m->text);
	m->user_name = NULL;
	m->text = NULL;
}

int
tg_update_parse(const cJSON *upd, const struct tg_bot *bot, struct tg_msg *m, const char **why)
{
	const cJSON *msg, *chat, *from, *type, *text, *ents, *uname;
	int64_t chat_id, user_id, mid, date, thread;
	int rc;

	memset(m, 0, sizeof(*m));
	*why = NULL;
	if (!cJSON_IsObject(upd)) {
		*why = "not an object";
		return -1;
	}
	msg = tg_get(upd, "message");
	if (msg == NULL) {
		*why = "not a new message";
		return 0;
	}
	chat = tg_get(msg, "chat");
	from = tg_get(msg, "from");
	type = tg_get(chat, "type");
	if (!cJSON_IsObject(msg) || tg_json_i64(tg_get(chat, "id"), &chat_id) < 0 ||
	    !cJSON_IsString(type) || tg_json_i64(tg_get(msg, "message_id"), &mid) < 0) {
		*why = "malformed message";
		return -1;
	}
	if (!cJSON_IsObject(from) || tg_json_i64(tg_get(from, "id"), &user_id) < 0) {
		*why = "no sender";
		return 0;
	}
	if (cJSON_IsTrue(tg_get(from, "is_bot"))) {
		*why = "sent by a bot";
		return 0;
	}
	text = tg_get(msg, "text");
	ents = tg_get(msg, "entities");
	if (!cJSON_IsString(text)) {
		text = tg_get(msg, "caption");
		ents = tg_get(msg, "caption_entities");
	}
	if (!cJSON_IsString(text) || text->valuestring[0] == '\0') {
		*why = "no text";
		return 0;
	}
	if (strcmp(type->valuestring, "private") == 0)
		m->chat_type = CHAT_DM;
	else if (strcmp(type->valuestring, "group") == 0 ||
	    strcmp(type->valuestring, "supergroup") == 0)
		m->chat_type = CHAT_GROUP;
	else {
		*why = "not a private chat or a group";
		return 0;
	}
	if (m->chat_type == CHAT_GROUP && cJSON_IsTrue(tg_get(msg, "is_topic_message")) &&
	    tg_json_i64(tg_get(msg, "message_thread_id"), &thread) == 0) {
		m->chat_type = CHAT_THREAD;
		tg_fmt_i64(m->thread_id, sizeof(m->thread_id), thread);
	}
	tg_fmt_i64(m->chat_id, sizeof(m->chat_id), chat_id);
	tg_fmt_i64(m->user_id, sizeof(m->user_id), user_id);
	snprintf(m->message_id, sizeof(m->message_id), "%s:%" PRId64, m->chat_id, mid);
	m->time = tg_json_i64(tg_get(msg, "date"), &date) == 0 ? (time_t)date : time(NULL);
	uname = tg_get(from, "username");
	if (cJSON_IsString(uname) && uname->valuestring[0] != '\0')
		m->user_name = xstrdup(uname->valuestring);

	m->addressed = m->chat_type == CHAT_DM || bot->group_all;
	if (tg_mentions_us(text->valuestring, ents, bot) || tg_replies_to_us(msg, bot))
		m->addressed = 1;
	m->text = xstrdup(text->valuestring);
	rc = tg_rewrite_text(m->text, bot);
	if (rc < 0) {
		tg_msg_clear(m);
		*why = "a command for another bot";
		return 0;
	}
	if (rc > 0)
		m->addressed = 1;
	return 1;
}

enum tg_reply
tg_reply_classify(int status, const char *body, size_t len, cJSON **docp,
    const cJSON **result, double *retry_after, char *why, size_t whylen)
{
	const cJSON *desc, *ra;
	cJSON *doc;
	int64_t code;
	char esc[160];

	*docp = NULL;
	*result = NULL;
	*retry_after = 0;
	doc = body != NULL && len > 0 ? cJSON_ParseWithLength(body, len) : NULL;
	if (doc == NULL || !cJSON_IsObject(doc)) {
		cJSON_Delete(doc);
		if (status == 401 || status == 404) {
			snprintf(why, whylen, "HTTP %d: the bot token was refused", status);
			return TG_UNAUTHORIZED;
		}
		if (status == 409) {
			snprintf(why, whylen, "409 Conflict: another getUpdates poller");
			return TG_CONFLICT;
		}
		snprintf(why, whylen, "HTTP %d with a reply that is not JSON", status);
		return TG_TRANSIENT;
	}
	if (status == 200 && cJSON_IsTrue(tg_get(doc, "ok"))) {
		*result = tg_get(doc, "result");
		if (*result == NULL) {
			cJSON_Delete(doc);
			snprintf(why, whylen, "a reply without a result");
			return TG_TRANSIENT;
		}
		*docp = doc;
		return TG_OK;
	}
	if (tg_json_i64(tg_get(doc, "error_code"), &code) < 0)
		code = status;
	desc = tg_get(doc, "description");
	log_escape(esc, sizeof(esc), cJSON_IsString(desc) ? desc->valuestring : "",
	    cJSON_IsString(desc) ? strlen(desc->valuestring) : 0);
	snprintf(why, whylen, "%" PRId64 " %s", code, esc[0] != '\0' ? esc : "(no description)");
	if (code == 409 || status == 409) {
		cJSON_Delete(doc);
		snprintf(why, whylen, "409 Conflict: another getUpdates poller");
		return TG_CONFLICT;
	}
	if (code == 429 || status == 429) {
		ra = tg_get(tg_get(doc, "parameters"), "retry_after");
		*retry_after = cJSON_IsNumber(ra) && ra->valuedouble >= 0 ? ra->valuedouble : 1;
		if (*retry_after > 3600)
			*retry_after = 3600;
		cJSON_Delete(doc);
		return TG_RETRY_AFTER;
	}
	cJSON_Delete(doc);
	if (code == 401 || code == 404 || status == 401 || status == 404)
		return TG_UNAUTHORIZED;
	if (code == 400 && strstr(why, "can't parse entities") != NULL)
		return TG_CANT_PARSE;
	if (status >= 500 || code >= 500 || status < 400)
		return TG_TRANSIENT;
	return TG_REJECTED;
}

uint64_t
tg_backoff(unsigned attempt, uint64_t min_usec, uint64_t max_usec)
{
	uint64_t d = min_usec;

	while (attempt-- > 0 && d < max_usec)
		d *= 2;
	if (d > max_usec)
		d = max_usec;
	if (d < 2)
		return d;
	return d / 2 + (uint64_t)arc4random_uniform((uint32_t)(d / 2 > UINT32_MAX ? UINT32_MAX : d / 2));
}

/* ---- small plumbing ------------------------------------------------- */

static void
tg_timer_usec(struct event *ev, uint64_t usec)
{
	struct timeval tv = { (time_t)(usec / 1000000), (suseconds_t)(usec % 1000000) };

	evtimer_add(ev, &tv);
}

/* Appends "; part" (or "part" first) to a state detail. */
static void
tg_detail_add(char *dst, size_t len, const char *part)
{
	size_t n = strlen(dst);

	if (part[0] != '\0' && n < len)
		snprintf(dst + n, len - n, "%s%s", n > 0 ? "; " : "", part);
}

/* Appends to detail what fails besides the intake: the journal, the outbox, sending. */
static void
tg_state_problems(struct tg *tg, char *detail, size_t len)
{
	char part[240];

	if (tg->journal->file.broken) {
		snprintf(part, sizeof(part), "journal cannot be written (%s)%s", tg->journal->file.err,
		    tg->journal->dirty ? ": new updates are not confirmed" : "");
		tg_detail_add(detail, len, part);
	}
	if (tg->outbox->file.broken) {
		snprintf(part, sizeof(part), "outbox cannot be written (%s)", tg->outbox->file.err);
		tg_detail_add(detail, len, part);
	}
	if (tg->send_err[0] != '\0') {
		snprintf(part, sizeof(part), "sending fails: %s", tg->send_err);
		tg_detail_add(detail, len, part);
	}
}

/*
 * Reports the platform's state to the hub (only real changes): the
 * intake's, and "backoff" with the reason while the journal, the outbox or
 * sending fail even though polling works.
 */
static void
tg_state_refresh(struct tg *tg)
{
	enum plat_state st = tg->intake_state;
	char detail[sizeof(tg->detail)];

	snprintf(detail, sizeof(detail), "%s", tg->intake_detail);
	if (st != PLAT_STOPPED)
		tg_state_problems(tg, detail, sizeof(detail));
	if (st == PLAT_UP && detail[0] != '\0')
		st = PLAT_BACKOFF;
	if (tg->state == st && strcmp(tg->detail, detail) == 0)
		return;
	tg->state = st;
	snprintf(tg->detail, sizeof(tg->detail), "%s", detail);
	hub_platform_state(tg->hub, tg->name, st, detail[0] != '\0' ? detail : NULL);
}

/* Sets the state of the intake (getMe and getUpdates) and reports the whole. */
static void
tg_set_state(struct tg *tg, enum plat_state st, const char *detail)
{
	tg->intake_state = st;
	snprintf(tg->intake_detail, sizeof(tg->intake_detail), "%s", detail != NULL ? detail : "");
	tg_state_refresh(tg);
}

/* Arms ev after usec, never sooner than the floor every retry loop keeps. */
static void
tg_delay(struct tg *tg, struct event *ev, uint64_t usec)
{
	tg_timer_usec(ev, usec < tg->lim.floor_usec ? tg->lim.floor_usec : usec);
}

/* The next delay of a retry loop after attempt failures. */
static uint64_t
tg_retry_usec(const struct tg *tg, unsigned attempt)
{
	return tg_backoff(attempt, tg->lim.retry_min_usec, tg->lim.retry_max_usec);
}

/* Starts one Bot API call with a JSON body (consumed); NULL when it could not start. */
static struct http_call *
tg_call(struct tg *tg, const char *method, cJSON *body, double timeout, size_t max_body,
    http_done_fn cb, void *arg)
{
	struct http_req req;
	struct http_call *call;
	char *url, *json;

	json = cJSON_PrintUnformatted(body);
	cJSON_Delete(body);
	if (json == NULL)
		fatalx("%s: out of memory", tg->name);
	url = xasprintf("%s/bot%s/%s", tg->api_url, tg->token, method);
	memset(&req, 0, sizeof(req));
	req.method = "POST";
	req.url = url;
	req.content_type = "application/json";
	req.body = json;
	req.body_len = strlen(json);
	req.timeout = timeout;
	req.max_body = max_body;
	call = http_request(tg->http, &req, cb, arg);
	free(url);
	free(json);
	return call;
}

/* Adds a decimal id as a JSON number when it is one, else as a string (e.g. "@channel"). */
static void
tg_add_id(cJSON *obj, const char *key, const char *id)
{
	const char *p = id;

	if (*p == '-')
		p++;
	if (*p != '\0' && strspn(p, "0123456789") == strlen(p) && strlen(p) <= 18) {
		if (cJSON_AddRawToObject(obj, key, id) == NULL)
			fatalx("out of memory");
	} else if (cJSON_AddStringToObject(obj, key, id) == NULL)
		fatalx("out of memory");
}

/* Copies a transport/API reason with the token removed (it is part of every URL). */
static void
tg_redact(const struct tg *tg, char *s)
{
	size_t tl = strlen(tg->token);
	char *p;

	while (tl > 0 && (p = strstr(s, tg->token)) != NULL) {
		memset(p, '*', 3);
		memmove(p + 3, p + tl, strlen(p + tl) + 1);
	}
}

/* Classifies an HTTP response, filling why for the log (token-free). */
static enum tg_reply
tg_classify(struct tg *tg, const struct http_response *r, cJSON **doc, const cJSON **result,
    double *ra, char *why, size_t whylen)
{
	char esc[160];

	if (r->status == 0) {
		*doc = NULL;
		*result = NULL;
		*ra = 0;
		log_escape(esc, sizeof(esc), r->error != NULL ? r->error : "transport error",
		    r->error != NULL ? strlen(r->error) : 15);
		snprintf(why, whylen, "%s", esc);
		tg_redact(tg, why);
		return TG_TRANSIENT;
	}
	return tg_reply_classify(r->status, r->body, r->body_len, doc, result, ra, why, whylen);
}

/* ---- state files ------------------------------------------------------ */

/*
 * The journal and the outbox are each a file of JSON lines, appended to
 * and rewritten whole (atomically: temp, fsync, rename) as a snapshot.
 * After a failed write the file may end in a torn line: nothing is
 * appended to it again until a snapshot has replaced it.
 */

static void
tg_file_init(struct tg_file *f, const char *name, const char *path)
{
	f->name = xstrdup(name);
	f->path = xstrdup(path);
	f->fd = -1;
}

static void
tg_file_clear(struct tg_file *f)
{
	if (f->fd >= 0)
		close(f->fd);
	free(f->name);
	free(f->path);
}

/* Remembers why a write failed (errno) and that the file may now be torn. */
static void
tg_file_failed(struct tg_file *f, const char *what)
{
	int saved = errno;

	if (!f->broken || strcmp(f->err, strerror(saved)) != 0)
		log_warn("%s: %s %s", f->name, what, f->path);
	snprintf(f->err, sizeof(f->err), "%s", strerror(saved));
	f->broken = 1;
}

/* Appends len bytes; -1 when it failed (and nothing is appended from then on). */
static int
tg_file_append(struct tg_file *f, const char *buf, size_t len)
{
	size_t off = 0;
	ssize_t n;

	if (f->broken || f->fd < 0)
		return -1;
	while (off < len) {
		n = write(f->fd, buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n == 0)
				errno = EIO;
			tg_file_failed(f, "appending to");
			return -1;
		}
		off += (size_t)n;
		f->size += (size_t)n;
	}
	return 0;
}

/* Appends one line given without its newline. */
static int
tg_file_append_line(struct tg_file *f, const char *line)
{
	size_t len = strlen(line);
	char *s = xmalloc(len + 1);
	int rc;

	memcpy(s, line, len);
	s[len] = '\n';
	rc = tg_file_append(f, s, len + 1);
	free(s);
	return rc;
}

/* Makes what was appended durable; -1 when it could not. */
static int
tg_file_sync(struct tg_file *f)
{
	if (f->broken || f->fd < 0)
		return -1;
	if (fdatasync(f->fd) == 0)
		return 0;
	tg_file_failed(f, "syncing");
	return -1;
}

/* Replaces the whole file atomically with buf and reopens it for appending; 0 or -1. */
static int
tg_file_replace(struct tg_file *f, const char *buf, size_t len)
{
	int fd;

	if (write_file_atomic(f->path, buf, len, 0600) < 0 ||
	    (fd = open(f->path, O_WRONLY | O_APPEND | O_CLOEXEC)) < 0) {
		tg_file_failed(f, "cannot write");
		return -1;
	}
	if (f->fd >= 0)
		close(f->fd);
	f->fd = fd;
	f->size = len;
	if (f->broken)
		log_info("%s: %s can be written again", f->name, f->path);
	f->broken = 0;
	f->err[0] = '\0';
	return 0;
}

/* Reads f's file and calls apply for each JSON line; returns how many lines were not records. */
static size_t
tg_file_load(struct tg_file *f, int (*apply)(void *, cJSON *), void *arg)
{
	const char *line, *nl;
	size_t len, bad = 0;
	char *text;
	cJSON *doc;

	text = read_file(f->path, TG_JOURNAL_MAX, &len);
	if (text == NULL && errno != ENOENT)
		log_warn("%s: cannot read %s; what it held is not replayed", f->name, f->path);
	for (line = text; line != NULL && line < text + len; line = nl + 1) {
		if ((nl = memchr(line, '\n', (size_t)(text + len - line))) == NULL)
			nl = text + len;        /* a last line without newline */
		if (nl == line)
			continue;
		doc = cJSON_ParseWithLength(line, (size_t)(nl - line));
		if (doc == NULL || apply(arg, doc) < 0)
			bad++;
		cJSON_Delete(doc);
	}
	free(text);
	return bad;
}

/* ---- journal -------------------------------------------------------- */

/*
 * The journal is a file of JSON lines.  A snapshot line
 * {"offset":N,"time":T,"pending":[updates]} starts it; then each batch
 * appends one {"update":{...}} line per update and an {"offset":N,"time":T}
 * line (T: when the batch arrived), fdatasync'ed before the next
 * getUpdates confirms the batch to Telegram; each handled update appends
 * {"done":ID} (not synced: only a machine crash can lose one, and that
 * means a replay the hub recognizes).  When the file grows past
 * TG_JOURNAL_COMPACT it is rewritten atomically as a single snapshot, as
 * it is at start and stop, and after any failed write (a torn line is
 * never appended to).  Appending keeps the cost of a batch independent of
 * the backlog.
 *
 * A replay takes each update_id once, whatever line a crash stopped at:
 * an update line whose offset line is missing still moves the offset past
 * it, so Telegram's copy of it is confirmed rather than taken again.
 */

struct tg_journal *
tg_journal_new(const char *name, const char *path)
{
	struct tg_journal *j = xcalloc(1, sizeof(*j));

	tg_file_init(&j->file, name, path);
	TAILQ_INIT(&j->updates);
	return j;
}

static void
tg_journal_remove(struct tg_journal *j, struct tg_update *u)
{
	TAILQ_REMOVE(&j->updates, u, link);
	j->n--;
	cJSON_Delete(u->json);
	free(u);
}

void
tg_journal_free(struct tg_journal *j)
{
	if (j == NULL)
		return;
	while (!TAILQ_EMPTY(&j->updates))
		tg_journal_remove(j, TAILQ_FIRST(&j->updates));
	tg_file_clear(&j->file);
	free(j->done_buf);
	free(j);
}

/* The snapshot line: the offset and every update not yet handled (newline-terminated). */
static char *
tg_journal_snapshot_text(struct tg_journal *j, size_t *len)
{
	struct tg_update *u;
	cJSON *doc, *arr;
	char num[32], *s;

	doc = cJSON_CreateObject();
	tg_fmt_i64(num, sizeof(num), j->next_offset);
	if (doc == NULL || cJSON_AddRawToObject(doc, "offset", num) == NULL ||
	    cJSON_AddNumberToObject(doc, "time", (double)j->offset_time) == NULL ||
	    (arr = cJSON_AddArrayToObject(doc, "pending")) == NULL)
		fatalx("%s: out of memory", j->file.name);
	TAILQ_FOREACH(u, &j->updates, link)
		if (!u->done && !cJSON_AddItemReferenceToArray(arr, u->json))
			fatalx("%s: out of memory", j->file.name);
	s = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (s == NULL)
		fatalx("%s: out of memory", j->file.name);
	*len = strlen(s);
	s[(*len)++] = '\n';             /* cJSON's buffer has room: it ended in a NUL */
	return s;
}

/* Rewrites the journal atomically as one snapshot; 0 or -1. */
static int
tg_journal_snapshot(struct tg_journal *j)
{
	struct tg_update *u;
	size_t len;
	char *s = tg_journal_snapshot_text(j, &len);
	int rc = tg_file_replace(&j->file, s, len);

	free(s);
	if (rc < 0)
		return -1;
	j->dirty = 0;
	j->unsynced = 0;
	j->done_len = 0;                /* the snapshot left the handled ones out */
	TAILQ_FOREACH(u, &j->updates, link)
		u->journaled = 1;
	return 0;
}

/* Appends the update lines of the entries not yet journaled (all at the tail). */
static int
tg_journal_append_new(struct tg_journal *j)
{
	struct tg_update *u, *first = NULL;
	char *js, *line;
	int rc = 0;

	TAILQ_FOREACH_REVERSE(u, &j->updates, tg_update_list, link) {
		if (u->journaled)
			break;
		first = u;
	}
	for (u = first; u != NULL && rc == 0; u = TAILQ_NEXT(u, link)) {
		if ((js = cJSON_PrintUnformatted(u->json)) == NULL)
			fatalx("%s: out of memory", j->file.name);
		line = xasprintf("{\"update\":%s}", js);
		free(js);
		rc = tg_file_append_line(&j->file, line);
		free(line);
	}
	return rc;
}

int
tg_journal_commit(struct tg_journal *j)
{
	struct tg_update *u;
	char *line, num[32];
	int rc;

	if (!j->dirty)
		return 0;
	if (j->file.broken)
		return tg_journal_snapshot(j);
	rc = tg_journal_append_new(j);
	tg_fmt_i64(num, sizeof(num), j->next_offset);
	line = xasprintf("{\"offset\":%s,\"time\":%lld}", num, (long long)j->offset_time);
	if (rc == 0)
		rc = tg_file_append_line(&j->file, line);
	free(line);
	if (rc == 0)
		rc = tg_file_sync(&j->file);
	if (rc < 0)
		return tg_journal_snapshot(j);
	j->dirty = 0;
	TAILQ_FOREACH_REVERSE(u, &j->updates, tg_update_list, link) {
		if (u->journaled)
			break;
		u->journaled = 1;
	}
	return 0;
}

static struct tg_update *
tg_journal_find(const struct tg_journal *j, int64_t id)
{
	struct tg_update *u;

	TAILQ_FOREACH_REVERSE(u, &j->updates, tg_update_list, link)
		if (u->id == id)
			return u;
	return NULL;
}

size_t
tg_journal_copies(const struct tg_journal *j, int64_t id)
{
	struct tg_update *u;
	size_t n = 0;

	TAILQ_FOREACH(u, &j->updates, link)
		n += u->id == id;
	return n;
}

/* Appends one update to the list (which owns json). */
static struct tg_update *
tg_journal_add(struct tg_journal *j, cJSON *json, int64_t id)
{
	struct tg_update *u = xcalloc(1, sizeof(*u));

	u->id = id;
	u->json = json;
	TAILQ_INSERT_TAIL(&j->updates, u, link);
	j->n++;
	return u;
}

/* Takes one update read from the journal (owned), unless it is already there. */
static void
tg_journal_replay_update(struct tg_journal *j, cJSON *item)
{
	int64_t id;
	struct tg_update *u;

	if (tg_json_i64(tg_get(item, "update_id"), &id) < 0 || tg_journal_find(j, id) != NULL) {
		cJSON_Delete(item);
		return;
	}
	u = tg_journal_add(j, item, id);
	u->journaled = 1;
}

/* Applies one journal line; returns -1 when it is not a journal record. */
static int
tg_journal_replay_line(void *arg, cJSON *doc)
{
	struct tg_journal *j = arg;
	cJSON *pending, *item;
	struct tg_update *u;
	int64_t v;

	if (cJSON_IsNumber(doc) && tg_json_i64(doc, &v) == 0) {
		j->next_offset = v;     /* a bare number: just an offset */
		return 0;
	}
	if (!cJSON_IsObject(doc))
		return -1;
	if (tg_json_i64(tg_get(doc, "offset"), &v) == 0)
		j->next_offset = v;
	if (tg_json_i64(tg_get(doc, "time"), &v) == 0)
		j->offset_time = (time_t)v;
	pending = cJSON_GetObjectItemCaseSensitive(doc, "pending");
	while (cJSON_IsArray(pending) && pending->child != NULL)
		tg_journal_replay_update(j, cJSON_DetachItemViaPointer(pending, pending->child));
	item = cJSON_GetObjectItemCaseSensitive(doc, "update");
	if (cJSON_IsObject(item))
		tg_journal_replay_update(j, cJSON_DetachItemViaPointer(doc, item));
	if (tg_json_i64(tg_get(doc, "done"), &v) == 0 && (u = tg_journal_find(j, v)) != NULL)
		tg_journal_remove(j, u);
	return 0;
}

/*
 * Moves the offset past every update held: an update line is written
 * before its batch's offset line, so a crash between them leaves updates
 * at or above the offset, which Telegram would return again.
 */
static void
tg_journal_cover(struct tg_journal *j)
{
	struct tg_update *u;

	TAILQ_FOREACH(u, &j->updates, link)
		if (u->id >= j->next_offset)
			j->next_offset = u->id + 1;
}

size_t
tg_journal_load(struct tg_journal *j)
{
	struct stat st;
	size_t bad;

	if (stat(j->file.path, &st) == 0)
		j->offset_time = st.st_mtime;
	bad = tg_file_load(&j->file, tg_journal_replay_line, j);
	tg_journal_cover(j);
	if (bad > 0)
		log_warnx("%s: %s is damaged (%zu line(s) ignored); Telegram's own queue fills "
		    "the gaps", j->file.name, j->file.path, bad);
	if (j->n > 0)
		log_info("%s: %zu update(s) left by the previous worker will be handled first",
		    j->file.name, j->n);
	if (tg_journal_snapshot(j) < 0)
		j->dirty = 1;           /* not on disk as it is now: confirm nothing yet */
	return bad;
}

/* 1 when no update came for so long that Telegram may have restarted its ids. */
static int
tg_journal_stale(const struct tg_journal *j)
{
	return j->offset_time != 0 && time(NULL) - j->offset_time > TG_OFFSET_STALE_SEC;
}

/* 1 when item is an update to take: a valid id, new, not held already. */
static int
tg_journal_wants(const struct tg_journal *j, const cJSON *item, int stale, int64_t *id)
{
	if (tg_json_i64(tg_get(item, "update_id"), id) < 0)
		return 0;
	if (!stale && *id < j->next_offset)
		return 0;
	return tg_journal_find(j, *id) == NULL;
}

size_t
tg_journal_take(struct tg_journal *j, cJSON *result)
{
	cJSON *item;
	int64_t id;
	size_t n = 0;
	int stale = tg_journal_stale(j);

	while ((item = result->child) != NULL) {
		item = cJSON_DetachItemViaPointer(result, item);
		if (!tg_journal_wants(j, item, stale, &id)) {
			cJSON_Delete(item);
			continue;
		}
		tg_journal_add(j, item, id);
		n++;
		if (stale || id + 1 > j->next_offset)
			j->next_offset = id + 1;
		stale = 0;
	}
	if (n > 0) {
		j->offset_time = time(NULL);
		j->dirty = 1;
	}
	return n;
}

/* Marks an update handled; its "done" line is written by tg_journal_write_done(). */
static void
tg_journal_mark_done(struct tg_journal *j, struct tg_update *u)
{
	char line[48];
	int n;

	u->done = 1;
	j->ndone++;
	n = snprintf(line, sizeof(line), "{\"done\":%" PRId64 "}\n", u->id);
	if (j->done_len + (size_t)n > j->done_cap) {
		j->done_cap = (j->done_cap + (size_t)n) * 2;
		j->done_buf = xrealloc(j->done_buf, j->done_cap);
	}
	memcpy(j->done_buf + j->done_len, line, (size_t)n);
	j->done_len += (size_t)n;
}

int
tg_journal_done(struct tg_journal *j, int64_t id)
{
	struct tg_update *u = tg_journal_find(j, id);

	if (u == NULL || u->done)
		return -1;
	tg_journal_mark_done(j, u);
	return 0;
}

void
tg_journal_write_done(struct tg_journal *j)
{
	/* On a broken journal they are dropped: the next snapshot leaves them out. */
	if (j->done_len > 0 && tg_file_append(&j->file, j->done_buf, j->done_len) == 0)
		j->unsynced = 1;
	j->done_len = 0;
}

/*
 * Drops handled updates from memory, syncs the "done" lines written since
 * the last time (a machine crash then replays little), and compacts a
 * journal grown too big or broken.
 */
static void
tg_journal_flush(struct tg_journal *j)
{
	struct tg_update *u, *next;

	j->ndone = 0;
	tg_journal_write_done(j);
	if (j->unsynced && tg_file_sync(&j->file) == 0)
		j->unsynced = 0;
	for (u = TAILQ_FIRST(&j->updates); u != NULL; u = next) {
		next = TAILQ_NEXT(u, link);
		if (u->done)
			tg_journal_remove(j, u);
	}
	if (j->file.broken || j->file.size > TG_JOURNAL_COMPACT)
		tg_journal_snapshot(j);
}

int64_t
tg_journal_offset(const struct tg_journal *j)
{
	return j->next_offset;
}

const char *
tg_journal_error(const struct tg_journal *j)
{
	return j->file.broken ? j->file.err : "";
}

/* ---- outbox file ------------------------------------------------------ */

/*
 * The outbox is a file of JSON lines: {"send":RECORD} when a message is
 * queued, {"sent":ID,"next":K} when its first K pieces are delivered,
 * {"done":ID} when it is finished (delivered or given up).  A RECORD is
 * {"id","chat","thread","reply_to","time","next","pieces":[...]}.  The
 * "send" lines are synced before the hub hears that the message is sent;
 * a snapshot (one "send" line per live record) replaces the file at start,
 * at stop, when it grew past TG_JOURNAL_COMPACT and after a failed write.
 */

static struct tg_outbox *
tg_outbox_new(const char *name, const char *path)
{
	struct tg_outbox *ob = xcalloc(1, sizeof(*ob));

	tg_file_init(&ob->file, name, path);
	ob->next_id = 1;
	ob->live = cJSON_CreateArray();
	if (ob->live == NULL)
		fatalx("%s: out of memory", name);
	return ob;
}

static void
tg_outbox_free(struct tg_outbox *ob)
{
	if (ob == NULL)
		return;
	tg_file_clear(&ob->file);
	cJSON_Delete(ob->live);
	free(ob);
}

/* The live record with this id, or NULL. */
static cJSON *
tg_outbox_find(const struct tg_outbox *ob, uint64_t id)
{
	cJSON *rec;
	int64_t v;

	cJSON_ArrayForEach(rec, ob->live)
		if (tg_json_i64(tg_get(rec, "id"), &v) == 0 && (uint64_t)v == id)
			return rec;
	return NULL;
}

/* The bytes of text a record holds. */
static size_t
tg_outbox_rec_bytes(const cJSON *rec)
{
	const cJSON *p;
	size_t n = 0;

	cJSON_ArrayForEach(p, tg_get(rec, "pieces"))
		if (cJSON_IsString(p))
			n += strlen(p->valuestring);
	return n;
}

/* Adds a record (owned from now on) to the live ones. */
static void
tg_outbox_keep(struct tg_outbox *ob, cJSON *rec)
{
	cJSON_AddItemToArray(ob->live, rec);
	ob->nlive++;
	ob->bytes += tg_outbox_rec_bytes(rec);
}

/* Removes a live record and frees it. */
static void
tg_outbox_forget(struct tg_outbox *ob, cJSON *rec)
{
	ob->nlive--;
	ob->bytes -= tg_outbox_rec_bytes(rec);
	cJSON_Delete(cJSON_DetachItemViaPointer(ob->live, rec));
}

/* 1 when one more record with this much text may be kept on disk. */
static int
tg_outbox_room(const struct tg_outbox *ob, size_t bytes)
{
	return ob->nlive < TG_OUTBOX_MAX && ob->bytes + bytes <= TG_OUTBOX_BYTES;
}

/* Appends one record line (doc is consumed). */
static void
tg_outbox_append(struct tg_outbox *ob, cJSON *doc)
{
	char *s = cJSON_PrintUnformatted(doc);

	cJSON_Delete(doc);
	if (s == NULL)
		fatalx("%s: out of memory", ob->file.name);
	if (tg_file_append_line(&ob->file, s) == 0)
		ob->dirty = 1;
	free(s);
}

/* Appends {"key":id} plus, when next is not 0, "next":next. */
static void
tg_outbox_note(struct tg_outbox *ob, const char *key, uint64_t id, size_t next)
{
	cJSON *doc = cJSON_CreateObject();

	if (doc == NULL || cJSON_AddNumberToObject(doc, key, (double)id) == NULL ||
	    (next > 0 && cJSON_AddNumberToObject(doc, "next", (double)next) == NULL))
		fatalx("%s: out of memory", ob->file.name);
	tg_outbox_append(ob, doc);
}

/* Rewrites the outbox as one "send" line per live record; 0 or -1. */
static int
tg_outbox_snapshot(struct tg_outbox *ob)
{
	char *text = NULL, *line;
	size_t len = 0, cap = 0;
	const cJSON *rec;
	int rc;

	buf_append(&text, &len, &cap, TG_JOURNAL_MAX, "", 0);
	cJSON_ArrayForEach(rec, ob->live) {
		if ((line = cJSON_PrintUnformatted(rec)) == NULL)
			fatalx("%s: out of memory", ob->file.name);
		rc = buf_append(&text, &len, &cap, TG_JOURNAL_MAX, "{\"send\":", 8) < 0 ||
		    buf_append(&text, &len, &cap, TG_JOURNAL_MAX, line, strlen(line)) < 0 ||
		    buf_append(&text, &len, &cap, TG_JOURNAL_MAX, "}\n", 2) < 0;
		free(line);
		if (rc) {
			free(text);
			errno = EFBIG;  /* cannot happen within TG_OUTBOX_BYTES */
			tg_file_failed(&ob->file, "cannot write");
			return -1;
		}
	}
	rc = tg_file_replace(&ob->file, text, len);
	free(text);
	if (rc == 0)
		ob->dirty = 0;
	return rc;
}

/*
 * Keeps a record (owned from now on) and appends it; returns its id.  It
 * is durable once tg_outbox_sync() has returned 0.
 */
static uint64_t
tg_outbox_add(struct tg_outbox *ob, cJSON *rec)
{
	uint64_t id = ob->next_id++;
	cJSON *doc = cJSON_CreateObject(), *copy;

	if (cJSON_AddNumberToObject(rec, "id", (double)id) == NULL || doc == NULL ||
	    (copy = cJSON_Duplicate(rec, 1)) == NULL)
		fatalx("%s: out of memory", ob->file.name);
	tg_outbox_keep(ob, rec);
	cJSON_AddItemToObject(doc, "send", copy);
	tg_outbox_append(ob, doc);
	return id;
}

/* Records that the first next pieces of a record are delivered. */
static void
tg_outbox_progress(struct tg_outbox *ob, uint64_t id, size_t next)
{
	cJSON *rec = tg_outbox_find(ob, id);

	if (rec == NULL)
		return;
	cJSON_DeleteItemFromObjectCaseSensitive(rec, "next");
	if (cJSON_AddNumberToObject(rec, "next", (double)next) == NULL)
		fatalx("%s: out of memory", ob->file.name);
	tg_outbox_note(ob, "sent", id, next);
}

/* Records that a record is finished (delivered or given up) and forgets it. */
static void
tg_outbox_drop(struct tg_outbox *ob, uint64_t id)
{
	cJSON *rec = tg_outbox_find(ob, id);

	if (rec == NULL)
		return;
	tg_outbox_forget(ob, rec);
	tg_outbox_note(ob, "done", id, 0);
}

/* Makes every record added so far durable (a snapshot after a failure); 0 or -1. */
static int
tg_outbox_sync(struct tg_outbox *ob)
{
	if (ob->file.broken || ob->file.fd < 0 || ob->file.size > TG_JOURNAL_COMPACT)
		return tg_outbox_snapshot(ob);
	if (!ob->dirty)
		return 0;
	if (tg_file_sync(&ob->file) < 0)
		return tg_outbox_snapshot(ob);
	ob->dirty = 0;
	return 0;
}

/* 1 when a send can be made of rec: an id, a chat, pieces (strings), next below their count. */
static int
tg_outbox_valid(const cJSON *rec)
{
	const cJSON *pieces = tg_get(rec, "pieces"), *p;
	int64_t id, next = 0;

	if (!cJSON_IsObject(rec) || tg_json_i64(tg_get(rec, "id"), &id) < 0 || id <= 0 ||
	    !cJSON_IsString(tg_get(rec, "chat")) || !cJSON_IsArray(pieces) ||
	    cJSON_GetArraySize(pieces) == 0)
		return 0;
	cJSON_ArrayForEach(p, pieces)
		if (!cJSON_IsString(p))
			return 0;
	if (tg_get(rec, "next") != NULL && tg_json_i64(tg_get(rec, "next"), &next) < 0)
		return 0;
	return next >= 0 && next < cJSON_GetArraySize(pieces);
}

/* Applies one outbox line; -1 when it is not an outbox record. */
static int
tg_outbox_replay_line(void *arg, cJSON *doc)
{
	struct tg_outbox *ob = arg;
	cJSON *rec = cJSON_GetObjectItemCaseSensitive(doc, "send"), *old;
	int64_t id = 0, next;

	if (tg_outbox_valid(rec)) {
		tg_json_i64(tg_get(rec, "id"), &id);
		if ((old = tg_outbox_find(ob, (uint64_t)id)) != NULL)
			tg_outbox_forget(ob, old);
		tg_outbox_keep(ob, cJSON_DetachItemViaPointer(doc, rec));
	} else if (tg_json_i64(tg_get(doc, "sent"), &id) == 0 &&
	    tg_json_i64(tg_get(doc, "next"), &next) == 0 && next >= 0) {
		if ((old = tg_outbox_find(ob, (uint64_t)id)) != NULL) {
			cJSON_DeleteItemFromObjectCaseSensitive(old, "next");
			cJSON_AddNumberToObject(old, "next", (double)next);
		}
	} else if (tg_json_i64(tg_get(doc, "done"), &id) == 0) {
		if ((old = tg_outbox_find(ob, (uint64_t)id)) != NULL)
			tg_outbox_forget(ob, old);
	} else
		return -1;
	if (id > 0 && (uint64_t)id >= ob->next_id)
		ob->next_id = (uint64_t)id + 1;
	return 0;
}

/* Reads the outbox of an earlier worker into ob->live, then rewrites it as one snapshot. */
static void
tg_outbox_load(struct tg_outbox *ob)
{
	size_t bad = tg_file_load(&ob->file, tg_outbox_replay_line, ob);

	if (bad > 0)
		log_warnx("%s: %s is damaged (%zu line(s) ignored)", ob->file.name, ob->file.path,
		    bad);
	if (ob->nlive > 0)
		log_info("%s: %zu message(s) left by the previous worker will be sent first",
		    ob->file.name, ob->nlive);
	tg_outbox_snapshot(ob);
}

/* ---- typing indicator ----------------------------------------------- */

static void
tg_typing_done(void *arg, const struct http_response *r)
{
	struct tg_typing *t = arg;

	(void)r;
	t->call = NULL;
	t->tg->typing_inflight--;
}

static void
tg_typing_send(struct tg_typing *t)
{
	cJSON *body = cJSON_CreateObject();

	if (t->call != NULL || t->tg->typing_inflight >= TG_MAX_TYPING_INFLIGHT) {
		cJSON_Delete(body);
		return;
	}
	if (body == NULL || cJSON_AddStringToObject(body, "action", "typing") == NULL)
		fatalx("out of memory");
	tg_add_id(body, "chat_id", t->chat_id);
	if (t->thread_id != NULL)
		tg_add_id(body, "message_thread_id", t->thread_id);
	t->call = tg_call(t->tg, "sendChatAction", body, 10.0, TG_API_MAX_BODY, tg_typing_done, t);
	if (t->call != NULL)
		t->tg->typing_inflight++;
}

static void
tg_typing_tick(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tg_typing_send(arg);
}

/* Keeps "typing" shown in a chat/topic until the matching unref. */
static struct tg_typing *
tg_typing_ref(struct tg *tg, const char *chat, const char *thread)
{
	struct tg_typing *t;

	LIST_FOREACH(t, &tg->typing, link) {
		if (strcmp(t->chat_id, chat) == 0 && ((t->thread_id == NULL && thread == NULL) ||
		    (t->thread_id != NULL && thread != NULL && strcmp(t->thread_id, thread) == 0))) {
			t->refs++;
			return t;
		}
	}
	t = xcalloc(1, sizeof(*t));
	t->tg = tg;
	t->chat_id = xstrdup(chat);
	t->thread_id = thread != NULL ? xstrdup(thread) : NULL;
	t->refs = 1;
	t->timer = event_new(tg->base, -1, EV_PERSIST, tg_typing_tick, t);
	if (t->timer == NULL)
		fatalx("%s: event_new failed", tg->name);
	tg_timer_usec(t->timer, TG_TYPING_USEC);
	LIST_INSERT_HEAD(&tg->typing, t, link);
	tg_typing_send(t);
	return t;
}

static void
tg_typing_free(struct tg_typing *t)
{
	LIST_REMOVE(t, link);
	if (t->call != NULL) {
		http_cancel(t->call);
		t->tg->typing_inflight--;
	}
	event_free(t->timer);
	free(t->chat_id);
	free(t->thread_id);
	free(t);
}

static void
tg_typing_unref(struct tg_typing *t)
{
	if (--t->refs == 0)
		tg_typing_free(t);
}

/* ---- intake ----------------------------------------------------------- */

/* Writes the "done" lines gathered on this loop turn (see tg_on_done). */
static void
tg_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tg *tg = arg;

	(void)fd;
	(void)what;
	tg_journal_write_done(tg->journal);
	tg_state_refresh(tg);
}

/* Drops handled updates from memory (and compacts); polling resumes below the cap. */
static void
tg_flush(struct tg *tg)
{
	tg_journal_flush(tg->journal);
	tg_state_refresh(tg);
	if (tg->poll_blocked && tg->journal->n < TG_PENDING_MAX) {
		tg->poll_blocked = 0;
		tg_poll(tg);
	}
}

static void
tg_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tg_flush(arg);
}

/* The hub has handled an update: it may leave the journal. */
static void
tg_on_done(void *arg)
{
	struct tg_update *u = arg;
	struct tg *tg = u->tg;

	if (u->done)
		return;
	/*
	 * Recorded within TG_DONE_USEC (one write for many, no sync): a worker
	 * killed later does not replay what it already answered.
	 */
	tg_journal_mark_done(tg->journal, u);
	if (!evtimer_pending(tg->done_ev, NULL))
		tg_timer_usec(tg->done_ev, TG_DONE_USEC);
	if (u->typing != NULL) {
		tg_typing_unref(u->typing);
		u->typing = NULL;
	}
	/* While polling waits for the backlog to shrink, drop handled ones sooner. */
	if (tg->journal->ndone >= 100 && tg->poll_blocked)
		tg_timer_usec(tg->flush_ev, 0);
	else if (!evtimer_pending(tg->flush_ev, NULL))
		tg_timer_usec(tg->flush_ev, TG_FLUSH_USEC);
}

/* Hands one update to the hub (or marks it done when it is not for us). */
static void
tg_dispatch(struct tg *tg, struct tg_update *u)
{
	struct inbound in;
	struct tg_msg m;
	const char *why;
	char esc[64];
	int rc;

	u->tg = tg;
	u->handed = 1;
	rc = tg_update_parse(u->json, &tg->bot, &m, &why);
	if (rc <= 0) {
		if (rc < 0)
			log_warnx("%s: update %" PRId64 " skipped: %s", tg->name, u->id,
			    log_escape(esc, sizeof(esc), why, strlen(why)));
		else
			log_debug("%s: update %" PRId64 " skipped: %s", tg->name, u->id, why);
		tg_on_done(u);
		return;
	}
	memset(&in, 0, sizeof(in));
	in.chat_id = m.chat_id;
	in.chat_type = m.chat_type;
	in.thread_id = m.thread_id[0] != '\0' ? m.thread_id : NULL;
	in.user_id = m.user_id;
	in.user_name = m.user_name;
	in.message_id = m.message_id;
	in.text = m.text;
	in.time = m.time;
	in.addressed = m.addressed;
	hub_inbound(tg->hub, tg->name, &in, tg_on_done, u);
	if (!u->done && m.addressed && !tg->stopping)
		u->typing = tg_typing_ref(tg, m.chat_id, in.thread_id);
	tg_msg_clear(&m);
}

/* Hands every update not handed yet to the hub, in order. */
static void
tg_dispatch_all(struct tg *tg)
{
	struct tg_update *u;

	TAILQ_FOREACH(u, &tg->journal->updates, link)
		if (!u->handed)
			tg_dispatch(tg, u);
}

/* Schedules the next attempt after a failure and reports the state. */
static void
tg_fail(struct tg *tg, const char *what, enum tg_reply kind, double retry_after, const char *why)
{
	enum plat_state st = PLAT_BACKOFF;
	char detail[200];
	uint64_t delay;

	switch (kind) {
	case TG_CONFLICT:
		snprintf(detail, sizeof(detail), "409 Conflict: another getUpdates poller");
		delay = tg_retry_usec(tg, tg->fails++);
		break;
	case TG_RETRY_AFTER:
		snprintf(detail, sizeof(detail), "%s: 429 Too Many Requests: retry after %.0f s",
		    what, retry_after);
		delay = (uint64_t)(retry_after * 1e6);
		break;
	case TG_UNAUTHORIZED:
		st = PLAT_UNAUTHORIZED;
		snprintf(detail, sizeof(detail), "%s: %s (check the bot token)", what, why);
		delay = tg_backoff(30, tg->lim.retry_max_usec, tg->lim.retry_max_usec);
		break;
	default:
		snprintf(detail, sizeof(detail), "%s: %s", what, why);
		delay = tg_retry_usec(tg, tg->fails++);
		break;
	}
	if (delay < tg->lim.floor_usec)
		delay = tg->lim.floor_usec;
	tg->probe = 1;
	log_warnx("%s: %s; retrying in %.1f s", tg->name, detail, (double)delay / 1e6);
	tg_set_state(tg, st, detail);
	tg_delay(tg, tg->retry_ev, delay);
}

/*
 * The journal cannot be written: no getUpdates until it can, since the
 * next one would confirm to Telegram what is not on disk.  Telegram keeps
 * the updates meanwhile; those already here are handled all the same.
 */
static void
tg_intake_hold(struct tg *tg)
{
	uint64_t delay = tg_retry_usec(tg, tg->journal_fails);

	if (tg->journal_fails++ == 0)
		log_warnx("%s: updates are not confirmed to Telegram while %s cannot be written; "
		    "retrying in %.1f s", tg->name, tg->journal->file.path, (double)delay / 1e6);
	tg_state_refresh(tg);
	tg_delay(tg, tg->retry_ev, delay);
}

/* Tries the journal again; polling resumes once it is written. */
static void
tg_intake_retry(struct tg *tg)
{
	if (tg_journal_commit(tg->journal) < 0) {
		tg_intake_hold(tg);
		return;
	}
	log_info("%s: the journal is written again; polling resumes", tg->name);
	tg->journal_fails = 0;
	tg_state_refresh(tg);
	if (!tg->have_me)
		tg_getme(tg);
	else
		tg_poll(tg);
}

/* Journals a new batch (durable before the next getUpdates confirms it) and hands it on. */
static int
tg_intake_commit(struct tg *tg)
{
	int rc = tg_journal_commit(tg->journal);

	tg_dispatch_all(tg);
	if (rc < 0)
		tg_intake_hold(tg);
	return rc;
}

/*
 * Starts the next long poll, but only after a floor when this one came
 * back empty long before its timeout (a proxy or a misbehaving server
 * answering at once would otherwise make a hot loop).
 */
static void
tg_poll_next(struct tg *tg, int probe, size_t n)
{
	uint64_t took = mono_usec() - tg->poll_started;

	if (n == 0 && !probe && took < (uint64_t)tg->lim.poll_timeout * 250000) {
		log_debug("%s: getUpdates came back empty after %.3f s; the next in %.1f s",
		    tg->name, (double)took / 1e6, (double)tg->lim.poll_floor_usec / 1e6);
		tg_timer_usec(tg->retry_ev, tg->lim.poll_floor_usec);
		return;
	}
	tg_poll(tg);
}

static void
tg_poll_done(void *arg, const struct http_response *r)
{
	struct tg *tg = arg;
	const cJSON *result;
	enum tg_reply kind;
	double ra;
	cJSON *doc;
	char why[200];
	int probe = tg->probe;
	size_t n;

	tg->poll_call = NULL;
	kind = tg_classify(tg, r, &doc, &result, &ra, why, sizeof(why));
	if (kind == TG_OK && !cJSON_IsArray(result)) {
		kind = TG_TRANSIENT;
		snprintf(why, sizeof(why), "the result is not an array");
	}
	if (kind != TG_OK) {
		cJSON_Delete(doc);
		tg_fail(tg, "getUpdates", kind, ra, why);
		return;
	}
	tg->fails = 0;
	tg->probe = 0;
	tg_set_state(tg, PLAT_UP, NULL);
	n = tg_journal_take(tg->journal, (cJSON *)result);
	if (n == 0 && cJSON_GetArraySize(result) > 0)
		log_debug("%s: getUpdates returned only known updates", tg->name);
	cJSON_Delete(doc);
	if (n > 0 && tg_intake_commit(tg) < 0)
		return;
	tg_poll_next(tg, probe, n);
}

/* The body of a getUpdates: timeout, limit, allowed_updates, offset. */
static cJSON *
tg_poll_body(struct tg *tg)
{
	cJSON *body = cJSON_CreateObject(), *au;
	char num[32];

	if (body == NULL || cJSON_AddNumberToObject(body, "timeout",
	    tg->probe ? 0 : tg->lim.poll_timeout) == NULL ||
	    cJSON_AddNumberToObject(body, "limit", 100) == NULL ||
	    (au = cJSON_AddArrayToObject(body, "allowed_updates")) == NULL)
		fatalx("%s: out of memory", tg->name);
	cJSON_AddItemToArray(au, cJSON_CreateString("message"));
	if (tg_journal_offset(tg->journal) != 0 && !tg_journal_stale(tg->journal)) {
		tg_fmt_i64(num, sizeof(num), tg_journal_offset(tg->journal));
		cJSON_AddRawToObject(body, "offset", num);
	}
	return body;
}

/* Starts the next long poll (unless stopping, the journal fails, or too much is unhandled). */
static void
tg_poll(struct tg *tg)
{
	if (tg->stopping || tg->poll_call != NULL)
		return;
	if (tg->journal->dirty) {
		/* Its offset would confirm a batch that is not on disk. */
		if (!evtimer_pending(tg->retry_ev, NULL))
			tg_intake_hold(tg);
		return;
	}
	if (tg->journal->n >= TG_PENDING_MAX) {
		tg->poll_blocked = 1;
		return;
	}
	tg->poll_started = mono_usec();
	/* Telegram holds the poll for poll_timeout: allow a little more for the answer. */
	tg->poll_call = tg_call(tg, "getUpdates", tg_poll_body(tg), tg->lim.poll_timeout * 1.25 + 3.0,
	    TG_POLL_MAX_BODY, tg_poll_done, tg);
	if (tg->poll_call == NULL)
		tg_fail(tg, "getUpdates", TG_TRANSIENT, 0, "the request could not be started");
}

static void
tg_getme_done(void *arg, const struct http_response *r)
{
	struct tg *tg = arg;
	const cJSON *result, *uname;
	enum tg_reply kind;
	double ra;
	cJSON *doc;
	char why[200], esc[80];
	int64_t id;

	tg->me_call = NULL;
	kind = tg_classify(tg, r, &doc, &result, &ra, why, sizeof(why));
	if (kind == TG_OK) {
		uname = tg_get(result, "username");
		if (tg_json_i64(tg_get(result, "id"), &id) < 0 || !cJSON_IsString(uname)) {
			kind = TG_TRANSIENT;
			snprintf(why, sizeof(why), "getMe returned no id or username");
		}
	}
	if (kind != TG_OK) {
		cJSON_Delete(doc);
		tg_fail(tg, "getMe", kind, ra, why);
		return;
	}
	free(tg->bot_username);
	tg->bot_username = xstrdup(uname->valuestring);
	tg->bot.username = tg->bot_username;
	tg->bot.id = id;
	tg->have_me = 1;
	tg->fails = 0;
	cJSON_Delete(doc);
	log_info("%s: connected as @%s", tg->name,
	    log_escape(esc, sizeof(esc), tg->bot_username, strlen(tg->bot_username)));
	tg_set_state(tg, PLAT_UP, NULL);
	tg_dispatch_all(tg);
	tg_poll(tg);
}

/* Asks Telegram who the bot is (its username addresses commands and mentions). */
static void
tg_getme(struct tg *tg)
{
	cJSON *body = cJSON_CreateObject();

	if (body == NULL)
		fatalx("%s: out of memory", tg->name);
	tg->me_call = tg_call(tg, "getMe", body, 30.0, TG_API_MAX_BODY, tg_getme_done, tg);
	if (tg->me_call == NULL)
		tg_fail(tg, "getMe", TG_TRANSIENT, 0, "the request could not be started");
}

static void
tg_retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tg *tg = arg;

	(void)fd;
	(void)what;
	if (tg->stopping)
		return;
	if (!tg->begun)
		tg_begin(tg);
	else if (tg->journal->dirty)
		tg_intake_retry(tg);
	else if (!tg->have_me)
		tg_getme(tg);
	else
		tg_poll(tg);
}

/* ---- outbound queue -------------------------------------------------- */

static void
tg_bucket_refill(double *tokens, uint64_t *last, double rate, double burst, uint64_t now)
{
	if (*last == 0) {
		*tokens = burst;
		*last = now;
		return;
	}
	*tokens += (double)(now - *last) / 1e6 * rate;
	if (*tokens > burst)
		*tokens = burst;
	*last = now;
}

static struct tg_chat *
tg_chat_get(struct tg *tg, const char *chat_id)
{
	struct tg_chat *c;

	TAILQ_FOREACH(c, &tg->chats, link)
		if (strcmp(c->chat_id, chat_id) == 0)
			return c;
	c = xcalloc(1, sizeof(*c));
	c->tg = tg;
	c->chat_id = xstrdup(chat_id);
	TAILQ_INIT(&c->queue);
	TAILQ_INSERT_TAIL(&tg->chats, c, link);
	return c;
}

static void
tg_chat_free(struct tg_chat *c)
{
	TAILQ_REMOVE(&c->tg->chats, c, link);
	free(c->chat_id);
	free(c);
}

static int
tg_outbound_empty(struct tg *tg)
{
	struct tg_chat *c;

	TAILQ_FOREACH(c, &tg->chats, link)
		if (!TAILQ_EMPTY(&c->queue))
			return 0;
	return 1;
}

/* A new send at the end of its chat's queue (pieces, callback and record set by the caller). */
static struct tg_send *
tg_send_new(struct tg *tg, const char *chat_id, const char *thread_id)
{
	struct tg_send *s = xcalloc(1, sizeof(*s));

	s->chat = tg_chat_get(tg, chat_id);
	if (thread_id != NULL && thread_id[0] != '\0')
		s->thread_id = xstrdup(thread_id);
	s->queued = time(NULL);
	TAILQ_INSERT_TAIL(&s->chat->queue, s, link);
	return s;
}

/* Takes a send out of its queue and out of the acks; its outbox record stays. */
static void
tg_send_unlink(struct tg *tg, struct tg_send *s)
{
	TAILQ_REMOVE(&s->chat->queue, s, link);
	if (s->acking) {
		TAILQ_REMOVE(&tg->acks, s, ack_link);
		s->acking = 0;
	}
}

/* Frees a send taken out of its queue; calls the hub's callback if it has not run yet. */
static void
tg_send_free(struct tg_send *s, int ok)
{
	plat_sent_fn cb = s->cb;
	void *arg = s->arg;

	text_pieces_free(s->pieces);
	free(s->thread_id);
	free(s);
	if (cb != NULL)
		cb(arg, ok);
}

/* Arms the outbox sync (and the acks behind it) for the next loop turn. */
static void
tg_ack_soon(struct tg *tg)
{
	if (!evtimer_pending(tg->ack_ev, NULL))
		tg_timer_usec(tg->ack_ev, 0);
}

/* A send is finished, delivered or given up: it leaves the outbox, the hub hears. */
static void
tg_send_finish(struct tg_send *s, int ok)
{
	struct tg *tg = s->chat->tg;

	tg_send_unlink(tg, s);
	if (s->oid != 0) {
		tg_outbox_drop(tg->outbox, s->oid);
		tg_ack_soon(tg);
	}
	if (tg->send_err[0] != '\0' && tg_outbound_empty(tg)) {
		tg->send_err[0] = '\0';
		tg_state_refresh(tg);
	}
	tg_send_free(s, ok);
}

/* Gives a send up, saying in which chat and why. */
static void
tg_send_give_up(struct tg *tg, struct tg_send *s, const char *why)
{
	log_warnx("%s: a message to chat %s given up after %u failed attempt(s) in %lld s: %s",
	    tg->name, s->chat->chat_id, s->attempts, (long long)(time(NULL) - s->queued), why);
	tg_send_finish(s, 0);
}

/* Retries a send after delay, unless it has been retried for send_retry_for already. */
static void
tg_send_later(struct tg *tg, struct tg_send *s, uint64_t delay, int failing, const char *why)
{
	time_t age = time(NULL) - s->queued;

	if (age >= 0 && (uint64_t)age >= tg->lim.send_retry_sec) {
		tg_send_give_up(tg, s, why);
		return;
	}
	if (delay < tg->lim.floor_usec)
		delay = tg->lim.floor_usec;
	s->chat->paused_until = mono_usec() + delay;
	if (s->oid == 0)
		tg_send_persist(tg, s);         /* kept across a restart from now on */
	if (failing && s->attempts == 1)
		log_warnx("%s: sendMessage to chat %s: %s; retrying for up to %llu s", tg->name,
		    s->chat->chat_id, why, (unsigned long long)tg->lim.send_retry_sec);
	if (failing && strcmp(tg->send_err, why) != 0) {
		snprintf(tg->send_err, sizeof(tg->send_err), "%s", why);
		tg_state_refresh(tg);
	}
}

/*
 * A piece arrived: recorded at once, before anything else (sendMessage has
 * no idempotency key: a kill before this record sends the piece again).
 * A send in the outbox leaves it; one in memory only tells the hub, whose
 * "done" for the update answered is written right away too.
 */
static void
tg_send_delivered(struct tg *tg, struct tg_send *s)
{
	if (s->oid != 0) {
		if (s->next + 1 == s->npieces) {
			tg_outbox_drop(tg->outbox, s->oid);
			s->oid = 0;
		} else
			tg_outbox_progress(tg->outbox, s->oid, s->next + 1);
		tg_ack_soon(tg);
	}
	s->attempts = 0;
	if (tg->send_err[0] != '\0') {
		tg->send_err[0] = '\0';
		tg_state_refresh(tg);
	}
	if (++s->next == s->npieces) {
		tg_send_finish(s, 1);
		tg_journal_write_done(tg->journal);
	}
}

static void
tg_send_done(void *arg, const struct http_response *r)
{
	struct tg_send *s = arg;
	struct tg *tg = s->chat->tg;
	const cJSON *result;
	enum tg_reply kind;
	double ra;
	cJSON *doc;
	char why[200];

	s->call = NULL;
	s->chat->busy = 0;
	tg->inflight--;
	kind = tg_classify(tg, r, &doc, &result, &ra, why, sizeof(why));
	cJSON_Delete(doc);
	switch (kind) {
	case TG_OK:
		tg_send_delivered(tg, s);
		break;
	case TG_CANT_PARSE:
		if (s->plain)
			tg_send_give_up(tg, s, why);
		else
			s->plain = 1;
		break;
	case TG_RETRY_AFTER:
		log_info("%s: sendMessage: %s; waiting %.0f s", tg->name, why, ra);
		tg_send_later(tg, s, (uint64_t)(ra * 1e6), 0, why);
		break;
	case TG_TRANSIENT:
	case TG_UNAUTHORIZED:           /* a token being replaced: the messages wait */
		s->attempts++;
		tg_send_later(tg, s, tg_backoff(s->attempts - 1, tg->lim.retry_min_usec,
		    tg->lim.retry_max_usec), 1, why);
		break;
	default:
		tg_send_give_up(tg, s, why);
		break;
	}
	tg_pump(tg);
}

/* Sends the next piece of s. */
static void
tg_send_start(struct tg *tg, struct tg_send *s)
{
	cJSON *body = cJSON_CreateObject(), *rp;
	char num[32];

	if (body == NULL)
		fatalx("out of memory");
	tg_add_id(body, "chat_id", s->chat->chat_id);
	if (cJSON_AddStringToObject(body, "text", s->pieces[s->next]) == NULL ||
	    (!s->plain && cJSON_AddStringToObject(body, "parse_mode", "Markdown") == NULL))
		fatalx("out of memory");
	if (s->thread_id != NULL)
		tg_add_id(body, "message_thread_id", s->thread_id);
	if (s->reply_to != 0 && s->next == 0) {
		rp = cJSON_AddObjectToObject(body, "reply_parameters");
		tg_fmt_i64(num, sizeof(num), s->reply_to);
		if (rp == NULL || cJSON_AddRawToObject(rp, "message_id", num) == NULL ||
		    cJSON_AddTrueToObject(rp, "allow_sending_without_reply") == NULL)
			fatalx("out of memory");
	}
	s->call = tg_call(tg, "sendMessage", body, TG_SEND_TIMEOUT, TG_API_MAX_BODY,
	    tg_send_done, s);
	if (s->call == NULL) {
		s->failed = 1;
		return;
	}
	s->chat->busy = 1;
	tg->inflight++;
}

/*
 * One chat's turn in the pump: 1 when the next send started, 0 when the
 * chat waits (*wait lowered to when it may go on), -1 when the global
 * limits stop the round.
 */
static int
tg_pump_chat(struct tg *tg, struct tg_chat *c, uint64_t now, uint64_t *wait)
{
	struct tg_send *s = TAILQ_FIRST(&c->queue);
	uint64_t w;

	if (c->busy)
		return 0;
	if (c->paused_until > now) {
		w = c->paused_until - now;
		*wait = w < *wait ? w : *wait;
		return 0;
	}
	tg_bucket_refill(&c->tokens, &c->refill_usec, tg->lim.rate_chat, TG_CHAT_BURST, now);
	if (s == NULL) {
		if (c->tokens >= TG_CHAT_BURST)
			tg_chat_free(c);
		return 0;
	}
	if (s->failed) {
		tg_send_finish(s, 0);
		return 0;
	}
	if (tg->inflight >= TG_MAX_INFLIGHT)
		return -1;
	if (c->tokens < 1) {
		w = (uint64_t)((1 - c->tokens) / tg->lim.rate_chat * 1e6) + 1;
		*wait = w < *wait ? w : *wait;
		return 0;
	}
	if (tg->gtokens < 1) {
		w = (uint64_t)((1 - tg->gtokens) / tg->lim.rate_global * 1e6) + 1;
		*wait = w < *wait ? w : *wait;
		return -1;
	}
	c->tokens -= 1;
	tg->gtokens -= 1;
	tg_send_start(tg, s);
	if (s->failed)
		*wait = 100000 < *wait ? 100000 : *wait;
	return 1;
}

/* Starts every send the rate limits allow now; arms the pump timer for the rest. */
static void
tg_pump(struct tg *tg)
{
	struct tg_chat *c, *next, *last;
	uint64_t now, wait;
	int rc;

	if (tg->pumping) {
		tg->repump = 1;
		return;
	}
	tg->pumping = 1;
	do {
		tg->repump = 0;
		now = mono_usec();
		wait = UINT64_MAX;
		tg_bucket_refill(&tg->gtokens, &tg->grefill_usec, tg->lim.rate_global,
		    tg->lim.rate_global, now);
		last = TAILQ_LAST(&tg->chats, tg_chat_list);
		for (c = TAILQ_FIRST(&tg->chats); c != NULL; c = next) {
			next = c == last ? NULL : TAILQ_NEXT(c, link);
			if ((rc = tg_pump_chat(tg, c, now, &wait)) < 0)
				break;
			if (rc > 0) {
				/* Round robin: the chat that just sent goes to the back. */
				TAILQ_REMOVE(&tg->chats, c, link);
				TAILQ_INSERT_TAIL(&tg->chats, c, link);
			}
		}
	} while (tg->repump);
	tg->pumping = 0;
	if (wait != UINT64_MAX)
		tg_timer_usec(tg->pump_ev, wait);
	if (tg->stopping)
		tg_stop_check(tg);
}

static void
tg_pump_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tg_pump(arg);
}

/*
 * Syncs the outbox, then tells the hub that every send put there before is
 * sent: from here on it is the outbox's to deliver, also after a restart.
 * The "done" lines of the updates so answered are written at once, so
 * that a kill finds as short a window as can be between the two records
 * (in it, the next worker answers the update again and sends the kept
 * reply: a double, never a loss).
 */
static void
tg_ack_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tg *tg = arg;
	uint64_t upto = tg->ack_seq;
	struct tg_send *s;
	plat_sent_fn cb;

	(void)fd;
	(void)what;
	if (tg_outbox_sync(tg->outbox) < 0) {
		tg_state_refresh(tg);
		if (!TAILQ_EMPTY(&tg->acks))
			tg_delay(tg, tg->ack_ev, tg_retry_usec(tg, tg->ack_fails++));
		return;
	}
	tg->ack_fails = 0;
	while ((s = TAILQ_FIRST(&tg->acks)) != NULL && s->ack_seq <= upto) {
		TAILQ_REMOVE(&tg->acks, s, ack_link);
		s->acking = 0;
		cb = s->cb;
		s->cb = NULL;
		if (cb != NULL)
			cb(s->arg, 1);  /* may queue more sends: they wait for the next sync */
	}
	tg_journal_write_done(tg->journal);
	tg_state_refresh(tg);
	if (tg->stopping)
		tg_stop_check(tg);
}

/* The outbox record of a new send. */
static cJSON *
tg_send_record(const struct tg_send *s)
{
	cJSON *rec = cJSON_CreateObject(), *arr;
	size_t i;

	if (rec == NULL || cJSON_AddStringToObject(rec, "chat", s->chat->chat_id) == NULL ||
	    (s->thread_id != NULL && cJSON_AddStringToObject(rec, "thread", s->thread_id) == NULL) ||
	    (s->reply_to != 0 && cJSON_AddNumberToObject(rec, "reply_to", (double)s->reply_to) == NULL) ||
	    cJSON_AddNumberToObject(rec, "time", (double)s->queued) == NULL ||
	    cJSON_AddNumberToObject(rec, "next", (double)s->next) == NULL ||
	    (arr = cJSON_AddArrayToObject(rec, "pieces")) == NULL)
		fatalx("out of memory");
	for (i = 0; i < s->npieces; i++)
		if (!cJSON_AddItemToArray(arr, cJSON_CreateString(s->pieces[i])))
			fatalx("out of memory");
	return rec;
}

/*
 * Puts a send into the outbox; the hub hears it is sent once that is
 * synced.  Only a send that has to wait is put there: one that failed,
 * one queued while sends fail, one still queued at a stop.  The others
 * are told to the hub when delivered, which keeps the window a kill can
 * double a reply in to the time a request is in flight.
 */
static void
tg_send_persist(struct tg *tg, struct tg_send *s)
{
	cJSON *rec;

	if (!tg->begun)
		return;                 /* in memory only: the hub hears when it is delivered */
	rec = tg_send_record(s);
	if (!tg_outbox_room(tg->outbox, tg_outbox_rec_bytes(rec))) {
		cJSON_Delete(rec);
		return;
	}
	s->oid = tg_outbox_add(tg->outbox, rec);
	s->acking = 1;
	s->ack_seq = ++tg->ack_seq;
	TAILQ_INSERT_TAIL(&tg->acks, s, ack_link);
	tg_ack_soon(tg);
}

/* Queues a send an earlier worker left in the outbox (a record tg_outbox_load accepted). */
static void
tg_send_restore(struct tg *tg, const cJSON *rec)
{
	const cJSON *thread = tg_get(rec, "thread"), *pieces = tg_get(rec, "pieces"), *p;
	struct tg_send *s;
	int64_t v = 0;
	size_t i = 0;

	s = tg_send_new(tg, tg_get(rec, "chat")->valuestring,
	    cJSON_IsString(thread) ? thread->valuestring : NULL);
	tg_json_i64(tg_get(rec, "id"), &v);
	s->oid = (uint64_t)v;
	if (tg_json_i64(tg_get(rec, "reply_to"), &v) == 0 && v > 0)
		s->reply_to = v;
	if (tg_json_i64(tg_get(rec, "time"), &v) == 0)
		s->queued = (time_t)v;
	if (tg_json_i64(tg_get(rec, "next"), &v) == 0)
		s->next = (size_t)v;
	s->npieces = (size_t)cJSON_GetArraySize(pieces);
	s->pieces = xcalloc(s->npieces + 1, sizeof(char *));
	cJSON_ArrayForEach(p, pieces)
		s->pieces[i++] = xstrdup(p->valuestring);
}

/* The reply_to of an outbound message: the numeric message id within its chat, or 0. */
static int64_t
tg_send_reply_to(const struct outbound *msg)
{
	const char *p;
	int64_t reply;
	char *end;

	if (msg->reply_to == NULL)
		return 0;
	/* Our message ids are "<chat>:<message_id>"; a reply stays in its chat. */
	p = strrchr(msg->reply_to, ':');
	if (p != NULL && ((size_t)(p - msg->reply_to) != strlen(msg->chat_id) ||
	    strncmp(msg->reply_to, msg->chat_id, (size_t)(p - msg->reply_to)) != 0))
		return 0;
	p = p != NULL ? p + 1 : msg->reply_to;
	errno = 0;
	reply = strtoll(p, &end, 10);
	if (errno != 0 || *end != '\0' || end == p || reply <= 0)
		return 0;
	return reply;
}

/* A callback deferred to the loop: a send refused after stop. */
struct tg_deferred {
	plat_sent_fn cb;
	void *arg;
};

static void
tg_deferred_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tg_deferred *d = arg;

	(void)fd;
	(void)what;
	d->cb(d->arg, 0);
	free(d);
}

static void
tg_send(void *self, const struct outbound *msg, plat_sent_fn cb, void *arg)
{
	struct tg *tg = self;
	struct tg_deferred *d;
	struct tg_send *s;

	if (tg->stopped || msg->text == NULL || msg->chat_id == NULL || msg->chat_id[0] == '\0') {
		d = xcalloc(1, sizeof(*d));
		d->cb = cb;
		d->arg = arg;
		if (event_base_once(tg->base, -1, EV_TIMEOUT, tg_deferred_cb, d, NULL) < 0)
			fatalx("%s: event_base_once failed", tg->name);
		return;
	}
	s = tg_send_new(tg, msg->chat_id, msg->thread_id);
	s->cb = cb;
	s->arg = arg;
	s->reply_to = tg_send_reply_to(msg);
	s->pieces = text_split(msg->text, TG_MAX_TEXT, &s->npieces);
	if (s->npieces == 0) {
		/* Telegram refuses empty text; say so rather than drop the reply. */
		text_pieces_free(s->pieces);
		s->pieces = xcalloc(2, sizeof(char *));
		s->pieces[0] = xstrdup("(empty reply)");
		s->npieces = 1;
	}
	if (tg->send_err[0] != '\0')
		tg_send_persist(tg, s);
	tg_pump(tg);
}

/* ---- lifecycle ------------------------------------------------------- */

static int
tg_conf_number(const cJSON *conf, const char *name, const char *key, double min, double max,
    double *out, char *err, size_t errlen)
{
	const cJSON *v = tg_get(conf, key);

	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max) {
		snprintf(err, errlen, "platforms.%s.%s: must be a number from %g to %g",
		    name, key, min, max);
		return -1;
	}
	*out = v->valuedouble;
	return 0;
}

static int
tg_conf_string(const cJSON *conf, const char *name, const char *key, const char **out,
    char *err, size_t errlen)
{
	const cJSON *v = tg_get(conf, key);

	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v)) {
		snprintf(err, errlen, "platforms.%s.%s: must be a string", name, key);
		return -1;
	}
	*out = v->valuestring;
	return 0;
}

/* Bot tokens look like "123456:ABC-def_..."; anything else cannot go into a URL path. */
static int
tg_token_valid(const char *t)
{
	const char *colon = strchr(t, ':');

	return colon != NULL && colon > t && strspn(t, "0123456789") == (size_t)(colon - t) &&
	    colon[1] != '\0' &&
	    strspn(colon + 1, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-") ==
	    strlen(colon + 1);
}

/* Reads the numeric keys into lim (defaults kept for the keys not set); 0 or -1. */
static int
tg_conf_limits(const cJSON *conf, const char *name, struct tg_limits *lim, char *err,
    size_t errlen)
{
	double poll = lim->poll_timeout, retry_max = (double)lim->retry_max_usec / 1e6;
	double send_retry = (double)lim->send_retry_sec;

	if (tg_conf_number(conf, name, "poll_timeout", 1, 300, &poll, err, errlen) < 0 ||
	    tg_conf_number(conf, name, "rate_chat", 0.01, 1e6, &lim->rate_chat, err, errlen) < 0 ||
	    tg_conf_number(conf, name, "rate_global", 0.01, 1e6, &lim->rate_global, err,
	    errlen) < 0 ||
	    tg_conf_number(conf, name, "retry_max", 1, 3600, &retry_max, err, errlen) < 0 ||
	    tg_conf_number(conf, name, "send_retry_for", 1, 7 * 86400, &send_retry, err,
	    errlen) < 0)
		return -1;
	if (poll != (double)(unsigned)poll) {
		snprintf(err, errlen, "platforms.%s.poll_timeout: must be a whole number of seconds",
		    name);
		return -1;
	}
	lim->poll_timeout = (unsigned)poll;
	lim->retry_max_usec = (uint64_t)(retry_max * 1e6);
	if (lim->retry_min_usec > lim->retry_max_usec)
		lim->retry_min_usec = lim->retry_max_usec;
	lim->send_retry_sec = (uint64_t)send_retry;
	return 0;
}

/* Reads the string keys and the token (or the secret TELEGRAM_BOT_TOKEN, into *secret). */
static int
tg_conf_strings(const cJSON *conf, const char *name, const char **token, const char **api,
    const char **policy, char **secret, char *err, size_t errlen)
{
	if (tg_conf_string(conf, name, "token", token, err, errlen) < 0 ||
	    tg_conf_string(conf, name, "api_url", api, err, errlen) < 0 ||
	    tg_conf_string(conf, name, "group_policy", policy, err, errlen) < 0)
		return -1;
	if (strcmp(*policy, "addressed") != 0 && strcmp(*policy, "all") != 0) {
		snprintf(err, errlen, "platforms.%s.group_policy: must be \"addressed\" or \"all\"",
		    name);
		return -1;
	}
	if (strncmp(*api, "https://", 8) != 0 && strncmp(*api, "http://", 7) != 0) {
		snprintf(err, errlen, "platforms.%s.api_url: must be an http:// or https:// URL", name);
		return -1;
	}
	if (*token == NULL || (*token)[0] == '\0')
		*token = *secret = config_secret("TELEGRAM_BOT_TOKEN");
	if (*token == NULL || (*token)[0] == '\0') {
		snprintf(err, errlen, "platforms.%s.token: missing (set it, or TELEGRAM_BOT_TOKEN)",
		    name);
		return -1;
	}
	if (!tg_token_valid(*token)) {
		snprintf(err, errlen, "platforms.%s.token: not a bot token (digits, ':', then "
		    "letters, digits, '_' or '-')", name);
		return -1;
	}
	return 0;
}

/* Allocates the platform's state from a validated config. */
static struct tg *
tg_new(const struct plat_env *env, const char *token, const char *api,
    const struct tg_limits *lim)
{
	struct tg *tg = xcalloc(1, sizeof(*tg));
	char *path;
	size_t n;

	tg->base = env->base;
	tg->dns = env->dns;
	tg->tls = env->tls;
	tg->hub = env->hub;
	tg->name = xstrdup(env->name);
	path = xasprintf("%s/%s.journal", env->state_dir, env->name);
	tg->journal = tg_journal_new(env->name, path);
	free(path);
	path = xasprintf("%s/%s.outbox", env->state_dir, env->name);
	tg->outbox = tg_outbox_new(env->name, path);
	free(path);
	tg->lock_path = xasprintf("%s/%s.lock", env->state_dir, env->name);
	tg->lock_fd = -1;
	tg->token = xstrdup(token);
	tg->api_url = xstrdup(api);
	n = strlen(tg->api_url);
	while (n > 0 && tg->api_url[n - 1] == '/')
		tg->api_url[--n] = '\0';
	tg->lim = *lim;
	tg->state = tg->intake_state = PLAT_STOPPED;
	TAILQ_INIT(&tg->chats);
	TAILQ_INIT(&tg->acks);
	LIST_INIT(&tg->typing);
	return tg;
}

static void *
tg_create(const struct plat_env *env, char *err, size_t errlen)
{
	const char *token = NULL, *api = TG_DEFAULT_API, *policy = "addressed";
	struct tg_limits lim = tg_default_limits;
	char *secret = NULL;
	struct tg *tg;

	if (tg_conf_limits(env->conf, env->name, &lim, err, errlen) < 0 ||
	    tg_conf_strings(env->conf, env->name, &token, &api, &policy, &secret, err,
	    errlen) < 0) {
		free(secret);
		return NULL;
	}
	tg = tg_new(env, token, api, &lim);
	free(secret);
	tg->bot.group_all = strcmp(policy, "all") == 0;
	tg->http = http_client_new(tg->base, tg->dns, tg->tls);
	tg->retry_ev = evtimer_new(tg->base, tg_retry_cb, tg);
	tg->flush_ev = evtimer_new(tg->base, tg_flush_cb, tg);
	tg->done_ev = evtimer_new(tg->base, tg_done_cb, tg);
	tg->pump_ev = evtimer_new(tg->base, tg_pump_cb, tg);
	tg->ack_ev = evtimer_new(tg->base, tg_ack_cb, tg);
	if (tg->retry_ev == NULL || tg->flush_ev == NULL || tg->pump_ev == NULL ||
	    tg->done_ev == NULL || tg->ack_ev == NULL)
		fatalx("%s: evtimer_new failed", env->name);
	return tg;
}

/*
 * Takes state_dir/telegram.lock, so that two workers never share one
 * journal (nor poll one bot from one state dir).  Returns 1 when held (or
 * when locking is not possible at all), 0 when another process holds it.
 */
static int
tg_lock(struct tg *tg)
{
	int fd;

	fd = open(tg->lock_path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		log_warn("%s: cannot open %s; going on without it", tg->name, tg->lock_path);
		return 1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			close(fd);
			return 0;
		}
		log_warn("%s: cannot lock %s; going on without it", tg->name, tg->lock_path);
	}
	tg->lock_fd = fd;
	return 1;
}

/* Owns the state dir's journal, replays it and connects; retried while another worker owns it. */
static void
tg_begin(struct tg *tg)
{
	char detail[200];
	cJSON *rec;

	if (!tg_lock(tg)) {
		snprintf(detail, sizeof(detail), "another process holds %s", tg->lock_path);
		log_warnx("%s: %s; retrying", tg->name, detail);
		tg_set_state(tg, PLAT_BACKOFF, detail);
		tg_delay(tg, tg->retry_ev, tg_retry_usec(tg, tg->fails++));
		return;
	}
	tg->fails = 0;
	tg->begun = 1;
	tg_journal_load(tg->journal);
	tg_outbox_load(tg->outbox);
	cJSON_ArrayForEach(rec, tg->outbox->live)
		tg_send_restore(tg, rec);
	tg_set_state(tg, PLAT_CONNECTING, NULL);
	tg_pump(tg);
	tg_getme(tg);
}

static void
tg_start(void *self)
{
	struct tg *tg = self;

	tg->started = 1;
	tg_begin(tg);
}

static void
tg_stopped_cb(evutil_socket_t fd, short what, void *arg)
{
	struct tg *tg = arg;

	(void)fd;
	(void)what;
	if (tg->stop_cb != NULL)
		tg->stop_cb(tg->stop_arg);
}

/* Cancels the calls still running (what they sent may be sent again) and keeps every send. */
static void
tg_sends_keep(struct tg *tg)
{
	struct tg_chat *c;
	struct tg_send *s;

	TAILQ_FOREACH(c, &tg->chats, link) {
		TAILQ_FOREACH(s, &c->queue, link) {
			if (s->call != NULL) {
				http_cancel(s->call);
				s->call = NULL;
				c->busy = 0;
				tg->inflight--;
			}
			if (s->oid == 0)
				tg_send_persist(tg, s);
		}
	}
}

/*
 * Takes every send out of the queues: those the outbox holds stay there
 * for the next worker (the hub hears "sent"), the others are given up
 * (the hub hears "not sent": no outbox, or it cannot be written).
 */
static void
tg_sends_release(struct tg *tg)
{
	size_t kept = 0, lost = 0;
	struct tg_chat *c;
	struct tg_send *s;
	int synced;

	if (tg_outbound_empty(tg))
		return;
	tg_sends_keep(tg);
	synced = tg->begun && tg_outbox_sync(tg->outbox) == 0;
	TAILQ_FOREACH(c, &tg->chats, link) {
		while ((s = TAILQ_FIRST(&c->queue)) != NULL) {
			tg_send_unlink(tg, s);
			if (s->oid != 0 && synced)
				kept++;
			else
				lost++;
			tg_send_free(s, s->oid != 0 && synced);
		}
	}
	if (kept > 0)
		log_info("%s: %zu message(s) kept in %s for the next worker", tg->name, kept,
		    tg->outbox->file.path);
	if (lost > 0)
		log_warnx("%s: stopping with %zu message(s) still queued that could not be kept; "
		    "they are given up", tg->name, lost);
}

/* 1 when stopping need not wait: nothing queued, or nothing running and all kept on disk. */
static int
tg_stop_ready(struct tg *tg)
{
	struct tg_chat *c;
	struct tg_send *s;

	if (tg_outbound_empty(tg))
		return 1;
	if (tg->inflight > 0 || !TAILQ_EMPTY(&tg->acks))
		return 0;
	TAILQ_FOREACH(c, &tg->chats, link)
		TAILQ_FOREACH(s, &c->queue, link)
			if (s->oid == 0)
				return 0;
	return 1;
}

/* Finishes the stop once the outbound queue allows it or the deadline passed. */
static void
tg_stop_check(struct tg *tg)
{
	struct tg_update *u;

	if (tg->stopped)
		return;
	if (!tg_stop_ready(tg) && evtimer_pending(tg->stop_ev, NULL))
		return;
	tg->stopped = 1;
	tg_sends_release(tg);
	evtimer_del(tg->stop_ev);
	TAILQ_FOREACH(u, &tg->journal->updates, link)
		u->typing = NULL;
	while (!LIST_EMPTY(&tg->typing))
		tg_typing_free(LIST_FIRST(&tg->typing));
	if (tg->begun) {
		/* Only the worker holding the lock may write the journal and the outbox. */
		tg_flush(tg);
		tg_journal_snapshot(tg->journal);
		tg_outbox_snapshot(tg->outbox);
	}
	tg_set_state(tg, PLAT_STOPPED, NULL);
	if (event_base_once(tg->base, -1, EV_TIMEOUT, tg_stopped_cb, tg, NULL) < 0)
		fatalx("%s: event_base_once failed", tg->name);
}

static void
tg_stop_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tg_stop_check(arg);
}

static void
tg_stop(void *self, plat_stopped_fn cb, void *arg)
{
	struct tg *tg = self;

	if (tg->stopping) {
		log_warnx("%s: stop called twice", tg->name);
		return;
	}
	tg->stopping = 1;
	tg->stop_cb = cb;
	tg->stop_arg = arg;
	if (tg->poll_call != NULL) {
		http_cancel(tg->poll_call);
		tg->poll_call = NULL;
	}
	if (tg->me_call != NULL) {
		http_cancel(tg->me_call);
		tg->me_call = NULL;
	}
	evtimer_del(tg->retry_ev);
	tg->stop_ev = evtimer_new(tg->base, tg_stop_deadline_cb, tg);
	if (tg->stop_ev == NULL)
		fatalx("%s: evtimer_new failed", tg->name);
	tg_timer_usec(tg->stop_ev, TG_STOP_USEC);
	tg_stop_check(tg);
}

static void
tg_free(void *self)
{
	struct tg *tg = self;
	struct tg_chat *c;

	if (tg == NULL)
		return;
	tg->stopped = 1;
	tg_sends_release(tg);
	while ((c = TAILQ_FIRST(&tg->chats)) != NULL)
		tg_chat_free(c);
	while (!LIST_EMPTY(&tg->typing))
		tg_typing_free(LIST_FIRST(&tg->typing));
	tg_journal_free(tg->journal);
	tg_outbox_free(tg->outbox);
	if (tg->poll_call != NULL)
		http_cancel(tg->poll_call);
	if (tg->me_call != NULL)
		http_cancel(tg->me_call);
	http_client_free(tg->http);
	event_free(tg->retry_ev);
	event_free(tg->flush_ev);
	event_free(tg->done_ev);
	event_free(tg->pump_ev);
	event_free(tg->ack_ev);
	if (tg->stop_ev != NULL)
		event_free(tg->stop_ev);
	free(tg->bot_username);
	free(tg->name);
	if (tg->lock_fd >= 0)
		close(tg->lock_fd);
	free(tg->lock_path);
	explicit_bzero(tg->token, strlen(tg->token));
	free(tg->token);
	free(tg->api_url);
	free(tg);
}

const struct platform_ops telegram_ops = {
	.name = "telegram",
	.max_text = TG_MAX_TEXT,
	.keys = tg_keys,
	.create = tg_create,
	.start = tg_start,
	.send = tg_send,
	.stop = tg_stop,
	.free = tg_free,
};
