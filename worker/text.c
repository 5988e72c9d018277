/* text.c - splitting outbound text at line, word or character boundaries. */
#include "text.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

static int
text_is_cont(unsigned char c)
{
	return (c & 0xC0) == 0x80;
}

/* Length of the UTF-8 sequence a lead byte announces, 1 for anything else. */
static size_t
text_seq_len(unsigned char c)
{
	if (c >= 0xC0 && c < 0xE0)
		return 2;
	if (c >= 0xE0 && c < 0xF0)
		return 3;
	if (c >= 0xF0 && c < 0xF8)
		return 4;
	return 1;
}

static int
text_is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/*
 * A cut at max splits a character only when s[max] continues a sequence
 * whose lead byte lies at most 3 bytes back and announces a length that
 * reaches max; stray continuation bytes of invalid input may be cut anywhere.
 */
size_t
text_utf8_prefix(const char *s, size_t len, size_t max)
{
	size_t back;

	if (len <= max)
		return len;
	if (!text_is_cont((unsigned char)s[max]))
		return max;
	for (back = 1; back <= 3 && back <= max; back++) {
		unsigned char c = (unsigned char)s[max - back];

		if (text_is_cont(c))
			continue;
		if (text_seq_len(c) > back && back < max)
			return max - back;
		break;
	}
	return max;
}

/* Last index < lim of c in s, or -1 when none. */
static long
last_of(const char *s, size_t lim, char c)
{
	size_t i = lim;

	while (i > 0) {
		i--;
		if (s[i] == c)
			return (long)i;
	}
	return -1;
}

/*
 * Where to cut a window of len > max bytes: 1 <= cut <= max, so every
 * step advances; *skip says how many separator bytes follow.
 */
static size_t
find_cut(const char *s, size_t max, size_t *skip)
{
	long nl = last_of(s, max + 1, '\n');
	long sp = last_of(s, max + 1, ' ');
	size_t half = max / 2;

	*skip = 1;
	if (nl > 0 && (size_t)nl >= half)
		return (size_t)nl;
	if (sp > 0 && (size_t)sp >= half)
		return (size_t)sp;
	if (nl > 0)
		return (size_t)nl;
	if (sp > 0)
		return (size_t)sp;
	*skip = 0;
	return text_utf8_prefix(s, max + 1, max);
}

/* Appends s[0..len) without its trailing white space, unless nothing else is left. */
static void
push(char ***v, size_t *n, const char *s, size_t len)
{
	while (len > 0 && text_is_space((unsigned char)s[len - 1]))
		len--;
	if (len == 0)
		return;
	*v = xrealloc(*v, (*n + 2) * sizeof(char *));
	(*v)[(*n)++] = xstrndup(s, len);
	(*v)[*n] = NULL;
}

char **
text_split(const char *text, size_t max, size_t *n)
{
	char **v = xcalloc(1, sizeof(char *));
	size_t len = strlen(text);

	*n = 0;
	if (max < 4)
		max = 4;
	while (len > 0) {
		size_t cut, skip = 0;

		/* Leading line breaks of a piece carry nothing. */
		while (len > 0 && (*text == '\n' || *text == '\r')) {
			text++;
			len--;
		}
		if (len <= max) {
			push(&v, n, text, len);
			break;
		}
		cut = find_cut(text, max, &skip);
		push(&v, n, text, cut);
		text += cut + skip;
		len -= cut + skip;
		while (skip && len > 0 && *text == ' ') {
			text++;
			len--;
		}
	}
	return v;
}

void
text_pieces_free(char **pieces)
{
	char **p;

	if (pieces == NULL)
		return;
	for (p = pieces; *p != NULL; p++)
		free(*p);
	free(pieces);
}
