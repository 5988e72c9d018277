/* wnotify.c - sd_notify glue for the worker, driven by its event loop. */
#include "wnotify.h"
#include "notify.h"
#include "log.h"
#include "util.h"

#include <event2/event.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct wnotify {
	struct event *watchdog;
	uint64_t interval;
	int ready_sent;
	char *status;
	int warned;
};

uint64_t
wnotify_interval(const char *usec, const char *pid, pid_t self)
{
	uint64_t u, p;

	if (usec == NULL || parse_u64(usec, UINT64_MAX, &u) < 0 || u == 0)
		return 0;
	if (pid != NULL && *pid != '\0') {
		if (parse_u64(pid, UINT64_MAX, &p) < 0 || p != (uint64_t)self)
			return 0;
	}
	return u / 2 > 0 ? u / 2 : 1;
}

/* Sends msg; a failure is logged once (the supervisor may be gone: not fatal). */
static void
send_msg(struct wnotify *n, const char *msg)
{
	if (notify_send(msg) < 0 && !n->warned) {
		n->warned = 1;
		log_warn("sd_notify to $NOTIFY_SOCKET");
	}
}

static void
watchdog_cb(evutil_socket_t fd, short ev, void *arg)
{
	struct wnotify *n = arg;

	(void)fd;
	(void)ev;
	send_msg(n, "WATCHDOG=1");
}

struct wnotify *
wnotify_new(struct event_base *base)
{
	struct wnotify *n = xcalloc(1, sizeof(*n));

	n->interval = wnotify_interval(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), getpid());
	if (n->interval > 0) {
		struct timeval tv = {
			.tv_sec = (time_t)(n->interval / 1000000),
			.tv_usec = (suseconds_t)(n->interval % 1000000),
		};

		n->watchdog = event_new(base, -1, EV_PERSIST, watchdog_cb, n);
		if (n->watchdog == NULL || event_add(n->watchdog, &tv) < 0)
			fatalx("cannot arm the watchdog timer");
		log_debug("watchdog: ping every %llu us", (unsigned long long)n->interval);
	}
	return n;
}

void
wnotify_free(struct wnotify *n)
{
	if (n == NULL)
		return;
	if (n->watchdog != NULL)
		event_free(n->watchdog);
	free(n->status);
	free(n);
}

void
wnotify_ready(struct wnotify *n)
{
	if (n->ready_sent)
		return;
	n->ready_sent = 1;
	if (n->status != NULL) {
		char *msg = xasprintf("READY=1\nSTATUS=%s", n->status);

		send_msg(n, msg);
		free(msg);
	} else
		send_msg(n, "READY=1");
}

void
wnotify_status(struct wnotify *n, const char *line)
{
	char *msg;
	size_t i;

	if (n->status != NULL && strcmp(n->status, line) == 0)
		return;
	free(n->status);
	n->status = xstrndup(line, NOTIFY_MAX_STATUS);
	/* One line: newlines would start new KEY=VALUE pairs. */
	for (i = 0; n->status[i] != '\0'; i++)
		if (n->status[i] == '\n' || n->status[i] == '\r')
			n->status[i] = ' ';
	msg = xasprintf("STATUS=%s", n->status);
	send_msg(n, msg);
	free(msg);
}

void
wnotify_stopping(struct wnotify *n)
{
	send_msg(n, "STOPPING=1");
}

uint64_t
wnotify_watchdog_interval(const struct wnotify *n)
{
	return n->interval;
}
