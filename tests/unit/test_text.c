/* test_text.c - splitting outbound text at line, word and UTF-8 boundaries. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "text.h"
#include "unit_util.h"

/* Every piece fits, none is empty, and none ends inside a UTF-8 character. */
static void
check_pieces(char **p, size_t n, size_t max)
{
	size_t i;

	for (i = 0; i < n; i++) {
		size_t len = strlen(p[i]);

		ck_assert_uint_gt(len, 0);
		ck_assert_uint_le(len, max);
		/* The last byte is not a lead byte of a multi-byte character cut short. */
		ck_assert((unsigned char)p[i][0] < 0x80 || ((unsigned char)p[i][0] & 0xC0) == 0xC0);
	}
	ck_assert_ptr_null(p[n]);
}

START_TEST(test_short_text_is_one_piece)
{
	size_t n;
	char **p = text_split("hello world", 100, &n);

	ck_assert_uint_eq(n, 1);
	ck_assert_str_eq(p[0], "hello world");
	text_pieces_free(p);
}
END_TEST

START_TEST(test_empty_text)
{
	size_t n;
	char **p = text_split("", 100, &n);

	ck_assert_uint_eq(n, 0);
	ck_assert_ptr_null(p[0]);
	text_pieces_free(p);
	p = text_split("\n\n\n", 100, &n);
	ck_assert_uint_eq(n, 0);
	text_pieces_free(p);
}
END_TEST

START_TEST(test_cut_at_line)
{
	size_t n;
	char **p = text_split("first line here\nsecond line\nthird", 20, &n);

	/* What fits stays together, line breaks included. */
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(p[0], "first line here");
	ck_assert_str_eq(p[1], "second line\nthird");
	text_pieces_free(p);
}
END_TEST

START_TEST(test_line_preferred_over_word)
{
	size_t n;
	/* The line break lies in the second half of the window: cut there, not at the last space. */
	char **p = text_split("aaaa bbbb cccc\ndd ee ff gg hh", 20, &n);

	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(p[0], "aaaa bbbb cccc");
	ck_assert_str_eq(p[1], "dd ee ff gg hh");
	text_pieces_free(p);
}
END_TEST

START_TEST(test_cut_at_word)
{
	size_t n;
	char **p = text_split("one two three four five six seven", 10, &n);
	size_t i;

	check_pieces(p, n, 10);
	ck_assert_str_eq(p[0], "one two");
	ck_assert_str_eq(p[1], "three four");
	for (i = 0; i < n; i++)
		ck_assert_ptr_null(strchr(p[i], '\n'));
	ck_assert_str_eq(p[n - 1], "seven");
	text_pieces_free(p);
}
END_TEST

START_TEST(test_hard_cut_ascii)
{
	size_t n;
	char **p = text_split("abcdefghijklmnopqrstuvwxyz", 10, &n);

	ck_assert_uint_eq(n, 3);
	ck_assert_str_eq(p[0], "abcdefghij");
	ck_assert_str_eq(p[1], "klmnopqrst");
	ck_assert_str_eq(p[2], "uvwxyz");
	text_pieces_free(p);
}
END_TEST

START_TEST(test_hard_cut_utf8)
{
	/* 10 x "é" (2 bytes) and 5 x "😀" (4 bytes): no cut may fall inside a character. */
	const char *s = "\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9\xc3\xa9"
	    "\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80\xf0\x9f\x98\x80";
	size_t n, i, total = 0;
	char **p = text_split(s, 7, &n);
	char joined[256] = "";

	check_pieces(p, n, 7);
	for (i = 0; i < n; i++) {
		size_t len = strlen(p[i]);
		unsigned char last = (unsigned char)p[i][len - 1];

		/* A piece ends on a complete character: its last lead byte has all its continuation bytes. */
		if (last >= 0x80) {
			size_t k = len - 1;

			while (k > 0 && ((unsigned char)p[i][k] & 0xC0) == 0x80)
				k--;
			if ((unsigned char)p[i][k] >= 0xF0)
				ck_assert_uint_eq(len - k, 4);
			else if ((unsigned char)p[i][k] >= 0xE0)
				ck_assert_uint_eq(len - k, 3);
			else
				ck_assert_uint_eq(len - k, 2);
		}
		total += len;
		strcat(joined, p[i]);
	}
	ck_assert_uint_eq(total, strlen(s));
	ck_assert_str_eq(joined, s);
	text_pieces_free(p);
}
END_TEST

START_TEST(test_utf8_words)
{
	size_t n, i;
	char **p = text_split("gr\xc3\xbc\xc3\x9f" "e sch\xc3\xb6n \xc3\xa9t\xc3\xa9 caf\xc3\xa9", 9, &n);

	check_pieces(p, n, 9);
	for (i = 0; i < n; i++)
		ck_assert(p[i][0] != ' ' && p[i][strlen(p[i]) - 1] != ' ');
	ck_assert_str_eq(p[0], "gr\xc3\xbc\xc3\x9f" "e");
	text_pieces_free(p);
}
END_TEST

START_TEST(test_long_text_reassembles)
{
	char buf[20000];
	size_t n, i, words = 0, got = 0;
	char **p;

	buf[0] = '\0';
	for (i = 0; strlen(buf) < 19000; i++) {
		char w[32];

		snprintf(w, sizeof(w), "%sword%zu", i % 17 == 16 ? "\n" : (i ? " " : ""), i);
		strcat(buf, w);
		words++;
	}
	p = text_split(buf, 4096, &n);
	check_pieces(p, n, 4096);
	ck_assert_uint_ge(n, 5);
	for (i = 0; i < n; i++) {
		char *save = NULL, *copy = strdup(p[i]), *t;

		for (t = strtok_r(copy, " \n", &save); t != NULL; t = strtok_r(NULL, " \n", &save))
			got++;
		free(copy);
	}
	/* No word is lost or cut in two. */
	ck_assert_uint_eq(got, words);
	text_pieces_free(p);
}
END_TEST

START_TEST(test_utf8_prefix)
{
	ck_assert_uint_eq(text_utf8_prefix("abc", 3, 10), 3);
	ck_assert_uint_eq(text_utf8_prefix("a\xc3\xa9z", 4, 2), 1);
	ck_assert_uint_eq(text_utf8_prefix("a\xc3\xa9z", 4, 3), 3);
}
END_TEST

/* Whether c is white space in the splitter's sense. */
static int
ws(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Number of complete UTF-8 sequences (lead byte plus its continuation bytes) in s[0..len). */
static size_t
utf8_seqs(const char *s, size_t len)
{
	size_t i, k, want, count = 0;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		want = c >= 0xF0 && c < 0xF8 ? 4 : c >= 0xE0 && c < 0xF0 ? 3 : c >= 0xC0 && c < 0xE0 ? 2 : 1;
		if (want == 1 || i + want > len)
			continue;
		for (k = 1; k < want && ((unsigned char)s[i + k] & 0xC0) == 0x80; k++)
			;
		if (k == want)
			count++;
	}
	return count;
}

/* s without its white space, in a buffer the caller frees. */
static char *
strip_ws(const char *s, size_t len)
{
	char *out = malloc(len + 1);
	size_t i, o = 0;

	ck_assert_ptr_nonnull(out);
	for (i = 0; i < len; i++)
		if (!ws((unsigned char)s[i]))
			out[o++] = s[i];
	out[o] = '\0';
	return out;
}

/*
 * The splitter's contract on any input: every piece fits and holds more
 * than white space, no complete UTF-8 character is cut in two, and only
 * white space is lost.
 */
static void
check_split(const char *s, size_t max)
{
	size_t n, i, len = strlen(s), seqs = 0, total = 0;
	char **p = text_split(s, max, &n);
	char *want = strip_ws(s, len), *joined = malloc(len + 1);

	ck_assert_ptr_nonnull(joined);
	joined[0] = '\0';
	for (i = 0; i < n; i++) {
		size_t plen = strlen(p[i]);
		char *core = strip_ws(p[i], plen);

		ck_assert_uint_gt(plen, 0);
		ck_assert_uint_le(plen, max);
		ck_assert_msg(core[0] != '\0', "piece %zu of max %zu is only white space", i, max);
		ck_assert_uint_le(total + strlen(core), len);
		memcpy(joined + total, core, strlen(core) + 1);
		total += strlen(core);
		seqs += utf8_seqs(p[i], plen);
		free(core);
	}
	ck_assert_ptr_null(p[n]);
	ck_assert_msg(strcmp(joined, want) == 0, "content lost or reordered at max %zu", max);
	ck_assert_uint_eq(seqs, utf8_seqs(s, len));
	free(want);
	free(joined);
	text_pieces_free(p);
}

/* A string of n copies of c. */
static char *
repeat(char c, size_t n)
{
	char *s = malloc(n + 1);

	ck_assert_ptr_nonnull(s);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

START_TEST(test_only_carriage_returns)
{
	char *s = repeat('\r', 4097);
	size_t n;
	char **p = text_split(s, 4096, &n);

	/* Nothing to send, and the split returns (it used to loop forever). */
	ck_assert_uint_eq(n, 0);
	text_pieces_free(p);
	check_split(s, 4096);
	free(s);
	s = repeat(' ', 9000);
	p = text_split(s, 4096, &n);
	ck_assert_uint_eq(n, 0);
	text_pieces_free(p);
	free(s);
}
END_TEST

START_TEST(test_space_then_long_sequence)
{
	/* A space, a lead byte, then only continuation bytes past the window. */
	char *s = repeat('\x80', 4100);
	size_t n;
	char **p;

	s[0] = ' ';
	s[1] = '\xe2';
	p = text_split(s, 4096, &n);
	ck_assert_uint_ge(n, 1);
	text_pieces_free(p);
	check_split(s, 4096);
	/* The same with a valid character right after the space. */
	memcpy(s, " \xe2\x82\xac", 4);
	memset(s + 4, 'x', 4096);
	check_split(s, 4096);
	free(s);
}
END_TEST

START_TEST(test_no_piece_of_line_breaks_alone)
{
	size_t n, i;
	char buf[64];
	char **p;

	/* "\r\n" pairs after the cut must not become a piece of their own. */
	snprintf(buf, sizeof(buf), "abcdefgh\r\n\r\n\r\n\r\n\r\n\r\nij");
	p = text_split(buf, 8, &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_str_eq(p[0], "abcdefgh");
	ck_assert_str_eq(p[1], "ij");
	text_pieces_free(p);
	p = text_split("word \r\r\r\r\r\r\r\r\r\r\r\r next", 6, &n);
	for (i = 0; i < n; i++)
		ck_assert(strspn(p[i], " \r\n") < strlen(p[i]));
	ck_assert_uint_eq(n, 2);
	text_pieces_free(p);
}
END_TEST

/* xorshift64: a fixed seed makes every run test the same inputs. */
static unsigned long long
rnd(unsigned long long *st)
{
	*st ^= *st << 13;
	*st ^= *st >> 7;
	*st ^= *st << 17;
	return *st;
}

/* Appends one random token: white space, ASCII, UTF-8 characters whole or broken, invalid bytes. */
static size_t
random_token(unsigned long long *st, char *out)
{
	static const char *const toks[] = {
		"\r", "\r", "\r\n", "\n", " ", " ", "  ", "\t", "a", "bc", "xyz",
		"\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80", "\xc3", "\xe2\x82", "\xf0\x9f",
		"\x80", "\xbf\xbf", "\xff", "\xfe", "\xc0", " \xe2", " \xf0\x9f\x98",
	};
	const char *t = toks[rnd(st) % (sizeof(toks) / sizeof(toks[0]))];

	memcpy(out, t, strlen(t));
	return strlen(t);
}

START_TEST(test_random_inputs_keep_the_contract)
{
	unsigned long long st = 0x9e3779b97f4a7c15ULL;
	char buf[600];
	int round;

	for (round = 0; round < 20000; round++) {
		size_t max = 4 + rnd(&st) % 40, len = 0, want = rnd(&st) % 400;

		/* Some rounds are mostly one kind of byte: long runs are where cuts fail. */
		int runs = (int)(rnd(&st) % 4);

		while (len < want) {
			if (runs == 1 && rnd(&st) % 2)
				buf[len++] = '\r';
			else if (runs == 2 && rnd(&st) % 2)
				buf[len++] = (char)(0x80 | rnd(&st) % 64);
			else
				len += random_token(&st, buf + len);
		}
		buf[len] = '\0';
		check_split(buf, max);
	}
}
END_TEST

static Suite *
text_suite(void)
{
	Suite *s = suite_create("text");
	TCase *tc = tcase_create("split");

	tcase_add_test(tc, test_short_text_is_one_piece);
	tcase_add_test(tc, test_empty_text);
	tcase_add_test(tc, test_cut_at_line);
	tcase_add_test(tc, test_line_preferred_over_word);
	tcase_add_test(tc, test_cut_at_word);
	tcase_add_test(tc, test_hard_cut_ascii);
	tcase_add_test(tc, test_hard_cut_utf8);
	tcase_add_test(tc, test_utf8_words);
	tcase_add_test(tc, test_long_text_reassembles);
	tcase_add_test(tc, test_utf8_prefix);
	tcase_add_test(tc, test_only_carriage_returns);
	tcase_add_test(tc, test_space_then_long_sequence);
	tcase_add_test(tc, test_no_piece_of_line_breaks_alone);
	tcase_add_test(tc, test_random_inputs_keep_the_contract);
	tcase_set_timeout(tc, 30);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(text_suite)
