/* lpoll.c - the long-poll loop of a platform on the kit (see lpoll.h). */
#include "lpoll.h"

#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "intake.h"
#include "kit.h"
#include "log.h"
#include "util.h"

struct lpoll {
	struct kit *kit;
	struct http_client *http;
	struct lpoll_ops ops;
	struct lpoll_opts o;
	void *plat;

	int running;
	int committing;                 /* a commit's callback is due */
	int orphan;                     /* freed while committing: the callback frees */
	struct http_call *call;
	struct event *timer;
	uint64_t started;               /* when the request in flight was made */
	double timeout;                 /* of the request in flight */
	unsigned long count;
	size_t events;                  /* of the answer being committed */
};

static void lpoll_poll(struct lpoll *lp);

static void
lpoll_after(struct lpoll *lp, uint64_t usec)
{
	struct timeval tv = { (time_t)(usec / 1000000), (suseconds_t)(usec % 1000000) };

	evtimer_add(lp->timer, &tv);
}

static void
lpoll_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	lpoll_poll(arg);
}

static void
lpoll_fail(struct lpoll *lp, enum link_fail kind, double retry_after, const char *why)
{
	lp->running = 0;
	link_fail(kit_link(lp->kit), kind, retry_after, why);
}

/* The commit of an answer's events: poll again, after the floor if it came back at once empty. */
static void
lpoll_committed(void *arg, int ok)
{
	struct lpoll *lp = arg;
	struct intake *in = kit_intake(lp->kit);
	uint64_t took = mono_usec() - lp->started, floor = lp->o.floor_usec ? lp->o.floor_usec :
	    1000000;
	double frac = lp->o.quick_fraction > 0 ? lp->o.quick_fraction : 0.5;

	lp->committing = 0;
	if (lp->orphan) {
		free(lp);
		return;
	}
	if (!lp->running)
		return;
	if (!ok) {
		lpoll_fail(lp, LINK_TRANSIENT, 0, in != NULL && intake_error(in) != NULL ?
		    intake_error(in) : "the journal cannot be written");
		return;
	}
	if (lp->events == 0 && (double)took < lp->timeout * 1e6 * frac && took < floor)
		lpoll_after(lp, floor - took);
	else
		lpoll_poll(lp);
}

static void
lpoll_done(void *arg, const struct http_response *r)
{
	struct lpoll *lp = arg;
	struct lpoll_answer a;

	lp->call = NULL;
	memset(&a, 0, sizeof(a));
	lp->ops.done(lp->plat, r, &a);
	if (a.verdict == LPOLL_FAIL) {
		free(a.cursor);
		lpoll_fail(lp, a.kind, a.retry_after, a.why[0] ? a.why : "poll failed");
		return;
	}
	if (link_state(kit_link(lp->kit)) != LINK_UP)
		link_up(kit_link(lp->kit));
	lp->events = a.events;
	lp->committing = 1;
	kit_commit(lp->kit, a.cursor, lpoll_committed, lp);
	free(a.cursor);
}

/* Makes the next request, unless the intake's backlog is too large. */
static void
lpoll_poll(struct lpoll *lp)
{
	struct intake *in = kit_intake(lp->kit);
	struct http_req req;
	size_t max = lp->o.max_backlog ? lp->o.max_backlog : 1000;

	if (!lp->running || lp->call != NULL)
		return;
	if (in != NULL && intake_backlog(in) > max) {
		lpoll_after(lp, 100000);        /* the hub catches up first */
		return;
	}
	memset(&req, 0, sizeof(req));
	if (lp->ops.build(lp->plat, kit_cursor(lp->kit), &req) < 0) {
		lpoll_fail(lp, LINK_FATAL, 0, "cannot build the poll request");
		return;
	}
	lp->timeout = req.timeout > 0 ? req.timeout : 30;
	lp->started = mono_usec();
	lp->count++;
	lp->call = http_request(lp->http, &req, lpoll_done, lp);
	if (lp->call == NULL)
		lpoll_fail(lp, LINK_FATAL, 0, "the poll URL is not usable");
}

struct lpoll *
lpoll_new(struct kit *kit, struct http_client *http, const struct lpoll_ops *ops,
    const struct lpoll_opts *o, void *plat)
{
	struct lpoll *lp = xcalloc(1, sizeof(*lp));

	lp->kit = kit;
	lp->http = http;
	lp->ops = *ops;
	if (o != NULL)
		lp->o = *o;
	lp->plat = plat;
	lp->timer = evtimer_new(kit_base(kit), lpoll_timer_cb, lp);
	if (lp->timer == NULL)
		fatalx("%s: out of memory", __func__);
	return lp;
}

void
lpoll_free(struct lpoll *lp)
{
	if (lp == NULL)
		return;
	lpoll_stop(lp);
	event_free(lp->timer);
	if (lp->committing)
		lp->orphan = 1;
	else
		free(lp);
}

void
lpoll_start(struct lpoll *lp)
{
	lp->running = 1;
	if (!lp->committing)
		lpoll_poll(lp);
}

void
lpoll_stop(struct lpoll *lp)
{
	lp->running = 0;
	evtimer_del(lp->timer);
	if (lp->call != NULL) {
		http_cancel(lp->call);
		lp->call = NULL;
	}
}

unsigned long
lpoll_count(const struct lpoll *lp)
{
	return lp->count;
}
