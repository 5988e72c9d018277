/*
 * feishu.h - the Feishu / Lark platform: the long connection (a WebSocket
 * of protobuf frames, see feishu_frame.h) for events, REST for sends, on
 * the platform kit.
 *
 * Nothing is lost across a restart because Feishu pushes every event
 * again until it is acknowledged (within 3 s), and each event is
 * acknowledged only once the intake journal holds it.  A re-push of an
 * event already journaled or handled (an ack lost, a restart in between)
 * is recognized by its message_id in the journal, or by its event_id
 * among the last ones acknowledged, and only acknowledged.  Sends carry a
 * uuid derived from the reply's key: a retried or replayed reply is
 * posted once.
 *
 * The pure helpers are exported for the unit tests.
 */
#ifndef HERMES_FEISHU_H
#define HERMES_FEISHU_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "outq.h"
#include "platform.h"

extern const struct platform_ops feishu_ops;

/* "feishu", "lark" or an http(s) URL -> the API's base URL (newly allocated), or NULL. */
char *fs_domain_url(const char *domain);

/* One im.message.receive_v1, normalized; strings point into the event, text is owned. */
struct fs_msg {
	const char *event_id, *message_id, *chat_id, *user_id;
	const char *thread;             /* the thread's root message, or NULL */
	char *text;                     /* mentions resolved, ours removed; the caller frees */
	int group;                      /* not a p2p chat */
	int addressed;
	time_t time;
};

/*
 * Parses an event (schema 2.0) of type im.message.receive_v1.  Returns 1
 * and fills m for a message the hub should see; 0 when it is to be
 * skipped (our own, an app's, not text: why says which); -1 when
 * malformed.
 */
int fs_event_parse(const cJSON *ev, const char *bot_open_id, int require_mention,
    struct fs_msg *m, const char **why);

/* A uuid (36 characters) that depends only on key: the idempotency key of a send. */
void fs_uuid(const char *key, char out[37]);

/*
 * Classifies a send's answer: its HTTP status and the body's code (-1
 * when the body had none); reply is 1 for POST .../reply.  *refresh is
 * set when the tenant_access_token must be fetched anew, *pause_all when
 * the limit is the app's rather than the chat's.
 */
enum outq_result fs_send_classify(int status, int64_t code, int reply, int *refresh,
    int *pause_all);

/* What POST /callback/ws/endpoint answered. */
struct fs_endpoint {
	char *url;                      /* the WebSocket URL; the caller frees */
	int32_t service_id;             /* from the URL's query */
	unsigned ping_sec;              /* ClientConfig.PingInterval; 0 when not given */
};

/*
 * Parses the endpoint answer (HTTP status and body).  Returns 0, 1 when
 * the server asks for a retry (code 1, 1000040343, HTTP errors), -1 when
 * it refuses the app (any other code: credentials, not a self-built app);
 * why (static or in buf) says what.
 */
int fs_endpoint_parse(int status, const char *body, size_t len, struct fs_endpoint *e,
    char *buf, size_t buflen);

/* ClientConfig.PingInterval in seconds from a pong's JSON payload; 0 when none. */
unsigned fs_client_config_ping(const char *json, size_t len);

#endif
