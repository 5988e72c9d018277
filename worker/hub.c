/*
 * hub.c - routing between platforms, sessions, commands and the agent,
 * and the worker's graceful teardown (the /restart transaction).
 *
 * A message the hub takes lives in a struct hub_msg until done(arg) is
 * called.  Agent-bound messages wait in their session's queue; one agent
 * call runs per session; the session stays busy until the reply has been
 * sent, so replies leave in order.  Commands are answered at once.
 *
 * Teardown runs in phases driven by the event loop: DRAIN (running agent
 * calls may finish, up to drain_timeout), SENDS (replies in flight leave,
 * bounded), STOP (state saved, platforms stopped, bounded), then the
 * finished callback.  Progress checks run from a deferred event, never
 * inside a platform's or the agent's callback chain.
 */
#include "hub.h"
#include "agent.h"
#include "commands.h"
#include "config.h"
#include "dedup.h"
#include "log.h"
#include "restart.h"
#include "session.h"
#include "text.h"
#include "util.h"

#include <event2/event.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#define FLUSH_DELAY_USEC 1000000ULL
/* Idle sessions leave memory (their history stays on disk) after this long. */
#define SESSION_IDLE_MS (10 * 60 * 1000ULL)

enum hub_phase {
	PH_RUN = 0,
	PH_DRAIN,
	PH_SENDS,
	PH_STOP,
	PH_DONE,
};

struct hub_plat {
	struct hub *h;
	char *name;
	const struct platform_ops *ops;
	void *self;
	char **allowed;
	char **admins;
	char *home_channel;
	enum plat_state state;
	char *detail;
	time_t since;
	struct dedup *dedup;
	int stop_pending;
	int home_notified;              /* the markerless online notice went out */
	int home_sending;
};

struct hub_sess;

struct hub_msg {
	TAILQ_ENTRY(hub_msg) entry;     /* in its session's queue */
	struct hub *h;
	struct hub_plat *p;
	struct hub_sess *s;             /* agent-bound messages only */
	char *chat_id, *thread_id, *user_id, *user_name, *message_id, *text;
	enum chat_type type;
	plat_done_fn done;
	void *done_arg;
	struct agent_call *call;
	int starting;                   /* inside agent_call(): a reply now is early */
	int early;
	int early_ok;
	char *early_text;
	int ack_sent;                   /* /restart: its reply's send finished */
	struct event *typing_ev;        /* refreshes "typing" while the agent works */
};

TAILQ_HEAD(msg_queue, hub_msg);

struct hub_sess {
	struct hub_sess *next;          /* hash chain */
	char *key;
	struct session *sess;
	struct msg_queue queue;
	struct hub_msg *running;        /* from agent call start until its reply is sent */
	uint64_t used_ms;               /* last activity, for evicting idle sessions */
};

struct hub_out {
	LIST_ENTRY(hub_out) entry;
	struct hub_plat *p;
	char *chat_id, *thread_id, *reply_to;
	char **pieces;
	size_t n, idx;
	int ok;
	void (*cb)(void *arg, int ok);
	void *arg;
};

struct hub {
	struct event_base *base;
	struct agent *agent;
	char *state_dir;
	char *sessions_dir;
	uint64_t drain_usec;
	long supervisor_pid;
	unsigned long generation;
	uint64_t start_us;
	uint64_t idle_ms;
	struct hub_callbacks cb;
	char **gateway_allowed;
	int gateway_allow_all;

	struct hub_plat **plats;
	size_t nplats;

	struct hub_sess **buckets;
	size_t nbuckets, nsess;

	size_t nrunning;                /* agent calls in progress */
	size_t nsending;                /* outbound texts in progress */
	LIST_HEAD(, hub_out) outs;

	struct event *flush_ev;
	int flush_armed;
	struct event *sweep_ev;
	int sweep_armed;
	struct event *progress_ev;

	int stopping;
	int exit_code;
	enum hub_phase phase;
	struct event *phase_ev;
	size_t nstopping;

	int restart_busy;
	int restart_proceeded;
	struct hub_msg *restart_msg;
	struct event *ack_ev;

	struct restart_marker *marker;
	int marker_sending;
	int marker_written;             /* a /restart of this worker wrote the marker */
	int home_notice;                /* restarted without a marker: tell home channels */
};

static void hub_progress(struct hub *h);
static void sess_pump(struct hub_sess *hs);

/* ---- small helpers ---- */

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static char **
list_copy(char *const *l)
{
	size_t n = 0, i;
	char **c;

	while (l != NULL && l[n] != NULL)
		n++;
	c = xcalloc(n + 1, sizeof(char *));
	for (i = 0; i < n; i++)
		c[i] = xstrdup(l[i]);
	return c;
}

static struct hub_plat *
plat_find(struct hub *h, const char *name)
{
	size_t i;

	for (i = 0; i < h->nplats; i++)
		if (strcmp(h->plats[i]->name, name) == 0)
			return h->plats[i];
	return NULL;
}

static struct event *
timer_new(struct hub *h, void (*fn)(evutil_socket_t, short, void *), void *arg)
{
	struct event *ev = event_new(h->base, -1, 0, fn, arg);

	if (ev == NULL)
		fatalx("event_new failed");
	return ev;
}

static void
timer_arm(struct event *ev, uint64_t usec)
{
	struct timeval tv = {
		.tv_sec = (time_t)(usec / 1000000),
		.tv_usec = (suseconds_t)(usec % 1000000),
	};

	if (event_add(ev, &tv) < 0)
		fatalx("event_add failed");
}

long
hub_memory_kb(void)
{
	char *s = read_file("/proc/self/status", 64 * 1024, NULL);
	char *p;
	long kb = 0;

	if (s == NULL)
		return 0;
	p = strstr(s, "\nVmRSS:");
	if (p != NULL)
		kb = strtol(p + 7, NULL, 10);
	free(s);
	return kb;
}

/* ---- authorization ---- */

/* 1 when list names this user: "*", the user id, or "@" + user name. */
static int
user_in(char *const *list, const char *user_id, const char *user_name)
{
	const char *name = user_name;

	if (name != NULL && name[0] == '@')
		name++;
	for (; list != NULL && *list != NULL; list++) {
		const char *it = *list;

		if (strcmp(it, "*") == 0 || strcmp(it, user_id) == 0)
			return 1;
		if (it[0] == '@' && name != NULL && *name != '\0' && strcasecmp(it + 1, name) == 0)
			return 1;
	}
	return 0;
}

static int
is_authorized(const struct hub *h, const struct hub_plat *p, const char *uid, const char *uname)
{
	return h->gateway_allow_all || user_in(p->allowed, uid, uname) ||
	    user_in(h->gateway_allowed, uid, uname) || user_in(p->admins, uid, uname);
}

/*
 * Admins are the platform's admins.  A platform with no admins lets its
 * authorized users run privileged commands (as the Python gateway did),
 * unless everyone is authorized: a public bot never lets strangers restart it.
 */
static int
is_admin(const struct hub *h, const struct hub_plat *p, const char *uid, const char *uname)
{
	if (p->admins[0] != NULL)
		return user_in(p->admins, uid, uname);
	if (h->gateway_allow_all || config_list_has(p->allowed, "*") ||
	    config_list_has(h->gateway_allowed, "*"))
		return 0;
	return is_authorized(h, p, uid, uname);
}

/* ---- persistence ---- */

static void
flush_now(struct hub *h)
{
	size_t i;
	struct hub_sess *hs;

	for (i = 0; i < h->nbuckets; i++)
		for (hs = h->buckets[i]; hs != NULL; hs = hs->next)
			if (session_dirty(hs->sess) && session_save(hs->sess) < 0)
				log_warn("saving session %s", hs->key);
	for (i = 0; i < h->nplats; i++)
		if (dedup_save(h->plats[i]->dedup) < 0)
			log_warn("saving handled message ids of %s", h->plats[i]->name);
}

static void
flush_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct hub *h = arg;

	(void)fd;
	(void)ev;
	h->flush_armed = 0;
	flush_now(h);
}

/* Saves sessions and handled ids a little later, batching many changes into one write. */
static void
flush_soon(struct hub *h)
{
	if (h->flush_armed)
		return;
	h->flush_armed = 1;
	timer_arm(h->flush_ev, FLUSH_DELAY_USEC);
}

/* ---- messages ---- */

static struct hub_msg *
msg_new(struct hub *h, struct hub_plat *p, const struct inbound *m, plat_done_fn done, void *arg)
{
	struct hub_msg *msg = xcalloc(1, sizeof(*msg));

	msg->h = h;
	msg->p = p;
	msg->chat_id = xstrdup(m->chat_id != NULL ? m->chat_id : "");
	msg->thread_id = dup_or_null(m->thread_id);
	msg->user_id = xstrdup(m->user_id != NULL ? m->user_id : "");
	msg->user_name = dup_or_null(m->user_name);
	msg->message_id = dup_or_null(m->message_id);
	msg->text = xstrdup(m->text != NULL ? m->text : "");
	msg->type = m->chat_type;
	msg->done = done;
	msg->done_arg = arg;
	return msg;
}

/* Stops refreshing the typing indicator of m. */
static void
typing_stop(struct hub_msg *m)
{
	if (m->typing_ev != NULL) {
		event_free(m->typing_ev);
		m->typing_ev = NULL;
	}
}

static void
typing_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct hub_msg *m = arg;

	(void)fd;
	(void)ev;
	m->p->ops->typing(m->p->self, m->chat_id, m->thread_id);
}

/*
 * Shows the platform's typing indicator in m's chat while the agent works,
 * refreshed before the platform lets it lapse (the hub, not the platform,
 * knows when an agent call runs).
 */
static void
typing_start(struct hub_msg *m)
{
	const struct platform_ops *ops = m->p->ops;
	uint64_t every = ops->typing_every_ms ? ops->typing_every_ms : 4000;
	struct timeval tv = { (time_t)(every / 1000), (suseconds_t)(every % 1000) * 1000 };

	if (ops->typing == NULL || m->typing_ev != NULL)
		return;
	ops->typing(m->p->self, m->chat_id, m->thread_id);
	m->typing_ev = event_new(m->h->base, -1, EV_PERSIST, typing_cb, m);
	if (m->typing_ev == NULL)
		fatalx("%s: out of memory", __func__);
	event_add(m->typing_ev, &tv);
}

static void
msg_free(struct hub_msg *m)
{
	if (m == NULL)
		return;
	typing_stop(m);
	free(m->chat_id);
	free(m->thread_id);
	free(m->user_id);
	free(m->user_name);
	free(m->message_id);
	free(m->text);
	free(m->early_text);
	free(m);
}

/* The message is handled: record its id, tell the platform, free it. */
static void
msg_finish(struct hub_msg *m)
{
	struct hub *h = m->h;

	if (m->message_id != NULL) {
		dedup_add(m->p->dedup, m->message_id);
		flush_soon(h);
	}
	if (m->done != NULL)
		m->done(m->done_arg);
	msg_free(m);
}

/* ---- outbound ---- */

static void out_next(struct hub_out *o);

static void
out_sent(void *arg, int ok)
{
	struct hub_out *o = arg;

	o->idx++;
	if (!ok) {
		/* The rest would arrive without its beginning: give up on this text. */
		o->ok = 0;
		o->idx = o->n;
	}
	out_next(o);
}

/* Sends the next piece, or finishes.  o may be freed on return. */
static void
out_next(struct hub_out *o)
{
	struct hub *h = o->p->h;
	struct outbound ob;

	if (o->idx >= o->n) {
		LIST_REMOVE(o, entry);
		h->nsending--;
		if (o->cb != NULL)
			o->cb(o->arg, o->ok);
		free(o->chat_id);
		free(o->thread_id);
		free(o->reply_to);
		text_pieces_free(o->pieces);
		free(o);
		hub_progress(h);
		return;
	}
	ob.chat_id = o->chat_id;
	ob.thread_id = o->thread_id;
	ob.reply_to = o->reply_to;
	ob.text = o->pieces[o->idx];
	o->p->ops->send(o->p->self, &ob, out_sent, o);
}

/* Sends text (split to the platform's max_text) and calls cb(arg, ok) once all pieces went. */
static void
hub_send(struct hub_plat *p, const char *chat, const char *thread, const char *reply_to,
    const char *text, void (*cb)(void *, int), void *arg)
{
	struct hub_out *o = xcalloc(1, sizeof(*o));

	o->p = p;
	o->chat_id = xstrdup(chat);
	o->thread_id = dup_or_null(thread);
	o->reply_to = dup_or_null(reply_to);
	o->pieces = text_split(text, p->ops->max_text > 0 ? p->ops->max_text : 4096, &o->n);
	if (o->n == 0) {
		text_pieces_free(o->pieces);
		o->pieces = text_split("(empty reply)", 4096, &o->n);
	}
	o->ok = 1;
	o->cb = cb;
	o->arg = arg;
	LIST_INSERT_HEAD(&p->h->outs, o, entry);
	p->h->nsending++;
	out_next(o);
}

/* Replies to msg; msg_finish() runs once the reply has been sent. */
static void
reply_sent_finish(void *arg, int ok)
{
	struct hub_msg *m = arg;

	if (!ok)
		log_warnx("%s: a reply to chat could not be delivered", m->p->name);
	msg_finish(m);
}

static void
reply_and_finish(struct hub_msg *m, const char *text)
{
	hub_send(m->p, m->chat_id, m->thread_id, m->message_id, text, reply_sent_finish, m);
}

/* ---- sessions ---- */

static uint32_t
key_hash(const char *s)
{
	uint32_t x = 2166136261u;

	for (; *s != '\0'; s++) {
		x ^= (unsigned char)*s;
		x *= 16777619u;
	}
	return x;
}

static void
sess_rehash(struct hub *h)
{
	size_t nb = h->nbuckets * 4, i;
	struct hub_sess **b = xcalloc(nb, sizeof(*b));

	for (i = 0; i < h->nbuckets; i++) {
		struct hub_sess *hs = h->buckets[i], *next;

		for (; hs != NULL; hs = next) {
			size_t k = key_hash(hs->key) & (nb - 1);

			next = hs->next;
			hs->next = b[k];
			b[k] = hs;
		}
	}
	free(h->buckets);
	h->buckets = b;
	h->nbuckets = nb;
}

static struct hub_sess *
sess_find(struct hub *h, const char *key)
{
	struct hub_sess *hs = h->buckets[key_hash(key) & (h->nbuckets - 1)];

	for (; hs != NULL; hs = hs->next)
		if (strcmp(hs->key, key) == 0)
			return hs;
	return NULL;
}

/* How often idle sessions are looked for: a sixth of the idle time, at most a minute. */
static uint64_t
sweep_usec(const struct hub *h)
{
	uint64_t u = h->idle_ms * 1000 / 6;

	return u < 60 * 1000000ULL ? (u > 0 ? u : 1) : 60 * 1000000ULL;
}

static struct hub_sess *
sess_get(struct hub *h, const char *key)
{
	struct hub_sess *hs = sess_find(h, key);
	size_t b;

	if (hs != NULL) {
		hs->used_ms = mono_msec();
		return hs;
	}
	if (!h->sweep_armed) {
		h->sweep_armed = 1;
		timer_arm(h->sweep_ev, sweep_usec(h));
	}
	if (h->nsess >= h->nbuckets * 2)
		sess_rehash(h);
	hs = xcalloc(1, sizeof(*hs));
	hs->key = xstrdup(key);
	hs->sess = session_open(h->sessions_dir, key);
	TAILQ_INIT(&hs->queue);
	hs->used_ms = mono_msec();
	b = key_hash(key) & (h->nbuckets - 1);
	hs->next = h->buckets[b];
	h->buckets[b] = hs;
	h->nsess++;
	return hs;
}

static char *
msg_session_key(const struct hub_msg *m)
{
	struct inbound in = {
		.chat_id = m->chat_id, .chat_type = m->type, .thread_id = m->thread_id,
		.user_id = m->user_id,
	};

	return session_key(m->p->name, &in);
}

/* 1 when a message with this id is already waiting or running in the session. */
static int
sess_has_id(const struct hub_sess *hs, const char *id)
{
	const struct hub_msg *m;

	if (id == NULL)
		return 0;
	if (hs->running != NULL && hs->running->message_id != NULL &&
	    strcmp(hs->running->message_id, id) == 0)
		return 1;
	TAILQ_FOREACH(m, &hs->queue, entry)
		if (m->message_id != NULL && strcmp(m->message_id, id) == 0)
			return 1;
	return 0;
}

static void sess_free(struct hub_sess *hs);

/* Frees sessions idle for SESSION_IDLE_MS (saved first); runs while any exist. */
static void
sweep_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct hub *h = arg;
	uint64_t now = mono_msec();
	size_t i, freed = 0;

	(void)fd;
	(void)ev;
	for (i = 0; i < h->nbuckets; i++) {
		struct hub_sess **pp = &h->buckets[i];

		while (*pp != NULL) {
			struct hub_sess *hs = *pp;

			if (hs->running != NULL || !TAILQ_EMPTY(&hs->queue) ||
			    now - hs->used_ms < h->idle_ms ||
			    (session_dirty(hs->sess) && session_save(hs->sess) < 0)) {
				pp = &hs->next;
				continue;
			}
			*pp = hs->next;
			h->nsess--;
			sess_free(hs);
			freed++;
		}
	}
	/* Histories are large and scattered: hand their pages back. */
	if (freed > 0)
		heap_trim();
	h->sweep_armed = h->nsess > 0;
	if (h->sweep_armed)
		timer_arm(h->sweep_ev, sweep_usec(h));
}

/* ---- agent calls ---- */

static void
agent_reply_sent(void *arg, int ok)
{
	struct hub_msg *m = arg;
	struct hub_sess *hs = m->s;

	if (!ok)
		log_warnx("%s: an agent reply could not be delivered", m->p->name);
	hs->running = NULL;
	hs->used_ms = mono_msec();
	msg_finish(m);
	sess_pump(hs);
}

/* The agent answered m: extend the history, send the reply. */
static void
process_reply(struct hub_msg *m, int ok, const char *text)
{
	struct hub *h = m->h;
	struct hub_sess *hs = m->s;

	m->call = NULL;
	h->nrunning--;
	typing_stop(m);
	if (ok) {
		session_append(hs->sess, "user", m->text);
		session_append(hs->sess, "assistant", text);
		flush_soon(h);
	}
	hub_progress(h);
	hub_send(m->p, m->chat_id, m->thread_id, m->message_id,
	    *text != '\0' ? text : "(the agent returned an empty reply)", agent_reply_sent, m);
}

static void
agent_replied(void *arg, int ok, const char *text)
{
	struct hub_msg *m = arg;

	if (m->starting) {
		/* Answered inside agent_call(): finish once it has returned. */
		m->early = 1;
		m->early_ok = ok;
		m->early_text = xstrdup(text != NULL ? text : "");
		return;
	}
	process_reply(m, ok, text != NULL ? text : "");
}

/* Starts the next queued message of the session when it is idle. */
static void
sess_pump(struct hub_sess *hs)
{
	struct hub_msg *m = TAILQ_FIRST(&hs->queue);
	struct hub *h;
	struct agent_req req;
	struct agent_call *c;

	if (m == NULL || hs->running != NULL)
		return;
	h = m->h;
	if (h->stopping || h->restart_busy)
		return;
	TAILQ_REMOVE(&hs->queue, m, entry);
	hs->running = m;
	h->nrunning++;
	memset(&req, 0, sizeof(req));
	req.session = hs->key;
	req.platform = m->p->name;
	req.chat_id = m->chat_id;
	req.user_id = m->user_id;
	req.text = m->text;
	/* The echo backend ignores the history: spare it the copy of up to 200 entries. */
	if (strcmp(agent_backend(h->agent), "echo") != 0)
		req.history = session_history(hs->sess);
	m->starting = 1;
	c = agent_call(h->agent, &req, agent_replied, m);
	m->starting = 0;
	if (m->early)
		process_reply(m, m->early_ok, m->early_text);
	else if (c == NULL)
		process_reply(m, 0, "the agent could not be started");
	else {
		m->call = c;
		typing_start(m);
	}
}

/* ---- commands ---- */

static void cmd_restart(struct hub_msg *m);

static char *
whoami_text(struct hub_msg *m)
{
	static const char *const types[] = { "dm", "group", "thread" };
	char *key = msg_session_key(m);
	char *s = xasprintf("platform: %s\nuser id: %s\nuser name: %s\nchat: %s (%s)%s%s\n"
	    "session: %s\nauthorized: yes\nadmin: %s",
	    m->p->name, m->user_id, m->user_name != NULL ? m->user_name : "-", m->chat_id,
	    types[m->type <= CHAT_THREAD ? m->type : 0],
	    m->thread_id != NULL ? "\nthread: " : "", m->thread_id != NULL ? m->thread_id : "",
	    key, is_admin(m->h, m->p, m->user_id, m->user_name) ? "yes" : "no");

	free(key);
	return s;
}

static const char *
cmd_stop_run(struct hub_msg *m)
{
	char *key = msg_session_key(m);
	struct hub_sess *hs = sess_find(m->h, key);
	struct hub_msg *r;

	free(key);
	if (hs == NULL || hs->running == NULL || hs->running->call == NULL)
		return "Nothing is running in this conversation.";
	r = hs->running;
	if (!cmd_may_stop(r->user_id, m->user_id, is_admin(m->h, m->p, m->user_id,
	    m->user_name))) {
		log_info("%s: /stop by user %s refused: the call in %s is another user's",
		    m->p->name, m->user_id, hs->key);
		return CMD_STOP_REFUSED;
	}
	agent_cancel(r->call);
	r->call = NULL;
	m->h->nrunning--;
	hs->running = NULL;
	log_info("%s: agent call in %s stopped by /stop", m->p->name, hs->key);
	msg_finish(r);
	sess_pump(hs);
	return "Stopped the agent's running answer.";
}

static void
cmd_new_session(struct hub_msg *m)
{
	char *key = msg_session_key(m);
	struct hub_sess *hs = sess_get(m->h, key);

	free(key);
	session_reset(hs->sess);
}

/* Runs a gateway command; its reply finishes the message. */
static void
cmd_run(struct hub_msg *m, enum cmd c)
{
	char *owned = NULL;
	const char *reply;
	cJSON *st;

	switch (c) {
	case CMD_HELP:
		reply = cmd_help_text();
		break;
	case CMD_PING:
		reply = "pong";
		break;
	case CMD_STATUS:
		st = hub_status_json(m->h);
		reply = owned = cmd_status_text(st);
		cJSON_Delete(st);
		break;
	case CMD_NEW:
	case CMD_RESET:
		cmd_new_session(m);
		reply = "Started a new conversation.";
		break;
	case CMD_STOP:
		reply = cmd_stop_run(m);
		break;
	case CMD_WHOAMI:
		reply = owned = whoami_text(m);
		break;
	case CMD_RESTART:
		cmd_restart(m);
		return;
	case CMD_NONE:
	default:
		fatalx("cmd_run: not a command");
	}
	reply_and_finish(m, reply);
	free(owned);
}

/* ---- the /restart transaction ---- */

#define RESTART_UNMARKED_TEXT "Restarting the gateway... The restart marker could not be " \
	"saved, so no \"Gateway online\" notice will follow in this chat."

static void
restart_proceed(struct hub *h)
{
	struct hub_msg *m = h->restart_msg;

	if (h->restart_proceeded)
		return;
	h->restart_proceeded = 1;
	event_del(h->ack_ev);
	/* Handled before anything stops, so a redelivered /restart is not run again. */
	if (m->message_id != NULL) {
		dedup_add(m->p->dedup, m->message_id);
		if (dedup_save(m->p->dedup) < 0)
			log_warn("saving handled message ids of %s", m->p->name);
	}
	if (m->done != NULL)
		m->done(m->done_arg);
	m->done = NULL;
	if (m->ack_sent) {
		msg_free(m);
		h->restart_msg = NULL;
	}
	hub_shutdown(h, 75);
}

static void
restart_ack_sent(void *arg, int ok)
{
	struct hub_msg *m = arg;
	struct hub *h = m->h;

	if (!ok)
		log_warnx("%s: the restart reply could not be delivered", m->p->name);
	m->ack_sent = 1;
	if (!h->restart_proceeded)
		restart_proceed(h);
	else {
		msg_free(m);
		h->restart_msg = NULL;
	}
}

static void
restart_ack_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct hub *h = arg;

	(void)fd;
	(void)ev;
	log_warnx("the restart reply was not delivered in time; restarting anyway");
	restart_proceed(h);
}

/*
 * Writes the marker telling the next worker where to say "Gateway online".
 * Written before the reply, so the reply can say when it could not be.
 */
static int
restart_save_marker(struct hub *h, const struct hub_msg *m)
{
	struct restart_marker mk;

	memset(&mk, 0, sizeof(mk));
	mk.platform = m->p->name;
	mk.chat_id = m->chat_id;
	mk.thread_id = m->thread_id;
	mk.message_id = m->message_id;
	mk.generation = h->generation;
	restart_marker_stamp(&mk);
	if (restart_marker_write(h->state_dir, &mk) == 0) {
		h->marker_written = 1;
		return 0;
	}
	log_warn("writing the restart marker in %s", h->state_dir);
	return -1;
}

static void
cmd_restart(struct hub_msg *m)
{
	struct hub *h = m->h;
	const char *ack;

	if (!is_admin(h, m->p, m->user_id, m->user_name)) {
		log_info("%s: /restart refused for user %s", m->p->name, m->user_id);
		reply_and_finish(m, "Only an admin can restart the gateway.");
		return;
	}
	log_info("%s: /restart requested by user %s", m->p->name, m->user_id);
	h->restart_busy = 1;
	h->restart_msg = m;
	timer_arm(h->ack_ev, HUB_ACK_WAIT_USEC);
	/* Without a marker the next worker cannot answer here (unless it is home): say so now. */
	ack = "Restarting the gateway...";
	if (restart_save_marker(h, m) < 0 &&
	    (m->p->home_channel == NULL || strcmp(m->p->home_channel, m->chat_id) != 0))
		ack = RESTART_UNMARKED_TEXT;
	hub_send(m->p, m->chat_id, m->thread_id, m->message_id, ack, restart_ack_sent, m);
}

/* ---- intake ---- */

static void
refuse(struct hub_msg *m)
{
	log_info("%s: message from unauthorized user %s refused", m->p->name, m->user_id);
	if (m->type == CHAT_DM) {
		char *t = xasprintf("You are not authorized to use this gateway (user id %s).",
		    m->user_id);

		reply_and_finish(m, t);
		free(t);
	} else
		msg_finish(m);
}

static void
enqueue(struct hub_msg *m)
{
	char *key = msg_session_key(m);
	struct hub_sess *hs = sess_get(m->h, key);

	free(key);
	if (sess_has_id(hs, m->message_id)) {
		/* The same message again while the first copy is still in progress. */
		m->done(m->done_arg);
		msg_free(m);
		return;
	}
	m->s = hs;
	TAILQ_INSERT_TAIL(&hs->queue, m, entry);
	sess_pump(hs);
}

void
hub_inbound(struct hub *h, const char *platform, const struct inbound *in,
    plat_done_fn done, void *arg)
{
	struct hub_plat *p;
	struct hub_msg *m;
	enum cmd c;

	if (h->stopping || h->restart_busy)
		return;                 /* left unacknowledged for the next worker */
	p = plat_find(h, platform);
	if (p == NULL || in->chat_id == NULL || in->user_id == NULL) {
		log_warnx("inbound message from %s dropped: %s", platform,
		    p == NULL ? "unknown platform" : "no chat or user id");
		done(arg);
		return;
	}
	if (in->message_id != NULL && dedup_has(p->dedup, in->message_id)) {
		log_debug("%s: message %s already handled", platform, in->message_id);
		done(arg);
		return;
	}
	if (in->chat_type != CHAT_DM && !in->addressed) {
		done(arg);
		return;
	}
	m = msg_new(h, p, in, done, arg);
	if (!is_authorized(h, p, m->user_id, m->user_name)) {
		refuse(m);
		return;
	}
	c = cmd_parse(m->text, NULL);
	if (c != CMD_NONE)
		cmd_run(m, c);
	else
		enqueue(m);
}

/* ---- platform states ---- */

static void
online_sent(void *arg, int ok)
{
	struct hub *h = arg;

	h->marker_sending = 0;
	if (h->marker_written && h->marker != NULL) {
		/* a /restart came meanwhile: the marker on disk is its own now */
		restart_marker_free(h->marker);
		h->marker = NULL;
		return;
	}
	if (!ok || h->marker == NULL) {
		log_warnx("the online notice was not delivered; it will be retried");
		return;
	}
	if (restart_marker_delete(h->state_dir) < 0)
		log_warn("removing the restart marker");
	restart_marker_free(h->marker);
	h->marker = NULL;
}

/* Says "Gateway online" where the /restart came from (and in the home channel). */
static void
online_notice(struct hub *h, struct hub_plat *p)
{
	char *t = xasprintf("Gateway online (generation %lu, restarted in %llu ms)",
	    h->generation, (unsigned long long)restart_marker_elapsed_ms(h->marker));

	log_info("%s", t);
	h->marker_sending = 1;
	if (p->home_channel != NULL && strcmp(p->home_channel, h->marker->chat_id) != 0)
		hub_send(p, p->home_channel, NULL, NULL, t, NULL, NULL);
	hub_send(p, h->marker->chat_id, h->marker->thread_id, NULL, t, online_sent, h);
	free(t);
}

static void
home_notice_sent(void *arg, int ok)
{
	struct hub_plat *p = arg;

	p->home_sending = 0;
	if (ok)
		p->home_notified = 1;
	else
		log_warnx("%s: the online notice to the home channel was not delivered; "
		    "it will be retried", p->name);
}

/*
 * A restarted worker (generation > 0) with no marker (the last one could
 * not be written, or the restart came from a signal or the supervisor)
 * still says "Gateway online" in the platform's home channel, once.
 */
static void
home_notice(struct hub *h, struct hub_plat *p)
{
	char *t = xasprintf("Gateway online (generation %lu)", h->generation);

	log_info("%s: %s, in the home channel", p->name, t);
	p->home_sending = 1;
	hub_send(p, p->home_channel, NULL, NULL, t, home_notice_sent, p);
	free(t);
}

void
hub_platform_state(struct hub *h, const char *platform, enum plat_state st, const char *detail)
{
	struct hub_plat *p = plat_find(h, platform);
	char *line;
	int changed;

	if (p == NULL)
		return;
	changed = p->state != st || (detail == NULL) != (p->detail == NULL) ||
	    (detail != NULL && strcmp(detail, p->detail) != 0);
	if (changed) {
		if (p->state != st)
			p->since = time(NULL);
		p->state = st;
		free(p->detail);
		p->detail = dup_or_null(detail);
		log_info("%s: %s%s%s%s", platform, plat_state_name(st), detail != NULL ? " (" : "",
		    detail != NULL ? detail : "", detail != NULL ? ")" : "");
		if (h->cb.status != NULL) {
			line = hub_status_line(h);
			h->cb.status(h->cb.arg, line);
			free(line);
		}
	}
	if (st == PLAT_UP && h->marker != NULL && !h->marker_sending && !h->stopping &&
	    strcmp(h->marker->platform, platform) == 0)
		online_notice(h, p);
	if (st == PLAT_UP && h->home_notice && p->home_channel != NULL && !p->home_notified &&
	    !p->home_sending && !h->stopping)
		home_notice(h, p);
}

char *
hub_status_line(struct hub *h)
{
	char *s = xstrdup("");
	size_t i;

	for (i = 0; i < h->nplats; i++) {
		struct hub_plat *p = h->plats[i];
		char *n = xasprintf("%s%s%s: %s%s%s%s", s, i > 0 ? "; " : "", p->name,
		    plat_state_name(p->state), p->detail != NULL ? " (" : "",
		    p->detail != NULL ? p->detail : "", p->detail != NULL ? ")" : "");

		free(s);
		s = n;
	}
	if (h->stopping) {
		char *n = xasprintf("%s; %s", s, h->exit_code == 75 ? "restarting" : "stopping");

		free(s);
		s = n;
	}
	return s;
}

static cJSON *
jadd(cJSON *o, const char *k, cJSON *v)
{
	if (v == NULL || !cJSON_AddItemToObject(o, k, v))
		fatalx("out of memory");
	return v;
}

cJSON *
hub_status_json(struct hub *h)
{
	cJSON *o = cJSON_CreateObject(), *arr;
	size_t i;

	if (o == NULL)
		fatalx("out of memory");
	jadd(o, "worker_pid", cJSON_CreateNumber((double)getpid()));
	jadd(o, "supervisor_pid", h->supervisor_pid > 0 ?
	    cJSON_CreateNumber((double)h->supervisor_pid) : cJSON_CreateNull());
	jadd(o, "generation", cJSON_CreateNumber((double)h->generation));
	jadd(o, "uptime", cJSON_CreateNumber((double)((mono_usec() - h->start_us) / 1000) / 1000.0));
	arr = jadd(o, "platforms", cJSON_CreateArray());
	for (i = 0; i < h->nplats; i++) {
		struct hub_plat *p = h->plats[i];
		cJSON *po = cJSON_CreateObject();

		if (po == NULL || !cJSON_AddItemToArray(arr, po))
			fatalx("out of memory");
		jadd(po, "name", cJSON_CreateString(p->name));
		jadd(po, "state", cJSON_CreateString(plat_state_name(p->state)));
		jadd(po, "since", cJSON_CreateNumber((double)p->since));
		jadd(po, "detail", p->detail != NULL ? cJSON_CreateString(p->detail) :
		    cJSON_CreateNull());
	}
	jadd(o, "agent", cJSON_CreateString(h->agent != NULL ? agent_backend(h->agent) : "none"));
	jadd(o, "sessions", cJSON_CreateNumber((double)h->nsess));
	jadd(o, "running", cJSON_CreateNumber((double)h->nrunning));
	jadd(o, "memory_kb", cJSON_CreateNumber((double)hub_memory_kb()));
	jadd(o, "state", cJSON_CreateString(!h->stopping ? "running" :
	    h->exit_code == 75 ? "restarting" : "stopping"));
	return o;
}

/* ---- teardown ---- */

static void drain_end(struct hub *h);
static void sends_end(struct hub *h);
static void stop_end(struct hub *h);

static void
phase_timeout(evutil_socket_t fd, short ev, void *arg)
{
	struct hub *h = arg;

	(void)fd;
	(void)ev;
	switch (h->phase) {
	case PH_DRAIN:
		log_warnx("drain timeout: cancelling %zu running agent call(s)", h->nrunning);
		drain_end(h);
		break;
	case PH_SENDS:
		log_warnx("%zu outbound message(s) still in flight; stopping platforms", h->nsending);
		sends_end(h);
		break;
	case PH_STOP:
		log_warnx("%zu platform(s) did not stop in time", h->nstopping);
		stop_end(h);
		break;
	default:
		break;
	}
}

static void
cancelled_sent(void *arg, int ok)
{
	struct hub_msg *m = arg;

	(void)ok;
	m->s->running = NULL;
	/* Not done: the platform keeps the message for the next worker. */
	msg_free(m);
}

/* Cancels what is still running, drops what waits, and goes on to the SENDS phase. */
static void
drain_end(struct hub *h)
{
	const char *why = h->exit_code == 75 ?
	    "The gateway is restarting and the agent did not finish in time; "
	    "your message will be answered again after the restart." :
	    "The gateway is stopping and the agent did not finish in time; "
	    "your message will be answered again when it is back.";
	size_t i;

	if (h->phase != PH_DRAIN)
		return;
	event_del(h->phase_ev);
	h->phase = PH_SENDS;
	for (i = 0; i < h->nbuckets; i++) {
		struct hub_sess *hs;

		for (hs = h->buckets[i]; hs != NULL; hs = hs->next) {
			struct hub_msg *m;

			while ((m = TAILQ_FIRST(&hs->queue)) != NULL) {
				TAILQ_REMOVE(&hs->queue, m, entry);
				msg_free(m);
			}
			m = hs->running;
			if (m != NULL && m->call != NULL) {
				agent_cancel(m->call);
				m->call = NULL;
				h->nrunning--;
				hub_send(m->p, m->chat_id, m->thread_id, m->message_id, why,
				    cancelled_sent, m);
			}
		}
	}
	timer_arm(h->phase_ev, HUB_SEND_WAIT_USEC);
	hub_progress(h);
}

static void
plat_stopped(void *arg)
{
	struct hub_plat *p = arg;

	if (!p->stop_pending)
		return;
	p->stop_pending = 0;
	p->h->nstopping--;
	hub_progress(p->h);
}

/* Saves state and stops every platform (bounded). */
static void
sends_end(struct hub *h)
{
	size_t i;

	if (h->phase != PH_SENDS)
		return;
	event_del(h->phase_ev);
	h->phase = PH_STOP;
	flush_now(h);
	timer_arm(h->phase_ev, HUB_STOP_WAIT_USEC);
	for (i = 0; i < h->nplats; i++) {
		h->plats[i]->stop_pending = 1;
		h->nstopping++;
	}
	for (i = 0; i < h->nplats; i++)
		h->plats[i]->ops->stop(h->plats[i]->self, plat_stopped, h->plats[i]);
	hub_progress(h);
}

static void
stop_end(struct hub *h)
{
	if (h->phase != PH_STOP)
		return;
	event_del(h->phase_ev);
	h->phase = PH_DONE;
	flush_now(h);
	/* One syncfs makes every state file written without fsync durable. */
	if (sync_dir(h->state_dir) < 0)
		log_warn("syncing %s", h->state_dir);
	log_info("teardown finished (exit %d)", h->exit_code);
	if (h->cb.finished != NULL)
		h->cb.finished(h->cb.arg, h->exit_code);
}

static void
progress_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct hub *h = arg;

	(void)fd;
	(void)ev;
	if (h->phase == PH_DRAIN && h->nrunning == 0)
		drain_end(h);
	if (h->phase == PH_SENDS && h->nsending == 0)
		sends_end(h);
	if (h->phase == PH_STOP && h->nstopping == 0)
		stop_end(h);
}

/* Checks from the event loop whether the current teardown phase is over. */
static void
hub_progress(struct hub *h)
{
	if (h->stopping && h->phase != PH_DONE)
		event_active(h->progress_ev, EV_TIMEOUT, 0);
}

void
hub_shutdown(struct hub *h, int code)
{
	if (h->stopping) {
		if (h->phase == PH_DRAIN)
			drain_end(h);
		return;
	}
	h->stopping = 1;
	h->exit_code = code;
	h->phase = PH_DRAIN;
	log_info("%s: draining %zu running agent call(s) for up to %.1f s",
	    code == 75 ? "restarting" : "stopping", h->nrunning, (double)h->drain_usec / 1e6);
	if (h->cb.stopping != NULL)
		h->cb.stopping(h->cb.arg, code);
	if (h->cb.status != NULL) {
		char *line = hub_status_line(h);

		h->cb.status(h->cb.arg, line);
		free(line);
	}
	timer_arm(h->phase_ev, h->drain_usec);
	hub_progress(h);
}

void
hub_restart(struct hub *h)
{
	if (h->stopping || h->restart_busy)
		return;
	log_info("restart requested by signal");
	h->restart_busy = 1;
	hub_shutdown(h, 75);
}

/* ---- set-up ---- */

struct hub *
hub_new(const struct hub_opts *o)
{
	struct hub *h = xcalloc(1, sizeof(*h));

	h->base = o->base;
	h->agent = o->agent;
	h->state_dir = xstrdup(o->cfg->state_dir);
	h->sessions_dir = xasprintf("%s/sessions", h->state_dir);
	h->drain_usec = o->cfg->drain_usec;
	h->supervisor_pid = o->supervisor_pid;
	h->generation = o->generation;
	h->start_us = mono_usec();
	h->idle_ms = o->session_idle_ms > 0 ? o->session_idle_ms : SESSION_IDLE_MS;
	h->cb = o->cb;
	h->gateway_allowed = list_copy(o->cfg->gateway_allowed);
	h->gateway_allow_all = o->cfg->gateway_allow_all;
	h->nbuckets = 64;
	h->buckets = xcalloc(h->nbuckets, sizeof(*h->buckets));
	LIST_INIT(&h->outs);
	h->flush_ev = timer_new(h, flush_cb, h);
	h->sweep_ev = timer_new(h, sweep_cb, h);
	h->progress_ev = timer_new(h, progress_cb, h);
	h->phase_ev = timer_new(h, phase_timeout, h);
	h->ack_ev = timer_new(h, restart_ack_timeout, h);
	h->marker = restart_marker_read(h->state_dir);
	if (h->marker != NULL)
		log_info("restart marker found: online notice due in %s chat %s", h->marker->platform,
		    h->marker->chat_id);
	h->home_notice = h->marker == NULL && h->generation > 0;
	return h;
}

void
hub_add_platform(struct hub *h, const struct config_platform *pc,
    const struct platform_ops *ops, void *self)
{
	struct hub_plat *p = xcalloc(1, sizeof(*p));
	char *path;

	p->h = h;
	p->name = xstrdup(pc->name);
	p->ops = ops;
	p->self = self;
	p->allowed = list_copy(pc->allowed_users);
	p->admins = list_copy(pc->admins);
	p->home_channel = dup_or_null(pc->home_channel);
	p->state = PLAT_STOPPED;
	p->since = time(NULL);
	path = xasprintf("%s/%s.handled", h->state_dir, pc->name);
	p->dedup = dedup_new(path, HUB_DEDUP_CAP);
	free(path);
	h->plats = xrealloc(h->plats, (h->nplats + 1) * sizeof(*h->plats));
	h->plats[h->nplats++] = p;
}

void
hub_start(struct hub *h)
{
	size_t i;

	for (i = 0; i < h->nplats; i++) {
		struct hub_plat *p = h->plats[i];

		if (p->state == PLAT_STOPPED)
			hub_platform_state(h, p->name, PLAT_CONNECTING, NULL);
		p->ops->start(p->self);
	}
}

void
hub_free_platforms(struct hub *h)
{
	size_t i;

	for (i = 0; i < h->nplats; i++) {
		h->plats[i]->ops->free(h->plats[i]->self);
		h->plats[i]->self = NULL;
	}
}

static void
sess_free(struct hub_sess *hs)
{
	struct hub_msg *m;

	while ((m = TAILQ_FIRST(&hs->queue)) != NULL) {
		TAILQ_REMOVE(&hs->queue, m, entry);
		msg_free(m);
	}
	if (hs->running != NULL) {
		if (hs->running->call != NULL)
			agent_cancel(hs->running->call);
		msg_free(hs->running);
	}
	session_free(hs->sess);
	free(hs->key);
	free(hs);
}

void
hub_free(struct hub *h)
{
	size_t i;
	struct hub_out *o;

	if (h == NULL)
		return;
	for (i = 0; i < h->nbuckets; i++) {
		struct hub_sess *hs = h->buckets[i], *next;

		for (; hs != NULL; hs = next) {
			next = hs->next;
			sess_free(hs);
		}
	}
	free(h->buckets);
	while ((o = LIST_FIRST(&h->outs)) != NULL) {
		LIST_REMOVE(o, entry);
		free(o->chat_id);
		free(o->thread_id);
		free(o->reply_to);
		text_pieces_free(o->pieces);
		free(o);
	}
	for (i = 0; i < h->nplats; i++) {
		struct hub_plat *p = h->plats[i];

		free(p->name);
		config_list_free(p->allowed);
		config_list_free(p->admins);
		free(p->home_channel);
		free(p->detail);
		dedup_free(p->dedup);
		free(p);
	}
	free(h->plats);
	msg_free(h->restart_msg);
	restart_marker_free(h->marker);
	config_list_free(h->gateway_allowed);
	event_free(h->flush_ev);
	event_free(h->sweep_ev);
	event_free(h->progress_ev);
	event_free(h->phase_ev);
	event_free(h->ack_ev);
	free(h->sessions_dir);
	free(h->state_dir);
	free(h);
}
