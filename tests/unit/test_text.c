/* test_text.c - splitting outbound text at line, word and UTF-8 boundaries. */
#include <check.h>
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
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(text_suite)
