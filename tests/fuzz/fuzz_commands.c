/*
 * fuzz_commands.c - gateway command parsing and the /status text
 * (worker/commands.c).
 *
 * Input: one byte choosing the mode, then the text.
 * Mode 0 (cmd_parse on the text), invariants: a command is recognized
 * exactly when the text is, after leading white space, "/" + a known name
 * (any case) ending the text or followed by white space; the arguments
 * point into the text, after the name, with no leading white space; a
 * "/name@bot" or an unknown name is never a command.  Also: "/<name> "
 * followed by the text parses back as that command with the text's
 * arguments (the parse of a command we build is the command).
 * Mode 1: the text as a JSON status document for cmd_status_text(), which
 * must always produce its fixed frame.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "commands.h"
#include "fz_util.h"
#include "util.h"

static const enum cmd all_cmds[] = {
	CMD_HELP, CMD_STATUS, CMD_PING, CMD_NEW, CMD_RESET, CMD_STOP, CMD_WHOAMI, CMD_RESTART,
};

/* What cmd_parse() should say, worked out independently. */
static enum cmd
expected(const char *text, const char **args)
{
	const char *p = text, *w;
	size_t n, i;

	*args = "";
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p != '/')
		return CMD_NONE;
	w = ++p;
	while (isalnum((unsigned char)*p) || *p == '_')
		p++;
	n = (size_t)(p - w);
	if (*p != '\0' && !isspace((unsigned char)*p))
		return CMD_NONE;
	for (i = 0; i < ARRAY_LEN(all_cmds); i++) {
		const char *name = cmd_name(all_cmds[i]);

		if (n > 0 && strlen(name) == n && strncasecmp(name, w, n) == 0) {
			while (isspace((unsigned char)*p))
				p++;
			*args = p;
			return all_cmds[i];
		}
	}
	return CMD_NONE;
}

static void
check_parse(const char *text, size_t len)
{
	const char *args = NULL, *want_args;
	enum cmd c = cmd_parse(text, &args), want = expected(text, &want_args);

	FZ_CHECK(c == want, "parsed as %s, expected %s", cmd_name(c), cmd_name(want));
	FZ_CHECK(cmd_parse(text, NULL) == c, "the result depends on args being asked for");
	if (c == CMD_NONE) {
		FZ_CHECK(args != NULL && args[0] == '\0', "arguments for no command");
		return;
	}
	FZ_CHECK(args >= text && args <= text + len, "arguments point outside the text");
	FZ_CHECK(args == want_args, "arguments at offset %td, expected %td", args - text,
	    want_args - text);
	FZ_CHECK(!isspace((unsigned char)args[0]), "arguments start with white space");
	FZ_CHECK(strcmp(cmd_name(c), "none") != 0, "a command without a name");
	FZ_CHECK(cmd_admin_only(c) == (c == CMD_RESTART), "admin rights of %s", cmd_name(c));
}

/* "/<name> <text>" and "/<NAME>@bot" built from the input. */
static void
check_built(const char *text, unsigned pick)
{
	enum cmd c = all_cmds[pick % ARRAY_LEN(all_cmds)];
	const char *args, *p = text;
	char *s, *u;
	size_t i;

	while (isspace((unsigned char)*p))
		p++;
	s = xasprintf("/%s %s", cmd_name(c), text);
	FZ_CHECK(cmd_parse(s, &args) == c, "\"%.60s\" is not %s", s, cmd_name(c));
	FZ_CHECK(strcmp(args, p) == 0, "arguments \"%.60s\" instead of \"%.60s\"", args, p);
	free(s);
	s = xasprintf("/%s@bot %s", cmd_name(c), text);
	for (u = s; *u != '\0' && *u != '@'; u++)
		*u = (char)toupper((unsigned char)*u);
	FZ_CHECK(cmd_parse(s, NULL) == CMD_NONE, "\"%.60s\" addressed to another bot parsed", s);
	free(s);
	s = xasprintf("  \t/%s", cmd_name(c));
	for (i = 0; s[i] != '\0'; i++)
		if (pick & 0x100)
			s[i] = (char)toupper((unsigned char)s[i]);
	FZ_CHECK(cmd_parse(s, &args) == c && args[0] == '\0', "\"%s\" alone", s);
	free(s);
}

static void
check_status(const char *text)
{
	cJSON *j = cJSON_Parse(text);
	char *s = cmd_status_text(j);

	FZ_CHECK(s != NULL && strncmp(s, "Gateway status\nworker pid: ", 27) == 0,
	    "status text without its frame");
	FZ_CHECK(strstr(s, "\nplatforms:\n") != NULL && strstr(s, "\nagent: ") != NULL,
	    "status text without its sections");
	free(s);
	cJSON_Delete(j);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t mode = fz_u8(&in);
	unsigned pick = fz_u16(&in);
	size_t len;
	char *text = fz_rest_str(&in, &len);

	if (mode & 1) {
		check_status(text);
	} else {
		check_parse(text, len);
		check_built(text, pick);
	}
	free(text);
	return 0;
}
