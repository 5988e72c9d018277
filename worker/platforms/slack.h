/*
 * slack.h - the Slack platform: Socket Mode (a WebSocket whose URL comes
 * from apps.connections.open) for events, the Web API for sends, on the
 * platform kit.
 *
 * Nothing is lost across a restart or a crash although Slack keeps no
 * cursor: every Events API envelope is acknowledged ({"envelope_id"})
 * only once the intake journal holds its event, and Slack delivers an
 * envelope that was not acknowledged within ~3 s again (retry_attempt,
 * retry_reason), to whichever connection is open.  The event's key is
 * "<channel>:<ts>", so a retry, the same event on two connections during
 * a rotation, and the message + app_mention pair of one @mention are one
 * message.  A `disconnect` opens a new connection before the old one
 * goes; both deliver until the old one is closed.  chat.postMessage has
 * no idempotency key: a worker killed between Slack's answer and the
 * record of it posts that reply again (docs/config.md).
 *
 * The pure helpers are exported for the unit tests.
 */
#ifndef HERMES_SLACK_H
#define HERMES_SLACK_H

#include <cjson/cJSON.h>

#include "outq.h"
#include "platform.h"

extern const struct platform_ops slack_ops;

/* One message or app_mention event, normalized. */
struct sl_msg {
	char id[160];                   /* "<channel>:<ts>": the dedup key */
	const char *channel, *user, *ts, *thread_ts;    /* into the event */
	char *text;                     /* mention stripped, entities decoded; the caller frees */
	int dm;                         /* im or mpim */
	int addressed;                  /* a DM, a mention of us, or require_mention off */
};

/*
 * Parses the event of an events_api payload.  Returns 1 and fills m for
 * a message the hub should see; 0 when it is to be skipped (another
 * event type, an edit or deletion, our own or another bot's message; why
 * says which); -1 when malformed.
 */
int sl_event_parse(const cJSON *ev, const char *self_id, int require_mention,
    struct sl_msg *m, const char **why);

/* How an `ok: false` error of the Web API is handled (NULL: no error given). */
enum outq_result sl_error_class(const char *error);

/* Text with &, < and > escaped as Slack's text fields want; the caller frees. */
char *sl_escape(const char *text);
/* Decodes &amp;, &lt; and &gt; in place. */
void sl_unescape(char *text);

/* Seconds of a Retry-After header (NULL or unusable: dflt), at most an hour. */
double sl_retry_after(const char *header, double dflt);

#endif
