/*
 * sse.c - an incremental Server-Sent Events parser.
 *
 * Bytes are gathered into the current line; each complete line is
 * processed as the event-stream format says.  Memory is bounded by max:
 * the current line plus the data gathered for the current event.
 */
#include "net/sse.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

#define SSE_DEFAULT_MAX (1024 * 1024)
#define SSE_NAME_MAX    128

struct sse_parser {
	sse_event_fn cb;
	void *arg;
	size_t max;
	char *line;                     /* the current, incomplete line */
	size_t line_len, line_cap;
	char *data;                     /* the current event's data */
	size_t data_len, data_cap;
	int has_data;                   /* a data: field was seen */
	char event[SSE_NAME_MAX + 1];
	char last_id[SSE_NAME_MAX + 1];
	int after_cr;                   /* the previous byte ended a line with CR */
	int bom_checked;
	int failed;
};

struct sse_parser *
sse_new(size_t max, sse_event_fn cb, void *arg)
{
	struct sse_parser *p = xcalloc(1, sizeof(*p));

	p->cb = cb;
	p->arg = arg;
	p->max = max > 0 ? max : SSE_DEFAULT_MAX;
	return p;
}

void
sse_free(struct sse_parser *p)
{
	if (p == NULL)
		return;
	free(p->line);
	free(p->data);
	free(p);
}

/* Dispatches the gathered event (if any data) and resets it. */
static int
sse_dispatch(struct sse_parser *p)
{
	int r = 0;

	if (p->has_data) {
		/* The data ends with the "\n" of its last line: remove it. */
		if (p->data_len > 0 && p->data[p->data_len - 1] == '\n')
			p->data[--p->data_len] = '\0';
		r = p->cb(p->arg, p->event[0] ? p->event : "message",
		    p->data != NULL ? p->data : "", p->data_len);
	}
	p->data_len = 0;
	if (p->data != NULL)
		p->data[0] = '\0';
	p->has_data = 0;
	p->event[0] = '\0';
	return r;
}

/* Copies a short field value (event name, id) with truncation. */
static void
sse_set_name(char *dst, const char *v, size_t n)
{
	if (n > SSE_NAME_MAX)
		n = SSE_NAME_MAX;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

/* Processes one complete line (without its end); returns like sse_feed(). */
static int
sse_line(struct sse_parser *p, const char *line, size_t n)
{
	const char *colon, *v;
	size_t flen, vlen;

	if (n == 0)
		return sse_dispatch(p);
	if (line[0] == ':')
		return 0;
	colon = memchr(line, ':', n);
	flen = colon != NULL ? (size_t)(colon - line) : n;
	v = colon != NULL ? colon + 1 : line + n;
	vlen = n - (size_t)(v - line);
	if (vlen > 0 && v[0] == ' ') {
		v++;
		vlen--;
	}
	if (flen == 4 && memcmp(line, "data", 4) == 0) {
		if (buf_append(&p->data, &p->data_len, &p->data_cap, p->max, v, vlen) < 0 ||
		    buf_append(&p->data, &p->data_len, &p->data_cap, p->max, "\n", 1) < 0)
			return -1;
		p->has_data = 1;
	} else if (flen == 5 && memcmp(line, "event", 5) == 0) {
		sse_set_name(p->event, v, vlen);
	} else if (flen == 2 && memcmp(line, "id", 2) == 0) {
		if (memchr(v, '\0', vlen) == NULL)
			sse_set_name(p->last_id, v, vlen);
	}
	/* "retry" and unknown fields are ignored, as the format says. */
	return 0;
}

/* Ends the current line: processes it and clears it. */
static int
sse_end_line(struct sse_parser *p)
{
	int r = sse_line(p, p->line != NULL ? p->line : "", p->line_len);

	p->line_len = 0;
	return r;
}

int
sse_feed(struct sse_parser *p, const char *buf, size_t len)
{
	size_t i = 0;
	int r;

	if (p->failed)
		return -1;
	while (i < len) {
		if (!p->bom_checked) {
			/* A UTF-8 BOM may start the stream; it can arrive split too. */
			static const char bom[] = "\xef\xbb\xbf";
			size_t have = p->line_len;

			if ((unsigned char)buf[i] == (unsigned char)bom[have] && have < 3) {
				if (buf_append(&p->line, &p->line_len, &p->line_cap, p->max,
				    buf + i, 1) < 0)
					return p->failed = -1;
				i++;
				if (p->line_len == 3) {
					p->line_len = 0;
					p->bom_checked = 1;
				}
				continue;
			}
			p->bom_checked = 1;
		}
		if (p->after_cr && buf[i] == '\n') {
			/* The LF of a CRLF split across feeds, or right after. */
			p->after_cr = 0;
			i++;
			continue;
		}
		p->after_cr = 0;
		if (buf[i] == '\n' || buf[i] == '\r') {
			p->after_cr = buf[i] == '\r';
			i++;
			if ((r = sse_end_line(p)) != 0)
				return r < 0 ? (p->failed = -1) : r;
			continue;
		}
		{
			/* Copy the run of ordinary bytes in one go. */
			size_t j = i;

			while (j < len && buf[j] != '\n' && buf[j] != '\r')
				j++;
			if (buf_append(&p->line, &p->line_len, &p->line_cap, p->max,
			    buf + i, j - i) < 0)
				return p->failed = -1;
			i = j;
		}
	}
	return 0;
}

int
sse_pending(const struct sse_parser *p)
{
	return p->line_len > 0 || p->has_data;
}

const char *
sse_last_id(const struct sse_parser *p)
{
	return p->last_id;
}
