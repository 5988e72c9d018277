/* fz_hub.c - the hub stand-in of the platform harnesses. */
#include "fz_hub.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include <cjson/cJSON.h>

#include "fz_util.h"
#include "hub.h"
#include "util.h"

struct hub {
	int unused;
};

/* A message to finish from the loop. */
struct fz_action {
	size_t msg;
	plat_done_fn done;
	void *arg;
	struct fz_action *next;
};

static struct {
	struct hub hub;
	struct fz_hub_conf conf;
	void *self;
	struct fz_hub_msg *msgs;
	size_t nmsgs;
	struct fz_action *queue, **tail;
	struct event *ev;
	enum plat_state state;
	unsigned reports;
	unsigned *sent;                 /* callback count of each send */
	size_t nsends;
} fz;

static char *
dup_or_null(const char *s)
{
	return s != NULL ? xstrdup(s) : NULL;
}

static void
fz_sent_cb(void *arg, int ok)
{
	size_t i = (size_t)(uintptr_t)arg;

	(void)ok;
	FZ_CHECK(i < fz.nsends, "a send callback for an unknown send");
	fz.sent[i]++;
	FZ_CHECK(fz.sent[i] == 1, "send %zu: callback called %u times", i, fz.sent[i]);
}

/* Answers message i with an echo (as the agent would) and finishes it. */
static void
fz_finish(size_t i, plat_done_fn done, void *arg)
{
	struct fz_hub_msg *m = &fz.msgs[i];

	m->finished = 1;
	if (fz.conf.echo && fz.self != NULL) {
		char *text = xasprintf("echo: %s", m->text);
		struct outbound out = {
			.chat_id = m->chat_id, .thread_id = m->thread_id,
			.reply_to = m->message_id, .text = text,
		};

		fz.sent = xrealloc(fz.sent, (fz.nsends + 1) * sizeof(*fz.sent));
		fz.sent[fz.nsends] = 0;
		fz.conf.ops->send(fz.self, &out, fz_sent_cb, (void *)(uintptr_t)fz.nsends++);
		free(text);
	}
	done(arg);
}

static void
fz_queue_cb(evutil_socket_t fd, short what, void *arg)
{
	struct fz_action *a;

	(void)fd;
	(void)what;
	(void)arg;
	while ((a = fz.queue) != NULL) {
		fz.queue = a->next;
		if (fz.queue == NULL)
			fz.tail = &fz.queue;
		fz_finish(a->msg, a->done, a->arg);
		free(a);
	}
}

struct hub *
fz_hub_begin(const struct fz_hub_conf *conf)
{
	memset(&fz, 0, sizeof(fz));
	fz.conf = *conf;
	fz.tail = &fz.queue;
	fz.ev = event_new(conf->base, -1, 0, fz_queue_cb, NULL);
	FZ_CHECK(fz.ev != NULL, "event_new");
	return &fz.hub;
}

void
fz_hub_set_self(void *self)
{
	fz.self = self;
}

int
fz_hub_pending(void)
{
	return fz.queue != NULL;
}

size_t
fz_hub_count(void)
{
	return fz.nmsgs;
}

const struct fz_hub_msg *
fz_hub_get(size_t i)
{
	return &fz.msgs[i];
}

enum plat_state
fz_hub_state(void)
{
	return fz.state;
}

unsigned
fz_hub_state_reports(void)
{
	return fz.reports;
}

size_t
fz_hub_sends(void)
{
	return fz.nsends;
}

int
fz_hub_sends_settled(void)
{
	size_t i;

	for (i = 0; i < fz.nsends; i++)
		if (fz.sent[i] != 1)
			return 0;
	return 1;
}

void
fz_hub_end(void)
{
	struct fz_action *a;
	size_t i;

	while ((a = fz.queue) != NULL) {
		fz.queue = a->next;
		free(a);
	}
	if (fz.ev != NULL)
		event_free(fz.ev);
	for (i = 0; i < fz.nmsgs; i++) {
		struct fz_hub_msg *m = &fz.msgs[i];

		free(m->platform);
		free(m->chat_id);
		free(m->thread_id);
		free(m->user_id);
		free(m->user_name);
		free(m->message_id);
		free(m->text);
	}
	free(fz.msgs);
	free(fz.sent);
	memset(&fz, 0, sizeof(fz));
}

/* ---- the hub's interface for platforms ---- */

void
hub_inbound(struct hub *h, const char *platform, const struct inbound *in, plat_done_fn done,
    void *arg)
{
	struct fz_hub_msg *m;
	size_t i = fz.nmsgs;

	FZ_CHECK(h == &fz.hub, "an inbound message for another hub");
	FZ_CHECK(platform != NULL && in->chat_id != NULL && in->user_id != NULL &&
	    in->message_id != NULL && in->text != NULL && done != NULL,
	    "an inbound message without its fields");
	fz.msgs = xrealloc(fz.msgs, (fz.nmsgs + 1) * sizeof(*fz.msgs));
	m = &fz.msgs[fz.nmsgs++];
	memset(m, 0, sizeof(*m));
	m->platform = xstrdup(platform);
	m->chat_id = xstrdup(in->chat_id);
	m->thread_id = dup_or_null(in->thread_id);
	m->user_id = xstrdup(in->user_id);
	m->user_name = dup_or_null(in->user_name);
	m->message_id = xstrdup(in->message_id);
	m->text = xstrdup(in->text);
	m->chat_type = in->chat_type;
	m->time = in->time;
	m->addressed = in->addressed;
	if (fz.conf.mode == FZ_HUB_DONE) {
		fz_finish(i, done, arg);
	} else if (fz.conf.mode == FZ_HUB_LATER) {
		struct fz_action *a = xcalloc(1, sizeof(*a));

		a->msg = i;
		a->done = done;
		a->arg = arg;
		*fz.tail = a;
		fz.tail = &a->next;
		event_active(fz.ev, EV_TIMEOUT, 0);
	}
}

void
hub_platform_state(struct hub *h, const char *platform, enum plat_state st, const char *detail)
{
	FZ_CHECK(h == &fz.hub && platform != NULL, "a state report for another hub");
	(void)detail;
	fz.state = st;
	fz.reports++;
}

cJSON *
hub_status_json(struct hub *h)
{
	cJSON *o;

	FZ_CHECK(h == &fz.hub, "status of another hub");
	if (fz.conf.no_status)
		return NULL;
	o = cJSON_CreateObject();
	cJSON_AddNumberToObject(o, "worker_pid", 1);
	cJSON_AddStringToObject(o, "agent", "echo");
	cJSON_AddItemToObject(o, "platforms", cJSON_CreateArray());
	return o;
}
