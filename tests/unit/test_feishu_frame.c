/*
 * test_feishu_frame.c - the pbbp2.Frame codec and fragment reassembly.
 *
 * The golden byte strings were produced by protobuf-c 1.4.1 (protoc-c on
 * the schema in feishu_frame.h): the hand-written codec must read what the
 * reference library writes and write exactly the same bytes.
 */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "platforms/feishu_frame.h"
#include "unit_util.h"

/* A ping: service 7, method 0, header type=ping, SeqID and LogID 0 (still emitted). */
static const char golden_ping[] =
    "\x08\x00\x10\x00\x18\x07\x20\x00\x2a\x0c\x0a\x04\x74\x79\x70\x65\x12\x04\x70\x69\x6e\x67";
/* SeqID 300, LogID 2^40, service -2, method 1, three headers, every optional field. */
static const char golden_data[] =
    "\x08\xac\x02\x10\x80\x80\x80\x80\x80\x20\x18\xfe\xff\xff\xff\xff\xff\xff\xff\xff\x01"
    "\x20\x01\x2a\x0d\x0a\x04\x74\x79\x70\x65\x12\x05\x65\x76\x65\x6e\x74\x2a\x10\x0a\x0a"
    "\x6d\x65\x73\x73\x61\x67\x65\x5f\x69\x64\x12\x02\x6d\x31\x2a\x08\x0a\x03\x73\x75\x6d"
    "\x12\x01\x31\x32\x04\x67\x7a\x69\x70\x3a\x04\x6a\x73\x6f\x6e\x42\x07\x7b\x22\x61\x22"
    "\x3a\x31\x7d\x4a\x02\x4c\x39";

START_TEST(test_decode_reference_bytes)
{
	struct fsf_frame f;
	const char *why = NULL;

	ck_assert_int_eq(fsf_decode(golden_data, sizeof(golden_data) - 1, &f, &why), 0);
	ck_assert_uint_eq(f.seq_id, 300);
	ck_assert_uint_eq(f.log_id, 1ULL << 40);
	ck_assert_int_eq(f.service, -2);
	ck_assert_int_eq(f.method, FSF_DATA);
	ck_assert_uint_eq(f.nheaders, 3);
	ck_assert_str_eq(fsf_header(&f, "type"), "event");
	ck_assert_str_eq(fsf_header(&f, "message_id"), "m1");
	ck_assert_str_eq(fsf_header(&f, "sum"), "1");
	ck_assert_ptr_null(fsf_header(&f, "seq"));
	ck_assert_str_eq(f.payload_encoding, "gzip");
	ck_assert_str_eq(f.payload_type, "json");
	ck_assert_str_eq(f.log_id_new, "L9");
	ck_assert_uint_eq(f.payload_len, 7);
	ck_assert_int_eq(memcmp(f.payload, "{\"a\":1}", 7), 0);
	fsf_clear(&f);
	ck_assert_int_eq(fsf_decode(golden_ping, sizeof(golden_ping) - 1, &f, &why), 0);
	ck_assert_ptr_null(f.payload);
	ck_assert_ptr_null(f.payload_type);
	fsf_clear(&f);
}
END_TEST

START_TEST(test_encode_matches_reference)
{
	struct fsf_frame f;
	unsigned char *b;
	size_t n;

	memset(&f, 0, sizeof(f));
	f.service = 7;
	fsf_header_add(&f, "type", "ping");
	b = fsf_encode(&f, &n);
	ck_assert_uint_eq(n, sizeof(golden_ping) - 1);
	ck_assert_int_eq(memcmp(b, golden_ping, n), 0);
	free(b);
	fsf_clear(&f);

	f.seq_id = 300;
	f.log_id = 1ULL << 40;
	f.service = -2;
	f.method = FSF_DATA;
	fsf_header_add(&f, "type", "event");
	fsf_header_add(&f, "message_id", "m1");
	fsf_header_add(&f, "sum", "1");
	f.payload_encoding = strdup("gzip");
	f.payload_type = strdup("json");
	f.log_id_new = strdup("L9");
	fsf_set_payload(&f, "{\"a\":1}", 7);
	b = fsf_encode(&f, &n);
	ck_assert_uint_eq(n, sizeof(golden_data) - 1);
	ck_assert_int_eq(memcmp(b, golden_data, n), 0);
	free(b);
	fsf_clear(&f);
}
END_TEST

START_TEST(test_round_trip_ack)
{
	struct fsf_frame f, g;
	const char *why = NULL;
	unsigned char *b;
	size_t n;

	ck_assert_int_eq(fsf_decode(golden_data, sizeof(golden_data) - 1, &f, &why), 0);
	fsf_header_add(&f, "biz_rt", "3");
	fsf_set_payload(&f, "{\"code\":200}", 12);
	b = fsf_encode(&f, &n);
	ck_assert_int_eq(fsf_decode(b, n, &g, &why), 0);
	ck_assert_uint_eq(g.seq_id, f.seq_id);
	ck_assert_uint_eq(g.log_id, f.log_id);
	ck_assert_int_eq(g.service, f.service);
	ck_assert_int_eq(g.method, f.method);
	ck_assert_uint_eq(g.nheaders, 4);
	ck_assert_str_eq(g.headers[3].key, "biz_rt");
	ck_assert_str_eq(fsf_header(&g, "message_id"), "m1");
	ck_assert_uint_eq(g.payload_len, 12);
	ck_assert_str_eq((char *)g.payload, "{\"code\":200}");
	free(b);
	fsf_clear(&f);
	fsf_clear(&g);

	/* an empty payload is present, not absent */
	memset(&f, 0, sizeof(f));
	fsf_set_payload(&f, "", 0);
	b = fsf_encode(&f, &n);
	ck_assert_int_eq(fsf_decode(b, n, &g, &why), 0);
	ck_assert_ptr_nonnull(g.payload);
	ck_assert_uint_eq(g.payload_len, 0);
	free(b);
	fsf_clear(&f);
	fsf_clear(&g);
}
END_TEST

START_TEST(test_unknown_fields_skipped)
{
	/* the ping, then field 15 varint, field 16 fixed64, field 17 bytes, field 18 fixed32 */
	unsigned char buf[128];
	size_t n = sizeof(golden_ping) - 1;
	struct fsf_frame f;
	const char *why = NULL;
	static const unsigned char extra[] = { 0x78, 0x96, 0x01, 0x81, 0x01, 1, 2, 3, 4, 5, 6, 7,
		8, 0x8a, 0x01, 0x02, 'h', 'i', 0x95, 0x01, 1, 2, 3, 4 };

	memcpy(buf, golden_ping, n);
	memcpy(buf + n, extra, sizeof(extra));
	ck_assert_int_eq(fsf_decode(buf, n + sizeof(extra), &f, &why), 0);
	ck_assert_int_eq(f.service, 7);
	ck_assert_str_eq(fsf_header(&f, "type"), "ping");
	fsf_clear(&f);
}
END_TEST

static void
refused(const void *buf, size_t len, const char *what)
{
	struct fsf_frame f;
	const char *why = NULL;

	memset(&f, 0x5a, sizeof(f));
	if (fsf_decode(buf, len, &f, &why) != -1)
		ck_abort_msg("accepted %s", what);
	ck_assert_ptr_nonnull(why);
	ck_assert_ptr_null(f.headers);         /* nothing left to free */
	ck_assert_ptr_null(f.payload);
}

START_TEST(test_malformed_refused)
{
	unsigned char buf[1024];
	size_t i, n = sizeof(golden_data) - 1;
	struct fsf_frame f;
	const char *why;

	/* every truncation of a valid frame is refused or decodes a prefix cleanly */
	for (i = 0; i < n; i++) {
		if (fsf_decode(golden_data, i, &f, &why) == 0)
			fsf_clear(&f);
	}
	refused(golden_data, 25, "a truncated header");
	refused("", 0, "an empty frame (required fields missing)");
	refused("\x08\x00\x10\x00\x18\x07", 6, "a frame without method");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x2a\x04\x0a\x02hi", 14,
	    "a header without value");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x42\x05" "ab", 12,
	    "a payload longer than the frame");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x42\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",
	    19, "a payload length of 2^64-1");
	refused("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f\x10\x00\x18\x07\x20\x00", 17,
	    "a varint over 64 bits");
	refused("\x08\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01", 12, "an 11-byte varint");
	refused("\x0a\x00\x10\x00\x18\x07\x20\x00", 8, "SeqID with the wrong wire type");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x2a\x01", 10, "a header cut short");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x18\x07\x20\x00\x7b\x7c", 14, "a group");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x2a\x00", 10, "an empty header");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x00\x00", 10, "field number 0");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x2a\x08\x0a\x02h\x00\x12\x02hi", 18,
	    "a NUL inside a header key");
	refused("\x08\x00\x10\x00\x18\x07\x20\x00\x3a\x02\x00x", 12, "a NUL inside a string");

	/* more than FSF_MAX_HEADERS headers */
	memcpy(buf, golden_ping, 8);
	for (i = 0; i < FSF_MAX_HEADERS + 1; i++)
		memcpy(buf + 8 + i * 8, "\x2a\x06\x0a\x01k\x12\x01v", 8);
	ck_assert_int_eq(fsf_decode(buf, 8 + FSF_MAX_HEADERS * 8, &f, &why), 0);
	ck_assert_uint_eq(f.nheaders, FSF_MAX_HEADERS);
	fsf_clear(&f);
	refused(buf, 8 + (FSF_MAX_HEADERS + 1) * 8, "too many headers");
}
END_TEST

START_TEST(test_random_bytes_never_crash)
{
	unsigned char buf[96];
	struct fsf_frame f;
	const char *why;
	unsigned seed = 12345, i, k;

	for (i = 0; i < 20000; i++) {
		size_t n = (size_t)(rand_r(&seed) % sizeof(buf));

		for (k = 0; k < n; k++)
			buf[k] = (unsigned char)rand_r(&seed);
		if (i % 2 == 0 && n > 8)
			memcpy(buf, golden_data, 8);
		if (fsf_decode(buf, n, &f, &why) == 0)
			fsf_clear(&f);
	}
}
END_TEST

START_TEST(test_fragments_joined_in_order)
{
	struct fsf_frags *fr = fsf_frags_new();
	unsigned char *out = NULL;
	size_t len = 0;
	const char *why;

	ck_assert_int_eq(fsf_frags_add(fr, "m1", 3, 2, "ccc", 3, 1000, &out, &len, &why), 0);
	ck_assert_int_eq(fsf_frags_add(fr, "m2", 2, 0, "x", 1, 1000, &out, &len, &why), 0);
	ck_assert_int_eq(fsf_frags_add(fr, "m1", 3, 0, "a", 1, 1001, &out, &len, &why), 0);
	ck_assert_uint_eq(fsf_frags_pending(fr), 2);
	/* a fragment sent twice counts once, the newer copy wins */
	ck_assert_int_eq(fsf_frags_add(fr, "m1", 3, 0, "aa", 2, 1002, &out, &len, &why), 0);
	ck_assert_int_eq(fsf_frags_add(fr, "m1", 3, 1, "bb", 2, 1003, &out, &len, &why), 1);
	ck_assert_uint_eq(len, 7);
	ck_assert_str_eq((char *)out, "aabbccc");
	free(out);
	ck_assert_uint_eq(fsf_frags_pending(fr), 1);
	ck_assert_int_eq(fsf_frags_add(fr, "m2", 2, 1, "y", 1, 1004, &out, &len, &why), 1);
	ck_assert_str_eq((char *)out, "xy");
	free(out);
	ck_assert_uint_eq(fsf_frags_pending(fr), 0);
	fsf_frags_free(fr);
}
END_TEST

START_TEST(test_fragments_bounds_and_expiry)
{
	struct fsf_frags *fr = fsf_frags_new();
	unsigned char *out = NULL, *big;
	size_t len = 0;
	const char *why;
	char id[16];
	unsigned i;

	ck_assert_int_eq(fsf_frags_add(fr, "m", 3, 3, "a", 1, 0, &out, &len, &why), -1);
	ck_assert_int_eq(fsf_frags_add(fr, "m", 1, 0, "a", 1, 0, &out, &len, &why), -1);
	ck_assert_int_eq(fsf_frags_add(fr, "m", FSF_FRAG_MAX_SUM + 1, 0, "a", 1, 0, &out, &len,
	    &why), -1);
	ck_assert_int_eq(fsf_frags_add(fr, "", 2, 0, "a", 1, 0, &out, &len, &why), -1);
	/* the same id with another count is refused, the first stays */
	ck_assert_int_eq(fsf_frags_add(fr, "m", 2, 0, "a", 1, 0, &out, &len, &why), 0);
	ck_assert_int_eq(fsf_frags_add(fr, "m", 3, 1, "b", 1, 0, &out, &len, &why), -1);
	ck_assert_uint_eq(fsf_frags_pending(fr), 1);
	/* a missing fragment: the partial message expires, a late fragment starts anew */
	ck_assert_int_eq(fsf_frags_add(fr, "m", 2, 1, "b", 1, FSF_FRAG_TTL_USEC + 1, &out, &len,
	    &why), 0);
	ck_assert_uint_eq(fsf_frags_pending(fr), 1);
	ck_assert_int_eq(fsf_frags_add(fr, "m", 2, 0, "a", 1, FSF_FRAG_TTL_USEC + 2, &out, &len,
	    &why), 1);
	ck_assert_str_eq((char *)out, "ab");
	free(out);
	/* at most FSF_FRAG_MESSAGES partial messages: the oldest is dropped */
	for (i = 0; i < FSF_FRAG_MESSAGES + 4; i++) {
		snprintf(id, sizeof(id), "p%u", i);
		ck_assert_int_eq(fsf_frags_add(fr, id, 2, 0, "a", 1, 100 + i, &out, &len, &why), 0);
	}
	ck_assert_uint_eq(fsf_frags_pending(fr), FSF_FRAG_MESSAGES);
	ck_assert_int_eq(fsf_frags_add(fr, "p0", 2, 1, "b", 1, 200, &out, &len, &why), 0);
	/* over the size cap: refused and forgotten */
	big = calloc(1, FSF_FRAG_MAX_BYTES / 2 + 1);
	ck_assert_int_eq(fsf_frags_add(fr, "big", 3, 0, big, FSF_FRAG_MAX_BYTES / 2 + 1, 300,
	    &out, &len, &why), 0);
	ck_assert_int_eq(fsf_frags_add(fr, "big", 3, 1, big, FSF_FRAG_MAX_BYTES / 2 + 1, 300,
	    &out, &len, &why), -1);
	ck_assert_str_eq(why, "fragments over the size limit");
	free(big);
	fsf_frags_free(fr);
}
END_TEST

static Suite *
feishu_frame_suite(void)
{
	Suite *s = suite_create("feishu_frame");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_decode_reference_bytes);
	tcase_add_test(tc, test_encode_matches_reference);
	tcase_add_test(tc, test_round_trip_ack);
	tcase_add_test(tc, test_unknown_fields_skipped);
	tcase_add_test(tc, test_malformed_refused);
	tcase_add_test(tc, test_random_bytes_never_crash);
	tcase_add_test(tc, test_fragments_joined_in_order);
	tcase_add_test(tc, test_fragments_bounds_and_expiry);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(feishu_frame_suite)
