/*
 * agent_impl.h - what agent.c shares with the backends (agent_echo.c,
 * agent_openai.c, agent_exec.c).  Not for use outside the agent module.
 *
 * A backend's start() begins the work and never calls the reply
 * callback from inside itself.  When the work ends, the backend frees
 * its per-call state (c->impl = NULL) and calls agent_call_done(), which
 * calls the reply callback and frees the call.  cancel() frees the
 * per-call state without any callback.
 */
#ifndef HERMES_AGENT_IMPL_H
#define HERMES_AGENT_IMPL_H

#include <stddef.h>

#include "agent.h"

struct event;

struct agent_backend {
	const char *name;
	const char *const *keys;        /* allowed keys besides "backend"; NULL-ended */
	/* Validates conf and builds the backend state (*state); -1 with err set. */
	int (*create)(struct agent *a, const cJSON *conf, void **state,
	    char *err, size_t errlen);
	void (*destroy)(void *state);
	/* Starts a call; on -1 the text in err is replied (deferred) as a failure. */
	int (*start)(struct agent_call *c, char *err, size_t errlen);
	void (*cancel)(struct agent_call *c);
};

struct agent {
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	const struct agent_backend *be;
	void *state;
	struct agent_call *calls;       /* running calls, for agent_free() */
};

struct agent_call {
	struct agent *a;
	struct agent_req req;           /* owned copies */
	agent_reply_fn cb;
	void *arg;
	void *impl;                     /* the backend's per-call state */
	struct event *later;            /* a deferred completion, when pending */
	int later_ok;
	char *later_text;
	struct agent_call *prev, *next;
};

extern const struct agent_backend agent_echo_backend;
extern const struct agent_backend agent_openai_backend;
extern const struct agent_backend agent_exec_backend;

/* Calls the reply callback once, then frees c.  c->impl must be NULL. */
void agent_call_done(struct agent_call *c, int ok, const char *text);
/* The same from a zero-timeout event (text copied): never re-enters the caller. */
void agent_call_done_later(struct agent_call *c, int ok, const char *text);

/*
 * Config helpers for the backends: each returns 0 when the key is absent
 * (leaving *out) or valid, else -1 with "agent.<key>: ..." in err.
 */
int agent_conf_string(const cJSON *conf, const char *key, const char **out,
    char *err, size_t errlen);
int agent_conf_seconds(const cJSON *conf, const char *key, double max,
    double *out, char *err, size_t errlen);
int agent_conf_uint(const cJSON *conf, const char *key, double min, double max,
    size_t *out, char *err, size_t errlen);
int agent_conf_bool(const cJSON *conf, const char *key, int *out,
    char *err, size_t errlen);

#endif
