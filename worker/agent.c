/*
 * agent.c - the agent front: config validation, the backend table, and
 * the call life cycle shared by every backend (copying the request,
 * exactly one reply unless cancelled, deferred completion).
 */
#include "agent.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "agent_impl.h"
#include "log.h"
#include "util.h"

static const struct agent_backend *const agent_backends[] = {
	&agent_echo_backend,
	&agent_openai_backend,
	&agent_exec_backend,
};

/* Finds the backend called name, or NULL. */
static const struct agent_backend *
agent_find_backend(const char *name)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(agent_backends); i++)
		if (strcmp(agent_backends[i]->name, name) == 0)
			return agent_backends[i];
	return NULL;
}

/* Checks that every key of conf is "backend" or one of be->keys. */
static int
agent_check_keys(const struct agent_backend *be, const cJSON *conf,
    char *err, size_t errlen)
{
	const cJSON *item;
	size_t i;

	cJSON_ArrayForEach(item, conf) {
		int known = strcmp(item->string, "backend") == 0;

		for (i = 0; !known && be->keys != NULL && be->keys[i] != NULL; i++)
			known = strcmp(item->string, be->keys[i]) == 0;
		if (!known) {
			snprintf(err, errlen, "agent.%s: unknown key for the %s backend",
			    item->string, be->name);
			return -1;
		}
	}
	return 0;
}

/* Picks the backend named by conf ("echo" when conf or its backend key is absent). */
static const struct agent_backend *
agent_pick_backend(const cJSON *conf, char *err, size_t errlen)
{
	const struct agent_backend *be;
	const cJSON *name;

	if (conf == NULL || cJSON_IsNull(conf))
		return &agent_echo_backend;
	if (!cJSON_IsObject(conf)) {
		snprintf(err, errlen, "agent: must be an object");
		return NULL;
	}
	name = cJSON_GetObjectItemCaseSensitive(conf, "backend");
	if (name == NULL)
		return &agent_echo_backend;
	if (!cJSON_IsString(name) || name->valuestring == NULL) {
		snprintf(err, errlen, "agent.backend: must be a string (echo, openai or exec)");
		return NULL;
	}
	be = agent_find_backend(name->valuestring);
	if (be == NULL) {
		char esc[64];

		snprintf(err, errlen, "agent.backend: unknown backend \"%s\" (echo, openai or exec)",
		    log_escape(esc, sizeof(esc), name->valuestring, strlen(name->valuestring)));
		return NULL;
	}
	return be;
}

struct agent *
agent_new(struct event_base *base, struct evdns_base *dns, struct tls_ctx *tls,
    const cJSON *conf, char *err, size_t errlen)
{
	const struct agent_backend *be;
	struct agent *a;

	if ((be = agent_pick_backend(conf, err, errlen)) == NULL)
		return NULL;
	if (conf != NULL && cJSON_IsObject(conf) && agent_check_keys(be, conf, err, errlen) < 0)
		return NULL;
	a = xcalloc(1, sizeof(*a));
	a->base = base;
	a->dns = dns;
	a->tls = tls;
	a->be = be;
	if (be->create != NULL && be->create(a, cJSON_IsObject(conf) ? conf : NULL,
	    &a->state, err, errlen) < 0) {
		free(a);
		return NULL;
	}
	return a;
}

void
agent_free(struct agent *a)
{
	if (a == NULL)
		return;
	while (a->calls != NULL)
		agent_cancel(a->calls);
	if (a->be->destroy != NULL)
		a->be->destroy(a->state);
	free(a);
}

const char *
agent_backend(const struct agent *a)
{
	return a->be->name;
}

/* Frees c and its copies; the backend state must be gone already. */
static void
agent_call_free(struct agent_call *c)
{
	struct agent *a = c->a;

	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		a->calls = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->later != NULL)
		event_free(c->later);
	free(c->later_text);
	free((char *)c->req.session);
	free((char *)c->req.platform);
	free((char *)c->req.chat_id);
	free((char *)c->req.user_id);
	free((char *)c->req.text);
	cJSON_Delete((cJSON *)c->req.history);
	free(c);
}

/* Copies s, or "" when NULL. */
static char *
agent_dup(const char *s)
{
	return xstrdup(s != NULL ? s : "");
}

/* Copies the request's strings and history into c. */
static void
agent_call_copy_req(struct agent_call *c, const struct agent_req *req)
{
	c->req.session = agent_dup(req->session);
	c->req.platform = agent_dup(req->platform);
	c->req.chat_id = agent_dup(req->chat_id);
	c->req.user_id = agent_dup(req->user_id);
	c->req.text = agent_dup(req->text);
	if (req->history != NULL && cJSON_IsArray(req->history)) {
		c->req.history = cJSON_Duplicate(req->history, 1);
		if (c->req.history == NULL)
			fatalx("out of memory copying the history");
	} else {
		c->req.history = NULL;
	}
}

struct agent_call *
agent_call(struct agent *a, const struct agent_req *req, agent_reply_fn cb, void *arg)
{
	struct agent_call *c;
	char err[512];

	c = xcalloc(1, sizeof(*c));
	c->a = a;
	c->cb = cb;
	c->arg = arg;
	agent_call_copy_req(c, req);
	c->next = a->calls;
	if (a->calls != NULL)
		a->calls->prev = c;
	a->calls = c;
	err[0] = '\0';
	if (a->be->start(c, err, sizeof(err)) < 0) {
		c->impl = NULL;
		agent_call_done_later(c, 0, err[0] != '\0' ? err :
		    "the agent is unreachable: internal error");
	}
	return c;
}

void
agent_cancel(struct agent_call *c)
{
	if (c == NULL)
		return;
	if (c->impl != NULL && c->later == NULL)
		c->a->be->cancel(c);
	c->impl = NULL;
	agent_call_free(c);
}

void
agent_call_done(struct agent_call *c, int ok, const char *text)
{
	agent_reply_fn cb = c->cb;
	void *arg = c->arg;
	char *copy = xstrdup(text != NULL ? text : "");

	/* Free first: the callback may free the agent itself. */
	c->impl = NULL;
	agent_call_free(c);
	cb(arg, ok, copy);
	free(copy);
}

/* The zero-timeout event of agent_call_done_later(). */
static void
agent_call_later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct agent_call *c = arg;
	char *text = c->later_text;
	int ok = c->later_ok;

	(void)fd;
	(void)what;
	c->later_text = NULL;
	agent_call_done(c, ok, text);
	free(text);
}

void
agent_call_done_later(struct agent_call *c, int ok, const char *text)
{
	static const struct timeval zero = { 0, 0 };

	if (c->later != NULL)
		return;
	c->later_ok = ok;
	free(c->later_text);
	c->later_text = xstrdup(text != NULL ? text : "");
	c->later = evtimer_new(c->a->base, agent_call_later_cb, c);
	if (c->later == NULL)
		fatalx("cannot create an event");
	evtimer_add(c->later, &zero);
}

/* Config helpers. */

int
agent_conf_string(const cJSON *conf, const char *key, const char **out,
    char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(conf, key);

	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsString(v) || v->valuestring == NULL) {
		snprintf(err, errlen, "agent.%s: must be a string", key);
		return -1;
	}
	*out = v->valuestring;
	return 0;
}

int
agent_conf_seconds(const cJSON *conf, const char *key, double max, double *out,
    char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(conf, key);

	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble) || v->valuedouble <= 0 ||
	    v->valuedouble > max) {
		snprintf(err, errlen, "agent.%s: must be a number of seconds above 0 and at most %g",
		    key, max);
		return -1;
	}
	*out = v->valuedouble;
	return 0;
}

int
agent_conf_uint(const cJSON *conf, const char *key, double min, double max,
    size_t *out, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(conf, key);

	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
	    v->valuedouble < min || v->valuedouble > max) {
		snprintf(err, errlen, "agent.%s: must be a whole number from %.0f to %.0f",
		    key, min, max);
		return -1;
	}
	*out = (size_t)v->valuedouble;
	return 0;
}

int
agent_conf_bool(const cJSON *conf, const char *key, int *out, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(conf, key);

	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsBool(v)) {
		snprintf(err, errlen, "agent.%s: must be true or false", key);
		return -1;
	}
	*out = cJSON_IsTrue(v);
	return 0;
}
