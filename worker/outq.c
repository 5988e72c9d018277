/* outq.c - the outbound queue of one platform (see outq.h). */
#include "outq.h"

#include <sys/queue.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "intake.h"
#include "link.h"
#include "log.h"
#include "strmap.h"
#include "text.h"
#include "util.h"

#define OUTQ_MAX_KEY 200

struct outq_msg {
	TAILQ_ENTRY(outq_msg) link;     /* in q->finished once complete */
	outq_done_fn done;
	void *arg;
	unsigned left;
	int failed;
};

struct outq_item {
	TAILQ_ENTRY(outq_item) link;
	struct outq_chat *chat;
	struct outq_msg *msg;           /* NULL for a piece restored from the journal */
	char *key, *reply_to, *text;
	unsigned index, count, variant, attempt;
	uint64_t first_try, not_before;
};

struct outq_chat {
	TAILQ_ENTRY(outq_chat) link;
	char *id;                       /* chat_id, then "\x1f" thread_id */
	char *chat_id, *thread_id;
	TAILQ_HEAD(, outq_item) items;
	double tokens;
	uint64_t refilled, paused_until;
	int busy;
};

struct outq_attempt {
	struct outq *q;                 /* NULL once the queue is gone */
	struct outq_item *it;
};

struct outq {
	struct event_base *base;
	char *name;
	struct outq_limits lim;
	struct intake *journal;
	outq_send_fn send;
	outq_health_fn health;
	void *plat;

	struct strmap *chats;
	TAILQ_HEAD(, outq_chat) active;
	TAILQ_HEAD(, outq_msg) finished;
	struct strmap *attempts;        /* key -> attempt, to detach them at free */
	struct strmap *keys;            /* key -> item, every piece queued */
	double tokens;
	uint64_t refilled, paused_until;
	size_t depth, inflight;
	char *error;

	struct event *pump_ev, *done_ev, *drain_ev;
	void (*drain_cb)(void *);
	void *drain_arg;
	uint64_t drain_deadline;
};

static void outq_schedule(struct outq *q, uint64_t delay);

static double
outq_dflt(double v, double d)
{
	return v > 0 ? v : d;
}

/* Refills a token bucket to now. */
static void
outq_refill(double *tokens, uint64_t *last, double rate, double burst, uint64_t now)
{
	if (*last == 0) {
		*tokens = burst;
	} else if (now > *last) {
		*tokens += (double)(now - *last) / 1e6 * rate;
		if (*tokens > burst)
			*tokens = burst;
	}
	*last = now;
}

/* Microseconds until a bucket holds one token. */
static uint64_t
outq_token_wait(double tokens, double rate)
{
	return tokens >= 1 ? 0 : (uint64_t)((1 - tokens) / rate * 1e6) + 1;
}

static int
outq_key_valid(const char *key)
{
	size_t n;

	if (key == NULL || (n = strlen(key)) == 0 || n > OUTQ_MAX_KEY)
		return 0;
	for (; *key != '\0'; key++)
		if ((unsigned char)*key <= 0x20 || *key == 0x7f)
			return 0;
	return 1;
}

/* ---- chats and items ---------------------------------------------------- */

static struct outq_chat *
outq_chat_get(struct outq *q, const char *chat, const char *thread)
{
	char *id = thread != NULL ? xasprintf("%s\x1f%s", chat, thread) : xstrdup(chat);
	struct outq_chat *c = strmap_get(q->chats, id);

	if (c != NULL) {
		free(id);
		return c;
	}
	c = xcalloc(1, sizeof(*c));
	c->id = id;
	c->chat_id = xstrdup(chat);
	c->thread_id = thread != NULL ? xstrdup(thread) : NULL;
	TAILQ_INIT(&c->items);
	strmap_put(q->chats, id, c);
	TAILQ_INSERT_TAIL(&q->active, c, link);
	return c;
}

static void
outq_chat_free(struct outq *q, struct outq_chat *c)
{
	TAILQ_REMOVE(&q->active, c, link);
	strmap_del(q->chats, c->id);
	free(c->id);
	free(c->chat_id);
	free(c->thread_id);
	free(c);
}

/* The piece as the journal keeps it. */
static char *
outq_item_json(const struct outq_item *it)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (o == NULL || !cJSON_AddStringToObject(o, "c", it->chat->chat_id) ||
	    (it->chat->thread_id != NULL && !cJSON_AddStringToObject(o, "t", it->chat->thread_id)) ||
	    (it->reply_to != NULL && !cJSON_AddStringToObject(o, "r", it->reply_to)) ||
	    !cJSON_AddStringToObject(o, "x", it->text) ||
	    !cJSON_AddNumberToObject(o, "i", it->index) || !cJSON_AddNumberToObject(o, "n", it->count))
		fatalx("%s: out of memory", __func__);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (s == NULL)
		fatalx("%s: out of memory", __func__);
	return s;
}

static struct outq_item *
outq_item_add(struct outq *q, struct outq_chat *c, struct outq_msg *m, const char *key,
    const char *reply_to, const char *text, unsigned index, unsigned count)
{
	struct outq_item *it = xcalloc(1, sizeof(*it));

	it->chat = c;
	it->msg = m;
	it->key = xstrdup(key);
	it->reply_to = reply_to != NULL ? xstrdup(reply_to) : NULL;
	it->text = xstrdup(text);
	it->index = index;
	it->count = count;
	TAILQ_INSERT_TAIL(&c->items, it, link);
	strmap_put(q->keys, key, it);
	q->depth++;
	return it;
}

/* A message is complete: its callback runs from the loop. */
static void
outq_msg_piece_done(struct outq *q, struct outq_msg *m, int ok)
{
	if (m == NULL)
		return;
	if (!ok)
		m->failed = 1;
	if (--m->left > 0)
		return;
	TAILQ_INSERT_TAIL(&q->finished, m, link);
	event_active(q->done_ev, EV_TIMEOUT, 0);
}

/* Removes the head piece of its chat: delivered (ok) or dropped. */
static void
outq_item_finish(struct outq *q, struct outq_item *it, int ok)
{
	struct outq_chat *c = it->chat;

	TAILQ_REMOVE(&c->items, it, link);
	strmap_del(q->keys, it->key);
	q->depth--;
	if (q->journal != NULL)
		intake_sent(q->journal, it->key);
	outq_msg_piece_done(q, it->msg, ok);
	free(it->key);
	free(it->reply_to);
	free(it->text);
	free(it);
	if (TAILQ_EMPTY(&c->items) && !c->busy)
		outq_chat_free(q, c);
}

static void
outq_set_error(struct outq *q, const char *why)
{
	char *e = why != NULL ? xasprintf("sending fails: %s", why) : NULL;

	if ((e == NULL && q->error == NULL) || (e != NULL && q->error != NULL &&
	    strcmp(e, q->error) == 0)) {
		free(e);
		return;
	}
	free(q->error);
	q->error = e;
	if (q->health != NULL)
		q->health(q->plat, q->error);
}

/* ---- sending -------------------------------------------------------------- */

static void
outq_start(struct outq *q, struct outq_chat *c, struct outq_item *it, uint64_t now)
{
	struct outq_attempt *a = xcalloc(1, sizeof(*a));
	struct outq_piece p = {
		.key = it->key, .chat_id = c->chat_id, .thread_id = c->thread_id,
		.reply_to = it->reply_to, .text = it->text, .index = it->index,
		.count = it->count, .variant = it->variant, .attempt = it->attempt,
	};

	a->q = q;
	a->it = it;
	if (it->first_try == 0)
		it->first_try = now;
	c->busy = 1;
	q->inflight++;
	strmap_put(q->attempts, it->key, a);
	/* round robin: this chat goes to the back */
	TAILQ_REMOVE(&q->active, c, link);
	TAILQ_INSERT_TAIL(&q->active, c, link);
	q->send(q->plat, &p, a);
}

/* When the head of c may go, 0 for now. */
static uint64_t
outq_chat_wait(struct outq *q, struct outq_chat *c, const struct outq_item *it, uint64_t now)
{
	uint64_t until = c->paused_until, w;

	if (it->not_before > until)
		until = it->not_before;
	if (q->paused_until > until)
		until = q->paused_until;
	if (until > now)
		return until - now;
	outq_refill(&c->tokens, &c->refilled, outq_dflt(q->lim.chat_rate, 1),
	    outq_dflt(q->lim.chat_burst, 3), now);
	w = outq_token_wait(c->tokens, outq_dflt(q->lim.chat_rate, 1));
	if (w == 0)
		w = outq_token_wait(q->tokens, outq_dflt(q->lim.global_rate, 30));
	return w;
}

/* Starts every attempt the limits allow; arms the timer for the next one. */
static void
outq_pump(struct outq *q)
{
	struct outq_chat *c, *next;
	struct outq_item *it;
	uint64_t now = mono_usec(), wake = UINT64_MAX, w;
	unsigned cap = q->lim.inflight ? q->lim.inflight : 8;
	size_t n = strmap_count(q->chats);

	outq_refill(&q->tokens, &q->refilled, outq_dflt(q->lim.global_rate, 30),
	    outq_dflt(q->lim.global_burst, 30), now);
	for (c = TAILQ_FIRST(&q->active); c != NULL && n-- > 0; c = next) {
		next = TAILQ_NEXT(c, link);
		if (q->inflight >= cap)
			return;         /* an answer pumps again */
		if (c->busy || (it = TAILQ_FIRST(&c->items)) == NULL)
			continue;
		if ((w = outq_chat_wait(q, c, it, now)) > 0) {
			if (w < wake)
				wake = w;
			continue;
		}
		c->tokens -= 1;
		q->tokens -= 1;
		outq_start(q, c, it, now);
	}
	if (wake != UINT64_MAX)
		outq_schedule(q, wake);
}

static void
outq_pump_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	outq_pump(arg);
}

static void
outq_schedule(struct outq *q, uint64_t delay)
{
	struct timeval tv = { (time_t)(delay / 1000000), (suseconds_t)(delay % 1000000) };

	evtimer_add(q->pump_ev, &tv);
}

/* Checks whether a drain has finished. */
static void
outq_drain_check(struct outq *q)
{
	if (q->drain_cb != NULL && (q->depth == 0 || mono_usec() >= q->drain_deadline))
		event_active(q->drain_ev, EV_TIMEOUT, 0);
}

/* A failed attempt: retry later, or give up once give_up_usec has passed. */
static void
outq_retry(struct outq *q, struct outq_item *it, uint64_t delay, const char *why)
{
	uint64_t now = mono_usec(), give_up = q->lim.give_up_usec ? q->lim.give_up_usec :
	    600000000ULL;

	if (now - it->first_try >= give_up) {
		log_warnx("%s: gave up on a message to %s after %u attempt(s) over %.0f s: %s",
		    q->name, it->chat->chat_id, it->attempt + 1, (double)(now - it->first_try) / 1e6,
		    why);
		outq_item_finish(q, it, 0);
		return;
	}
	it->attempt++;
	it->not_before = now + delay;
}

void
outq_result(struct outq_attempt *a, enum outq_result r, double retry_after, const char *why)
{
	struct outq *q = a->q;
	struct outq_item *it = a->it;
	struct link_opts lo;

	free(a);
	if (q == NULL)
		return;
	strmap_del(q->attempts, it->key);
	q->inflight--;
	it->chat->busy = 0;
	if (why == NULL)
		why = "failed";
	lo = (struct link_opts){ .backoff_min_usec = q->lim.retry_min_usec,
		.backoff_max_usec = q->lim.retry_max_usec };
	switch (r) {
	case OUTQ_OK:
		outq_set_error(q, NULL);
		outq_item_finish(q, it, 1);
		break;
	case OUTQ_VARIANT:
		if (++it->variant < (q->lim.variants ? q->lim.variants : 1))
			break;
		/* FALLTHROUGH */
	case OUTQ_REJECTED:
		log_warnx("%s: a message to %s was refused: %s; dropped", q->name,
		    it->chat->chat_id, why);
		outq_item_finish(q, it, 0);
		break;
	case OUTQ_RETRY_AFTER:
		outq_set_error(q, why);
		it->chat->paused_until = mono_usec() + (uint64_t)(retry_after > 0 ? retry_after * 1e6 :
		    1e6);
		outq_retry(q, it, 0, why);
		break;
	case OUTQ_UNAUTHORIZED:
		lo.backoff_min_usec = lo.backoff_max_usec = lo.backoff_max_usec ?
		    lo.backoff_max_usec : 60000000;
		/* FALLTHROUGH */
	case OUTQ_TRANSIENT:
		outq_set_error(q, why);
		outq_retry(q, it, link_backoff(&lo, it->attempt, (double)arc4random() / 4294967296.0),
		    why);
		break;
	}
	outq_drain_check(q);
	outq_schedule(q, 0);
}

/* ---- callbacks run from the loop ----------------------------------------- */

static void
outq_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct outq *q = arg;
	struct outq_msg *m;

	(void)fd;
	(void)what;
	while ((m = TAILQ_FIRST(&q->finished)) != NULL) {
		TAILQ_REMOVE(&q->finished, m, link);
		if (m->done != NULL)
			m->done(m->arg, !m->failed);
		free(m);
	}
}

static void
outq_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct outq *q = arg;
	void (*cb)(void *) = q->drain_cb;

	(void)fd;
	(void)what;
	if (cb == NULL)
		return;
	q->drain_cb = NULL;
	cb(q->drain_arg);
}

/* ---- the interface ----------------------------------------------------------- */

struct outq *
outq_new(struct event_base *base, const char *name, const struct outq_limits *lim,
    struct intake *journal, outq_send_fn send, outq_health_fn health, void *plat)
{
	struct outq *q = xcalloc(1, sizeof(*q));

	q->base = base;
	q->name = xstrdup(name);
	q->lim = *lim;
	if (q->lim.max_text < 16)
		q->lim.max_text = 16;
	q->journal = journal;
	q->send = send;
	q->health = health;
	q->plat = plat;
	q->chats = strmap_new();
	q->attempts = strmap_new();
	q->keys = strmap_new();
	TAILQ_INIT(&q->active);
	TAILQ_INIT(&q->finished);
	q->pump_ev = evtimer_new(base, outq_pump_cb, q);
	q->done_ev = evtimer_new(base, outq_done_cb, q);
	q->drain_ev = evtimer_new(base, outq_drain_cb, q);
	if (q->pump_ev == NULL || q->done_ev == NULL || q->drain_ev == NULL)
		fatalx("%s: out of memory", __func__);
	return q;
}

static void
outq_detach(void *v)
{
	struct outq_attempt *a = v;

	a->q = NULL;
}

void
outq_free(struct outq *q)
{
	struct outq_chat *c;
	struct outq_item *it;
	struct outq_msg *m;

	if (q == NULL)
		return;
	strmap_free(q->attempts, outq_detach);
	while ((c = TAILQ_FIRST(&q->active)) != NULL) {
		while ((it = TAILQ_FIRST(&c->items)) != NULL) {
			TAILQ_REMOVE(&c->items, it, link);
			if (it->msg != NULL && --it->msg->left == 0)
				free(it->msg);
			free(it->key);
			free(it->reply_to);
			free(it->text);
			free(it);
		}
		outq_chat_free(q, c);
	}
	while ((m = TAILQ_FIRST(&q->finished)) != NULL) {
		TAILQ_REMOVE(&q->finished, m, link);
		free(m);
	}
	strmap_free(q->chats, NULL);
	strmap_free(q->keys, NULL);
	event_free(q->pump_ev);
	event_free(q->done_ev);
	event_free(q->drain_ev);
	free(q->error);
	free(q->name);
	free(q);
}

/* Queues one piece and keeps it in the journal. */
static void
outq_piece_add(struct outq *q, struct outq_chat *c, struct outq_msg *m, const char *key,
    const char *reply_to, const char *text, unsigned index, unsigned count)
{
	struct outq_item *it = outq_item_add(q, c, m, key, reply_to, text, index, count);
	char *js;

	if (q->journal == NULL)
		return;
	js = outq_item_json(it);
	if (intake_out_add(q->journal, key, js, strlen(js)) < 0)
		log_warnx("%s: a message to %s cannot be journaled; it is sent, but not kept "
		    "across a restart", q->name, c->chat_id);
	free(js);
}

int
outq_push(struct outq *q, const char *chat, const char *thread, const char *reply_to,
    const char *text, const char *key, outq_done_fn done, void *arg)
{
	struct outq_chat *c;
	struct outq_msg *m;
	char **pieces, pkey[OUTQ_MAX_KEY + 16];
	size_t n, i;

	if (!outq_key_valid(key) || chat == NULL || text == NULL)
		return -1;
	snprintf(pkey, sizeof(pkey), "%s.0", key);
	if (strmap_get(q->keys, pkey) != NULL)
		return -1;
	if (text[strspn(text, " \t\r\n")] == '\0')
		text = "(empty reply)";         /* platforms refuse empty messages */
	pieces = text_split(text, q->lim.max_text, &n);
	c = outq_chat_get(q, chat, thread);
	m = xcalloc(1, sizeof(*m));
	m->done = done;
	m->arg = arg;
	m->left = (unsigned)n;
	for (i = 0; i < n; i++) {
		snprintf(pkey, sizeof(pkey), "%s.%zu", key, i);
		outq_piece_add(q, c, m, pkey, i == 0 ? reply_to : NULL, pieces[i], (unsigned)i,
		    (unsigned)n);
	}
	text_pieces_free(pieces);
	outq_schedule(q, 0);
	return (int)n;
}

/* One piece read back from the journal. */
static void
outq_restore_one(void *arg, const char *key, const char *data, size_t len)
{
	struct outq *q = arg;
	cJSON *o = cJSON_ParseWithLength(data, len);
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "c");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "t");
	const cJSON *r = cJSON_GetObjectItemCaseSensitive(o, "r");
	const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, "x");
	const cJSON *i = cJSON_GetObjectItemCaseSensitive(o, "i");
	const cJSON *n = cJSON_GetObjectItemCaseSensitive(o, "n");

	if (strmap_get(q->keys, key) != NULL) {
		cJSON_Delete(o);
		return;
	}
	if (!cJSON_IsString(c) || !cJSON_IsString(x) || !cJSON_IsNumber(i) || !cJSON_IsNumber(n) ||
	    i->valuedouble < 0 || n->valuedouble < 1 || n->valuedouble > 100000) {
		log_warnx("%s: a kept message (%s) is damaged; dropped", q->name, key);
		if (q->journal != NULL)
			intake_sent(q->journal, key);
	} else
		outq_item_add(q, outq_chat_get(q, c->valuestring, cJSON_IsString(t) ? t->valuestring :
		    NULL), NULL, key, cJSON_IsString(r) ? r->valuestring : NULL, x->valuestring,
		    (unsigned)i->valuedouble, (unsigned)n->valuedouble);
	cJSON_Delete(o);
}

const struct outq_limits *
outq_get_limits(const struct outq *q)
{
	return &q->lim;
}

void
outq_set_limits(struct outq *q, const struct outq_limits *lim)
{
	size_t max_text = q->lim.max_text;

	q->lim = *lim;
	q->lim.max_text = max_text;
}

void
outq_set_journal(struct outq *q, struct intake *journal)
{
	q->journal = journal;
}

size_t
outq_restore(struct outq *q)
{
	size_t before = q->depth;

	if (q->journal == NULL)
		return 0;
	intake_each_outbound(q->journal, outq_restore_one, q);
	if (q->depth > before) {
		log_info("%s: %zu message piece(s) left by the previous worker will be sent",
		    q->name, q->depth - before);
		outq_schedule(q, 0);
	}
	return q->depth - before;
}

void
outq_pause(struct outq *q, double seconds)
{
	uint64_t until = mono_usec() + (uint64_t)(seconds > 0 ? seconds * 1e6 : 0);

	if (until > q->paused_until)
		q->paused_until = until;
	outq_schedule(q, 0);
}

void
outq_pause_chat(struct outq *q, const char *chat, const char *thread, double seconds)
{
	char *id = thread != NULL ? xasprintf("%s\x1f%s", chat, thread) : xstrdup(chat);
	struct outq_chat *c = strmap_get(q->chats, id);
	uint64_t until = mono_usec() + (uint64_t)(seconds > 0 ? seconds * 1e6 : 0);

	free(id);
	if (c != NULL && until > c->paused_until)
		c->paused_until = until;
}

size_t
outq_depth(const struct outq *q)
{
	return q->depth;
}

size_t
outq_inflight(const struct outq *q)
{
	return q->inflight;
}

const char *
outq_error(const struct outq *q)
{
	return q->error;
}

void
outq_drain(struct outq *q, uint64_t deadline_usec, void (*cb)(void *), void *arg)
{
	uint64_t now = mono_usec(), d = deadline_usec > now ? deadline_usec - now : 0;
	struct timeval tv = { (time_t)(d / 1000000), (suseconds_t)(d % 1000000) };

	q->drain_cb = cb;
	q->drain_arg = arg;
	q->drain_deadline = deadline_usec;
	evtimer_add(q->drain_ev, &tv);
	outq_drain_check(q);
}
