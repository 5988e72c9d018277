/* kit.c - a platform's journal, queue and link, tied to the hub (see kit.h). */
#include "kit.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <event2/event.h>

#include "config.h"
#include "hub.h"
#include "log.h"
#include "strmap.h"
#include "util.h"

/* How long replies in flight may take to leave at a stop, and the whole stop. */
#define KIT_DRAIN_USEC  (2 * 1000000ULL)
#define KIT_STOP_USEC   (4 * 1000000ULL)

/* One message handed to the hub, until it is handled. */
struct kit_taken {
	struct kit *k;
	char *id;
};

struct kit_staged {
	char *id, *json;
};

struct kit_commit_ctx {
	struct kit *k;
	struct kit_staged *batch;
	size_t n;
	intake_commit_fn cb;
	void *arg;
};

struct kit_send_ctx;
TAILQ_HEAD(kit_sends, kit_send_ctx);

struct kit {
	struct event_base *base;
	struct hub *hub;
	char *name;
	struct kit_ops ops;
	void *plat;
	struct intake *journal;
	struct outq *q;
	struct link *link;

	struct kit_staged *staged;
	size_t nstaged, staged_cap;
	struct strmap *taken;           /* id -> kit_taken */
	struct strmap *reply_seq;       /* inbound id -> pieces sent in reply */
	unsigned long seq;              /* keys of messages that reply to nothing */
	struct kit_sends sends;         /* sends whose callback is still due */

	char *queue_error;
	int stopping, closed, syncing;
	plat_stopped_fn stopped_cb;
	void *stopped_arg;
	struct event *stop_ev, *now_ev, *open_ev;
	char *state_dir;
	unsigned open_fails;
};

/* ---- states ------------------------------------------------------------ */

static enum plat_state
kit_plat_state(enum link_state st)
{
	switch (st) {
	case LINK_CONNECTING:
		return PLAT_CONNECTING;
	case LINK_UP:
		return PLAT_UP;
	case LINK_BACKOFF:
		return PLAT_BACKOFF;
	case LINK_UNAUTHORIZED:
		return PLAT_UNAUTHORIZED;
	default:
		return PLAT_STOPPED;
	}
}

/* Reports the link's state; "up" carries the queue's trouble when there is some. */
static void
kit_report(struct kit *k)
{
	enum link_state st = link_state(k->link);
	const char *d = link_detail(k->link);

	if (st == LINK_UP && k->queue_error != NULL)
		d = k->queue_error;
	hub_platform_state(k->hub, k->name, kit_plat_state(st), d[0] != '\0' ? d : NULL);
}

static void
kit_link_report(void *arg, enum link_state st, const char *detail)
{
	(void)st;
	(void)detail;
	kit_report(arg);
}

static void
kit_queue_health(void *arg, const char *why)
{
	struct kit *k = arg;

	free(k->queue_error);
	k->queue_error = why != NULL ? xstrdup(why) : NULL;
	kit_report(k);
}

static void
kit_connect(void *arg)
{
	struct kit *k = arg;

	k->ops.connect(k->plat);
}

static void
kit_send_attempt(void *arg, const struct outq_piece *p, struct outq_attempt *a)
{
	struct kit *k = arg;

	k->ops.send(k->plat, p, a);
}

/* ---- inbound ------------------------------------------------------------- */

static const char *const kit_chat_types[] = { "dm", "group", "thread" };

/* The journal's form of one message. */
static char *
kit_inbound_json(const struct inbound *m)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (o == NULL || !cJSON_AddStringToObject(o, "chat", m->chat_id) ||
	    !cJSON_AddStringToObject(o, "type", kit_chat_types[m->chat_type]) ||
	    (m->thread_id != NULL && !cJSON_AddStringToObject(o, "thread", m->thread_id)) ||
	    !cJSON_AddStringToObject(o, "user", m->user_id) ||
	    (m->user_name != NULL && !cJSON_AddStringToObject(o, "name", m->user_name)) ||
	    !cJSON_AddStringToObject(o, "text", m->text) ||
	    !cJSON_AddNumberToObject(o, "time", (double)m->time) ||
	    !cJSON_AddBoolToObject(o, "addressed", m->addressed))
		fatalx("%s: out of memory", __func__);
	s = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (s == NULL)
		fatalx("%s: out of memory", __func__);
	return s;
}

static const char *
kit_str(const cJSON *o, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Reads a journaled message back; returns 0, or -1 when damaged. */
static int
kit_inbound_parse(const cJSON *o, const char *id, struct inbound *m)
{
	const char *type = kit_str(o, "type");
	const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "time");
	size_t i;

	memset(m, 0, sizeof(*m));
	m->message_id = id;
	m->chat_id = kit_str(o, "chat");
	m->thread_id = kit_str(o, "thread");
	m->user_id = kit_str(o, "user");
	m->user_name = kit_str(o, "name");
	m->text = kit_str(o, "text");
	m->addressed = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, "addressed"));
	if (m->chat_id == NULL || m->user_id == NULL || m->text == NULL || type == NULL ||
	    !cJSON_IsNumber(t) || t->valuedouble < 0 || t->valuedouble > 4e12)
		return -1;
	m->time = (time_t)t->valuedouble;
	for (i = 0; i < ARRAY_LEN(kit_chat_types); i++)
		if (strcmp(type, kit_chat_types[i]) == 0) {
			m->chat_type = (enum chat_type)i;
			return 0;
		}
	return -1;
}

static void
kit_done(void *arg)
{
	struct kit_taken *t = arg;
	struct kit *k = t->k;

	strmap_del(k->taken, t->id);
	strmap_del(k->reply_seq, t->id);
	intake_done(k->journal, t->id);
	free(t->id);
	free(t);
}

/* Hands one journaled message to the hub. */
static void
kit_deliver(struct kit *k, const char *id, const char *json, size_t len)
{
	cJSON *o;
	struct inbound m;
	struct kit_taken *t;

	if (strmap_get(k->taken, id) != NULL)
		return;
	o = cJSON_ParseWithLength(json, len);
	if (o == NULL || kit_inbound_parse(o, id, &m) < 0) {
		log_warnx("%s: a journaled message (%s) is damaged; dropped", k->name, id);
		intake_done(k->journal, id);
		cJSON_Delete(o);
		return;
	}
	t = xcalloc(1, sizeof(*t));
	t->k = k;
	t->id = xstrdup(id);
	strmap_put(k->taken, id, t);
	hub_inbound(k->hub, k->name, &m, kit_done, t);
	cJSON_Delete(o);
}

static void
kit_replay_one(void *arg, const char *id, const char *data, size_t len)
{
	kit_deliver(arg, id, data, len);
}

enum intake_add
kit_inbound(struct kit *k, const struct inbound *m)
{
	char *json;
	enum intake_add r;

	if (k->journal == NULL || m->message_id == NULL || m->chat_id == NULL || m->user_id == NULL || m->text == NULL)
		return INTAKE_INVALID;
	json = kit_inbound_json(m);
	r = intake_add(k->journal, m->message_id, json, strlen(json));
	if (r != INTAKE_NEW) {
		free(json);
		return r;
	}
	if (k->nstaged == k->staged_cap) {
		k->staged_cap = k->staged_cap ? k->staged_cap * 2 : 16;
		k->staged = xrealloc(k->staged, k->staged_cap * sizeof(*k->staged));
	}
	k->staged[k->nstaged].id = xstrdup(m->message_id);
	k->staged[k->nstaged].json = json;
	k->nstaged++;
	return INTAKE_NEW;
}

static void
kit_committed(void *arg, int ok)
{
	struct kit_commit_ctx *c = arg;
	size_t i;

	for (i = 0; i < c->n; i++) {
		if (ok && !c->k->stopping)
			kit_deliver(c->k, c->batch[i].id, c->batch[i].json, strlen(c->batch[i].json));
		free(c->batch[i].id);
		free(c->batch[i].json);
	}
	free(c->batch);
	if (c->cb != NULL)
		c->cb(c->arg, ok);
	free(c);
}

void
kit_commit(struct kit *k, const char *cursor, intake_commit_fn cb, void *arg)
{
	struct kit_commit_ctx *c = xcalloc(1, sizeof(*c));

	c->k = k;
	c->batch = k->staged;
	c->n = k->nstaged;
	c->cb = cb;
	c->arg = arg;
	k->staged = NULL;
	k->nstaged = k->staged_cap = 0;
	if (k->journal == NULL)
		fatalx("%s: %s: commit before the journal is open", k->name, __func__);
	intake_commit(k->journal, cursor, kit_committed, c);
}

const char *
kit_cursor(const struct kit *k)
{
	return k->journal != NULL ? intake_cursor(k->journal) : NULL;
}

/* ---- outbound ------------------------------------------------------------ */

struct kit_send_ctx {
	TAILQ_ENTRY(kit_send_ctx) link;
	struct kit *k;
	plat_sent_fn cb;
	void *arg;
	int now;                        /* answered from the loop: already queued */
};

static void
kit_sent(void *arg, int ok)
{
	struct kit_send_ctx *c = arg;

	TAILQ_REMOVE(&c->k->sends, c, link);
	if (c->cb != NULL)
		c->cb(c->arg, ok);
	free(c);
}

/*
 * An id made fit for a key: printable, no spaces or dots; an id longer
 * than 100 bytes is replaced by a hash of it, so two long ids never share
 * a key.
 */
static void
kit_key_part(char *dst, size_t len, const char *id)
{
	size_t i, n = strlen(id);
	uint64_t h = 1469598103934665603ULL;

	if (n > 100) {
		for (i = 0; i < n; i++)
			h = (h ^ (unsigned char)id[i]) * 1099511628211ULL;
		snprintf(dst, len, "h%016llx", (unsigned long long)h);
		return;
	}
	for (i = 0; i < n && i + 1 < len; i++)
		dst[i] = (unsigned char)id[i] <= 0x20 || id[i] == 0x7f || id[i] == '.' ? '_' : id[i];
	dst[i] = '\0';
}

/*
 * The message's idempotency key: "r.<inbound id>.<n>" for the n-th piece
 * sent in reply to that message (the same when the next worker answers it
 * again), else one unique to this worker.  Returns n (0 for no reply).
 */
static uintptr_t
kit_key(struct kit *k, const struct outbound *msg, char *key, size_t len)
{
	char part[128];
	uintptr_t n;

	if (msg->reply_to != NULL && msg->reply_to[0] != '\0') {
		n = (uintptr_t)strmap_get(k->reply_seq, msg->reply_to);
		strmap_put(k->reply_seq, msg->reply_to, (void *)(n + 1));
		kit_key_part(part, sizeof(part), msg->reply_to);
		snprintf(key, len, "r.%s.%lu", part, (unsigned long)n);
		return n;
	}
	snprintf(key, len, "w%ld.%lu.%lu", (long)getpid(), (unsigned long)time(NULL), ++k->seq);
	return 0;
}

/* Answers the sends found already queued by an earlier worker. */
static void
kit_sent_now(evutil_socket_t fd, short what, void *arg)
{
	struct kit *k = arg;
	struct kit_send_ctx *c, *next;

	(void)fd;
	(void)what;
	for (c = TAILQ_FIRST(&k->sends); c != NULL; c = next) {
		next = TAILQ_NEXT(c, link);
		if (c->now)
			kit_sent(c, 1);
	}
}

void
kit_send(struct kit *k, const struct outbound *msg, plat_sent_fn cb, void *arg)
{
	struct kit_send_ctx *c = xcalloc(1, sizeof(*c));
	const char *reply_to;
	char key[200];

	c->k = k;
	c->cb = cb;
	c->arg = arg;
	TAILQ_INSERT_TAIL(&k->sends, c, link);
	/* only the first piece of a reply refers to the message it answers */
	reply_to = kit_key(k, msg, key, sizeof(key)) == 0 ? msg->reply_to : NULL;
	if (outq_push(k->q, msg->chat_id, msg->thread_id, reply_to, msg->text, key,
	    kit_sent, c) < 0) {
		/* the previous worker queued this very reply: it goes out once, from there */
		log_debug("%s: reply %s is already queued", k->name, key);
		c->now = 1;
		event_active(k->now_ev, EV_TIMEOUT, 0);
	}
}

/* ---- life cycle ------------------------------------------------------------ */

static void kit_stop_finish(struct kit *k);
static void kit_open_cb(evutil_socket_t fd, short what, void *arg);

static void
kit_stop_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct kit *k = arg;

	(void)fd;
	(void)what;
	if (!k->closed)
		log_warnx("%s: the connection did not close in time", k->name);
	kit_stop_finish(k);
}

struct kit *
kit_new(const struct plat_env *env, const struct kit_ops *ops, void *plat)
{
	struct kit *k = xcalloc(1, sizeof(*k));

	k->base = env->base;
	k->hub = env->hub;
	k->name = xstrdup(env->name);
	k->state_dir = xstrdup(env->state_dir);
	k->ops = *ops;
	k->plat = plat;
	k->link = link_new(env->base, env->name, &ops->link, kit_connect, kit_link_report, k);
	k->q = outq_new(env->base, env->name, &ops->limits, NULL, kit_send_attempt,
	    kit_queue_health, k);
	TAILQ_INIT(&k->sends);
	k->taken = strmap_new();
	k->reply_seq = strmap_new();
	k->stop_ev = evtimer_new(env->base, kit_stop_deadline, k);
	k->now_ev = evtimer_new(env->base, kit_sent_now, k);
	k->open_ev = evtimer_new(env->base, kit_open_cb, k);
	if (k->stop_ev == NULL || k->now_ev == NULL || k->open_ev == NULL)
		fatalx("%s: out of memory", __func__);
	return k;
}

static void
kit_taken_free(void *v)
{
	struct kit_taken *t = v;

	free(t->id);
	free(t);
}

void
kit_free(struct kit *k)
{
	struct kit_send_ctx *c;
	size_t i;

	if (k == NULL)
		return;
	outq_free(k->q);
	/* replies left for the next worker: their callbacks never run */
	while ((c = TAILQ_FIRST(&k->sends)) != NULL) {
		TAILQ_REMOVE(&k->sends, c, link);
		free(c);
	}
	link_free(k->link);
	intake_free(k->journal);
	for (i = 0; i < k->nstaged; i++) {
		free(k->staged[i].id);
		free(k->staged[i].json);
	}
	free(k->staged);
	strmap_free(k->taken, kit_taken_free);
	strmap_free(k->reply_seq, NULL);
	event_free(k->stop_ev);
	event_free(k->now_ev);
	event_free(k->open_ev);
	free(k->state_dir);
	free(k->queue_error);
	free(k->name);
	free(k);
}

/*
 * Opens the journal, replays it and starts the link; while another process
 * holds the journal (a worker not yet gone), retries with a backoff.
 */
static void
kit_open(struct kit *k)
{
	struct intake_opts io = { .base = k->base, .dir = k->state_dir, .name = k->name };
	struct link_opts lo = { .backoff_max_usec = 10000000 };
	char err[512];
	uint64_t d;
	struct timeval tv;

	if (k->stopping)
		return;
	k->journal = intake_open(&io, err, sizeof(err));
	if (k->journal == NULL) {
		d = link_backoff(&lo, k->open_fails++, 0);
		log_warnx("%s: %s; retrying in %.0f s", k->name, err, (double)d / 1e6);
		hub_platform_state(k->hub, k->name, PLAT_BACKOFF, err);
		tv.tv_sec = (time_t)(d / 1000000);
		tv.tv_usec = (suseconds_t)(d % 1000000);
		evtimer_add(k->open_ev, &tv);
		return;
	}
	outq_set_journal(k->q, k->journal);
	intake_each_inbound(k->journal, kit_replay_one, k);
	outq_restore(k->q);
	link_start(k->link);
}

static void
kit_open_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	kit_open(arg);
}

void
kit_start(struct kit *k)
{
	kit_open(k);
}

struct link *
kit_link(struct kit *k)
{
	return k->link;
}

struct intake *
kit_intake(struct kit *k)
{
	return k->journal;
}

const char *
kit_name(const struct kit *k)
{
	return k->name;
}

int
kit_stopping(const struct kit *k)
{
	return k->stopping;
}

static void
kit_synced(void *arg, int ok)
{
	struct kit *k = arg;
	plat_stopped_fn cb = k->stopped_cb;

	if (!ok)
		log_warnx("%s: the journal could not be synced at stop", k->name);
	link_stopped(k->link);
	k->stopped_cb = NULL;
	if (cb != NULL)
		cb(k->stopped_arg);
}

/* Everything is closed (or out of time): sync the journal, then report. */
static void
kit_stop_finish(struct kit *k)
{
	if (k->stopped_cb == NULL || k->syncing)
		return;
	k->syncing = 1;
	event_del(k->stop_ev);
	event_del(k->open_ev);
	if (k->journal != NULL)
		intake_sync(k->journal, kit_synced, k);
	else
		kit_synced(k, 1);
}

static void
kit_drained(void *arg)
{
	struct kit *k = arg;

	if (k->ops.close != NULL && !k->closed)
		k->ops.close(k->plat);
	else
		kit_closed(k);
}

void
kit_stop(struct kit *k, plat_stopped_fn cb, void *arg)
{
	struct timeval tv = { KIT_STOP_USEC / 1000000, KIT_STOP_USEC % 1000000 };

	if (k->stopping)
		return;
	k->stopping = 1;
	k->stopped_cb = cb;
	k->stopped_arg = arg;
	link_stop(k->link);
	evtimer_add(k->stop_ev, &tv);
	outq_drain(k->q, mono_usec() + KIT_DRAIN_USEC, kit_drained, k);
}

void
kit_closed(struct kit *k)
{
	k->closed = 1;
	if (k->stopping)
		kit_stop_finish(k);
}

struct outq *
kit_outq(struct kit *k)
{
	return k->q;
}

/* ---- vtable entries and config getters ----------------------------------------- */

void
kit_vt_start(void *self)
{
	kit_start(*(struct kit **)self);
}

void
kit_vt_send(void *self, const struct outbound *msg, plat_sent_fn cb, void *arg)
{
	kit_send(*(struct kit **)self, msg, cb, arg);
}

void
kit_vt_stop(void *self, plat_stopped_fn cb, void *arg)
{
	kit_stop(*(struct kit **)self, cb, arg);
}

static const cJSON *
kit_conf_get(const struct plat_env *env, const char *key)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(env->conf, key);

	return cJSON_IsNull(v) ? NULL : v;
}

int
kit_conf_str(const struct plat_env *env, const char *key, const char **out, char *err,
    size_t errlen)
{
	const cJSON *v = kit_conf_get(env, key);

	if (v == NULL)
		return 0;
	if (!cJSON_IsString(v)) {
		snprintf(err, errlen, "platforms.%s.%s: must be a string", env->name, key);
		return -1;
	}
	*out = v->valuestring;
	return 0;
}

int
kit_conf_bool(const struct plat_env *env, const char *key, int *out, char *err, size_t errlen)
{
	const cJSON *v = kit_conf_get(env, key);

	if (v == NULL)
		return 0;
	if (!cJSON_IsBool(v)) {
		snprintf(err, errlen, "platforms.%s.%s: must be true or false", env->name, key);
		return -1;
	}
	*out = cJSON_IsTrue(v);
	return 0;
}

int
kit_conf_url(const struct plat_env *env, const char *key, const char *dflt, char **out,
    char *err, size_t errlen)
{
	const char *v = dflt;
	size_t n;

	if (kit_conf_str(env, key, &v, err, errlen) < 0)
		return -1;
	if (v == NULL || (strncmp(v, "https://", 8) != 0 && strncmp(v, "http://", 7) != 0) ||
	    strpbrk(v, " \t\r\n") != NULL) {
		snprintf(err, errlen, "platforms.%s.%s: must be an http:// or https:// URL",
		    env->name, key);
		return -1;
	}
	*out = xstrdup(v);
	for (n = strlen(*out); n > 0 && (*out)[n - 1] == '/'; n--)
		(*out)[n - 1] = '\0';
	return 0;
}

int
kit_conf_secret(const struct plat_env *env, const char *key, const char *envname, char **out,
    char *err, size_t errlen)
{
	const char *v = NULL;

	if (kit_conf_str(env, key, &v, err, errlen) < 0)
		return -1;
	*out = v != NULL && v[0] != '\0' ? xstrdup(v) : config_secret(envname);
	if (*out == NULL || (*out)[0] == '\0' || strpbrk(*out, " \t\r\n") != NULL) {
		snprintf(err, errlen, "platforms.%s.%s: %s (set it, or %s)", env->name, key,
		    *out == NULL || (*out)[0] == '\0' ? "missing" : "must not hold blanks", envname);
		if (*out != NULL)
			explicit_bzero(*out, strlen(*out));
		free(*out);
		*out = NULL;
		return -1;
	}
	return 0;
}

struct event_base *
kit_base(struct kit *k)
{
	return k->base;
}

/* One number of the limits object, within [min, max]. */
static int
kit_conf_limit(const struct plat_env *env, const cJSON *o, const char *key, double min,
    double max, double *out, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);

	if (v == NULL)
		return 0;
	if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max) {
		snprintf(err, errlen, "platforms.%s.limits.%s: must be a number from %g to %g",
		    env->name, key, min, max);
		return -1;
	}
	*out = v->valuedouble;
	return 0;
}

int
kit_conf_limits(const struct plat_env *env, struct kit *k, char *err, size_t errlen)
{
	static const char *const known[] = { "chat_rate", "chat_burst", "global_rate",
		"global_burst", "inflight", "retry_for", NULL };
	const cJSON *o = kit_conf_get(env, "limits"), *v;
	struct outq_limits lim = k->ops.limits;
	double inflight = lim.inflight ? lim.inflight : 8, retry = lim.give_up_usec ?
	    (double)lim.give_up_usec / 1e6 : 600;
	size_t i;

	if (o == NULL)
		return 0;
	if (!cJSON_IsObject(o)) {
		snprintf(err, errlen, "platforms.%s.limits: must be an object", env->name);
		return -1;
	}
	cJSON_ArrayForEach(v, o) {
		for (i = 0; known[i] != NULL && strcmp(known[i], v->string) != 0; i++)
			;
		if (known[i] == NULL) {
			snprintf(err, errlen, "platforms.%s.limits.%s: unknown key", env->name,
			    v->string);
			return -1;
		}
	}
	if (kit_conf_limit(env, o, "chat_rate", 0.001, 1e6, &lim.chat_rate, err, errlen) < 0 ||
	    kit_conf_limit(env, o, "chat_burst", 1, 1e6, &lim.chat_burst, err, errlen) < 0 ||
	    kit_conf_limit(env, o, "global_rate", 0.001, 1e6, &lim.global_rate, err, errlen) < 0 ||
	    kit_conf_limit(env, o, "global_burst", 1, 1e6, &lim.global_burst, err, errlen) < 0 ||
	    kit_conf_limit(env, o, "inflight", 1, 1024, &inflight, err, errlen) < 0 ||
	    kit_conf_limit(env, o, "retry_for", 1, 7 * 86400, &retry, err, errlen) < 0)
		return -1;
	lim.inflight = (unsigned)inflight;
	lim.give_up_usec = (uint64_t)(retry * 1e6);
	k->ops.limits = lim;
	outq_set_limits(k->q, &lim);
	return 0;
}
