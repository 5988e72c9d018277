/*
 * text.h - splitting outbound text to a platform's maximum message size.
 */
#ifndef HERMES_TEXT_H
#define HERMES_TEXT_H

#include <stddef.h>

/*
 * Splits text into pieces of at most max bytes (max >= 4), cutting at a
 * line break when one lies in the second half of the window, else at a
 * space, else at any line break or space, else between two UTF-8
 * characters (never inside one).  Every piece holds at most max bytes
 * and something besides white space: separators at a cut, trailing white
 * space and leading line breaks of a piece are dropped, and a piece of
 * white space alone is skipped, so only white space is ever lost.
 * Returns a NULL-terminated array (free with text_pieces_free) and the
 * count in *n.
 */
char **text_split(const char *text, size_t max, size_t *n);
void text_pieces_free(char **pieces);

/*
 * Length of the longest prefix of s (at most max bytes) that does not end
 * inside a UTF-8 sequence; max itself when invalid input leaves no such
 * prefix, so a caller always advances.
 */
size_t text_utf8_prefix(const char *s, size_t len, size_t max);

#endif
