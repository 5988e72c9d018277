/* link.c - one connection's life cycle (see link.h). */
#include "link.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "log.h"
#include "util.h"

struct link {
	struct event_base *base;
	char *name;
	struct link_opts o;
	link_connect_fn connect;
	link_report_fn report;
	void *arg;

	enum link_state state;
	char detail[256];
	char last_error[256];           /* the streak being logged once */
	unsigned fails;                 /* consecutive failed attempts */
	unsigned streak;                /* failures logged in this streak */
	uint64_t last_attempt;          /* mono_usec of the last connect */
	uint64_t up_since;
	struct event *timer;
};

static const char *const link_names[] = {
	"stopped", "connecting", "up", "backoff", "unauthorized", "stopping",
};

const char *
link_state_name(enum link_state st)
{
	return (unsigned)st < ARRAY_LEN(link_names) ? link_names[st] : "unknown";
}

static uint64_t
link_or(uint64_t v, uint64_t dflt)
{
	return v != 0 ? v : dflt;
}

uint64_t
link_backoff(const struct link_opts *o, unsigned attempt, double rnd)
{
	uint64_t min = link_or(o->backoff_min_usec, 1000000), max = link_or(o->backoff_max_usec,
	    60000000), d = min;

	while (attempt-- > 0 && d < max)
		d *= 2;
	if (d > max)
		d = max;
	if (rnd < 0 || rnd >= 1)
		rnd = 0;
	return d - (uint64_t)((double)(d / 2) * rnd);
}

/* Reports a change of state or detail, never a repeat. */
static void
link_set(struct link *l, enum link_state st, const char *detail)
{
	if (detail == NULL)
		detail = "";
	if (l->state == st && strcmp(l->detail, detail) == 0)
		return;
	l->state = st;
	snprintf(l->detail, sizeof(l->detail), "%s", detail);
	if (l->report != NULL)
		l->report(l->arg, st, l->detail);
}

static void
link_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct link *l = arg;

	(void)fd;
	(void)what;
	if (l->state == LINK_STOPPING || l->state == LINK_STOPPED)
		return;
	/* a retry keeps showing why it is needed (backoff, unauthorized) until up */
	l->last_attempt = mono_usec();
	l->connect(l->arg);
}

/* Schedules the next attempt no sooner than delay, nor than the floor after the last. */
static void
link_schedule(struct link *l, uint64_t delay)
{
	uint64_t now = mono_usec(), floor = link_or(l->o.floor_usec, 1000000);
	struct timeval tv;

	if (l->last_attempt != 0 && l->last_attempt + floor > now + delay)
		delay = l->last_attempt + floor - now;
	tv.tv_sec = (time_t)(delay / 1000000);
	tv.tv_usec = (suseconds_t)(delay % 1000000);
	evtimer_add(l->timer, &tv);
}

struct link *
link_new(struct event_base *base, const char *name, const struct link_opts *o,
    link_connect_fn connect, link_report_fn report, void *arg)
{
	struct link *l = xcalloc(1, sizeof(*l));

	l->base = base;
	l->name = xstrdup(name);
	if (o != NULL)
		l->o = *o;
	l->connect = connect;
	l->report = report;
	l->arg = arg;
	l->timer = evtimer_new(base, link_timer_cb, l);
	if (l->timer == NULL)
		fatalx("%s: out of memory", __func__);
	return l;
}

void
link_free(struct link *l)
{
	if (l == NULL)
		return;
	event_free(l->timer);
	free(l->name);
	free(l);
}

void
link_start(struct link *l)
{
	if (l->state != LINK_STOPPED)
		return;
	link_set(l, LINK_CONNECTING, NULL);
	link_schedule(l, 0);
}

void
link_up(struct link *l)
{
	if (l->state == LINK_STOPPING || l->state == LINK_STOPPED)
		return;
	if (l->streak > 0)
		log_info("%s: connected again after %u failed attempt(s)", l->name, l->fails);
	l->streak = 0;
	l->last_error[0] = '\0';
	l->up_since = mono_usec();
	link_set(l, LINK_UP, NULL);
}

/* Logs the first failure of a streak; the repeats only at debug level. */
static void
link_log(struct link *l, const char *why, uint64_t delay)
{
	if (l->streak == 0 || strcmp(l->last_error, why) != 0) {
		log_warnx("%s: %s; retrying in %.1f s", l->name, why, (double)delay / 1e6);
		snprintf(l->last_error, sizeof(l->last_error), "%s", why);
	} else
		log_debug("%s: %s again (%u); retrying in %.1f s", l->name, why, l->fails,
		    (double)delay / 1e6);
	l->streak++;
}

void
link_fail(struct link *l, enum link_fail kind, double retry_after, const char *why)
{
	uint64_t delay, ra;

	if (l->state == LINK_STOPPING || l->state == LINK_STOPPED)
		return;
	if (why == NULL)
		why = "connection failed";
	/* a connection that stayed up long enough starts a fresh backoff */
	if (l->state == LINK_UP && mono_usec() - l->up_since >= link_or(l->o.stable_usec, 30000000))
		l->fails = 0;
	if (kind == LINK_FATAL) {
		log_warnx("%s: %s; not retrying", l->name, why);
		evtimer_del(l->timer);
		link_set(l, LINK_STOPPED, why);
		return;
	}
	if (kind == LINK_UNAUTHORIZED_FAIL)
		delay = link_or(l->o.unauthorized_usec, 300000000);
	else
		delay = link_backoff(&l->o, l->fails, (double)arc4random() / 4294967296.0);
	ra = retry_after > 0 ? (uint64_t)(retry_after * 1e6) : 0;
	if (ra > delay)
		delay = ra;
	l->fails++;
	link_log(l, why, delay);
	link_set(l, kind == LINK_UNAUTHORIZED_FAIL ? LINK_UNAUTHORIZED : LINK_BACKOFF, why);
	link_schedule(l, delay);
}

void
link_reconnect(struct link *l, const char *why)
{
	if (l->state == LINK_STOPPING || l->state == LINK_STOPPED)
		return;
	log_info("%s: reconnecting: %s", l->name, why != NULL ? why : "asked to");
	link_set(l, LINK_CONNECTING, why);
	link_schedule(l, 0);
}

void
link_stop(struct link *l)
{
	evtimer_del(l->timer);
	if (l->state != LINK_STOPPED)
		link_set(l, LINK_STOPPING, NULL);
}

void
link_stopped(struct link *l)
{
	evtimer_del(l->timer);
	link_set(l, LINK_STOPPED, NULL);
}

enum link_state
link_state(const struct link *l)
{
	return l->state;
}

const char *
link_detail(const struct link *l)
{
	return l->detail;
}

unsigned
link_failures(const struct link *l)
{
	return l->fails;
}
