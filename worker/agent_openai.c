/*
 * agent_openai.c - the openai backend: any OpenAI-compatible
 * chat-completions endpoint, POST {base_url}/chat/completions, streaming
 * (SSE deltas until [DONE]) or a single JSON response.
 *
 * Every failure becomes "the agent is unreachable: <reason>", with the
 * API key scrubbed from anything the endpoint said.  Replies are always
 * delivered from a zero-timeout event, never inside an HTTP callback.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "agent_impl.h"
#include "config.h"
#include "log.h"
#include "net/http.h"
#include "net/sse.h"
#include "net/tls.h"
#include "util.h"

#define OPENAI_DEFAULT_URL      "https://api.openai.com/v1"
#define OPENAI_DEFAULT_KEY_ENV  "OPENAI_API_KEY"
#define OPENAI_DEFAULT_TIMEOUT  120.0
#define OPENAI_DEFAULT_HISTORY  20
#define OPENAI_MAX_RESPONSE     (4 * 1024 * 1024)
#define OPENAI_MAX_REPLY        (1024 * 1024)
#define OPENAI_MAX_EVENT        (1024 * 1024)
#define OPENAI_UNREACHABLE      "the agent is unreachable: "

static const char *const openai_keys[] = {
	"base_url", "model", "api_key_env", "system_prompt", "max_history",
	"timeout", "stream", NULL
};

struct openai {
	struct agent *a;
	struct http_client *http;
	struct tls_ctx *own_tls;
	char *url;                      /* {base_url}/chat/completions */
	char *model;
	char *system_prompt;
	char *authorization;            /* "Bearer KEY", or NULL */
	char *key;                      /* for scrubbing error texts */
	size_t max_history;
	double timeout;
	int stream;
};

struct openai_call {
	struct agent_call *c;
	struct openai *o;
	struct http_call *http;
	struct sse_parser *sse;
	char *reply;                    /* gathered deltas */
	size_t reply_len, reply_cap;
	char *raw;                      /* the stream's bytes while no event came */
	size_t raw_len, raw_cap;
	int events;
	int finished;                   /* [DONE] or a finish_reason seen */
	char *fail;                     /* set by an event handler to stop the call */
};

/* Reads the API key named by api_key_env: environment, $HERMES_HOME/.env, credentials. */
static char *
openai_load_key(const char *env)
{
	char *v = config_secret(env);

	if (v != NULL && v[0] == '\0') {
		free(v);
		v = NULL;
	}
	return v;
}

/* Frees a string that held a secret, wiping it first. */
static void
openai_free_secret(char *s)
{
	if (s == NULL)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

/* Checks that a base URL is http(s) with a host. */
static int
openai_url_ok(const char *u)
{
	const char *rest;

	if (strncmp(u, "http://", 7) == 0)
		rest = u + 7;
	else if (strncmp(u, "https://", 8) == 0)
		rest = u + 8;
	else
		return 0;
	return rest[0] != '\0' && rest[0] != '/';
}

/* Reads and checks the openai keys into o. */
static int
openai_configure(struct openai *o, const cJSON *conf, char *err, size_t errlen)
{
	const char *base_url = OPENAI_DEFAULT_URL, *model = NULL, *sys = NULL;
	const char *key_env = NULL;
	size_t n;

	if (agent_conf_string(conf, "base_url", &base_url, err, errlen) < 0 ||
	    agent_conf_string(conf, "model", &model, err, errlen) < 0 ||
	    agent_conf_string(conf, "api_key_env", &key_env, err, errlen) < 0 ||
	    agent_conf_string(conf, "system_prompt", &sys, err, errlen) < 0 ||
	    agent_conf_uint(conf, "max_history", 0, 10000, &o->max_history, err, errlen) < 0 ||
	    agent_conf_seconds(conf, "timeout", 86400, &o->timeout, err, errlen) < 0 ||
	    agent_conf_bool(conf, "stream", &o->stream, err, errlen) < 0)
		return -1;
	if (!openai_url_ok(base_url)) {
		snprintf(err, errlen, "agent.base_url: must be an http:// or https:// URL");
		return -1;
	}
	if (model == NULL || model[0] == '\0') {
		snprintf(err, errlen, "agent.model: required for the openai backend");
		return -1;
	}
	n = strlen(base_url);
	while (n > 0 && base_url[n - 1] == '/')
		n--;
	o->url = xasprintf("%.*s/chat/completions", (int)n, base_url);
	o->model = xstrdup(model);
	o->system_prompt = sys != NULL && sys[0] != '\0' ? xstrdup(sys) : NULL;
	if (key_env != NULL && key_env[0] == '\0') {
		snprintf(err, errlen, "agent.api_key_env: must name an environment variable");
		return -1;
	}
	o->key = openai_load_key(key_env != NULL ? key_env : OPENAI_DEFAULT_KEY_ENV);
	if (o->key == NULL && key_env != NULL) {
		/* Named explicitly: a missing key is a configuration error. */
		snprintf(err, errlen, "agent.api_key_env: the secret %s is not set", key_env);
		return -1;
	}
	if (o->key != NULL)
		o->authorization = xasprintf("Bearer %s", o->key);
	return 0;
}

static void openai_destroy(void *state);

/* Builds the backend state from the config. */
static int
openai_create(struct agent *a, const cJSON *conf, void **state, char *err, size_t errlen)
{
	struct openai *o = xcalloc(1, sizeof(*o));
	struct tls_ctx *tls = a->tls;

	o->a = a;
	o->timeout = OPENAI_DEFAULT_TIMEOUT;
	o->max_history = OPENAI_DEFAULT_HISTORY;
	o->stream = 1;
	if (conf == NULL) {
		snprintf(err, errlen, "agent.model: required for the openai backend");
		free(o);
		return -1;
	}
	if (openai_configure(o, conf, err, errlen) < 0) {
		openai_destroy(o);
		return -1;
	}
	if (tls == NULL && strncmp(o->url, "https:", 6) == 0) {
		tls = o->own_tls = tls_ctx_new(NULL, err, errlen);
		if (tls == NULL) {
			openai_destroy(o);
			return -1;
		}
	}
	o->http = http_client_new(a->base, a->dns, tls);
	*state = o;
	return 0;
}

static void
openai_destroy(void *state)
{
	struct openai *o = state;

	if (o == NULL)
		return;
	http_client_free(o->http);
	tls_ctx_free(o->own_tls);
	free(o->url);
	free(o->model);
	free(o->system_prompt);
	openai_free_secret(o->authorization);
	openai_free_secret(o->key);
	free(o);
}

/* Adds {"role","content"} to messages. */
static void
openai_add_message(cJSON *messages, const char *role, const char *content)
{
	cJSON *m = cJSON_CreateObject();

	if (m == NULL || cJSON_AddStringToObject(m, "role", role) == NULL ||
	    cJSON_AddStringToObject(m, "content", content) == NULL)
		fatalx("out of memory building a request");
	cJSON_AddItemToArray(messages, m);
}

/* Adds the last max_history well-formed history entries. */
static void
openai_add_history(cJSON *messages, const cJSON *history, size_t max)
{
	const cJSON *e;
	int n, i, start;

	if (history == NULL || max == 0)
		return;
	n = cJSON_GetArraySize(history);
	start = (size_t)n > max ? n - (int)max : 0;
	for (i = start; i < n; i++) {
		const cJSON *role, *content;

		e = cJSON_GetArrayItem(history, i);
		role = cJSON_GetObjectItemCaseSensitive(e, "role");
		content = cJSON_GetObjectItemCaseSensitive(e, "content");
		if (!cJSON_IsString(role) || !cJSON_IsString(content))
			continue;
		if (strcmp(role->valuestring, "user") != 0 &&
		    strcmp(role->valuestring, "assistant") != 0 &&
		    strcmp(role->valuestring, "system") != 0)
			continue;
		openai_add_message(messages, role->valuestring, content->valuestring);
	}
}

/* The JSON request body for one call (allocated). */
static char *
openai_body(const struct openai *o, const struct agent_req *req)
{
	cJSON *root = cJSON_CreateObject(), *messages;
	char *s;

	if (root == NULL || cJSON_AddStringToObject(root, "model", o->model) == NULL ||
	    (messages = cJSON_AddArrayToObject(root, "messages")) == NULL)
		fatalx("out of memory building a request");
	if (o->system_prompt != NULL)
		openai_add_message(messages, "system", o->system_prompt);
	openai_add_history(messages, req->history, o->max_history);
	openai_add_message(messages, "user", req->text);
	if (cJSON_AddBoolToObject(root, "stream", o->stream) == NULL)
		fatalx("out of memory building a request");
	s = cJSON_PrintUnformatted(root);
	cJSON_Delete(root);
	if (s == NULL)
		fatalx("out of memory building a request");
	return s;
}

/* Replaces every occurrence of key in s with "***" (in place; s only shrinks). */
static void
openai_scrub(char *s, const char *key)
{
	size_t klen;
	char *p;

	if (key == NULL || (klen = strlen(key)) < 4)
		return;
	while ((p = strstr(s, key)) != NULL) {
		memcpy(p, "***", 3);
		memmove(p + 3, p + klen, strlen(p + klen) + 1);
	}
}

/* Frees the per-call state (cancelling the HTTP request if running). */
static void
openai_call_free(struct openai_call *oc)
{
	if (oc == NULL)
		return;
	http_cancel(oc->http);
	sse_free(oc->sse);
	free(oc->reply);
	free(oc->raw);
	free(oc->fail);
	free(oc);
}

/* Ends the call: frees its state and schedules the reply. */
static void
openai_finish(struct openai_call *oc, int ok, const char *text)
{
	struct agent_call *c = oc->c;
	char *msg;

	if (ok) {
		msg = xstrdup(text);
	} else {
		msg = xasprintf(OPENAI_UNREACHABLE "%s", text);
		openai_scrub(msg, oc->o->key);
		log_warnx("agent: %s", msg);
	}
	c->impl = NULL;
	openai_call_free(oc);
	agent_call_done_later(c, ok, msg);
	free(msg);
}

/* A short, printable version of an endpoint's error message. */
static void
openai_error_text(const char *body, size_t len, char *out, size_t outlen)
{
	cJSON *root = cJSON_ParseWithLength(body, len);
	const cJSON *e, *m = NULL;

	out[0] = '\0';
	if (root == NULL)
		return;
	e = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (cJSON_IsString(e))
		m = e;
	else if (cJSON_IsObject(e))
		m = cJSON_GetObjectItemCaseSensitive(e, "message");
	if (m == NULL)
		m = cJSON_GetObjectItemCaseSensitive(root, "message");
	if (cJSON_IsString(m) && m->valuestring[0] != '\0') {
		size_t n = strlen(m->valuestring);

		log_escape(out, outlen, m->valuestring, n > 300 ? 300 : n);
	}
	cJSON_Delete(root);
}

/* Fails the call for a non-2xx answer, with the API's message if any. */
static void
openai_http_error(struct openai_call *oc, const struct http_response *r)
{
	char api[512], msg[700];

	openai_error_text(r->body, r->body_len, api, sizeof(api));
	if (api[0] != '\0')
		snprintf(msg, sizeof(msg), "HTTP %d: %s", r->status, api);
	else
		snprintf(msg, sizeof(msg), "HTTP %d from the endpoint", r->status);
	openai_finish(oc, 0, msg);
}

/* Takes the reply text out of a complete (non-streamed) response. */
static void
openai_whole_response(struct openai_call *oc, const char *body, size_t len)
{
	cJSON *root = cJSON_ParseWithLength(body, len);
	const cJSON *choice, *message, *content;

	if (root == NULL || !cJSON_IsObject(root)) {
		cJSON_Delete(root);
		openai_finish(oc, 0, "the endpoint did not answer with JSON");
		return;
	}
	choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0);
	message = cJSON_GetObjectItemCaseSensitive(choice, "message");
	content = cJSON_GetObjectItemCaseSensitive(message, "content");
	if (!cJSON_IsString(content)) {
		char api[512];

		openai_error_text(body, len, api, sizeof(api));
		cJSON_Delete(root);
		openai_finish(oc, 0, api[0] != '\0' ? api : "the response has no message content");
		return;
	}
	if (content->valuestring[0] == '\0')
		openai_finish(oc, 0, "the agent sent an empty reply");
	else
		openai_finish(oc, 1, content->valuestring);
	cJSON_Delete(root);
}

/* Handles one streamed chunk object: a delta, a finish, or an error. */
static int
openai_stream_object(struct openai_call *oc, const cJSON *root)
{
	const cJSON *choice, *delta, *content, *finish, *error;

	error = cJSON_GetObjectItemCaseSensitive(root, "error");
	if (error != NULL && !cJSON_IsNull(error)) {
		char *text = cJSON_PrintUnformatted(root);
		char api[512];

		openai_error_text(text, text != NULL ? strlen(text) : 0, api, sizeof(api));
		free(text);
		oc->fail = xasprintf("error in the stream: %s", api[0] ? api : "unknown");
		return 1;
	}
	choice = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "choices"), 0);
	delta = cJSON_GetObjectItemCaseSensitive(choice, "delta");
	content = cJSON_GetObjectItemCaseSensitive(delta, "content");
	if (cJSON_IsString(content) &&
	    buf_append(&oc->reply, &oc->reply_len, &oc->reply_cap, OPENAI_MAX_REPLY,
	    content->valuestring, strlen(content->valuestring)) < 0) {
		oc->fail = xasprintf("the reply is larger than %d bytes", OPENAI_MAX_REPLY);
		return 1;
	}
	finish = cJSON_GetObjectItemCaseSensitive(choice, "finish_reason");
	if (cJSON_IsString(finish))
		oc->finished = 1;
	return 0;
}

/* One SSE event of the stream. */
static int
openai_sse_event(void *arg, const char *event, const char *data, size_t len)
{
	struct openai_call *oc = arg;
	cJSON *root;
	int r;

	(void)event;
	oc->events++;
	if (len == 6 && memcmp(data, "[DONE]", 6) == 0) {
		oc->finished = 2;
		return 1;
	}
	root = cJSON_ParseWithLength(data, len);
	if (root == NULL || !cJSON_IsObject(root)) {
		cJSON_Delete(root);
		oc->fail = xstrdup("the stream carried data that is not JSON");
		return 1;
	}
	r = openai_stream_object(oc, root);
	cJSON_Delete(root);
	return r;
}

/* A piece of a 2xx streamed body. */
static void
openai_chunk(void *arg, const char *data, size_t len)
{
	struct openai_call *oc = arg;
	int r;

	if (oc->events == 0 && buf_append(&oc->raw, &oc->raw_len, &oc->raw_cap,
	    OPENAI_MAX_RESPONSE, data, len) < 0) {
		free(oc->raw);
		oc->raw = NULL;
		oc->raw_len = oc->raw_cap = 0;
	}
	r = sse_feed(oc->sse, data, len);
	if (r == 0)
		return;
	if (r < 0) {
		openai_finish(oc, 0, "a stream event exceeded the size limit");
		return;
	}
	if (oc->fail != NULL) {
		char *why = oc->fail;

		oc->fail = NULL;
		openai_finish(oc, 0, why);
		free(why);
		return;
	}
	/* [DONE]: the reply is complete; the connection is no longer needed. */
	if (oc->reply_len == 0)
		openai_finish(oc, 0, "the agent sent an empty reply");
	else
		openai_finish(oc, 1, oc->reply);
}

/* The end of a streamed 2xx response (without [DONE], or the server did not stream). */
static void
openai_stream_end(struct openai_call *oc)
{
	if (oc->events == 0 && oc->raw != NULL && oc->raw_len > 0 && oc->raw[0] == '{') {
		/* The endpoint ignored "stream": a whole JSON response. */
		openai_whole_response(oc, oc->raw, oc->raw_len);
		return;
	}
	if (!oc->finished) {
		openai_finish(oc, 0, oc->events == 0 ? "the endpoint sent no events" :
		    "the stream ended before the reply was complete");
		return;
	}
	if (oc->reply_len == 0)
		openai_finish(oc, 0, "the agent sent an empty reply");
	else
		openai_finish(oc, 1, oc->reply);
}

/* The HTTP call ended. */
static void
openai_done(void *arg, const struct http_response *r)
{
	struct openai_call *oc = arg;

	oc->http = NULL;
	if (r->status == 0)
		openai_finish(oc, 0, r->error);
	else if (r->status < 200 || r->status > 299)
		openai_http_error(oc, r);
	else if (oc->o->stream)
		openai_stream_end(oc);
	else
		openai_whole_response(oc, r->body, r->body_len);
}

/* Starts one call: builds the body and posts it. */
static int
openai_start(struct agent_call *c, char *err, size_t errlen)
{
	struct openai *o = c->a->state;
	struct openai_call *oc = xcalloc(1, sizeof(*oc));
	struct http_req req = { 0 };
	char *body = openai_body(o, &c->req);

	oc->c = c;
	oc->o = o;
	if (o->stream)
		oc->sse = sse_new(OPENAI_MAX_EVENT, openai_sse_event, oc);
	req.method = "POST";
	req.url = o->url;
	req.content_type = "application/json";
	req.body = body;
	req.body_len = strlen(body);
	req.authorization = o->authorization;
	req.timeout = o->timeout;
	req.max_body = OPENAI_MAX_RESPONSE;
	req.on_chunk = o->stream ? openai_chunk : NULL;
	oc->http = http_request(o->http, &req, openai_done, oc);
	free(body);
	if (oc->http == NULL) {
		openai_call_free(oc);
		snprintf(err, errlen, OPENAI_UNREACHABLE "invalid URL %s", o->url);
		return -1;
	}
	c->impl = oc;
	return 0;
}

static void
openai_cancel(struct agent_call *c)
{
	openai_call_free(c->impl);
	c->impl = NULL;
}

const struct agent_backend agent_openai_backend = {
	.name = "openai",
	.keys = openai_keys,
	.create = openai_create,
	.destroy = openai_destroy,
	.start = openai_start,
	.cancel = openai_cancel,
};
