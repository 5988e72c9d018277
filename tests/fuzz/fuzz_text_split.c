/*
 * fuzz_text_split.c - splitting outbound text (worker/text.c).
 *
 * Input: two bytes for the maximum (0..1023), then the text (up to a NUL).
 * Invariants of text_split(): it returns (a hang is reported by libFuzzer's
 * -timeout); every piece is non-empty, at most max(max, 4) bytes and not
 * white space only; there are never more pieces than bytes; the pieces are
 * the text's own bytes in order, with only white space between and around
 * them (nothing else is lost, nothing is invented); and for valid UTF-8
 * text every piece is valid UTF-8, i.e. no cut falls inside a character.
 * Invariants of text_utf8_prefix(): the prefix is the whole string when it
 * fits, else at most max bytes, and on a character boundary of valid UTF-8.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fz_util.h"
#include "text.h"

static int
all_space(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!fz_is_space((unsigned char)s[i]))
			return 0;
	return 1;
}

/* Checks that the pieces are the text's bytes in order with only white space left out. */
static void
check_cover(const char *text, size_t len, char **pieces, size_t n)
{
	size_t pos = 0, i;

	for (i = 0; i < n; i++) {
		size_t plen = strlen(pieces[i]);

		while (pos < len && (plen > len - pos || memcmp(text + pos, pieces[i], plen) != 0)) {
			FZ_CHECK(fz_is_space((unsigned char)text[pos]),
			    "piece %zu: byte 0x%02x at offset %zu of the text is lost", i,
			    (unsigned char)text[pos], pos);
			pos++;
		}
		FZ_CHECK(pos < len, "piece %zu (\"%.40s\") is not the text's next bytes", i,
		    pieces[i]);
		pos += plen;
	}
	FZ_CHECK(all_space(text + pos, len - pos), "the text's tail from offset %zu is lost", pos);
}

static void
check_prefix(const char *s, size_t len, size_t max, int valid)
{
	size_t p = text_utf8_prefix(s, len, max);

	if (len <= max) {
		FZ_CHECK(p == len, "prefix %zu of a fitting string of %zu", p, len);
		return;
	}
	FZ_CHECK(p <= max, "prefix %zu over max %zu", p, max);
	if (valid && max >= 4)
		FZ_CHECK(p > 0 && ((unsigned char)s[p] & 0xc0) != 0x80,
		    "prefix %zu of max %zu cuts a character", p, max);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	size_t max = fz_u16(&in) % 1024, lim = max < 4 ? 4 : max, len, n, i;
	char *text = fz_rest_str(&in, &len);
	int valid = fz_utf8_valid(text, len);
	char **pieces = text_split(text, max, &n);

	FZ_CHECK(pieces != NULL, "no array");
	FZ_CHECK(n <= len, "%zu pieces from %zu bytes", n, len);
	for (i = 0; i < n; i++) {
		size_t plen;

		FZ_CHECK(pieces[i] != NULL, "piece %zu of %zu is NULL", i, n);
		plen = strlen(pieces[i]);
		FZ_CHECK(plen > 0, "piece %zu is empty", i);
		FZ_CHECK(plen <= lim, "piece %zu has %zu bytes, max %zu", i, plen, lim);
		FZ_CHECK(!all_space(pieces[i], plen), "piece %zu is white space only", i);
		FZ_CHECK(!valid || fz_utf8_valid(pieces[i], plen),
		    "piece %zu cuts a UTF-8 character (max %zu)", i, lim);
	}
	FZ_CHECK(pieces[n] == NULL, "the array is not NULL-terminated at %zu", n);
	check_cover(text, len, pieces, n);
	check_prefix(text, len, max, valid);
	text_pieces_free(pieces);
	free(text);
	return 0;
}
