/* text.c - splitting outbound text at line, word or character boundaries. */
#include "text.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

size_t
text_utf8_prefix(const char *s, size_t len, size_t max)
{
	size_t cut;

	if (len <= max)
		return len;
	cut = max;
	/* Back up over continuation bytes (10xxxxxx) to the start of a character. */
	while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
		cut--;
	return cut > 0 ? cut : max;
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

/* Where to cut a window of len > max bytes; *skip says how many separator bytes follow. */
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

static void
push(char ***v, size_t *n, const char *s, size_t len)
{
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
		while (len > 0 && *text == '\n') {
			text++;
			len--;
		}
		if (len == 0)
			break;
		if (len <= max) {
			push(&v, n, text, len);
			break;
		}
		cut = find_cut(text, max, &skip);
		while (cut > 0 && (text[cut - 1] == ' ' || text[cut - 1] == '\r'))
			cut--;
		if (cut > 0)
			push(&v, n, text, cut);
		else
			cut = 0;
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
