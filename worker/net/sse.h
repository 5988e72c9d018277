/*
 * sse.h - an incremental Server-Sent Events parser (the WHATWG
 * "text/event-stream" format): bytes in, whole events out.
 *
 * Lines may end in CRLF, LF or CR, and may be split anywhere across
 * feeds; "data:" lines accumulate (joined with "\n"), lines starting with
 * ':' are comments, "event:" names the event, a blank line dispatches.
 * An event that is not terminated by a blank line before the stream ends
 * is never dispatched (sse_pending() tells).
 */
#ifndef HERMES_SSE_H
#define HERMES_SSE_H

#include <stddef.h>

struct sse_parser;

/*
 * One event: its type ("message" unless an event: field said otherwise)
 * and its data (NUL-terminated, len bytes, may contain NULs).  Returns 0
 * to continue, non-zero to stop the current sse_feed() at once.  Must not
 * free the parser.
 */
typedef int (*sse_event_fn)(void *arg, const char *event, const char *data, size_t len);

/* max is the largest line or event accepted, in bytes (0 means 1 MiB). */
struct sse_parser *sse_new(size_t max, sse_event_fn cb, void *arg);
void sse_free(struct sse_parser *p);
/*
 * Feeds len bytes.  Returns 0 when all were consumed, 1 when the callback
 * asked to stop, -1 when a line or an event exceeded max (the parser then
 * refuses further input with -1).
 */
int sse_feed(struct sse_parser *p, const char *buf, size_t len);
/* 1 when a partial line or an undispatched event is buffered. */
int sse_pending(const struct sse_parser *p);
/* The last "id:" seen ("" when none). */
const char *sse_last_id(const struct sse_parser *p);

#endif
