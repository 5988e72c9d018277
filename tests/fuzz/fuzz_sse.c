/*
 * fuzz_sse.c - the Server-Sent Events parser (worker/net/sse.c).
 *
 * Input: one byte choosing the size limit, then the stream.
 * Invariants: feeding the stream whole and feeding it in random chunks
 * (CRLF and the BOM split anywhere) yields the same events, the same
 * result, the same pending state and the same last id; each event's data
 * is NUL-terminated and within the limit; and, when the limit is not hit,
 * the events equal those of a plain reference reading of the WHATWG
 * text/event-stream rules written here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_util.h"
#include "net/sse.h"
#include "util.h"

#define NAME_MAX_LEN 128         /* sse.c truncates event names and ids to this */

struct ev_list {
	size_t n, cap;
	char **type;
	char **data;
	size_t *len;
	size_t max;
};

static void
ev_push(struct ev_list *l, const char *type, size_t tlen, const char *data, size_t len)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 8;
		l->type = xrealloc(l->type, l->cap * sizeof(char *));
		l->data = xrealloc(l->data, l->cap * sizeof(char *));
		l->len = xrealloc(l->len, l->cap * sizeof(size_t));
	}
	l->type[l->n] = xstrndup(type, tlen);
	l->data[l->n] = xmalloc(len + 1);
	memcpy(l->data[l->n], data, len);
	l->data[l->n][len] = '\0';
	l->len[l->n] = len;
	l->n++;
}

static void
ev_free(struct ev_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++) {
		free(l->type[i]);
		free(l->data[i]);
	}
	free(l->type);
	free(l->data);
	free(l->len);
}

static int
on_event(void *arg, const char *event, const char *data, size_t len)
{
	struct ev_list *l = arg;

	FZ_CHECK(event != NULL && event[0] != '\0', "an event without a type");
	FZ_CHECK(data[len] == '\0', "data not NUL-terminated");
	FZ_CHECK(len <= l->max, "data of %zu bytes over the limit %zu", len, l->max);
	ev_push(l, event, strlen(event), data, len);
	return 0;
}

static void
ev_same(const struct ev_list *a, const struct ev_list *b, const char *what)
{
	size_t i;

	FZ_CHECK(a->n == b->n, "%s: %zu events, not %zu", what, b->n, a->n);
	for (i = 0; i < a->n; i++) {
		FZ_CHECK(strcmp(a->type[i], b->type[i]) == 0, "%s: event %zu type \"%s\" vs \"%s\"",
		    what, i, a->type[i], b->type[i]);
		FZ_CHECK(a->len[i] == b->len[i] && memcmp(a->data[i], b->data[i], a->len[i]) == 0,
		    "%s: event %zu data differs (%zu vs %zu bytes)", what, i, a->len[i], b->len[i]);
	}
}

/* The reference: the format's rules read straight, without limits. */
struct ref {
	struct ev_list ev;
	char *data;
	size_t dlen;
	int has_data;
	char type[NAME_MAX_LEN + 1];
	char id[NAME_MAX_LEN + 1];
	int pending;
};

static void
ref_name(char *dst, const char *v, size_t n)
{
	if (n > NAME_MAX_LEN)
		n = NAME_MAX_LEN;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

static void
ref_line(struct ref *r, const char *line, size_t n)
{
	const char *colon, *v;
	size_t flen, vlen;

	if (n == 0) {
		if (r->has_data) {
			size_t len = r->dlen > 0 && r->data[r->dlen - 1] == '\n' ? r->dlen - 1 : r->dlen;
			const char *t = r->type[0] != '\0' ? r->type : "message";

			ev_push(&r->ev, t, strlen(t), r->data != NULL ? r->data : "", len);
		}
		r->dlen = 0;
		r->has_data = 0;
		r->type[0] = '\0';
		return;
	}
	if (line[0] == ':')
		return;
	colon = memchr(line, ':', n);
	flen = colon != NULL ? (size_t)(colon - line) : n;
	v = colon != NULL ? colon + 1 : line + n;
	vlen = (size_t)(line + n - v);
	if (vlen > 0 && v[0] == ' ') {
		v++;
		vlen--;
	}
	if (flen == 4 && memcmp(line, "data", 4) == 0) {
		r->data = xrealloc(r->data, r->dlen + vlen + 1);
		memcpy(r->data + r->dlen, v, vlen);
		r->dlen += vlen;
		r->data[r->dlen++] = '\n';
		r->has_data = 1;
	} else if (flen == 5 && memcmp(line, "event", 5) == 0) {
		ref_name(r->type, v, vlen);
	} else if (flen == 2 && memcmp(line, "id", 2) == 0 && memchr(v, '\0', vlen) == NULL) {
		ref_name(r->id, v, vlen);
	}
}

static void
ref_run(struct ref *r, const char *s, size_t n)
{
	size_t i = 0, start;

	if (n >= 3 && memcmp(s, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	start = i;
	while (i < n) {
		if (s[i] != '\n' && s[i] != '\r') {
			i++;
			continue;
		}
		ref_line(r, s + start, i - start);
		i += s[i] == '\r' && i + 1 < n && s[i + 1] == '\n' ? 2 : 1;
		start = i;
	}
	r->pending = start < n || r->has_data;
}

/* Feeds s whole (chunked == 0) or in pieces cut by a generator seeded from s. */
static int
run(struct sse_parser *p, const char *s, size_t n, int chunked)
{
	uint64_t st = fz_seed((const uint8_t *)s, n);
	size_t i = 0;
	int r = 0;

	if (!chunked)
		return sse_feed(p, s, n);
	while (i < n && r == 0) {
		size_t k = 1 + fz_rand(&st) % (fz_rand(&st) % 4 == 0 ? 64 : 4);

		if (k > n - i)
			k = n - i;
		r = sse_feed(p, s + i, k);
		i += k;
	}
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t limits[] = { 0, 1, 2, 7, 16, 64, 300 };
	struct fz_in in = { data, size };
	size_t max = limits[fz_u8(&in) % ARRAY_LEN(limits)];
	struct ev_list whole = { .max = max ? max : 1024 * 1024 };
	struct ev_list parts = { .max = whole.max };
	struct sse_parser *a = sse_new(max, on_event, &whole);
	struct sse_parser *b = sse_new(max, on_event, &parts);
	const char *s = (const char *)in.p;
	int ra, rb;

	ra = run(a, s, in.n, 0);
	rb = run(b, s, in.n, 1);
	FZ_CHECK(ra == 0 || ra == -1, "feed returned %d", ra);
	FZ_CHECK(ra == rb, "whole feed gives %d, chunked %d", ra, rb);
	ev_same(&whole, &parts, "chunked");
	if (ra == 0) {
		struct ref r;

		FZ_CHECK(sse_pending(a) == sse_pending(b), "pending differs");
		FZ_CHECK(strcmp(sse_last_id(a), sse_last_id(b)) == 0, "last id differs");
		memset(&r, 0, sizeof(r));
		ref_run(&r, s, in.n);
		ev_same(&r.ev, &whole, "reference");
		FZ_CHECK(r.pending == sse_pending(a), "pending: reference %d, parser %d", r.pending,
		    sse_pending(a));
		FZ_CHECK(strcmp(r.id, sse_last_id(a)) == 0, "last id: \"%s\" vs \"%s\"", r.id,
		    sse_last_id(a));
		ev_free(&r.ev);
		free(r.data);
	} else {
		FZ_CHECK(sse_feed(a, "\n\n", 2) == -1, "a failed parser took more input");
	}
	sse_free(a);
	sse_free(b);
	ev_free(&whole);
	ev_free(&parts);
	return 0;
}
