/*
 * hub.h - routing between platforms, sessions, commands and the agent.
 *
 * The first part is what platforms use; the rest is how the worker's main
 * sets the hub up and tears it down.
 */
#ifndef HERMES_HUB_H
#define HERMES_HUB_H

#include <stdint.h>

#include <cjson/cJSON.h>

#include "platform.h"

struct hub;

/*
 * Hands one inbound message to the hub.  The hub copies what it keeps and
 * calls done(arg) exactly once when the message is handled (answered,
 * refused, ignored, recognized as a duplicate, or a command done), so the
 * platform may then acknowledge it to its server.  During a restart drain
 * the hub does not take the message: done is not called, and the platform
 * must leave it unacknowledged for the next worker.
 */
void hub_inbound(struct hub *h, const char *platform, const struct inbound *m,
    plat_done_fn done, void *arg);

/* A platform reports a state change; detail (may be NULL) says why. */
void hub_platform_state(struct hub *h, const char *platform, enum plat_state st,
    const char *detail);

/*
 * The status of the gateway for GET /v1/status and /status:
 * {"worker_pid","supervisor_pid","generation","uptime","platforms":[{"name",
 * "state","since","detail"}],"agent","sessions","memory_kb"}.  The caller
 * deletes it.
 */
cJSON *hub_status_json(struct hub *h);

/* ---- set-up and teardown, used by the worker's main ---- */

struct agent;
struct config;
struct config_platform;
struct event_base;

struct hub_callbacks {
	/* The platform states changed; line is one line for STATUS=. */
	void (*status)(void *arg, const char *line);
	/* Teardown begins (send STOPPING=1, arm the hard deadline). */
	void (*stopping)(void *arg, int code);
	/* Teardown is finished: leave with code (0 stop, 75 restart). */
	void (*finished)(void *arg, int code);
	void *arg;
};

struct hub_opts {
	struct event_base *base;
	struct agent *agent;            /* borrowed; outlives the hub */
	const struct config *cfg;       /* what is needed is copied */
	long supervisor_pid;            /* 0 when none */
	unsigned long generation;
	uint64_t session_idle_ms;       /* idle sessions leave memory after this; 0: 10 minutes */
	struct hub_callbacks cb;
};

/* Bounds of the teardown phases that do not depend on drain_timeout. */
#define HUB_ACK_WAIT_USEC   (5 * 1000000ULL)     /* the /restart reply delivered */
#define HUB_SEND_WAIT_USEC  (5 * 1000000ULL)     /* replies in flight at teardown */
#define HUB_STOP_WAIT_USEC  (5 * 1000000ULL)     /* platforms stopping */
/* Handled message ids kept per platform. */
#define HUB_DEDUP_CAP 4096

struct hub *hub_new(const struct hub_opts *o);
/* Frees the hub; its platforms must have stopped.  hub_free(NULL) is a no-op. */
void hub_free(struct hub *h);
/* Adds a created platform (self from ops->create) with its common config. */
void hub_add_platform(struct hub *h, const struct config_platform *pc,
    const struct platform_ops *ops, void *self);
/* Starts every platform; returns once each has been started (connecting or up). */
void hub_start(struct hub *h);
/*
 * Begins the graceful teardown: no new messages, running agent calls
 * drained for drain_timeout then cancelled, state persisted, platforms
 * stopped (bounded), then cb.finished(code).  Further calls only make a
 * pending drain end at once.
 */
void hub_shutdown(struct hub *h, int code);
/* A /restart without a chat (SIGUSR1): the same transaction, no reply, no marker. */
void hub_restart(struct hub *h);
/* One line of platform states: "console: up; telegram: backoff (409 Conflict)"; newly allocated. */
char *hub_status_line(struct hub *h);
/* Frees the platforms (after teardown). */
void hub_free_platforms(struct hub *h);

/* Reads VmRSS of this process in KiB (0 when unknown). */
long hub_memory_kb(void);

#endif
