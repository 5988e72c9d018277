/* test_sse.c - the Server-Sent Events parser, edge case by edge case. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/sse.h"

struct got {
	int n;
	char events[16][64];
	char data[16][256];
	size_t len[16];
	int stop_after;                 /* stop when n reaches it (0: never) */
};

static int
on_event(void *arg, const char *event, const char *data, size_t len)
{
	struct got *g = arg;

	ck_assert_int_lt(g->n, 16);
	snprintf(g->events[g->n], sizeof(g->events[0]), "%s", event);
	ck_assert_uint_lt(len, sizeof(g->data[0]));
	memcpy(g->data[g->n], data, len);
	g->data[g->n][len] = '\0';
	ck_assert_int_eq(data[len], '\0');
	g->len[g->n] = len;
	g->n++;
	return g->stop_after != 0 && g->n >= g->stop_after;
}

/* Parses s fed in pieces of step bytes (0: all at once). */
static int
parse(const char *s, size_t len, size_t step, size_t max, struct got *g)
{
	struct sse_parser *p = sse_new(max, on_event, g);
	size_t i;
	int r = 0;

	if (step == 0)
		step = len ? len : 1;
	for (i = 0; i < len && r == 0; i += step)
		r = sse_feed(p, s + i, len - i < step ? len - i : step);
	if (r == 0)
		r = sse_pending(p) ? 2 : 0;
	sse_free(p);
	return r;
}

/* Parses s whole and byte by byte; both must give one event with data want. */
static void
expect_one(const char *s, const char *event, const char *want)
{
	size_t steps[] = { 0, 1, 2, 3, 7 };
	size_t i;

	for (i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct got g = { 0 };

		ck_assert_int_eq(parse(s, strlen(s), steps[i], 0, &g), 0);
		ck_assert_msg(g.n == 1, "step %zu: %d events for %s", steps[i], g.n, s);
		ck_assert_str_eq(g.events[0], event);
		ck_assert_str_eq(g.data[0], want);
	}
}

START_TEST(test_basic)
{
	expect_one("data: hello\n\n", "message", "hello");
	expect_one("data:hello\n\n", "message", "hello");
	expect_one("data:  two spaces\n\n", "message", " two spaces");
	expect_one("data: a\ndata: b\ndata:\n\n", "message", "a\nb\n");
	expect_one("data\n\n", "message", "");
	expect_one("data:\n\n", "message", "");
	expect_one("event: delta\ndata: {\"x\":1}\n\n", "delta", "{\"x\":1}");
	expect_one("data: x: y: z\n\n", "message", "x: y: z");
}
END_TEST

START_TEST(test_line_endings)
{
	expect_one("data: crlf\r\n\r\n", "message", "crlf");
	expect_one("data: cr\r\r", "message", "cr");
	expect_one("data: a\r\ndata: b\rdata: c\n\n", "message", "a\nb\nc");
	/* "\r\n" is one line end, not a blank line. */
	expect_one(": c\r\ndata: x\r\n\r\n", "message", "x");
}
END_TEST

START_TEST(test_crlf_split_across_feeds)
{
	struct sse_parser *p;
	struct got g = { 0 };

	p = sse_new(0, on_event, &g);
	ck_assert_int_eq(sse_feed(p, "data: a\r", 8), 0);
	ck_assert_int_eq(g.n, 0);
	ck_assert_int_eq(sse_feed(p, "\n", 1), 0);
	ck_assert_int_eq(g.n, 0);
	ck_assert_int_eq(sse_feed(p, "\r", 1), 0);
	ck_assert_int_eq(g.n, 1);
	ck_assert_int_eq(sse_feed(p, "\ndata: b\n\n", 10), 0);
	ck_assert_int_eq(g.n, 2);
	ck_assert_str_eq(g.data[0], "a");
	ck_assert_str_eq(g.data[1], "b");
	sse_free(p);
}
END_TEST

START_TEST(test_comments_and_unknown_fields)
{
	struct got g = { 0 };
	const char *s = ": keep-alive\n\n:\n\nretry: 1000\nfoo: bar\nnocolon\n\n"
	    "id: 7\ndata: real\n: comment inside\n\n";

	ck_assert_int_eq(parse(s, strlen(s), 0, 0, &g), 0);
	ck_assert_int_eq(g.n, 1);
	ck_assert_str_eq(g.data[0], "real");
}
END_TEST

START_TEST(test_event_without_data_not_dispatched)
{
	struct got g = { 0 };
	const char *s = "event: lonely\n\ndata: after\n\n";

	ck_assert_int_eq(parse(s, strlen(s), 0, 0, &g), 0);
	ck_assert_int_eq(g.n, 1);
	/* The event type does not leak into the next event. */
	ck_assert_str_eq(g.events[0], "message");
	ck_assert_str_eq(g.data[0], "after");
}
END_TEST

START_TEST(test_many_events_and_split_everywhere)
{
	const char *s = "data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n"
	    "data: {\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\r\n\r\n"
	    ": ping\n\n"
	    "event: end\ndata: [DONE]\n\n";
	size_t step;

	for (step = 1; step <= strlen(s); step++) {
		struct got g = { 0 };

		ck_assert_int_eq(parse(s, strlen(s), step, 0, &g), 0);
		ck_assert_int_eq(g.n, 3);
		ck_assert_str_eq(g.data[0], "{\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}");
		ck_assert_str_eq(g.data[1], "{\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}");
		ck_assert_str_eq(g.events[2], "end");
		ck_assert_str_eq(g.data[2], "[DONE]");
	}
}
END_TEST

START_TEST(test_bom)
{
	expect_one("\xef\xbb\xbf" "data: b\n\n", "message", "b");
	{
		/* Only a leading BOM is special; elsewhere the bytes are data. */
		struct got g = { 0 };
		const char *s = "data: a\n\n\xef\xbb\xbf" "data: b\n\n";

		ck_assert_int_eq(parse(s, strlen(s), 1, 0, &g), 0);
		ck_assert_int_eq(g.n, 1);
	}
	{
		/* A partial BOM followed by other bytes stays part of the line. */
		struct got g = { 0 };
		const char *s = "\xef\xbb" "data: c\n\n";

		ck_assert_int_eq(parse(s, strlen(s), 1, 0, &g), 0);
		ck_assert_int_eq(g.n, 0);
	}
}
END_TEST

START_TEST(test_truncated_stream_pending)
{
	struct got g = { 0 };
	const char *s1 = "data: complete\n\ndata: partial";
	const char *s2 = "data: complete\n\ndata: no blank line\n";

	ck_assert_int_eq(parse(s1, strlen(s1), 0, 0, &g), 2);
	ck_assert_int_eq(g.n, 1);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(parse(s2, strlen(s2), 0, 0, &g), 2);
	ck_assert_int_eq(g.n, 1);
	memset(&g, 0, sizeof(g));
	ck_assert_int_eq(parse("", 0, 0, 0, &g), 0);
	ck_assert_int_eq(g.n, 0);
}
END_TEST

START_TEST(test_nul_bytes_in_data)
{
	struct got g = { 0 };
	const char s[] = "data: a\0b\n\n";

	ck_assert_int_eq(parse(s, sizeof(s) - 1, 1, 0, &g), 0);
	ck_assert_int_eq(g.n, 1);
	ck_assert_uint_eq(g.len[0], 3);
	ck_assert_int_eq(memcmp(g.data[0], "a\0b", 3), 0);
}
END_TEST

START_TEST(test_line_too_long)
{
	struct sse_parser *p;
	struct got g = { 0 };
	char big[200];

	memset(big, 'x', sizeof(big));
	p = sse_new(100, on_event, &g);
	ck_assert_int_eq(sse_feed(p, "data: ", 6), 0);
	ck_assert_int_eq(sse_feed(p, big, 50), 0);
	ck_assert_int_eq(sse_feed(p, big, 50), -1);
	/* A failed parser stays failed. */
	ck_assert_int_eq(sse_feed(p, "\n\ndata: ok\n\n", 12), -1);
	ck_assert_int_eq(g.n, 0);
	sse_free(p);
}
END_TEST

START_TEST(test_event_too_large)
{
	struct sse_parser *p;
	struct got g = { 0 };
	int i, r = 0;

	/* Each line is small, but the event's data grows past the cap. */
	p = sse_new(100, on_event, &g);
	for (i = 0; i < 20 && r == 0; i++)
		r = sse_feed(p, "data: 0123456789\n", 17);
	ck_assert_int_eq(r, -1);
	ck_assert_int_eq(g.n, 0);
	sse_free(p);
	/* Just under the cap is fine. */
	memset(&g, 0, sizeof(g));
	p = sse_new(100, on_event, &g);
	for (i = 0; i < 9; i++)
		ck_assert_int_eq(sse_feed(p, "data: 0123456789\n", 17), 0);
	ck_assert_int_eq(sse_feed(p, "\n", 1), 0);
	ck_assert_int_eq(g.n, 1);
	ck_assert_uint_eq(g.len[0], 98);
	sse_free(p);
}
END_TEST

START_TEST(test_callback_stops)
{
	struct sse_parser *p;
	struct got g = { .stop_after = 1 };
	const char *s = "data: one\n\ndata: two\n\n";

	p = sse_new(0, on_event, &g);
	ck_assert_int_eq(sse_feed(p, s, strlen(s)), 1);
	ck_assert_int_eq(g.n, 1);
	sse_free(p);
}
END_TEST

START_TEST(test_last_id)
{
	struct sse_parser *p;
	struct got g = { 0 };
	const char *s = "id: 42\ndata: x\n\nid\ndata: y\n\n";

	p = sse_new(0, on_event, &g);
	ck_assert_str_eq(sse_last_id(p), "");
	ck_assert_int_eq(sse_feed(p, s, 16), 0);
	ck_assert_str_eq(sse_last_id(p), "42");
	ck_assert_int_eq(sse_feed(p, s + 16, strlen(s) - 16), 0);
	ck_assert_str_eq(sse_last_id(p), "");
	ck_assert_int_eq(g.n, 2);
	sse_free(p);
	sse_free(NULL);
}
END_TEST

static Suite *
sse_suite(void)
{
	Suite *s = suite_create("sse");
	TCase *tc = tcase_create("parser");

	tcase_add_test(tc, test_basic);
	tcase_add_test(tc, test_line_endings);
	tcase_add_test(tc, test_crlf_split_across_feeds);
	tcase_add_test(tc, test_comments_and_unknown_fields);
	tcase_add_test(tc, test_event_without_data_not_dispatched);
	tcase_add_test(tc, test_many_events_and_split_everywhere);
	tcase_add_test(tc, test_bom);
	tcase_add_test(tc, test_truncated_stream_pending);
	tcase_add_test(tc, test_nul_bytes_in_data);
	tcase_add_test(tc, test_line_too_long);
	tcase_add_test(tc, test_event_too_large);
	tcase_add_test(tc, test_callback_stops);
	tcase_add_test(tc, test_last_id);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(sse_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
