/* weixin.c - Weixin through Tencent's iLink bot API on the kit (see weixin.h). */
#include "platforms/weixin.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "json.h"
#include "kit.h"
#include "log.h"
#include "lpoll.h"
#include "net/http.h"
#include "platforms/ilink.h"
#include "strmap.h"
#include "util.h"

#define WX_MAX_TEXT     2000            /* bytes; the Python gateway splits at 2000 characters */
#define WX_TICKET_SEC   600             /* a typing ticket is reused this long */

struct wx {
	struct kit *kit;                /* first: the kit's vtable entries find it */
	struct kit_ops ops;
	struct http_client *http;
	struct lpoll *lp;
	char *name, *account, *base_url, *auth;
	char *acct_path, *tokens_path;
	int token_from_file, tokens_dirty, tokens_failing;
	enum ilink_groups groups;
	double hold;                    /* the server's long-poll time, seconds */
	cJSON *tokens;                  /* chat -> context_token */
	struct strmap *tickets;         /* peer -> "<mono seconds> <typing_ticket>" */
	struct http_call *tcall;        /* the one typing call in flight */
	char *tpeer;
	int tstatus, tconfig;
	char *poll_url, *poll_body, *first_buf;
	struct ilink_hdrs poll_hdrs;
};

/* Writes the tokens when they changed: before the batch that brought them is committed. */
static void
wx_tokens_flush(struct wx *wx)
{
	if (!wx->tokens_dirty)
		return;
	if (ilink_tokens_save(wx->tokens_path, wx->tokens) < 0) {
		if (!wx->tokens_failing++)
			log_warn("%s: cannot write %s (the tokens are kept in memory; retrying)",
			    wx->name, wx->tokens_path);
		return;
	}
	wx->tokens_dirty = wx->tokens_failing = 0;
}

/* ---- requests -------------------------------------------------------------- */

static struct http_call *
wx_post(struct wx *wx, const char *endpoint, const char *body, http_done_fn cb, void *arg)
{
	struct ilink_hdrs h;
	char *url = xasprintf("%s/ilink/bot/%s", wx->base_url, endpoint);
	struct http_req req = { .method = "POST", .url = url, .content_type = "application/json",
		.body = body, .body_len = strlen(body), .authorization = wx->auth,
		.headers = h.v, .timeout = 30, .max_body = 1 << 20 };
	struct http_call *c;

	ilink_headers(&h);
	c = http_request(wx->http, &req, cb, arg);
	free(url);
	return c;
}

static void wx_typing(struct wx *wx, const char *peer, int status);

/* getconfig gave a ticket (then the typing status is sent), or sendtyping is done. */
static void
wx_typing_done(void *arg, const struct http_response *r)
{
	struct wx *wx = arg;
	char why[256], *peer = wx->tpeer;
	cJSON *o = NULL;
	const char *t;

	wx->tcall = NULL;
	wx->tpeer = NULL;
	if (ilink_answer(wx->tconfig ? "getconfig" : "sendtyping", r, &o, why, sizeof(why)) !=
	    ILINK_OK)
		log_debug("%s: typing: %s", wx->name, why);
	else if (wx->tconfig && (t = json_str(o, "typing_ticket")) != NULL && t[0] != '\0') {
		if (strmap_count(wx->tickets) >= 1024) {
			strmap_free(wx->tickets, free);
			wx->tickets = strmap_new();
		}
		free(strmap_put(wx->tickets, peer, xasprintf("%" PRIu64 " %s", mono_msec() / 1000,
		    t)));
		wx_typing(wx, peer, wx->tstatus);
	}
	cJSON_Delete(o);
	free(peer);
}

/* Shows (status 1) or clears (2) "typing" to peer: best effort, one call at a time. */
static void
wx_typing(struct wx *wx, const char *peer, int status)
{
	const char *t = strmap_get(wx->tickets, peer), *sp = t != NULL ? strchr(t, ' ') : NULL;
	const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(wx->tokens, peer);
	uint64_t at = 0;
	cJSON *o;
	char *body;

	if (wx->tcall != NULL || kit_stopping(wx->kit))
		return;
	wx->tconfig = sp == NULL || sscanf(t, "%" SCNu64, &at) != 1 ||
	    mono_msec() / 1000 - at >= WX_TICKET_SEC;
	if (wx->tconfig && status != 1)
		return;
	o = cJSON_CreateObject();
	if (o == NULL || !cJSON_AddStringToObject(o, "ilink_user_id", peer) || (wx->tconfig ?
	    cJSON_IsString(ctx) && !cJSON_AddStringToObject(o, "context_token", ctx->valuestring) :
	    !cJSON_AddStringToObject(o, "typing_ticket", sp + 1) ||
	    !cJSON_AddNumberToObject(o, "status", status)))
		fatalx("%s: out of memory", __func__);
	body = ilink_body(o);
	wx->tpeer = xstrdup(peer);
	wx->tstatus = status;
	wx->tcall = wx_post(wx, wx->tconfig ? "getconfig" : "sendtyping", body, wx_typing_done, wx);
	free(body);
}

/* ---- the long poll ----------------------------------------------------------- */

static int
wx_build(void *p, const char *cursor, struct http_req *req)
{
	struct wx *wx = p;
	char *buf = ilink_cursor_parse(cursor);
	cJSON *o = cJSON_CreateObject();

	if (cursor != NULL && buf == NULL)
		log_warnx("%s: the journal's cursor is damaged; polling from the start", wx->name);
	if (o == NULL || !cJSON_AddStringToObject(o, "get_updates_buf", buf != NULL ? buf :
	    cursor == NULL && wx->first_buf != NULL ? wx->first_buf : ""))
		fatalx("%s: out of memory", __func__);
	free(buf);
	free(wx->poll_body);
	wx->poll_body = ilink_body(o);
	ilink_headers(&wx->poll_hdrs);
	req->method = "POST";
	req->url = wx->poll_url;
	req->content_type = "application/json";
	req->body = wx->poll_body;
	req->body_len = strlen(wx->poll_body);
	req->authorization = wx->auth;
	req->headers = wx->poll_hdrs.v;
	req->timeout = wx->hold + 10;           /* the server answers first; else it is stuck */
	req->max_body = 8u << 20;
	return 0;
}

/* Stages one message; returns 1 when it is new. */
static int
wx_message(struct wx *wx, const cJSON *o)
{
	struct ilink_msg m;
	struct inbound in;
	const char *why = "";
	int r = ilink_msg_parse(o, wx->account, wx->groups, &m, &why);

	if (r <= 0) {
		if (r < 0)
			log_warnx("%s: a message without a sender or an id; skipped", wx->name);
		else
			log_debug("%s: skipped %s", wx->name, why);
		return 0;
	}
	wx->tokens_dirty |= ilink_tokens_set(wx->tokens, m.chat, m.context_token);
	memset(&in, 0, sizeof(in));
	in.chat_id = m.chat;
	in.chat_type = m.group ? CHAT_GROUP : CHAT_DM;
	in.user_id = m.from;
	in.message_id = m.id;
	in.text = m.text;
	in.time = m.time;
	in.addressed = m.addressed;
	r = kit_inbound(wx->kit, &in) == INTAKE_NEW;
	if (r && !m.group)
		wx_typing(wx, m.from, 1);
	free(m.text);
	return r;
}

static void
wx_poll_done(void *p, const struct http_response *r, struct lpoll_answer *a)
{
	struct wx *wx = p;
	enum ilink_err e;
	const cJSON *m;
	const char *buf;
	cJSON *o;
	double ms;

	if ((e = ilink_answer("getupdates", r, &o, a->why, sizeof(a->why))) != ILINK_OK) {
		a->verdict = LPOLL_FAIL;
		a->kind = e == ILINK_EXPIRED ? LINK_UNAUTHORIZED_FAIL : LINK_TRANSIENT;
		return;
	}
	if (json_num(o, "longpolling_timeout_ms", &ms) == 0 && ms >= 1000 && ms <= 300000)
		wx->hold = ms / 1000;
	cJSON_ArrayForEach(m, json_arr(o, "msgs"))
		a->events += (size_t)wx_message(wx, m);
	wx_tokens_flush(wx);
	if ((buf = json_str(o, "get_updates_buf")) != NULL && buf[0] != '\0')
		a->cursor = ilink_cursor_format(buf);
	a->verdict = LPOLL_NEXT;
	cJSON_Delete(o);
}

static const struct lpoll_ops wx_lp_ops = { .build = wx_build, .done = wx_poll_done };

/* ---- sending ------------------------------------------------------------------ */

struct wx_send {
	struct wx *wx;
	struct outq_attempt *a;
	unsigned attempt;
	int with_token, last;
	char *chat;
};

static void
wx_sent(void *arg, const struct http_response *r)
{
	struct wx_send *s = arg;
	char why[300];
	cJSON *o;

	switch (ilink_answer("sendmessage", r, &o, why, sizeof(why))) {
	case ILINK_OK:
		outq_result(s->a, OUTQ_OK, 0, NULL);
		if (s->last)
			wx_typing(s->wx, s->chat, 2);
		break;
	case ILINK_EXPIRED:
		outq_result(s->a, OUTQ_UNAUTHORIZED, 0, why);
		break;
	case ILINK_LIMITED:
		/* the third -2 in a row with a context_token: it may be stale, try without */
		if (s->with_token && s->attempt >= 2)
			outq_result(s->a, OUTQ_VARIANT, 0, why);
		else            /* 2, 4, 8, 16, then 30 s */
			outq_result(s->a, OUTQ_RETRY_AFTER, s->attempt < 4 ? 2 << s->attempt : 30,
			    why);
		break;
	case ILINK_REFUSED:
		outq_result(s->a, OUTQ_REJECTED, 0, why);
		break;
	default:
		outq_result(s->a, OUTQ_TRANSIENT, 0, why);
	}
	cJSON_Delete(o);
	free(s->chat);
	free(s);
}

/* One attempt: variant 0 echoes the chat's context_token, variant 1 goes without. */
static void
wx_send(void *plat, const struct outq_piece *p, struct outq_attempt *a)
{
	struct wx *wx = plat;
	const cJSON *t = p->variant == 0 ? cJSON_GetObjectItemCaseSensitive(wx->tokens,
	    p->chat_id) : NULL;
	struct wx_send *s = xcalloc(1, sizeof(*s));
	char *body = ilink_send_body(p->chat_id, p->key, p->text, cJSON_IsString(t) ?
	    t->valuestring : NULL);

	s->wx = wx;
	s->a = a;
	s->attempt = p->attempt;
	s->with_token = cJSON_IsString(t);
	s->last = p->index + 1 == p->count;
	s->chat = xstrdup(p->chat_id);
	if (wx_post(wx, "sendmessage", body, wx_sent, s) == NULL) {
		outq_result(a, OUTQ_REJECTED, 0, "base_url is not a usable URL");
		free(s->chat);
		free(s);
	}
	free(body);
}

/* ---- the platform ---------------------------------------------------------------- */

/* Each attempt reads a login's account file again: a new login is picked up. */
static void
wx_connect(void *plat)
{
	struct wx *wx = plat;
	struct ilink_account a;
	char err[600];

	if (wx->token_from_file && ilink_account_load(wx->acct_path, &a, err, sizeof(err)) == 0) {
		if (strcmp(wx->auth + 7, a.token) != 0) {
			log_info("%s: a new login in %s", wx->name, wx->acct_path);
			explicit_bzero(wx->auth, strlen(wx->auth));
			free(wx->auth);
			wx->auth = xasprintf("Bearer %s", a.token);
		}
		ilink_account_clear(&a);
	}
	lpoll_start(wx->lp);
}

static void
wx_close(void *plat)
{
	struct wx *wx = plat;

	lpoll_stop(wx->lp);
	if (wx->tcall != NULL)
		http_cancel(wx->tcall);
	wx->tcall = NULL;
	wx_tokens_flush(wx);
	kit_closed(wx->kit);
}

/* Restores the context tokens, at the first start the Python gateway's with its cursor. */
static void
wx_start(void *self)
{
	struct wx *wx = self;

	wx->tokens = ilink_tokens_load(wx->tokens_path);
	if (wx->tokens->child == NULL) {
		cJSON_Delete(wx->tokens);
		wx->tokens = ilink_python_state(wx->account, &wx->first_buf);
		wx->tokens_dirty = wx->tokens->child != NULL;
	}
	kit_start(wx->kit);
}

static const struct kit_ops wx_kit_ops = {
	.connect = wx_connect,
	.send = wx_send,
	.close = wx_close,
	.limits = { .max_text = WX_MAX_TEXT, .chat_rate = 1, .chat_burst = 5, .global_rate = 10,
		.global_burst = 10, .inflight = 4, .variants = 2 },
	.link = { .backoff_min_usec = 1000000, .backoff_max_usec = 60000000,
		.unauthorized_usec = 300000000 },
};

static const char *const wx_keys[] = { "token", "account_id", "base_url", "group_policy",
	"session_retry", "limits", NULL };

/* account_id, and the token from the section, WEIXIN_TOKEN or the login's account file. */
static int
wx_conf_account(struct wx *wx, const struct plat_env *env, struct ilink_account *a,
    char *err, size_t errlen)
{
	const char *id = NULL, *tok = NULL;
	char *home = config_hermes_home(), *sid = NULL, *stok = NULL, why[600];
	int r = -1;

	if (kit_conf_str(env, "account_id", &id, err, errlen) < 0 ||
	    kit_conf_str(env, "token", &tok, err, errlen) < 0)
		goto out;
	if (id == NULL || id[0] == '\0')
		id = sid = config_secret("WEIXIN_ACCOUNT_ID");
	if ((wx->acct_path = ilink_account_path(home, id, ".json")) == NULL) {
		snprintf(err, errlen, "platforms.%s.account_id: %s (set it, or WEIXIN_ACCOUNT_ID; "
		    "hermes-worker login weixin prints it)", env->name,
		    id == NULL || id[0] == '\0' ? "missing" : "not a usable account id");
		goto out;
	}
	wx->account = xstrdup(id);
	if (tok == NULL || tok[0] == '\0')
		tok = stok = config_secret("WEIXIN_TOKEN");
	if (tok != NULL && tok[0] != '\0')
		a->token = xstrdup(tok);
	else if (ilink_account_load(wx->acct_path, a, why, sizeof(why)) < 0) {
		snprintf(err, errlen, "platforms.%s.token: missing (set it, or WEIXIN_TOKEN, or "
		    "log in with hermes-worker login weixin; %s)", env->name, why);
		goto out;
	} else
		wx->token_from_file = 1;
	r = strpbrk(a->token, " \t\r\n") != NULL ? -1 : 0;
	if (r < 0)
		snprintf(err, errlen, "platforms.%s.token: must not hold blanks", env->name);
out:
	if (stok != NULL)
		explicit_bzero(stok, strlen(stok));
	free(stok);
	free(sid);
	free(home);
	return r;
}

static int
wx_conf(struct wx *wx, const struct plat_env *env, char *err, size_t errlen)
{
	struct ilink_account a = { 0 };
	const char *groups = "disabled", *dflt = ILINK_DEFAULT_BASE;
	char *ebase = NULL, what[128];
	uint64_t retry = wx->ops.link.unauthorized_usec;
	int r = -1;

	snprintf(what, sizeof(what), "platforms.%s.session_retry", env->name);
	if (wx_conf_account(wx, env, &a, err, errlen) < 0 ||
	    kit_conf_str(env, "group_policy", &groups, err, errlen) < 0 ||
	    config_get_seconds(env->conf, "session_retry", what, 1000000, 86400000000ULL, &retry,
	    err, errlen) < 0)
		goto out;
	wx->ops.link.unauthorized_usec = retry;
	if ((ebase = config_secret("WEIXIN_BASE_URL")) != NULL && ebase[0] != '\0')
		dflt = ebase;
	else if (a.base_url != NULL && strncmp(a.base_url, "http", 4) == 0)
		dflt = a.base_url;
	if (kit_conf_url(env, "base_url", dflt, &wx->base_url, err, errlen) < 0)
		goto out;
	wx->poll_url = xasprintf("%s/ilink/bot/getupdates", wx->base_url);
	wx->groups = strcmp(groups, "all") == 0 ? ILINK_GROUPS_ALL : strcmp(groups, "commands") ==
	    0 ? ILINK_GROUPS_COMMANDS : ILINK_GROUPS_DISABLED;
	if (strcmp(groups, "disabled") != 0 && wx->groups == ILINK_GROUPS_DISABLED) {
		snprintf(err, errlen, "platforms.%s.group_policy: must be \"disabled\", "
		    "\"commands\" or \"all\"", env->name);
		goto out;
	}
	wx->auth = xasprintf("Bearer %s", a.token);
	r = 0;
out:
	ilink_account_clear(&a);
	free(ebase);
	return r;
}

static void wx_free(void *self);

static void *
wx_create(const struct plat_env *env, char *err, size_t errlen)
{
	struct wx *wx = xcalloc(1, sizeof(*wx));

	wx->ops = wx_kit_ops;
	wx->name = xstrdup(env->name);
	wx->hold = 35;
	wx->tickets = strmap_new();
	if (wx_conf(wx, env, err, errlen) < 0) {
		wx_free(wx);
		return NULL;
	}
	wx->tokens_path = xasprintf("%s/%s.context-tokens.json", env->state_dir, env->name);
	wx->http = http_client_new(env->base, env->dns, env->tls);
	wx->kit = kit_new(env, &wx->ops, wx);
	wx->lp = lpoll_new(wx->kit, wx->http, &wx_lp_ops, NULL, wx);
	if (kit_conf_limits(env, wx->kit, err, errlen) < 0) {
		wx_free(wx);
		return NULL;
	}
	return wx;
}

static void
wx_free(void *self)
{
	struct wx *wx = self;

	if (wx == NULL)
		return;
	lpoll_free(wx->lp);
	kit_free(wx->kit);
	http_client_free(wx->http);             /* the typing call too */
	strmap_free(wx->tickets, free);
	cJSON_Delete(wx->tokens);
	if (wx->auth != NULL)
		explicit_bzero(wx->auth, strlen(wx->auth));
	free(wx->auth);
	free(wx->name);
	free(wx->account);
	free(wx->base_url);
	free(wx->acct_path);
	free(wx->tokens_path);
	free(wx->tpeer);
	free(wx->poll_url);
	free(wx->poll_body);
	free(wx->first_buf);
	free(wx);
}

const struct platform_ops weixin_ops = {
	.name = "weixin",
	.max_text = WX_MAX_TEXT,
	.keys = wx_keys,
	.create = wx_create,
	.start = wx_start,
	.send = kit_vt_send,
	.stop = kit_vt_stop,
	.free = wx_free,
};
