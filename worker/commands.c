/* commands.c - parsing gateway commands and formatting their replies. */
#include "commands.h"
#include "util.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct {
	const char *name;
	enum cmd cmd;
} cmd_names[] = {
	{ "help", CMD_HELP },
	{ "status", CMD_STATUS },
	{ "ping", CMD_PING },
	{ "new", CMD_NEW },
	{ "reset", CMD_RESET },
	{ "stop", CMD_STOP },
	{ "whoami", CMD_WHOAMI },
	{ "restart", CMD_RESTART },
};

enum cmd
cmd_parse(const char *text, const char **args)
{
	const char *p = text, *w;
	size_t n, i;

	if (args != NULL)
		*args = "";
	if (p == NULL)
		return CMD_NONE;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p != '/')
		return CMD_NONE;
	w = ++p;
	while (isalnum((unsigned char)*p) || *p == '_')
		p++;
	n = (size_t)(p - w);
	if (n == 0 || (*p != '\0' && !isspace((unsigned char)*p)))
		return CMD_NONE;
	for (i = 0; i < ARRAY_LEN(cmd_names); i++) {
		if (strlen(cmd_names[i].name) == n && strncasecmp(cmd_names[i].name, w, n) == 0) {
			if (args != NULL) {
				while (isspace((unsigned char)*p))
					p++;
				*args = p;
			}
			return cmd_names[i].cmd;
		}
	}
	return CMD_NONE;
}

const char *
cmd_name(enum cmd c)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(cmd_names); i++)
		if (cmd_names[i].cmd == c)
			return cmd_names[i].name;
	return "none";
}

int
cmd_admin_only(enum cmd c)
{
	return c == CMD_RESTART;
}

int
cmd_may_stop(const char *owner_id, const char *user_id, int admin)
{
	if (admin)
		return 1;
	return owner_id != NULL && user_id != NULL && strcmp(owner_id, user_id) == 0;
}

const char *
cmd_help_text(void)
{
	return "Gateway commands:\n"
	    "/help - this list\n"
	    "/status - gateway, platforms and agent status\n"
	    "/ping - check that the gateway answers\n"
	    "/new or /reset - start a fresh conversation\n"
	    "/stop - cancel your running answer in this conversation (admins: anyone's)\n"
	    "/whoami - your user id and rights\n"
	    "/restart - restart the gateway (admins only)\n"
	    "Anything else goes to the agent.";
}

static const char *
jstr(const cJSON *o, const char *k, const char *dflt)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsString(it) ? it->valuestring : dflt;
}

static double
jnum(const cJSON *o, const char *k)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);

	return cJSON_IsNumber(it) ? it->valuedouble : -1;
}

/* Appends to a growing string. */
static void
cat(char **s, size_t *len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
cat(char **s, size_t *len, const char *fmt, ...)
{
	va_list ap;
	char *add;
	size_t n;

	va_start(ap, fmt);
	if (vasprintf(&add, fmt, ap) < 0)
		add = NULL;
	va_end(ap);
	if (add == NULL)
		return;
	n = strlen(add);
	*s = xrealloc(*s, *len + n + 1);
	memcpy(*s + *len, add, n + 1);
	*len += n;
	free(add);
}

static void
cat_uptime(char **s, size_t *len, double secs)
{
	unsigned long t = secs > 0 ? (unsigned long)secs : 0;

	if (t >= 86400)
		cat(s, len, "%lud %luh %lum", t / 86400, t % 86400 / 3600, t % 3600 / 60);
	else if (t >= 3600)
		cat(s, len, "%luh %lum %lus", t / 3600, t % 3600 / 60, t % 60);
	else if (t >= 60)
		cat(s, len, "%lum %lus", t / 60, t % 60);
	else
		cat(s, len, "%lus", t);
}

char *
cmd_status_text(const cJSON *st)
{
	const cJSON *plats = cJSON_GetObjectItemCaseSensitive(st, "platforms");
	const cJSON *p;
	char *s = xstrdup("");
	size_t len = 0;
	double sup = jnum(st, "supervisor_pid");

	cat(&s, &len, "Gateway status\nworker pid: %.0f\n", jnum(st, "worker_pid"));
	if (sup > 0)
		cat(&s, &len, "supervisor pid: %.0f\n", sup);
	else
		cat(&s, &len, "supervisor pid: none\n");
	cat(&s, &len, "generation: %.0f\nuptime: ", jnum(st, "generation"));
	cat_uptime(&s, &len, jnum(st, "uptime"));
	cat(&s, &len, "\nplatforms:\n");
	cJSON_ArrayForEach(p, plats) {
		const char *detail = jstr(p, "detail", NULL);

		cat(&s, &len, "  %s: %s%s%s%s\n", jstr(p, "name", "?"), jstr(p, "state", "?"),
		    detail != NULL ? " (" : "", detail != NULL ? detail : "",
		    detail != NULL ? ")" : "");
	}
	cat(&s, &len, "agent: %s\nactive sessions: %.0f\nmemory: %.0f KiB",
	    jstr(st, "agent", "?"), jnum(st, "sessions"), jnum(st, "memory_kb"));
	return s;
}
