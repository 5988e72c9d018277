/*
 * agent.h - the agent backends: echo, openai (OpenAI-compatible chat
 * completions, streaming over HTTPS) and exec (a command per message).
 *
 * Every call is asynchronous, has a timeout, and ends in exactly one
 * reply callback unless cancelled: on failure the text says why
 * ("the agent is unreachable: <reason>"), never silence.
 */
#ifndef HERMES_AGENT_H
#define HERMES_AGENT_H

#include <cjson/cJSON.h>

struct event_base;
struct evdns_base;
struct tls_ctx;
struct agent;
struct agent_call;

struct agent_req {
	const char *session;            /* session key */
	const char *platform;
	const char *chat_id;
	const char *user_id;
	const char *text;
	const cJSON *history;           /* array of {"role","content"}, oldest first; may be NULL */
};

/*
 * Called once per call unless cancelled.  ok = 1: text is the agent's
 * reply; ok = 0: text is the error to show the user.  text is borrowed.
 */
typedef void (*agent_reply_fn)(void *arg, int ok, const char *text);

/*
 * Creates the backend described by conf (the config's "agent" object;
 * NULL means echo).  On a config error returns NULL with a message naming
 * the key in err.
 */
struct agent *agent_new(struct event_base *base, struct evdns_base *dns,
    struct tls_ctx *tls, const cJSON *conf, char *err, size_t errlen);
void agent_free(struct agent *a);
/* "echo", "openai" or "exec". */
const char *agent_backend(const struct agent *a);
/* Starts one call; the request is copied. */
struct agent_call *agent_call(struct agent *a, const struct agent_req *req,
    agent_reply_fn cb, void *arg);
/* Cancels a running call: its callback is never called; the call is freed. */
void agent_cancel(struct agent_call *c);

#endif
