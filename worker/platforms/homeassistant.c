/* homeassistant.c - the Home Assistant platform on the kit (see homeassistant.h). */
#include "platforms/homeassistant.h"
#include "platforms/hass.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "config.h"
#include "json.h"
#include "kit.h"
#include "log.h"
#include "net/http.h"
#include "net/ws.h"
#include "util.h"

#define HA_DEFAULT_URL  "http://homeassistant.local:8123"
#define HA_MAX_TEXT     4096            /* what hermes put in one notification */
#define HA_TITLE        "Hermes Agent"
#define HA_MAX_MESSAGE  (16u << 20)     /* get_states of a large installation */
#define HA_SAVE_USEC    1000000ULL      /* the snapshot is written at most this often */

enum ha_phase {
	HA_IDLE = 0,                    /* no connection */
	HA_AUTH,                        /* waiting for auth_required, then auth_ok */
	HA_SUBSCRIBE,                   /* subscribe_events sent */
	HA_SYNC,                        /* subscribed; get_states sent */
	HA_LIVE,                        /* get_states compared; events flowing */
	HA_CLOSING,                     /* ws_close sent */
};

struct ha {
	struct kit *kit;                /* first: the kit's vtable entries find it */
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;
	struct http_client *http;
	char *name, *url, *token, *auth, *snap_path;
	double ping_interval;

	struct ws *ws;
	enum ha_phase phase;
	int64_t next_id, sub_id, states_id, ping_id;
	int ping_out, journal_failed, freeing;
	struct event *ping_ev, *save_ev;
	struct hass_track *track;       /* the snapshot of states seen */
	int snap_loaded, save_failed;
};

/* ---- the snapshot file ------------------------------------------------------ */

static void
ha_save(struct ha *ha)
{
	struct timeval tv = { HA_SAVE_USEC / 1000000, HA_SAVE_USEC % 1000000 };

	if (!hass_track_dirty(ha->track) || !ha->snap_loaded)
		return;
	if (hass_snap_save(hass_track_snap(ha->track), ha->snap_path) < 0) {
		if (!ha->save_failed)
			log_warn("%s: writing %s (retried)", ha->name, ha->snap_path);
		ha->save_failed = 1;
		if (!ha->freeing)
			evtimer_add(ha->save_ev, &tv);
		return;
	}
	if (ha->save_failed)
		log_info("%s: %s written again", ha->name, ha->snap_path);
	ha->save_failed = 0;
	hass_track_clean(ha->track);
}

static void
ha_save_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	ha_save(arg);
}

/* ---- state changes ------------------------------------------------------------ */

/* The tracker changed the snapshot: written within HA_SAVE_USEC. */
static void
ha_dirty(struct ha *ha)
{
	struct timeval tv = { HA_SAVE_USEC / 1000000, HA_SAVE_USEC % 1000000 };

	if (hass_track_dirty(ha->track) && !evtimer_pending(ha->save_ev, NULL))
		evtimer_add(ha->save_ev, &tv);
}

/* Hands one change to the kit; 1 when staged for the next commit. */
static int
ha_report(void *arg, const char *id, const char *text, const char *mid)
{
	struct ha *ha = arg;
	struct inbound in = { .chat_id = HASS_CHAT, .chat_type = CHAT_GROUP, .user_id = HASS_USER,
		.user_name = "Home Assistant", .message_id = mid, .text = text, .time = time(NULL),
		.addressed = 1 };
	enum intake_add r = kit_inbound(ha->kit, &in);

	if (r == INTAKE_INVALID)
		log_warnx("%s: a change of %s could not be journaled; skipped", ha->name, id);
	else if (r == INTAKE_DUP)
		log_debug("%s: change %s already reported", ha->name, mid);
	return r == INTAKE_NEW;
}

struct ha_commit {
	struct ha *ha;
	struct ws *ws;
	struct hass_batch *b;
};

static void ha_fail(struct ha *ha, enum link_fail kind, const char *why);

/* The journal holds the changes (ok) or not: only then is the snapshot told. */
static void
ha_committed(void *arg, int ok)
{
	struct ha_commit *c = arg;
	struct ha *ha = c->ha;

	hass_track_committed(ha->track, c->b, ok);
	ha_dirty(ha);
	if (!ok && !ha->freeing && c->ws == ha->ws && ha->ws != NULL && !ha->journal_failed) {
		ha->journal_failed = 1;
		log_warnx("%s: the journal cannot be written; reconnecting to compare the states "
		    "again", ha->name);
		ha_fail(ha, LINK_TRANSIENT, "the journal cannot be written");
	}
	free(c);
}

/* Commits what was staged (one fdatasync for all of it). */
static void
ha_flush(struct ha *ha)
{
	struct hass_batch *b = hass_track_batch(ha->track);
	struct ha_commit *c;

	ha_dirty(ha);
	if (b == NULL)
		return;
	c = xcalloc(1, sizeof(*c));
	c->ha = ha;
	c->ws = ha->ws;
	c->b = b;
	kit_commit(ha->kit, NULL, ha_committed, c);
}

/* ---- the WebSocket ------------------------------------------------------------- */

static void
ha_drop(struct ha *ha)
{
	evtimer_del(ha->ping_ev);
	ws_free(ha->ws);
	ha->ws = NULL;
	ha->phase = HA_IDLE;
}

static void
ha_fail(struct ha *ha, enum link_fail kind, const char *why)
{
	ha_drop(ha);
	if (kit_stopping(ha->kit)) {
		kit_closed(ha->kit);
		return;
	}
	link_fail(kit_link(ha->kit), kind, 0, why);
}

/* Sends a command {"id": <next>, "type": type, ...o}; o (may be NULL) is consumed. */
static int64_t
ha_cmd(struct ha *ha, const char *type, cJSON *o)
{
	int64_t id = ha->next_id++;
	char *s;

	if (o == NULL)
		o = cJSON_CreateObject();
	if (o == NULL || !cJSON_AddNumberToObject(o, "id", (double)id) ||
	    !cJSON_AddStringToObject(o, "type", type) || (s = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	if (ws_send_text(ha->ws, s, strlen(s)) < 0)
		log_debug("%s: %s not sent: connection closing", ha->name, type);
	free(s);
	return id;
}

static void
ha_ping_arm(struct ha *ha)
{
	uint64_t us = (uint64_t)(ha->ping_interval * 1e6);
	struct timeval tv = { (time_t)(us / 1000000), (suseconds_t)(us % 1000000) };

	evtimer_add(ha->ping_ev, &tv);
}

/* The application-level heartbeat: a ping unanswered by the next one means a dead link. */
static void
ha_ping_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ha *ha = arg;

	(void)fd;
	(void)what;
	if (ha->ping_out) {
		ha_fail(ha, LINK_TRANSIENT, "no pong: the connection is dead");
		return;
	}
	ha->ping_out = 1;
	ha->ping_id = ha_cmd(ha, "ping", NULL);
	ha_ping_arm(ha);
}

static void
ha_auth(struct ha *ha)
{
	cJSON *o = cJSON_CreateObject();
	char *s;

	if (o == NULL || !cJSON_AddStringToObject(o, "type", "auth") ||
	    !cJSON_AddStringToObject(o, "access_token", ha->token) ||
	    (s = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	(void)ws_send_text(ha->ws, s, strlen(s));
	explicit_bzero(s, strlen(s));
	free(s);
}

static void
ha_subscribe(struct ha *ha)
{
	cJSON *o = cJSON_CreateObject();

	if (o == NULL || !cJSON_AddStringToObject(o, "event_type", "state_changed"))
		fatalx("%s: out of memory", __func__);
	ha->phase = HA_SUBSCRIBE;
	ha->sub_id = ha_cmd(ha, "subscribe_events", o);
	ha_ping_arm(ha);
}

/* A peer's text made fit for the log and /status. */
static const char *
ha_said(const char *s, char *buf, size_t len)
{
	return s != NULL ? log_escape(buf, len, s, strlen(s)) : "no reason given";
}

static void
ha_result(struct ha *ha, const cJSON *o)
{
	const cJSON *res = cJSON_GetObjectItemCaseSensitive(o, "result");
	int ok = json_bool(o, "success") == 1;
	const char *msg = json_str(json_obj(o, "error"), "message");
	char why[300], said[160];
	int64_t id = -1;

	(void)json_i64(o, "id", 0, INT64_MAX, &id);
	ha_said(msg, said, sizeof(said));
	if (id == ha->sub_id && ha->phase == HA_SUBSCRIBE && ok) {
		ha->phase = HA_SYNC;
		ha->states_id = ha_cmd(ha, "get_states", NULL);
		link_up(kit_link(ha->kit));
	} else if (id == ha->states_id && ha->phase == HA_SYNC && ok && cJSON_IsArray(res)) {
		ha->phase = HA_LIVE;
		log_info("%s: %d states compared with the last seen: %zu changed meanwhile",
		    ha->name, cJSON_GetArraySize(res), hass_track_sync(ha->track, res,
		    (int64_t)time(NULL), ha_report, ha));
		ha_flush(ha);
		ha_save(ha);    /* a first connection's states are the baseline: keep them now */
	} else if (id == ha->sub_id || id == ha->states_id) {
		snprintf(why, sizeof(why), "%s failed: %s", id == ha->sub_id ? "subscribe_events" :
		    "get_states", said);
		ha_fail(ha, LINK_TRANSIENT, why);
	} else if (!ok)
		log_warnx("%s: command %" PRId64 " failed: %s", ha->name, id, said);
}

static void
ha_event(struct ha *ha, const cJSON *o)
{
	const cJSON *ev = json_obj(o, "event"), *d = json_obj(ev, "data");
	const char *type = json_str(ev, "event_type");
	int64_t sub = -1;

	(void)json_i64(o, "id", 0, INT64_MAX, &sub);
	if (sub != ha->sub_id || ha->journal_failed || type == NULL ||
	    strcmp(type, "state_changed") != 0)
		return;
	hass_track_event(ha->track, json_str(d, "entity_id"), json_str(json_obj(d, "old_state"),
	    "state"), json_obj(d, "new_state"), (int64_t)time(NULL), ha_report, ha);
	ha_flush(ha);
}

static void
ha_pong(struct ha *ha, const cJSON *o)
{
	int64_t id = -1;

	if (json_i64(o, "id", 0, INT64_MAX, &id) == 0 && id == ha->ping_id)
		ha->ping_out = 0;
}

static void
ha_message(struct ha *ha, const char *data, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(data, len);
	const char *type = json_str(o, "type");
	char why[300], said[160];

	if (type == NULL)
		ha_fail(ha, LINK_TRANSIENT, "a message that is not JSON with a type");
	else if (strcmp(type, "auth_required") == 0 && ha->phase == HA_AUTH)
		ha_auth(ha);
	else if (strcmp(type, "auth_ok") == 0 && ha->phase == HA_AUTH)
		ha_subscribe(ha);
	else if (strcmp(type, "auth_invalid") == 0) {
		snprintf(why, sizeof(why), "the access token was refused (auth_invalid: %s); "
		    "check the token or HASS_TOKEN", ha_said(json_str(o, "message"), said,
		    sizeof(said)));
		ha_fail(ha, LINK_UNAUTHORIZED_FAIL, why);
	} else if (strcmp(type, "result") == 0 && ha->phase >= HA_SUBSCRIBE)
		ha_result(ha, o);
	else if (strcmp(type, "event") == 0 && ha->phase >= HA_SYNC)
		ha_event(ha, o);
	else if (strcmp(type, "pong") == 0)
		ha_pong(ha, o);
	else if (ha->phase == HA_AUTH)
		ha_fail(ha, LINK_TRANSIENT, "an unexpected message during authentication");
	cJSON_Delete(o);
}

static void
ha_closed(struct ha *ha, int code, const char *reason)
{
	char why[200], said[120];

	if (ha->phase == HA_CLOSING || kit_stopping(ha->kit)) {
		ha_drop(ha);
		kit_closed(ha->kit);
		return;
	}
	snprintf(why, sizeof(why), "connection closed (%d%s%s)", code, reason[0] ? ": " : "",
	    reason[0] ? ha_said(reason, said, sizeof(said)) : "");
	ha_fail(ha, LINK_TRANSIENT, why);
}

static void
ha_ws_cb(struct ws *ws, const struct ws_event *ev, void *arg)
{
	struct ha *ha = arg;

	if (ws != ha->ws)
		return;
	switch (ev->type) {
	case WS_EV_OPEN:
		break;
	case WS_EV_TEXT:
		ha_message(ha, ev->data, ev->len);
		break;
	case WS_EV_BINARY:
		ha_fail(ha, LINK_TRANSIENT, "a binary frame");
		break;
	case WS_EV_CLOSE:
		ha_closed(ha, ev->code, ev->reason);
		break;
	case WS_EV_ERROR:
		if (kit_stopping(ha->kit))
			ha_closed(ha, ev->code, ev->reason);
		else
			ha_fail(ha, LINK_TRANSIENT, ev->reason);
		break;
	}
}

/* One connection attempt: authenticate, subscribe, then compare get_states. */
static void
ha_connect(void *plat)
{
	struct ha *ha = plat;
	struct ws_opts o = { .max_message = HA_MAX_MESSAGE, .max_frame = HA_MAX_MESSAGE };
	char *url = hass_ws_url(ha->url);

	ha_drop(ha);
	if (!ha->snap_loaded) {
		(void)hass_snap_load(hass_track_snap(ha->track), ha->snap_path, ha->name);
		ha->snap_loaded = 1;
	}
	ha->next_id = 1;
	ha->sub_id = ha->states_id = ha->ping_id = -1;
	ha->ping_out = ha->journal_failed = 0;
	ha->ws = ws_new(ha->base, ha->dns, ha->tls, url, &o, ha_ws_cb, ha);
	free(url);
	if (ha->ws == NULL) {
		ha_fail(ha, LINK_FATAL, "url is not usable for the WebSocket API");
		return;
	}
	ha->phase = HA_AUTH;
}

/* ---- sending ------------------------------------------------------------------- */

struct ha_send {
	struct outq_attempt *a;
	char what[160];
};

static void
ha_sent(void *arg, const struct http_response *r)
{
	struct ha_send *s = arg;
	cJSON *o = r->status >= 400 ? cJSON_ParseWithLength(r->body, r->body_len) : NULL;
	const char *msg = json_str(o, "message");
	char why[400], said[160];

	snprintf(why, sizeof(why), "%s: HTTP %d%s%s", s->what, r->status, msg ? ": " : "",
	    msg ? ha_said(msg, said, sizeof(said)) : "");
	if (r->status == 0)
		snprintf(why, sizeof(why), "%s: %s", s->what, r->error);
	if (r->status >= 200 && r->status < 300)
		outq_result(s->a, OUTQ_OK, 0, NULL);
	else if (r->status == 401 || r->status == 403)
		outq_result(s->a, OUTQ_UNAUTHORIZED, 0, why);
	else if (r->status == 429)
		outq_result(s->a, OUTQ_RETRY_AFTER, 5, why);
	else if (r->status >= 400 && r->status < 500)
		outq_result(s->a, OUTQ_REJECTED, 0, why);
	else
		outq_result(s->a, OUTQ_TRANSIENT, 0, why);
	cJSON_Delete(o);
	free(s);
}

/*
 * A notification's body.  Its notification_id derives from the piece's
 * key: a piece sent again (a retry, a restart) replaces itself.
 */
static char *
ha_send_body(const struct outq_piece *p, int persistent)
{
	cJSON *o = cJSON_CreateObject();
	char nid[40], *s;

	memcpy(nid, "hermes_", 7);
	hass_hash_hex(p->key, nid + 7, 24);
	if (o == NULL || !cJSON_AddStringToObject(o, "title", HA_TITLE) ||
	    !cJSON_AddStringToObject(o, "message", p->text) ||
	    (persistent && !cJSON_AddStringToObject(o, "notification_id", nid)) ||
	    (s = cJSON_PrintUnformatted(o)) == NULL)
		fatalx("%s: out of memory", __func__);
	cJSON_Delete(o);
	return s;
}

static void
ha_send(void *plat, const struct outq_piece *p, struct outq_attempt *a)
{
	struct ha *ha = plat;
	struct http_req req = { .method = "POST", .content_type = "application/json",
		.authorization = ha->auth, .timeout = 30, .max_body = 1 << 20 };
	struct ha_send *s;
	char svc[128], *url, *body;
	int kind = hass_chat_service(p->chat_id, svc, sizeof(svc));

	if (kind < 0) {
		outq_result(a, OUTQ_REJECTED, 0, "not a Home Assistant chat (ha_events or a "
		    "notify service name)");
		return;
	}
	s = xcalloc(1, sizeof(*s));
	s->a = a;
	snprintf(s->what, sizeof(s->what), "%s%s", kind ? "notify." : "persistent_notification",
	    kind ? svc : "");
	url = kind ? xasprintf("%s/api/services/notify/%s", ha->url, svc) :
	    xasprintf("%s/api/services/persistent_notification/create", ha->url);
	body = ha_send_body(p, kind == 0);
	req.url = url;
	req.body = body;
	req.body_len = strlen(body);
	if (http_request(ha->http, &req, ha_sent, s) == NULL) {
		outq_result(a, OUTQ_REJECTED, 0, "url is not usable for the REST API");
		free(s);
	}
	free(url);
	free(body);
}

/* ---- the platform ---------------------------------------------------------------- */

static void
ha_close(void *plat)
{
	struct ha *ha = plat;

	ha_save(ha);
	if (ha->ws == NULL || ha->phase == HA_IDLE || ws_close(ha->ws, 1000, "restarting") < 0) {
		ha_drop(ha);
		kit_closed(ha->kit);
		return;
	}
	ha->phase = HA_CLOSING;
	evtimer_del(ha->ping_ev);
}

static const struct kit_ops ha_kit_ops = {
	.connect = ha_connect,
	.send = ha_send,
	.close = ha_close,
	.limits = { .max_text = HA_MAX_TEXT, .chat_rate = 10, .chat_burst = 20,
		.global_rate = 20, .global_burst = 20, .inflight = 4 },
	.link = { .backoff_min_usec = 1000000, .backoff_max_usec = 60000000 },
};

static const char *const ha_keys[] = { "token", "url", "watch_domains", "watch_entities",
	"ignore_entities", "watch_all", "cooldown", "ping_interval", "limits", NULL };

/* A number of seconds in [min, max] (the kit has no getter for it). */
static int
ha_conf_seconds(const struct plat_env *env, const char *key, double min, double max,
    double *out, char *err, size_t len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(env->conf, key);

	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!cJSON_IsNumber(v) || v->valuedouble < min || v->valuedouble > max) {
		snprintf(err, len, "platforms.%s.%s: must be a number of seconds from %g to %g",
		    env->name, key, min, max);
		return -1;
	}
	*out = v->valuedouble;
	return 0;
}

static void
ha_free_conf(struct ha *ha)
{
	if (ha->token != NULL)
		explicit_bzero(ha->token, strlen(ha->token));
	if (ha->auth != NULL)
		explicit_bzero(ha->auth, strlen(ha->auth));
	free(ha->token);
	free(ha->auth);
	free(ha->url);
	free(ha);
}

static int
ha_conf(struct ha *ha, const struct plat_env *env, struct hass_filter *f, double *cooldown,
    char *err, size_t len)
{
	char *dflt = config_secret("HASS_URL");
	int r;

	r = kit_conf_url(env, "url", dflt != NULL && dflt[0] != '\0' ? dflt : HA_DEFAULT_URL,
	    &ha->url, err, len);
	if (r < 0 && dflt != NULL && dflt[0] != '\0')
		snprintf(err, len, "platforms.%s.url: must be an http:// or https:// URL "
		    "(or HASS_URL)", env->name);
	free(dflt);
	return r < 0 ||
	    kit_conf_secret(env, "token", "HASS_TOKEN", &ha->token, err, len) < 0 ||
	    hass_filter_conf(env, f, err, len) < 0 ||
	    ha_conf_seconds(env, "cooldown", 0, 86400, cooldown, err, len) < 0 ||
	    ha_conf_seconds(env, "ping_interval", 1, 3600, &ha->ping_interval, err, len) < 0 ?
	    -1 : 0;
}

/* What a user should know about the configuration, said once. */
static void
ha_conf_warn(const struct ha *ha, const struct hass_filter *f)
{
	if (hass_filter_empty(f))
		log_warnx("%s: nothing is watched: set watch_domains, watch_entities or watch_all",
		    ha->name);
	if (strncmp(ha->url, "http://", 7) == 0 && !hass_url_loopback(ha->url))
		log_warnx("%s: the access token goes to a host that is not loopback over plain "
		    "http: use https:// unless the network is trusted", ha->name);
}

static void ha_free(void *self);

static void *
ha_create(const struct plat_env *env, char *err, size_t errlen)
{
	struct ha *ha = xcalloc(1, sizeof(*ha));
	struct hass_filter f = { 0 };
	double cooldown = 30;

	ha->ping_interval = 30;
	if (ha_conf(ha, env, &f, &cooldown, err, errlen) < 0) {
		hass_filter_clear(&f);
		ha_free_conf(ha);
		return NULL;
	}
	ha->auth = xasprintf("Bearer %s", ha->token);
	ha->base = env->base;
	ha->dns = env->dns;
	ha->tls = env->tls;
	ha->name = xstrdup(env->name);
	ha->snap_path = xasprintf("%s/%s.states", env->state_dir, env->name);
	ha->http = http_client_new(env->base, env->dns, env->tls);
	ha->ping_ev = evtimer_new(env->base, ha_ping_cb, ha);
	ha->save_ev = evtimer_new(env->base, ha_save_cb, ha);
	if (ha->ping_ev == NULL || ha->save_ev == NULL)
		fatalx("%s: out of memory", __func__);
	ha_conf_warn(ha, &f);
	ha->track = hass_track_new(&f, cooldown);
	ha->kit = kit_new(env, &ha_kit_ops, ha);
	if (kit_conf_limits(env, ha->kit, err, errlen) < 0) {
		ha_free(ha);
		return NULL;
	}
	return ha;
}

static void
ha_free(void *self)
{
	struct ha *ha = self;

	if (ha == NULL)
		return;
	ha->freeing = 1;
	kit_free(ha->kit);
	ha_save(ha);
	ws_free(ha->ws);
	http_client_free(ha->http);
	event_free(ha->ping_ev);
	event_free(ha->save_ev);
	hass_track_free(ha->track);
	free(ha->snap_path);
	free(ha->name);
	ha_free_conf(ha);
}

/* Its events carry no user: they come from "homeassistant". */
static const char *const ha_default_users[] = { "homeassistant", NULL };

const struct platform_ops homeassistant_ops = {
	.name = "homeassistant",
	.max_text = HA_MAX_TEXT,
	.keys = ha_keys,
	.create = ha_create,
	.start = kit_vt_start,
	.send = kit_vt_send,
	.stop = kit_vt_stop,
	.free = ha_free,
	.users_env = "HASS",
	.home_env = "HASS",
	.default_users = ha_default_users,
};
