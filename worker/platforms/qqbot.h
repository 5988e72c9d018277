/*
 * qqbot.h - the QQ Bot platform (official API v2): an app access token,
 * the Discord-like gateway WebSocket for events, REST for replies, on the
 * platform kit.
 *
 * Chats are named by kind: "c2c:<user_openid>", "group:<group_openid>",
 * "guild:<channel_id>", "dm:<guild_id>" (a guild direct-message session),
 * so a reply finds its endpoint after a restart without any memory.
 *
 * Nothing is lost across a restart: the gateway session (session_id and
 * the last sequence number) is the platform's cursor, committed with the
 * intake journal; at a stop the gateway is closed with 4000 and the next
 * worker RESUMEs, and QQ replays what arrived in between.  A message QQ
 * pushes twice is dropped by its id.
 *
 * QQ takes no proactive messages: each reply carries the id of a message
 * received in its chat (within 60 minutes in a C2C chat, 5 in the
 * others, at most 5 replies per message) and, in C2C and groups, a
 * msg_seq unique for that id.  The newest message of each chat (its
 * "reply handle") is kept in <state_dir>/<name>.replies, so a reply, the
 * "Gateway online" notice after a /restart and the home channel's notice
 * still go out after a restart; msg_seq derives from the piece's key, so
 * a reply sent again (a retry, or a killed worker's replay) is recognized
 * by QQ as the same one.  A reply past its window is logged and dropped.
 *
 * The pure helpers are exported for the unit tests.
 */
#ifndef HERMES_QQBOT_H
#define HERMES_QQBOT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "outq.h"
#include "platform.h"

extern const struct platform_ops qqbot_ops;

/* The gateway session a next worker resumes. */
struct qq_session {
	char id[128];                   /* session_id; "" when none */
	int64_t seq;                    /* last sequence number journaled */
	char self_id[64];               /* the bot's user id (guild mentions) */
};

/* "q1 <session> <seq> <self>"; returns 0, or -1 when damaged. */
int qq_session_parse(const char *cursor, struct qq_session *s);
void qq_session_format(const struct qq_session *s, char *buf, size_t len);

enum qq_kind { QQ_C2C = 0, QQ_GROUP, QQ_GUILD, QQ_DM };

/* The kind of a chat id and its target (after the prefix); -1 when not one of ours. */
int qq_chat_parse(const char *chat_id, const char **target);
/* The OpenAPI's URL when api_url is not set: the sandbox's, or the real one. */
const char *qq_api_default(int sandbox);
/* Seconds a message of this kind may be replied to. */
int64_t qq_reply_window(enum qq_kind kind);

/* One message event, normalized; strings point into the event, text is the caller's. */
struct qq_msg {
	char chat[300];
	enum qq_kind kind;
	const char *id, *user, *user_name;
	char *text;                     /* mentions of us and leading blanks removed */
	time_t time;                    /* its timestamp, or now */
};

/* The kind a dispatch type carries, or -1 when it is no message event. */
int qq_event_kind(const char *t);
/*
 * Parses the d of a message event of type t.  Returns 1 and fills m for
 * a message the hub should see; 0 when it is skipped (a bot's, empty;
 * why says which); -1 when malformed.
 */
int qq_message_parse(const char *t, const cJSON *d, const char *self_id, time_t now,
    struct qq_msg *m, const char **why);
/* An RFC 3339 time ("2024-05-01T12:00:00+08:00", fractions and Z too); 0 or -1. */
int qq_time_parse(const char *s, time_t *out);

/* What a gateway close code asks of the client (bot-docs error-trace/websocket.md). */
enum qq_close {
	QQ_CLOSE_RESUME = 0,            /* reconnect and resume */
	QQ_CLOSE_IDENTIFY,              /* the session is gone: identify anew */
	QQ_CLOSE_REFRESH,               /* 4004: a new token, then identify */
	QQ_CLOSE_BACKOFF,               /* 4008: too fast; pause, then resume */
	QQ_CLOSE_UNAUTHORIZED,          /* 4014: intents not granted; retry slowly */
	QQ_CLOSE_STOP,                  /* 4914, 4915, 4010-4013: never reconnect */
};
enum qq_close qq_close_action(int code);
/* A close code's meaning, for the log and /status ("" when none is known). */
const char *qq_close_reason(int code);

/* The msg_seq of a piece: 1..999999999, depending only on its key. */
uint32_t qq_msg_seq(const char *key);

/* An access token answer; expires_in may be a number or a string.  0 or -1. */
int qq_token_parse(const cJSON *o, char *token, size_t len, int64_t *expires_in);

/* A send's answer (HTTP status, the body's code), classified; why explains. */
enum outq_result qq_send_classify(int status, int64_t code, const char **why);

/* The newest message of a chat, what a reply without a message of its own carries. */
struct qq_handle {
	char msg_id[128];
	int64_t time;                   /* the message's time */
	unsigned used;                  /* replies sent with it */
};

/* The most replies QQ takes per message. */
#define QQ_MAX_REPLIES 5

/* 1 when h may still be replied to at now; else 0 with why filled. */
int qq_handle_usable(enum qq_kind kind, const struct qq_handle *h, time_t now, char *why,
    size_t len);
/* One line of the replies file: "<chat> <msg_id> <time> <used>"; 0 or -1. */
int qq_handle_line_parse(const char *line, char *chat, size_t chatlen, struct qq_handle *h);

#endif
