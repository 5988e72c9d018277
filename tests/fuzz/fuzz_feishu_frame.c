/*
 * fuzz_feishu_frame.c - the frames of Feishu's long connection
 * (worker/platforms/feishu_frame.c): protobuf decoding and encoding, and
 * the reassembly of fragmented payloads.
 *
 * Input: a byte choosing the mode, then data.
 * decode   data is a frame off the wire.  Invariants: a refusal says why
 *          and leaves nothing allocated; a frame decoded keeps the bounds
 *          (headers, string sizes, no NUL in strings); encoded again and
 *          decoded, it is the same frame, and its encoding is canonical
 *          (encoding that again gives the same bytes).
 * build    a frame is built from the data (ids, headers, strings, payload):
 *          encoded and decoded it is the same frame.
 * frags    a payload is cut into fragments, delivered in an order (with
 *          repeats) from the data: the payload is whole exactly when the
 *          last missing fragment arrives, and equal to the one cut; a
 *          count or index out of range is refused; then random fragments
 *          of several messages never grow the store beyond its bound.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_util.h"
#include "platforms/feishu_frame.h"
#include "util.h"

static int
str_eq(const char *a, const char *b)
{
	return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static void
frame_same(const struct fsf_frame *a, const struct fsf_frame *b, const char *what)
{
	size_t i;

	FZ_CHECK(a->seq_id == b->seq_id && a->log_id == b->log_id && a->service == b->service &&
	    a->method == b->method, "%s: ids differ", what);
	FZ_CHECK(a->nheaders == b->nheaders, "%s: %zu headers, then %zu", what, a->nheaders,
	    b->nheaders);
	for (i = 0; i < a->nheaders; i++)
		FZ_CHECK(strcmp(a->headers[i].key, b->headers[i].key) == 0 &&
		    strcmp(a->headers[i].value, b->headers[i].value) == 0, "%s: header %zu", what, i);
	FZ_CHECK(str_eq(a->payload_encoding, b->payload_encoding) &&
	    str_eq(a->payload_type, b->payload_type) && str_eq(a->log_id_new, b->log_id_new),
	    "%s: strings differ", what);
	FZ_CHECK((a->payload == NULL) == (b->payload == NULL) && a->payload_len == b->payload_len &&
	    (a->payload_len == 0 || memcmp(a->payload, b->payload, a->payload_len) == 0),
	    "%s: payload differs (%zu / %zu bytes)", what, a->payload_len, b->payload_len);
}

static void
check_bounds(const struct fsf_frame *f)
{
	const char *s[3] = { f->payload_encoding, f->payload_type, f->log_id_new };
	size_t i;

	FZ_CHECK(f->nheaders <= FSF_MAX_HEADERS, "%zu headers", f->nheaders);
	for (i = 0; i < f->nheaders; i++)
		FZ_CHECK(f->headers[i].key != NULL && f->headers[i].value != NULL &&
		    strlen(f->headers[i].key) <= FSF_MAX_STRING &&
		    strlen(f->headers[i].value) <= FSF_MAX_STRING, "header %zu", i);
	for (i = 0; i < 3; i++)
		FZ_CHECK(s[i] == NULL || strlen(s[i]) <= FSF_MAX_STRING, "string %zu", i);
	FZ_CHECK(f->payload != NULL || f->payload_len == 0, "a payload length without payload");
}

/* Encodes f, decodes it back (the same frame), and encodes that (the same bytes). */
static void
round_trip(const struct fsf_frame *f)
{
	struct fsf_frame back;
	unsigned char *enc, *again;
	size_t len, len2;
	const char *why = NULL;

	enc = fsf_encode(f, &len);
	FZ_CHECK(enc != NULL, "no encoding");
	FZ_CHECK(fsf_decode(enc, len, &back, &why) == 0, "own encoding refused: %s", why);
	frame_same(f, &back, "encoded and decoded");
	again = fsf_encode(&back, &len2);
	FZ_CHECK(len2 == len && memcmp(enc, again, len) == 0, "the encoding is not canonical");
	free(enc);
	free(again);
	fsf_clear(&back);
}

static void
check_decode(const uint8_t *data, size_t size)
{
	static const struct fsf_frame zero;
	struct fsf_frame f;
	const char *why = NULL;

	if (fsf_decode(data, size, &f, &why) < 0) {
		FZ_CHECK(why != NULL && why[0] != '\0', "a refusal without a reason");
		FZ_CHECK(memcmp(&f, &zero, sizeof(f)) == 0, "a refused frame holds something");
		return;
	}
	check_bounds(&f);
	round_trip(&f);
	fsf_clear(&f);
}

static void
check_build(struct fz_in *in)
{
	struct fsf_frame f;
	uint8_t n, i, opt;
	size_t len;
	const uint8_t *p;
	char *k, *v;

	memset(&f, 0, sizeof(f));
	f.seq_id = (uint64_t)fz_u32(in) << 32 | fz_u32(in);
	f.log_id = fz_u32(in);
	f.service = (int32_t)fz_u32(in);
	f.method = (int32_t)fz_u32(in);
	n = fz_u8(in) % 8;
	for (i = 0; i < n; i++) {
		k = fz_str(in, fz_u8(in) % 16);
		v = fz_str(in, fz_u8(in) % 32);
		fsf_header_add(&f, k, v);
		free(k);
		free(v);
	}
	opt = fz_u8(in);
	if (opt & 1)
		f.payload_encoding = fz_str(in, fz_u8(in) % 16);
	if (opt & 2)
		f.payload_type = fz_str(in, fz_u8(in) % 16);
	if (opt & 4)
		f.log_id_new = fz_str(in, fz_u8(in) % 16);
	if (opt & 8) {
		p = fz_take(in, in->n, &len);
		fsf_set_payload(&f, p, len);
	}
	round_trip(&f);
	fsf_clear(&f);
}

static void
check_frags(struct fz_in *in)
{
	unsigned sum = 2 + fz_u8(in) % 7, order[3 * 8 + 8], n = 0, i, have = 0;
	size_t cut[9], len, outlen = 0;
	const uint8_t *payload = fz_take(in, fz_u16(in) % 2048, &len);
	struct fsf_frags *fr = fsf_frags_new();
	unsigned char seen[8] = { 0 }, *out = NULL;
	const char *why;
	int r = 0;

	cut[0] = 0;
	for (i = 1; i < sum; i++)
		cut[i] = cut[i - 1] + (len - cut[i - 1]) * fz_u8(in) / 256;
	cut[sum] = len;
	/* An order with repeats from the data, then whatever is still missing. */
	for (i = fz_u8(in) % (3 * sum); i > 0; i--)
		order[n++] = fz_u8(in) % sum;
	for (i = 0; i < sum; i++)
		order[n++] = i;
	FZ_CHECK(fsf_frags_add(fr, "m", sum, sum, "x", 1, 0, &out, &outlen, &why) == -1,
	    "an index past the count taken");
	FZ_CHECK(fsf_frags_add(fr, "m", FSF_FRAG_MAX_SUM + 1, 0, "x", 1, 0, &out, &outlen,
	    &why) == -1, "a count over the limit taken");
	for (i = 0; i < n && r != 1; i++) {
		unsigned seq = order[i];

		r = fsf_frags_add(fr, "m", sum, seq, payload + cut[seq], cut[seq + 1] - cut[seq],
		    1000, &out, &outlen, &why);
		have += !seen[seq];
		seen[seq] = 1;
		FZ_CHECK(r == (have == sum ? 1 : 0), "fragment %u of %u (%u in) gave %d", seq, sum,
		    have, r);
	}
	FZ_CHECK(r == 1 && outlen == len && (len == 0 || memcmp(out, payload, len) == 0),
	    "reassembled %zu bytes, cut %zu", outlen, len);
	FZ_CHECK(fsf_frags_pending(fr) == 0, "a reassembled message still pending");
	free(out);
	fsf_frags_free(fr);
}

/* Random fragments of several messages: bounded, never a wrong answer. */
static void
check_frags_random(struct fz_in *in)
{
	struct fsf_frags *fr = fsf_frags_new();
	unsigned char *out;
	const char *why;
	size_t outlen, len;
	uint64_t now = 0;
	char id[4];
	int r;

	while (in->n > 0) {
		uint8_t b = fz_u8(in), sum = fz_u8(in) % 70, seq = fz_u8(in) % 70;
		const uint8_t *d = fz_take(in, fz_u8(in) % 16, &len);

		snprintf(id, sizeof(id), "%c", 'a' + b % 20);
		now += (uint64_t)(b >> 5) * 1000000;
		out = NULL;
		r = fsf_frags_add(fr, id, sum, seq, d, len, now, &out, &outlen, &why);
		FZ_CHECK(r >= -1 && r <= 1, "rc %d", r);
		FZ_CHECK((r == 1) == (out != NULL), "a payload with rc %d", r);
		FZ_CHECK(r != -1 || (sum >= 2 && sum <= FSF_FRAG_MAX_SUM && seq < sum) || why != NULL,
		    "a refusal without a reason");
		FZ_CHECK(sum >= 2 || r == -1, "a count of %u taken", sum);
		FZ_CHECK(fsf_frags_pending(fr) <= FSF_FRAG_MESSAGES, "%zu partial messages",
		    fsf_frags_pending(fr));
		free(out);
	}
	fsf_frags_free(fr);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t mode = fz_u8(&in);

	switch (mode % 4) {
	case 0:
		check_decode(in.p, in.n);
		break;
	case 1:
		check_build(&in);
		break;
	case 2:
		check_frags(&in);
		break;
	default:
		check_frags_random(&in);
		break;
	}
	return 0;
}
