/*
 * telegram.c - the Telegram platform: getUpdates long polling, a journal of
 * unhandled updates, and a rate-limited sendMessage queue.
 *
 * Why a journal rather than leaving updates unconfirmed at Telegram: an
 * unconfirmed update is returned by every getUpdates at once, so keeping
 * one unconfirmed while the agent works would turn the long poll into a
 * busy loop, and a hundred slow ones would block every newer update
 * (getUpdates returns at most 100).  So each batch is appended to
 * state_dir/telegram.journal (and synced) before the next getUpdates
 * confirms it, and an update leaves the journal only when the hub calls
 * its done callback.  Nothing is lost on a crash or a restart;
 * what is replayed twice the hub recognizes by message id.
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
/*
 * Telegram picks the next update_id at random after a week without
 * updates, possibly below an offset we kept: an offset that old is not sent.
 */
#define TG_OFFSET_STALE_SEC     (6 * 24 * 3600)
#define TG_SEND_ATTEMPTS        5
#define TG_SEND_TIMEOUT         30.0
#define TG_MAX_INFLIGHT         8
#define TG_MAX_TYPING_INFLIGHT  4               /* best effort: skipped beyond, the timer retries */
#define TG_CHAT_BURST           3.0
#define TG_TYPING_USEC          4000000
#define TG_FLUSH_USEC           200000
#define TG_DONE_USEC            2000            /* gathers "done" journal lines */
#define TG_STOP_USEC            3000000
#define TG_BACKOFF_MIN_USEC     1000000

struct tg;
struct tg_chat;

/* One update received and not yet handled (it is in the journal). */
struct tg_update {
	TAILQ_ENTRY(tg_update) link;
	struct tg *tg;
	int64_t id;
	cJSON *json;
	int handed;                     /* given to the hub (or skipped) */
	int done;                       /* the hub called done */
	struct tg_typing *typing;
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
	struct tg_chat *chat;
	char *thread_id;                /* NULL when none */
	int64_t reply_to;               /* 0 when none */
	char **pieces;
	size_t npieces;
	size_t next;
	int plain;                      /* Markdown was refused: send as plain text */
	int failed;
	unsigned attempts;
	plat_sent_fn cb;
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
	char *journal_path;
	char *lock_path;
	int lock_fd;                    /* flock'ed while this worker owns the journal */
	int begun;                      /* the journal is ours and loaded */
	char *token;
	char *api_url;
	unsigned poll_timeout;
	double rate_chat;
	double rate_global;
	uint64_t retry_max_usec;

	struct http_client *http;
	struct tg_bot bot;
	char *bot_username;
	int have_me;

	int64_t next_offset;            /* the offset of the next getUpdates */
	time_t offset_time;             /* when an update last arrived (wall clock) */
	TAILQ_HEAD(tg_update_list, tg_update) updates;
	size_t nupdates;
	int journal_fd;
	size_t journal_size;
	int journal_broken;             /* an append failed: write a snapshot instead */
	int poll_blocked;
	char *done_buf;                 /* "done" lines not yet written */
	size_t done_len;
	size_t done_cap;
	struct event *done_ev;
	size_t ndone;                   /* handled, not yet dropped from the list */

	struct http_call *poll_call;
	struct http_call *me_call;
	struct event *retry_ev;
	struct event *flush_ev;
	struct event *pump_ev;
	struct event *stop_ev;
	unsigned fails;

	enum plat_state state;
	char detail[200];

	double gtokens;
	uint64_t grefill_usec;
	unsigned inflight;
	unsigned typing_inflight;
	TAILQ_HEAD(tg_chat_list, tg_chat) chats;
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
	"retry_max", NULL,
};

static void tg_poll(struct tg *tg);
static void tg_getme(struct tg *tg);
static void tg_begin(struct tg *tg);
static void tg_pump(struct tg *tg);
static void tg_stop_check(struct tg *tg);

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

/* Reports a state change to the hub (only real changes). */
static void
tg_set_state(struct tg *tg, enum plat_state st, const char *detail)
{
	if (detail == NULL)
		detail = "";
	if (tg->state == st && strcmp(tg->detail, detail) == 0)
		return;
	tg->state = st;
	snprintf(tg->detail, sizeof(tg->detail), "%s", detail);
	hub_platform_state(tg->hub, tg->name, st, detail[0] != '\0' ? detail : NULL);
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

/* ---- journal -------------------------------------------------------- */

/*
 * The journal is a file of JSON lines.  A snapshot line
 * {"offset":N,"time":T,"pending":[updates]} starts it; then each batch
 * appends one {"update":{...}} line per update and an {"offset":N,"time":T}
 * line (T: when the batch arrived), fdatasync'ed
 * before the next getUpdates confirms the batch to Telegram; each handled
 * update appends {"done":ID} at once (not synced: only a machine crash can
 * lose one, and that means a replay the hub recognizes).  When the file grows past TG_JOURNAL_COMPACT it is
 * rewritten atomically as a single snapshot, as it is at start and stop.
 * Appending keeps the cost of a batch independent of the backlog.
 */

/* Writes the snapshot (offset and every update not yet handled) atomically and reopens. */
static void
tg_journal_compact(struct tg *tg)
{
	struct tg_update *u;
	cJSON *doc, *arr;
	char num[32], *s;
	size_t len;

	doc = cJSON_CreateObject();
	tg_fmt_i64(num, sizeof(num), tg->next_offset);
	if (doc == NULL || cJSON_AddRawToObject(doc, "offset", num) == NULL ||
	    cJSON_AddNumberToObject(doc, "time", (double)tg->offset_time) == NULL ||
	    (arr = cJSON_AddArrayToObject(doc, "pending")) == NULL)
		fatalx("%s: out of memory", tg->name);
	TAILQ_FOREACH(u, &tg->updates, link)
		if (!u->done && !cJSON_AddItemReferenceToArray(arr, u->json))
			fatalx("%s: out of memory", tg->name);
	s = cJSON_PrintUnformatted(doc);
	cJSON_Delete(doc);
	if (s == NULL)
		fatalx("%s: out of memory", tg->name);
	len = strlen(s);
	s[len++] = '\n';               /* cJSON's buffer has room: it ended in a NUL */
	if (tg->journal_fd >= 0) {
		close(tg->journal_fd);
		tg->journal_fd = -1;
	}
	if (write_file_atomic(tg->journal_path, s, len, 0600) < 0)
		log_warn("%s: cannot write %s", tg->name, tg->journal_path);
	free(s);
	tg->journal_size = len;
	tg->journal_fd = open(tg->journal_path, O_WRONLY | O_APPEND | O_CLOEXEC);
	if (tg->journal_fd < 0)
		log_warn("%s: cannot open %s", tg->name, tg->journal_path);
}

/* Appends one line (text without its newline); a failure falls back to a snapshot. */
static void
tg_journal_append(struct tg *tg, const char *line)
{
	size_t len = strlen(line);
	struct iovec iov[2] = { { (void *)line, len }, { (void *)"\n", 1 } };
	ssize_t n;

	if (tg->journal_fd >= 0) {
		n = writev(tg->journal_fd, iov, 2);
		if (n == (ssize_t)(len + 1)) {
			tg->journal_size += len + 1;
			return;
		}
		log_warn("%s: appending to %s", tg->name, tg->journal_path);
	}
	tg->journal_broken = 1;
}

/* Writes the "done" lines gathered on this loop turn (see tg_on_done). */
static void
tg_journal_done(struct tg *tg)
{
	ssize_t n;

	if (tg->done_len == 0)
		return;
	if (tg->journal_fd >= 0) {
		n = write(tg->journal_fd, tg->done_buf, tg->done_len);
		if (n == (ssize_t)tg->done_len)
			tg->journal_size += tg->done_len;
		else {
			log_warn("%s: appending to %s", tg->name, tg->journal_path);
			tg->journal_broken = 1;
		}
	} else
		tg->journal_broken = 1;
	tg->done_len = 0;
}

static void
tg_done_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	tg_journal_done(arg);
}

/* Makes the appended lines durable (or writes a snapshot when appending failed). */
static void
tg_journal_sync(struct tg *tg)
{
	if (!tg->journal_broken && tg->journal_fd >= 0 && fdatasync(tg->journal_fd) == 0)
		return;
	tg->journal_broken = 0;
	tg_journal_compact(tg);
}

/* Journals a batch of new updates (from first to the end of the list) and the offset. */
static void
tg_journal_batch(struct tg *tg, struct tg_update *first)
{
	struct tg_update *u;
	char *line, num[32];

	for (u = first; u != NULL; u = TAILQ_NEXT(u, link)) {
		char *js = cJSON_PrintUnformatted(u->json);

		if (js == NULL)
			fatalx("%s: out of memory", tg->name);
		line = xasprintf("{\"update\":%s}", js);
		free(js);
		tg_journal_append(tg, line);
		free(line);
	}
	tg_fmt_i64(num, sizeof(num), tg->next_offset);
	line = xasprintf("{\"offset\":%s,\"time\":%lld}", num, (long long)tg->offset_time);
	tg_journal_append(tg, line);
	free(line);
	tg_journal_sync(tg);
}

/* Appends one update to the pending list (the list owns json). */
static struct tg_update *
tg_update_add(struct tg *tg, cJSON *json, int64_t id)
{
	struct tg_update *u = xcalloc(1, sizeof(*u));

	u->tg = tg;
	u->id = id;
	u->json = json;
	TAILQ_INSERT_TAIL(&tg->updates, u, link);
	tg->nupdates++;
	return u;
}

static struct tg_update *
tg_update_find(struct tg *tg, int64_t id)
{
	struct tg_update *u;

	TAILQ_FOREACH_REVERSE(u, &tg->updates, tg_update_list, link)
		if (u->id == id)
			return u;
	return NULL;
}

static void
tg_update_free(struct tg *tg, struct tg_update *u)
{
	TAILQ_REMOVE(&tg->updates, u, link);
	tg->nupdates--;
	cJSON_Delete(u->json);
	free(u);
}

/* Takes one update read from the journal (owned), unless it is already there. */
static void
tg_journal_take(struct tg *tg, cJSON *item)
{
	int64_t id;

	if (tg_json_i64(tg_get(item, "update_id"), &id) < 0 || tg_update_find(tg, id) != NULL) {
		cJSON_Delete(item);
		return;
	}
	tg_update_add(tg, item, id);
}

/* Applies one journal line; returns -1 when it is not a journal record. */
static int
tg_journal_line(struct tg *tg, cJSON *doc)
{
	cJSON *pending, *item;
	struct tg_update *u;
	int64_t v;

	if (cJSON_IsNumber(doc) && tg_json_i64(doc, &v) == 0) {
		tg->next_offset = v;    /* a bare number: just an offset */
		return 0;
	}
	if (!cJSON_IsObject(doc))
		return -1;
	if (tg_json_i64(tg_get(doc, "offset"), &v) == 0)
		tg->next_offset = v;
	if (tg_json_i64(tg_get(doc, "time"), &v) == 0)
		tg->offset_time = (time_t)v;
	pending = cJSON_GetObjectItemCaseSensitive(doc, "pending");
	while (cJSON_IsArray(pending) && pending->child != NULL)
		tg_journal_take(tg, cJSON_DetachItemViaPointer(pending, pending->child));
	item = cJSON_GetObjectItemCaseSensitive(doc, "update");
	if (cJSON_IsObject(item))
		tg_journal_take(tg, cJSON_DetachItemViaPointer(doc, item));
	if (tg_json_i64(tg_get(doc, "done"), &v) == 0 && (u = tg_update_find(tg, v)) != NULL)
		tg_update_free(tg, u);
	return 0;
}

/* Reads the journal of an earlier worker, if any, then rewrites it as one snapshot. */
static void
tg_journal_load(struct tg *tg)
{
	char *text, *line, *nl;
	size_t len, bad = 0;
	struct stat st;
	cJSON *doc;

	if (stat(tg->journal_path, &st) == 0)
		tg->offset_time = st.st_mtime;
	text = read_file(tg->journal_path, TG_JOURNAL_MAX, &len);
	if (text == NULL && errno != ENOENT)
		log_warn("%s: cannot read %s; starting from Telegram's own queue",
		    tg->name, tg->journal_path);
	for (line = text; line != NULL && line < text + len; line = nl + 1) {
		nl = memchr(line, '\n', (size_t)(text + len - line));
		if (nl == NULL)
			nl = text + len;        /* a last line without newline */
		if (nl == line)
			continue;
		doc = cJSON_ParseWithLength(line, (size_t)(nl - line));
		if (doc == NULL || tg_journal_line(tg, doc) < 0)
			bad++;
		cJSON_Delete(doc);
	}
	free(text);
	if (bad > 0)
		log_warnx("%s: %s is damaged (%zu line(s) ignored); Telegram's own queue fills "
		    "the gaps", tg->name, tg->journal_path, bad);
	if (tg->nupdates > 0)
		log_info("%s: %zu update(s) left by the previous worker will be handled first",
		    tg->name, tg->nupdates);
	tg_journal_compact(tg);
}

/* Drops handled updates from memory and compacts a journal grown too big. */
static void
tg_flush(struct tg *tg)
{
	struct tg_update *u, *next;

	tg->ndone = 0;
	tg_journal_done(tg);
	for (u = TAILQ_FIRST(&tg->updates); u != NULL; u = next) {
		next = TAILQ_NEXT(u, link);
		if (u->done)
			tg_update_free(tg, u);
	}
	if (tg->journal_broken || tg->journal_size > TG_JOURNAL_COMPACT) {
		tg->journal_broken = 0;
		tg_journal_compact(tg);
	}
	if (tg->poll_blocked && tg->nupdates < TG_PENDING_MAX) {
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

/* The hub has handled an update: it may leave the journal. */
static void
tg_on_done(void *arg)
{
	struct tg_update *u = arg;
	struct tg *tg = u->tg;
	char line[48];
	int n;

	if (u->done)
		return;
	u->done = 1;
	/*
	 * Recorded within TG_DONE_USEC (one write for many, no sync): a worker
	 * killed later does not replay what it already answered.
	 */
	n = snprintf(line, sizeof(line), "{\"done\":%" PRId64 "}\n", u->id);
	if (tg->done_len + (size_t)n > tg->done_cap) {
		tg->done_cap = (tg->done_cap + (size_t)n) * 2;
		tg->done_buf = xrealloc(tg->done_buf, tg->done_cap);
	}
	memcpy(tg->done_buf + tg->done_len, line, (size_t)n);
	tg->done_len += (size_t)n;
	if (!evtimer_pending(tg->done_ev, NULL))
		tg_timer_usec(tg->done_ev, TG_DONE_USEC);
	if (u->typing != NULL) {
		tg_typing_unref(u->typing);
		u->typing = NULL;
	}
	/* While polling waits for the backlog to shrink, drop handled ones sooner. */
	if (++tg->ndone >= 100 && tg->poll_blocked)
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

	TAILQ_FOREACH(u, &tg->updates, link)
		if (!u->handed)
			tg_dispatch(tg, u);
}

/* 1 when no update came for so long that Telegram may have restarted its ids. */
static int
tg_offset_stale(const struct tg *tg)
{
	return tg->offset_time != 0 && time(NULL) - tg->offset_time > TG_OFFSET_STALE_SEC;
}

/* Takes the new updates of a getUpdates result; returns how many were new (*first: the first). */
static size_t
tg_take_updates(struct tg *tg, cJSON *result, struct tg_update **first)
{
	struct tg_update *u;
	cJSON *item;
	int64_t id;
	size_t n = 0;
	int stale = tg_offset_stale(tg);

	while ((item = result->child) != NULL) {
		item = cJSON_DetachItemViaPointer(result, item);
		if (tg_json_i64(tg_get(item, "update_id"), &id) < 0 ||
		    (stale ? tg_update_find(tg, id) != NULL : id < tg->next_offset)) {
			cJSON_Delete(item);
			continue;
		}
		u = tg_update_add(tg, item, id);
		if (n++ == 0)
			*first = u;
		if (stale || id + 1 > tg->next_offset)
			tg->next_offset = id + 1;
		stale = 0;
	}
	return n;
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
		delay = tg_backoff(tg->fails++, TG_BACKOFF_MIN_USEC, tg->retry_max_usec);
		break;
	case TG_RETRY_AFTER:
		snprintf(detail, sizeof(detail), "%s: 429 Too Many Requests: retry after %.0f s",
		    what, retry_after);
		delay = (uint64_t)(retry_after * 1e6);
		if (delay < 100000)
			delay = 100000;
		break;
	case TG_UNAUTHORIZED:
		st = PLAT_UNAUTHORIZED;
		snprintf(detail, sizeof(detail), "%s: %s (check the bot token)", what, why);
		delay = tg_backoff(30, tg->retry_max_usec, tg->retry_max_usec);
		break;
	default:
		snprintf(detail, sizeof(detail), "%s: %s", what, why);
		delay = tg_backoff(tg->fails++, TG_BACKOFF_MIN_USEC, tg->retry_max_usec);
		break;
	}
	tg->probe = 1;
	log_warnx("%s: %s; retrying in %.1f s", tg->name, detail, (double)delay / 1e6);
	tg_set_state(tg, st, detail);
	tg_timer_usec(tg->retry_ev, delay);
}

static void
tg_poll_done(void *arg, const struct http_response *r)
{
	struct tg *tg = arg;
	const cJSON *result;
	enum tg_reply kind;
	double ra;
	struct tg_update *first = NULL;
	cJSON *doc;
	char why[200];
	size_t n = 0;

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
	if (cJSON_GetArraySize(result) > 0) {
		n = tg_take_updates(tg, (cJSON *)result, &first);
		if (n == 0)
			log_debug("%s: getUpdates returned only known updates", tg->name);
	}
	cJSON_Delete(doc);
	if (n > 0) {
		tg->offset_time = time(NULL);
		/* Durable before the next getUpdates confirms them to Telegram. */
		tg_journal_batch(tg, first);
		tg_dispatch_all(tg);
	}
	tg_poll(tg);
}

/* Starts the next long poll (unless stopping, or too much is still unhandled). */
static void
tg_poll(struct tg *tg)
{
	cJSON *body, *au;
	char num[32];

	if (tg->stopping || tg->poll_call != NULL)
		return;
	if (tg->nupdates >= TG_PENDING_MAX) {
		tg->poll_blocked = 1;
		return;
	}
	body = cJSON_CreateObject();
	if (body == NULL || cJSON_AddNumberToObject(body, "timeout", tg->probe ? 0 : tg->poll_timeout) == NULL ||
	    cJSON_AddNumberToObject(body, "limit", 100) == NULL ||
	    (au = cJSON_AddArrayToObject(body, "allowed_updates")) == NULL)
		fatalx("%s: out of memory", tg->name);
	cJSON_AddItemToArray(au, cJSON_CreateString("message"));
	if (tg->next_offset != 0 && !tg_offset_stale(tg)) {
		tg_fmt_i64(num, sizeof(num), tg->next_offset);
		cJSON_AddRawToObject(body, "offset", num);
	}
	/* Telegram holds the poll for poll_timeout: allow a little more for the answer. */
	tg->poll_call = tg_call(tg, "getUpdates", body, tg->poll_timeout * 1.25 + 3.0,
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

/* Removes a send from its queue, calls its callback once and frees it. */
static void
tg_send_finish(struct tg_send *s, int ok)
{
	plat_sent_fn cb = s->cb;
	void *arg = s->arg;

	TAILQ_REMOVE(&s->chat->queue, s, link);
	text_pieces_free(s->pieces);
	free(s->thread_id);
	free(s);
	cb(arg, ok);
}

static void
tg_send_done(void *arg, const struct http_response *r)
{
	struct tg_send *s = arg;
	struct tg_chat *c = s->chat;
	struct tg *tg = c->tg;
	const cJSON *result;
	enum tg_reply kind;
	double ra;
	cJSON *doc;
	char why[200];

	s->call = NULL;
	c->busy = 0;
	tg->inflight--;
	kind = tg_classify(tg, r, &doc, &result, &ra, why, sizeof(why));
	cJSON_Delete(doc);
	switch (kind) {
	case TG_OK:
		s->attempts = 0;
		if (++s->next == s->npieces)
			tg_send_finish(s, 1);
		break;
	case TG_CANT_PARSE:
		if (s->plain) {
			log_warnx("%s: sendMessage: %s", tg->name, why);
			tg_send_finish(s, 0);
		} else
			s->plain = 1;
		break;
	case TG_RETRY_AFTER:
		log_info("%s: sendMessage: %s; waiting %.0f s", tg->name, why, ra);
		c->paused_until = mono_usec() + (uint64_t)(ra * 1e6);
		break;
	case TG_TRANSIENT:
		if (++s->attempts >= TG_SEND_ATTEMPTS) {
			log_warnx("%s: sendMessage: %s; giving up", tg->name, why);
			tg_send_finish(s, 0);
		} else
			c->paused_until = mono_usec() + tg_backoff(s->attempts - 1, 500000, 8000000);
		break;
	default:
		log_warnx("%s: sendMessage to %s refused: %s", tg->name, c->chat_id, why);
		tg_send_finish(s, 0);
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

/* Starts every send the rate limits allow now; arms the pump timer for the rest. */
static void
tg_pump(struct tg *tg)
{
	struct tg_chat *c, *next, *last;
	struct tg_send *s;
	uint64_t now, wait, w;

	if (tg->pumping) {
		tg->repump = 1;
		return;
	}
	tg->pumping = 1;
again:
	tg->repump = 0;
	now = mono_usec();
	wait = UINT64_MAX;
	tg_bucket_refill(&tg->gtokens, &tg->grefill_usec, tg->rate_global, tg->rate_global, now);
	last = TAILQ_LAST(&tg->chats, tg_chat_list);
	for (c = TAILQ_FIRST(&tg->chats); c != NULL; c = next) {
		next = c == last ? NULL : TAILQ_NEXT(c, link);
		s = TAILQ_FIRST(&c->queue);
		if (c->busy)
			continue;
		if (c->paused_until > now) {
			w = c->paused_until - now;
			wait = w < wait ? w : wait;
			continue;
		}
		tg_bucket_refill(&c->tokens, &c->refill_usec, tg->rate_chat, TG_CHAT_BURST, now);
		if (s == NULL) {
			if (c->tokens >= TG_CHAT_BURST)
				tg_chat_free(c);
			continue;
		}
		if (s->failed) {
			tg_send_finish(s, 0);
			continue;
		}
		if (tg->inflight >= TG_MAX_INFLIGHT)
			break;
		if (c->tokens < 1) {
			w = (uint64_t)((1 - c->tokens) / tg->rate_chat * 1e6) + 1;
			wait = w < wait ? w : wait;
			continue;
		}
		if (tg->gtokens < 1) {
			w = (uint64_t)((1 - tg->gtokens) / tg->rate_global * 1e6) + 1;
			wait = w < wait ? w : wait;
			break;
		}
		c->tokens -= 1;
		tg->gtokens -= 1;
		tg_send_start(tg, s);
		if (s->failed)
			wait = 100000 < wait ? 100000 : wait;
		/* Round robin: the chat that just sent goes to the back. */
		TAILQ_REMOVE(&tg->chats, c, link);
		TAILQ_INSERT_TAIL(&tg->chats, c, link);
	}
	if (tg->repump)
		goto again;
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
	const char *p;
	int64_t reply = 0;
	char *end;

	if (tg->stopped || msg->text == NULL || msg->chat_id == NULL || msg->chat_id[0] == '\0') {
		d = xcalloc(1, sizeof(*d));
		d->cb = cb;
		d->arg = arg;
		if (event_base_once(tg->base, -1, EV_TIMEOUT, tg_deferred_cb, d, NULL) < 0)
			fatalx("%s: event_base_once failed", tg->name);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	s->cb = cb;
	s->arg = arg;
	s->chat = tg_chat_get(tg, msg->chat_id);
	if (msg->thread_id != NULL && msg->thread_id[0] != '\0')
		s->thread_id = xstrdup(msg->thread_id);
	if (msg->reply_to != NULL) {
		/* Our message ids are "<chat>:<message_id>"; a reply stays in its chat. */
		p = strrchr(msg->reply_to, ':');
		if (p != NULL && ((size_t)(p - msg->reply_to) != strlen(msg->chat_id) ||
		    strncmp(msg->reply_to, msg->chat_id, (size_t)(p - msg->reply_to)) != 0))
			p = NULL;
		else
			p = p != NULL ? p + 1 : msg->reply_to;
		errno = 0;
		reply = p != NULL ? strtoll(p, &end, 10) : 0;
		if (p == NULL || errno != 0 || *end != '\0' || end == p || reply <= 0)
			reply = 0;
	}
	s->reply_to = reply;
	s->pieces = text_split(msg->text, TG_MAX_TEXT, &s->npieces);
	if (s->npieces == 0) {
		/* Telegram refuses empty text; say so rather than drop the reply. */
		text_pieces_free(s->pieces);
		s->pieces = xcalloc(2, sizeof(char *));
		s->pieces[0] = xstrdup("(empty reply)");
		s->npieces = 1;
	}
	TAILQ_INSERT_TAIL(&s->chat->queue, s, link);
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

static void *
tg_create(const struct plat_env *env, char *err, size_t errlen)
{
	const char *name = env->name, *token = NULL, *api = TG_DEFAULT_API, *policy = "addressed";
	double poll = 30, rate_chat = 1, rate_global = 30, retry_max = 60;
	char *secret = NULL;
	struct tg *tg;
	size_t n;

	if (tg_conf_string(env->conf, name, "token", &token, err, errlen) < 0 ||
	    tg_conf_string(env->conf, name, "api_url", &api, err, errlen) < 0 ||
	    tg_conf_string(env->conf, name, "group_policy", &policy, err, errlen) < 0 ||
	    tg_conf_number(env->conf, name, "poll_timeout", 1, 300, &poll, err, errlen) < 0 ||
	    tg_conf_number(env->conf, name, "rate_chat", 0.01, 1e6, &rate_chat, err, errlen) < 0 ||
	    tg_conf_number(env->conf, name, "rate_global", 0.01, 1e6, &rate_global, err, errlen) < 0 ||
	    tg_conf_number(env->conf, name, "retry_max", 1, 3600, &retry_max, err, errlen) < 0)
		return NULL;
	if (poll != (double)(unsigned)poll) {
		snprintf(err, errlen, "platforms.%s.poll_timeout: must be a whole number of seconds",
		    name);
		return NULL;
	}
	if (strcmp(policy, "addressed") != 0 && strcmp(policy, "all") != 0) {
		snprintf(err, errlen, "platforms.%s.group_policy: must be \"addressed\" or \"all\"",
		    name);
		return NULL;
	}
	if (strncmp(api, "https://", 8) != 0 && strncmp(api, "http://", 7) != 0) {
		snprintf(err, errlen, "platforms.%s.api_url: must be an http:// or https:// URL", name);
		return NULL;
	}
	if (token == NULL || token[0] == '\0')
		token = secret = config_secret("TELEGRAM_BOT_TOKEN");
	if (token == NULL || token[0] == '\0') {
		snprintf(err, errlen, "platforms.%s.token: missing (set it, or TELEGRAM_BOT_TOKEN)",
		    name);
		free(secret);
		return NULL;
	}
	if (!tg_token_valid(token)) {
		snprintf(err, errlen, "platforms.%s.token: not a bot token (digits, ':', then "
		    "letters, digits, '_' or '-')", name);
		free(secret);
		return NULL;
	}
	tg = xcalloc(1, sizeof(*tg));
	tg->base = env->base;
	tg->dns = env->dns;
	tg->tls = env->tls;
	tg->hub = env->hub;
	tg->name = xstrdup(name);
	tg->journal_path = xasprintf("%s/%s.journal", env->state_dir, name);
	tg->journal_fd = -1;
	tg->lock_path = xasprintf("%s/%s.lock", env->state_dir, name);
	tg->lock_fd = -1;
	tg->token = xstrdup(token);
	free(secret);
	tg->api_url = xstrdup(api);
	n = strlen(tg->api_url);
	while (n > 0 && tg->api_url[n - 1] == '/')
		tg->api_url[--n] = '\0';
	tg->poll_timeout = (unsigned)poll;
	tg->rate_chat = rate_chat;
	tg->rate_global = rate_global;
	tg->retry_max_usec = (uint64_t)(retry_max * 1e6);
	tg->bot.group_all = strcmp(policy, "all") == 0;
	tg->state = PLAT_STOPPED;
	TAILQ_INIT(&tg->updates);
	TAILQ_INIT(&tg->chats);
	LIST_INIT(&tg->typing);
	tg->http = http_client_new(tg->base, tg->dns, tg->tls);
	tg->retry_ev = evtimer_new(tg->base, tg_retry_cb, tg);
	tg->flush_ev = evtimer_new(tg->base, tg_flush_cb, tg);
	tg->done_ev = evtimer_new(tg->base, tg_done_cb, tg);
	tg->pump_ev = evtimer_new(tg->base, tg_pump_cb, tg);
	if (tg->retry_ev == NULL || tg->flush_ev == NULL || tg->pump_ev == NULL ||
	    tg->done_ev == NULL)
		fatalx("%s: evtimer_new failed", name);
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

	if (!tg_lock(tg)) {
		snprintf(detail, sizeof(detail), "another process holds %s", tg->lock_path);
		log_warnx("%s: %s; retrying", tg->name, detail);
		tg_set_state(tg, PLAT_BACKOFF, detail);
		tg_timer_usec(tg->retry_ev, tg_backoff(tg->fails++, TG_BACKOFF_MIN_USEC,
		    tg->retry_max_usec));
		return;
	}
	tg->fails = 0;
	tg->begun = 1;
	tg_journal_load(tg);
	tg_set_state(tg, PLAT_CONNECTING, NULL);
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

static int
tg_outbound_empty(struct tg *tg)
{
	struct tg_chat *c;

	TAILQ_FOREACH(c, &tg->chats, link)
		if (!TAILQ_EMPTY(&c->queue))
			return 0;
	return 1;
}

/* Gives up every queued send (callbacks called once, with ok = 0). */
static void
tg_fail_all_sends(struct tg *tg)
{
	struct tg_chat *c;
	struct tg_send *s;

	TAILQ_FOREACH(c, &tg->chats, link) {
		while ((s = TAILQ_FIRST(&c->queue)) != NULL) {
			if (s->call != NULL) {
				http_cancel(s->call);
				s->call = NULL;
				c->busy = 0;
				tg->inflight--;
			}
			tg_send_finish(s, 0);
		}
	}
}

/* Finishes the stop once the outbound queue is empty or the deadline passed. */
static void
tg_stop_check(struct tg *tg)
{
	struct tg_update *u;

	if (tg->stopped)
		return;
	if (!tg_outbound_empty(tg) && evtimer_pending(tg->stop_ev, NULL))
		return;
	tg->stopped = 1;
	if (!tg_outbound_empty(tg))
		log_warnx("%s: stopping with messages still queued; they are given up", tg->name);
	tg_fail_all_sends(tg);
	evtimer_del(tg->stop_ev);
	TAILQ_FOREACH(u, &tg->updates, link)
		u->typing = NULL;
	while (!LIST_EMPTY(&tg->typing))
		tg_typing_free(LIST_FIRST(&tg->typing));
	if (tg->begun) {
		/* Only the worker holding the lock may write the journal. */
		tg_flush(tg);
		tg_journal_compact(tg);
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
	struct tg_update *u;
	struct tg_chat *c;

	if (tg == NULL)
		return;
	tg->stopped = 1;
	tg_fail_all_sends(tg);
	while ((c = TAILQ_FIRST(&tg->chats)) != NULL)
		tg_chat_free(c);
	while (!LIST_EMPTY(&tg->typing))
		tg_typing_free(LIST_FIRST(&tg->typing));
	while ((u = TAILQ_FIRST(&tg->updates)) != NULL)
		tg_update_free(tg, u);
	if (tg->journal_fd >= 0)
		close(tg->journal_fd);
	if (tg->poll_call != NULL)
		http_cancel(tg->poll_call);
	if (tg->me_call != NULL)
		http_cancel(tg->me_call);
	http_client_free(tg->http);
	event_free(tg->retry_ev);
	event_free(tg->flush_ev);
	event_free(tg->done_ev);
	free(tg->done_buf);
	event_free(tg->pump_ev);
	if (tg->stop_ev != NULL)
		event_free(tg->stop_ev);
	free(tg->bot_username);
	free(tg->name);
	free(tg->journal_path);
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
