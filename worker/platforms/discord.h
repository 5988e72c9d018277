/*
 * discord.h - the Discord platform: the gateway WebSocket for events, REST
 * for sends, on the platform kit.
 *
 * Nothing is lost across a restart although Discord replays nothing to a
 * new connection: the gateway session (session_id, the last sequence
 * number, the resume URL) is the platform's cursor, committed with the
 * intake journal, so it never passes an event the journal does not hold.
 * At a stop the worker closes the gateway with 4000, which keeps the
 * session resumable, and the next worker RESUMEs it: Discord replays what
 * arrived in between.  Sends carry a nonce derived from the reply's key
 * with enforce_nonce, so a retried or replayed reply is posted once.
 *
 * The pure helpers are exported for the unit tests.
 */
#ifndef HERMES_DISCORD_H
#define HERMES_DISCORD_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "platform.h"

extern const struct platform_ops discord_ops;

/* The gateway session a next worker resumes. */
struct dc_session {
	char id[128];                   /* session_id; "" when none */
	int64_t seq;                    /* last sequence number journaled */
	char self_id[32];               /* our user id */
	char resume_url[512];
};

/* "v1 <session> <seq> <self> <resume url>"; returns 0, or -1 when damaged. */
int dc_session_parse(const char *cursor, struct dc_session *s);
void dc_session_format(const struct dc_session *s, char *buf, size_t len);

/* One MESSAGE_CREATE, normalized; strings point into text or the event. */
struct dc_msg {
	const char *id, *channel_id, *author_id, *author_name;
	char *text;                     /* our mention stripped; the caller frees */
	int dm;
	int addressed;
};

/*
 * Parses a MESSAGE_CREATE payload (d).  Returns 1 and fills m for a
 * message the hub should see; 0 when it is to be skipped (our own, a
 * bot's, a system message; why says which); -1 when malformed.
 */
int dc_message_parse(const cJSON *d, const char *self_id, int require_mention,
    struct dc_msg *m, const char **why);

/* The close codes after which the session cannot be resumed (identify anew). */
int dc_close_ends_session(int code);

/* A nonce of at most 25 characters that depends only on key. */
void dc_nonce(const char *key, char out[26]);

#endif
