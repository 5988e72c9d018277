/* feishu_frame.c - pbbp2.Frame codec and fragment reassembly (see feishu_frame.h). */
#include "platforms/feishu_frame.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

enum fsf_wire {
	FSF_VARINT = 0,
	FSF_I64 = 1,
	FSF_LEN = 2,
	FSF_I32 = 5,
};

/* A read position in the input. */
struct fsf_in {
	const unsigned char *p, *end;
};

/* ---- decoding ------------------------------------------------------------ */

static int
fsf_varint(struct fsf_in *in, uint64_t *v)
{
	unsigned shift;

	*v = 0;
	for (shift = 0; shift < 64 && in->p < in->end; shift += 7) {
		unsigned char b = *in->p++;

		if (shift == 63 && (b & 0x7e) != 0)
			return -1;      /* more than 64 bits */
		*v |= (uint64_t)(b & 0x7f) << shift;
		if ((b & 0x80) == 0)
			return 0;
	}
	return -1;
}

/* A length-delimited field's bytes: *data, *len within the input. */
static int
fsf_bytes(struct fsf_in *in, const unsigned char **data, size_t *len)
{
	uint64_t n;

	if (fsf_varint(in, &n) < 0 || n > (uint64_t)(in->end - in->p))
		return -1;
	*data = in->p;
	*len = (size_t)n;
	in->p += n;
	return 0;
}

/* A string field: bounded, no NUL inside; *out is newly allocated (the old one freed). */
static int
fsf_string(struct fsf_in *in, char **out)
{
	const unsigned char *d;
	size_t n;

	if (fsf_bytes(in, &d, &n) < 0 || n > FSF_MAX_STRING || memchr(d, '\0', n) != NULL)
		return -1;
	free(*out);
	*out = xstrndup((const char *)d, n);
	return 0;
}

/* Skips a field of an unknown number; groups (wire types 3, 4) are refused. */
static int
fsf_skip(struct fsf_in *in, unsigned wire)
{
	const unsigned char *d;
	size_t n;
	uint64_t v;

	switch (wire) {
	case FSF_VARINT:
		return fsf_varint(in, &v);
	case FSF_I64:
	case FSF_I32:
		n = wire == FSF_I64 ? 8 : 4;
		if ((size_t)(in->end - in->p) < n)
			return -1;
		in->p += n;
		return 0;
	case FSF_LEN:
		return fsf_bytes(in, &d, &n);
	default:
		return -1;
	}
}

static int
fsf_decode_header(const unsigned char *d, size_t n, struct fsf_header *h)
{
	struct fsf_in in = { d, d + n };
	uint64_t tag;
	int bad = 0;

	memset(h, 0, sizeof(*h));
	while (!bad && in.p < in.end) {
		if (fsf_varint(&in, &tag) < 0)
			bad = 1;
		else if ((tag >> 3) == 1 || (tag >> 3) == 2)
			bad = (tag & 7) != FSF_LEN ||
			    fsf_string(&in, (tag >> 3) == 1 ? &h->key : &h->value) < 0;
		else
			bad = (tag >> 3) == 0 || fsf_skip(&in, (unsigned)(tag & 7)) < 0;
	}
	if (!bad && h->key != NULL && h->value != NULL)
		return 0;
	free(h->key);
	free(h->value);
	return -1;
}

/* One field of a Frame; *seen collects the required fields met. */
static int
fsf_decode_field(struct fsf_in *in, uint64_t tag, struct fsf_frame *f, unsigned *seen,
    const char **why)
{
	unsigned num = (unsigned)(tag >> 3), wire = (unsigned)(tag & 7);
	const unsigned char *d;
	struct fsf_header h;
	uint64_t v;
	size_t n;

	*why = "a field of the wrong type";
	if (num >= 1 && num <= 4) {
		if (wire != FSF_VARINT || fsf_varint(in, &v) < 0)
			return -1;
		if (num == 1)
			f->seq_id = v;
		else if (num == 2)
			f->log_id = v;
		else if (num == 3)
			f->service = (int32_t)(uint32_t)v;
		else
			f->method = (int32_t)(uint32_t)v;
		*seen |= 1u << num;
		return 0;
	}
	if (num >= 5 && num <= 9 && wire != FSF_LEN)
		return -1;
	switch (num) {
	case 5:
		*why = "a malformed or oversized header";
		if (f->nheaders == FSF_MAX_HEADERS || fsf_bytes(in, &d, &n) < 0 ||
		    fsf_decode_header(d, n, &h) < 0)
			return -1;
		f->headers = xrealloc(f->headers, (f->nheaders + 1) * sizeof(*f->headers));
		f->headers[f->nheaders++] = h;
		return 0;
	case 6:
	case 7:
	case 9:
		*why = "a malformed or oversized string";
		return fsf_string(in, num == 6 ? &f->payload_encoding : num == 7 ?
		    &f->payload_type : &f->log_id_new);
	case 8:
		*why = "a truncated payload";
		if (fsf_bytes(in, &d, &n) < 0)
			return -1;
		fsf_set_payload(f, d, n);
		return 0;
	default:
		*why = "a malformed unknown field";
		return num == 0 || fsf_skip(in, wire) < 0 ? -1 : 0;
	}
}

int
fsf_decode(const void *buf, size_t len, struct fsf_frame *f, const char **why)
{
	struct fsf_in in = { buf, (const unsigned char *)buf + len };
	unsigned seen = 0;
	uint64_t tag;

	memset(f, 0, sizeof(*f));
	while (in.p < in.end) {
		*why = "a truncated field tag";
		if (fsf_varint(&in, &tag) < 0 || fsf_decode_field(&in, tag, f, &seen, why) < 0) {
			fsf_clear(f);
			return -1;
		}
	}
	if (seen != 0x1e) {
		*why = "a required field (SeqID, LogID, service, method) is missing";
		fsf_clear(f);
		return -1;
	}
	return 0;
}

/* ---- encoding ------------------------------------------------------------ */

struct fsf_out {
	unsigned char *b;
	size_t len, cap;
};

static void
fsf_put(struct fsf_out *o, const void *d, size_t n)
{
	if (o->len + n > o->cap) {
		o->cap = (o->len + n) * 2 + 64;
		o->b = xrealloc(o->b, o->cap);
	}
	memcpy(o->b + o->len, d, n);
	o->len += n;
}

static void
fsf_put_varint(struct fsf_out *o, uint64_t v)
{
	unsigned char b[10];
	size_t n = 0;

	do {
		b[n] = (unsigned char)(v & 0x7f);
		v >>= 7;
		if (v != 0)
			b[n] |= 0x80;
		n++;
	} while (v != 0);
	fsf_put(o, b, n);
}

static void
fsf_put_bytes(struct fsf_out *o, unsigned num, const void *d, size_t n)
{
	fsf_put_varint(o, (uint64_t)num << 3 | FSF_LEN);
	fsf_put_varint(o, n);
	fsf_put(o, d, n);
}

static void
fsf_put_str(struct fsf_out *o, unsigned num, const char *s)
{
	if (s != NULL)
		fsf_put_bytes(o, num, s, strlen(s));
}

unsigned char *
fsf_encode(const struct fsf_frame *f, size_t *len)
{
	struct fsf_out o = { NULL, 0, 0 }, h;
	size_t i;

	fsf_put_varint(&o, 1 << 3 | FSF_VARINT);
	fsf_put_varint(&o, f->seq_id);
	fsf_put_varint(&o, 2 << 3 | FSF_VARINT);
	fsf_put_varint(&o, f->log_id);
	/* int32 fields: negative values sign-extended to 64 bits, as protobuf does */
	fsf_put_varint(&o, 3 << 3 | FSF_VARINT);
	fsf_put_varint(&o, (uint64_t)(int64_t)f->service);
	fsf_put_varint(&o, 4 << 3 | FSF_VARINT);
	fsf_put_varint(&o, (uint64_t)(int64_t)f->method);
	for (i = 0; i < f->nheaders; i++) {
		memset(&h, 0, sizeof(h));
		fsf_put_str(&h, 1, f->headers[i].key);
		fsf_put_str(&h, 2, f->headers[i].value);
		fsf_put_bytes(&o, 5, h.b, h.len);
		free(h.b);
	}
	fsf_put_str(&o, 6, f->payload_encoding);
	fsf_put_str(&o, 7, f->payload_type);
	if (f->payload != NULL)
		fsf_put_bytes(&o, 8, f->payload, f->payload_len);
	fsf_put_str(&o, 9, f->log_id_new);
	*len = o.len;
	return o.b;
}

void
fsf_clear(struct fsf_frame *f)
{
	size_t i;

	if (f == NULL)
		return;
	for (i = 0; i < f->nheaders; i++) {
		free(f->headers[i].key);
		free(f->headers[i].value);
	}
	free(f->headers);
	free(f->payload_encoding);
	free(f->payload_type);
	free(f->log_id_new);
	free(f->payload);
	memset(f, 0, sizeof(*f));
}

const char *
fsf_header(const struct fsf_frame *f, const char *key)
{
	size_t i;

	for (i = 0; i < f->nheaders; i++)
		if (strcmp(f->headers[i].key, key) == 0)
			return f->headers[i].value;
	return NULL;
}

void
fsf_header_add(struct fsf_frame *f, const char *key, const char *value)
{
	f->headers = xrealloc(f->headers, (f->nheaders + 1) * sizeof(*f->headers));
	f->headers[f->nheaders].key = xstrdup(key);
	f->headers[f->nheaders].value = xstrdup(value);
	f->nheaders++;
}

void
fsf_set_payload(struct fsf_frame *f, const void *data, size_t len)
{
	free(f->payload);
	f->payload = xmalloc(len + 1);
	memcpy(f->payload, data, len);
	f->payload[len] = '\0';         /* a JSON payload may be read as a string */
	f->payload_len = len;
}

/* ---- fragments ------------------------------------------------------------ */

struct fsf_partial {
	char *id;
	unsigned sum, have;
	unsigned char **part;
	size_t *len, bytes;
	uint64_t since;
};

struct fsf_frags {
	struct fsf_partial msg[FSF_FRAG_MESSAGES];
	size_t n;
};

struct fsf_frags *
fsf_frags_new(void)
{
	return xcalloc(1, sizeof(struct fsf_frags));
}

static void
fsf_partial_drop(struct fsf_frags *fr, size_t i)
{
	struct fsf_partial *m = &fr->msg[i];
	unsigned k;

	for (k = 0; k < m->sum; k++)
		free(m->part[k]);
	free(m->part);
	free(m->len);
	free(m->id);
	fr->msg[i] = fr->msg[--fr->n];
}

void
fsf_frags_free(struct fsf_frags *fr)
{
	if (fr == NULL)
		return;
	while (fr->n > 0)
		fsf_partial_drop(fr, 0);
	free(fr);
}

size_t
fsf_frags_pending(const struct fsf_frags *fr)
{
	return fr->n;
}

/* The partial message id (sum fragments), made when new; expired ones dropped first. */
static struct fsf_partial *
fsf_partial_get(struct fsf_frags *fr, const char *id, unsigned sum, uint64_t now)
{
	struct fsf_partial *m;
	size_t i, oldest = 0;

	for (i = fr->n; i-- > 0;)
		if (now - fr->msg[i].since > FSF_FRAG_TTL_USEC)
			fsf_partial_drop(fr, i);
	for (i = 0; i < fr->n; i++) {
		if (strcmp(fr->msg[i].id, id) == 0)
			return fr->msg[i].sum == sum ? &fr->msg[i] : NULL;
		if (fr->msg[i].since < fr->msg[oldest].since)
			oldest = i;
	}
	if (fr->n == FSF_FRAG_MESSAGES)
		fsf_partial_drop(fr, oldest);
	m = &fr->msg[fr->n++];
	memset(m, 0, sizeof(*m));
	m->id = xstrdup(id);
	m->sum = sum;
	m->part = xcalloc(sum, sizeof(*m->part));
	m->len = xcalloc(sum, sizeof(*m->len));
	m->since = now;
	return m;
}

int
fsf_frags_add(struct fsf_frags *fr, const char *id, unsigned sum, unsigned seq,
    const void *data, size_t len, uint64_t now_usec, unsigned char **out, size_t *outlen,
    const char **why)
{
	struct fsf_partial *m;
	size_t off = 0;
	unsigned k;

	*why = "a fragment count or index out of range";
	if (sum < 2 || sum > FSF_FRAG_MAX_SUM || seq >= sum || id == NULL || id[0] == '\0' ||
	    (m = fsf_partial_get(fr, id, sum, now_usec)) == NULL)
		return -1;
	if (m->part[seq] != NULL) {
		m->bytes -= m->len[seq];        /* sent again: the newer copy wins */
		free(m->part[seq]);
		m->have--;
	}
	if (m->bytes + len > FSF_FRAG_MAX_BYTES) {
		*why = "fragments over the size limit";
		fsf_partial_drop(fr, (size_t)(m - fr->msg));
		return -1;
	}
	m->part[seq] = xmalloc(len + 1);
	memcpy(m->part[seq], data, len);
	m->len[seq] = len;
	m->bytes += len;
	if (++m->have < sum)
		return 0;
	*out = xmalloc(m->bytes + 1);
	for (k = 0; k < sum; k++) {
		memcpy(*out + off, m->part[k], m->len[k]);
		off += m->len[k];
	}
	(*out)[off] = '\0';
	*outlen = off;
	fsf_partial_drop(fr, (size_t)(m - fr->msg));
	return 1;
}
