/*
 * fz_hub.h - a stand-in for the hub (worker/hub.c) in the platform
 * harnesses: it records every inbound message and state change a platform
 * reports, handles each message as told (hold it, finish it at once, or
 * finish it from the loop, optionally answering with an echo through the
 * platform's send()), and tracks that every send's callback runs once.
 * Linked into every target, it stands in for hub.o (never linked).
 */
#ifndef HERMES_FZ_HUB_H
#define HERMES_FZ_HUB_H

#include <stddef.h>
#include <time.h>

#include "platform.h"

struct event_base;

enum fz_hub_mode {
	FZ_HUB_HOLD = 0,                /* never call done: the message stays unfinished */
	FZ_HUB_DONE,                    /* answer and call done inside hub_inbound() */
	FZ_HUB_LATER,                   /* answer and call done from the loop */
};

/* One inbound message as the platform handed it over (copied). */
struct fz_hub_msg {
	char *platform, *chat_id, *thread_id, *user_id, *user_name, *message_id, *text;
	enum chat_type chat_type;
	time_t time;
	int addressed;
	int finished;                   /* done was called */
};

struct fz_hub_conf {
	struct event_base *base;
	enum fz_hub_mode mode;
	int echo;                       /* answer "echo: <text>" with ops->send() */
	int no_status;                  /* hub_status_json() returns NULL */
	const struct platform_ops *ops;
};

/* Starts recording for one platform instance; returns the hub pointer for its plat_env. */
struct hub *fz_hub_begin(const struct fz_hub_conf *conf);
/* The platform's self, once created (for send()). */
void fz_hub_set_self(void *self);
/* Runs the actions still due from the loop, now; 0 when none were left. */
int fz_hub_pending(void);
size_t fz_hub_count(void);
const struct fz_hub_msg *fz_hub_get(size_t i);
/* The last state reported, and how many reports there were. */
enum plat_state fz_hub_state(void);
unsigned fz_hub_state_reports(void);
/* Sends made; 1 when every send's callback ran exactly once. */
size_t fz_hub_sends(void);
int fz_hub_sends_settled(void);
/*
 * Ends the instance (after the platform's free()): forgets its callbacks
 * and frees the records.
 */
void fz_hub_end(void);

#endif
