/*
 * fuzz_config.c - the configuration (worker/config.c): gateway.json,
 * .env files, systemd credentials, comma-separated lists.
 *
 * Input: one byte choosing the mode, one byte of flags, then the text.
 * 0, 1  the text as gateway.json, parsed from memory (0) or loaded from a
 *       file (1); the flags set environment overrides.  Invariants: an
 *       error is always explained, success always complete (every platform
 *       known, lists allocated, bounds kept); the overrides do what
 *       config.h says; no error message, from config_parse() nor from a
 *       platform's create(), ever quotes a secret from the document.
 * 2     the text as a .env file.  Invariant: a KEY=VALUE line appended to
 *       it (quoted in each way that can hold the value) reads back as VALUE.
 * 3     the text as a .env file and a credential file (split at "\n%%\n").
 *       Invariant: config_secret() takes the environment, then .env, then
 *       the credential (trailing newlines stripped, names checked).
 * 4     the text as a comma-separated list.  Invariant: the items are the
 *       text's non-empty, trimmed fields, in order.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/dns.h>
#include <event2/event.h>

#include <cjson/cJSON.h>

#include "config.h"
#include "fz_util.h"
#include "platform.h"
#include "util.h"

static char *fz_home;                   /* HERMES_HOME */
static char *fz_creds;                  /* CREDENTIALS_DIRECTORY */
static struct event_base *fz_base;
static struct evdns_base *fz_dns;

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_setup();
	fz_home = fz_subdir("home");
	fz_creds = fz_subdir("creds");
	setenv("HERMES_HOME", fz_home, 1);
	fz_base = event_base_new();
	fz_dns = evdns_base_new(fz_base, 0);
	if (fz_base == NULL || fz_dns == NULL)
		abort();
	return 0;
}

/* ---- gateway.json -------------------------------------------------- */

/* The same test as config.c's: a key that names a secret. */
static int
secret_key(const char *k)
{
	return strcmp(k, "api_key_env") != 0 && (strcasestr(k, "token") != NULL ||
	    strcasestr(k, "secret") != NULL || strcasestr(k, "password") != NULL ||
	    strcasecmp(k, "api_key") == 0);
}

/* Gathers secret values and, separately, every other string in the document. */
static void
collect(const cJSON *j, cJSON *secrets, cJSON *others)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, j) {
		if (it->string != NULL)
			cJSON_AddItemToArray(others, cJSON_CreateString(it->string));
		if (cJSON_IsString(it))
			cJSON_AddItemToArray(it->string != NULL && secret_key(it->string) ?
			    secrets : others, cJSON_CreateString(it->valuestring));
		collect(it, secrets, others);
	}
}

/* Fails when err quotes a secret of the document (one not also said elsewhere in it). */
static void
check_no_secret(const char *err, const cJSON *secrets, const cJSON *others, const char *who)
{
	const cJSON *s, *o;

	cJSON_ArrayForEach(s, secrets) {
		int public = 0;

		if (strlen(s->valuestring) < 6 || strstr(err, s->valuestring) == NULL)
			continue;
		cJSON_ArrayForEach(o, others)
			if (strstr(o->valuestring, s->valuestring) != NULL)
				public = 1;
		if (strstr("fuzz.json gateway.json", s->valuestring) != NULL ||
		    strstr(fz_home, s->valuestring) != NULL)
			public = 1;
		FZ_CHECK(public, "%s error quotes the secret \"%s\": %s", who, s->valuestring, err);
	}
}

static const struct {
	const char *name, *value;
} fz_env[] = {
	{ "GATEWAY_ALLOWED_USERS", " a ,b,, c" },
	{ "GATEWAY_ALLOW_ALL_USERS", "yes" },
	{ "TELEGRAM_ALLOWED_USERS", "1,2" },
	{ "CONSOLE_ALLOW_ALL_USERS", "1" },
	{ "TELEGRAM_HOME_CHANNEL", "-100" },
	{ "HERMES_CONSOLE_TOKEN", "envtoken123" },
	{ "TELEGRAM_BOT_TOKEN", "123:envtoken" },
};

static void
env_apply(unsigned flags)
{
	size_t i;

	for (i = 0; i < ARRAY_LEN(fz_env); i++) {
		if (flags & (1u << i))
			setenv(fz_env[i].name, fz_env[i].value, 1);
		else
			unsetenv(fz_env[i].name);
	}
}

static int
list_is(char *const *l, const char *const *want, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (l == NULL || l[i] == NULL || strcmp(l[i], want[i]) != 0)
			return 0;
	return l[n] == NULL;
}

/* What config.h promises of a loaded configuration and the overrides. */
static void
check_config(const struct config *c, unsigned flags)
{
	static const char *const abc[] = { "a", "b", "c" }, *const all[] = { "*" },
	    *const one_two[] = { "1", "2" };
	size_t i;

	FZ_CHECK(c->root != NULL && c->state_dir != NULL && c->state_dir[0] != '\0' &&
	    c->hermes_home != NULL, "incomplete configuration");
	FZ_CHECK(c->drain_usec <= 3600ULL * 1000000, "drain %llu us",
	    (unsigned long long)c->drain_usec);
	FZ_CHECK(c->platforms != NULL && c->gateway_allowed != NULL, "lists missing");
	FZ_CHECK(!(flags & 1) || list_is(c->gateway_allowed, abc, 3), "GATEWAY_ALLOWED_USERS");
	FZ_CHECK((flags & 1) || c->gateway_allowed[0] == NULL, "a gateway list from nowhere");
	FZ_CHECK(c->gateway_allow_all == !!(flags & 2), "GATEWAY_ALLOW_ALL_USERS");
	for (i = 0; i < c->nplatforms; i++) {
		const struct config_platform *p = &c->platforms[i];
		const cJSON *tok;

		FZ_CHECK(p->ops != NULL && p->name != NULL && p->section != NULL &&
		    strcmp(p->name, p->ops->name) == 0, "platform %zu incomplete", i);
		FZ_CHECK(p->allowed_users != NULL && p->admins != NULL, "platform %s lists", p->name);
		FZ_CHECK(config_platform(c, p->name) == p, "config_platform(%s)", p->name);
		if (strcmp(p->name, "console") == 0) {
			FZ_CHECK(!(flags & 8) || list_is(p->allowed_users, all, 1),
			    "CONSOLE_ALLOW_ALL_USERS");
			tok = cJSON_GetObjectItemCaseSensitive(p->section, "token");
			FZ_CHECK(!(flags & 32) || (cJSON_IsString(tok) &&
			    strcmp(tok->valuestring, "envtoken123") == 0), "HERMES_CONSOLE_TOKEN");
		} else if (strcmp(p->name, "telegram") == 0) {
			FZ_CHECK(!(flags & 4) || list_is(p->allowed_users, one_two, 2),
			    "TELEGRAM_ALLOWED_USERS");
			FZ_CHECK(!(flags & 16) || (p->home_channel != NULL &&
			    strcmp(p->home_channel, "-100") == 0), "TELEGRAM_HOME_CHANNEL");
		}
	}
	FZ_CHECK(config_platform(c, "no-such-platform") == NULL, "an unknown platform found");
}

/* Runs each platform's own validation, as the worker does next. */
static void
create_platforms(const struct config *c, const cJSON *secrets, const cJSON *others)
{
	char *state = fz_subdir("state");
	size_t i;

	for (i = 0; i < c->nplatforms; i++) {
		const struct config_platform *p = &c->platforms[i];
		struct plat_env env = {
			.base = fz_base, .dns = fz_dns, .name = p->name, .state_dir = state,
			.conf = p->section, .listen_fd = -1,
		};
		char err[512] = "";
		void *self = p->ops->create(&env, err, sizeof(err));

		if (self == NULL) {
			FZ_CHECK(err[0] != '\0', "%s: create failed without a message", p->name);
			check_no_secret(err, secrets, others, p->name);
		}
		p->ops->free(self);
	}
	free(state);
}

static void
check_json(const char *text, size_t len, unsigned flags, int from_file)
{
	cJSON *doc = cJSON_Parse(text), *secrets = cJSON_CreateArray(), *others = cJSON_CreateArray();
	char err[1024] = "", *path = NULL;
	struct config *c;

	collect(doc, secrets, others);
	env_apply(flags);
	if (from_file) {
		fz_write(fz_home, "gateway.json", text, len, flags & 128 ? 0644 : 0600);
		path = xasprintf("%s/gateway.json", fz_home);
		c = config_load(path, err, sizeof(err));
	} else {
		c = config_parse(text, "fuzz.json", err, sizeof(err));
	}
	if (c == NULL) {
		FZ_CHECK(err[0] != '\0', "failed without a message");
		check_no_secret(err, secrets, others, "config");
	} else {
		FZ_CHECK(doc != NULL, "a document cJSON refuses was accepted");
		FZ_CHECK(!from_file || (c->path != NULL && strcmp(c->path, path) == 0), "path");
		check_config(c, flags);
		create_platforms(c, secrets, others);
	}
	config_free(c);
	cJSON_Delete(doc);
	cJSON_Delete(secrets);
	cJSON_Delete(others);
	free(path);
}

/* ---- .env ------------------------------------------------------------ */

static const char *const fz_keys[] = { "TELEGRAM_BOT_TOKEN", "A", "KEY_1", "export", "a.b-c" };

/* "KEY=VALUE" lines that must read back as v, in every quoting v allows. */
static void
check_dotenv(const char *text, const char *v, const char *key)
{
	size_t n = strlen(v), i;
	int bare = n > 0 && strchr(" \t#\"'", v[0]) == NULL && strchr(" \t\r", v[n - 1]) == NULL &&
	    strchr(v, '\n') == NULL && strstr(v, " #") == NULL && strstr(v, "\t#") == NULL;
	char *esc = xmalloc(2 * n + 1), *line, *got;
	size_t o = 0;

	for (i = 0; i < n; i++) {
		if (v[i] == '\\' || v[i] == '"')
			esc[o++] = '\\';
		if (v[i] == '\n') {
			esc[o++] = '\\';
			esc[o++] = 'n';
			continue;
		}
		esc[o++] = v[i];
	}
	esc[o] = '\0';
	for (i = 0; i < 4; i++) {
		if (i == 1 && (strchr(v, '\'') != NULL || strchr(v, '\n') != NULL))
			continue;
		if (i == 2 && !bare)
			continue;
		line = i == 0 ? xasprintf("%s\n%s=\"%s\"\n", text, key, esc) :
		    i == 1 ? xasprintf("%s\n export %s = '%s'", text, key, v) :
		    i == 2 ? xasprintf("%s\n\t%s=%s  # comment\r\n", text, key, v) :
		    xasprintf("%s\n%s=\"%s\" # comment\n#%s=x\n", text, key, esc, key);
		got = config_dotenv_get(line, key);
		FZ_CHECK(got != NULL && strcmp(got, v) == 0, "form %zu of \"%s\" read back as \"%s\"",
		    i, v, got != NULL ? got : "(none)");
		free(got);
		free(line);
	}
	free(esc);
}

static void
check_env_file(struct fz_in *in, unsigned flags)
{
	const char *key = fz_keys[flags % ARRAY_LEN(fz_keys)];
	char *v = fz_str(in, 40), *text = fz_rest_str(in, NULL), *got;

	got = config_dotenv_get(text, key);
	FZ_CHECK(got == NULL || strlen(got) <= strlen(text), "a value longer than the file");
	free(got);
	check_dotenv(text, v, key);
	free(v);
	free(text);
}

/* ---- config_secret ---------------------------------------------------- */

static void
check_secret(struct fz_in *in, unsigned flags)
{
	static const char *const names[] = { "TELEGRAM_BOT_TOKEN", "OPENAI_API_KEY", "a.b-c",
	    ".hidden", "" };
	const char *name = names[fz_u8(in) % ARRAY_LEN(names)];
	const uint8_t *part[2];
	size_t len[2];
	char *dotenv, *want = NULL, *got, *cred;

	fz_split(in, part, len, 2);
	dotenv = xstrndup((const char *)part[0], len[0]);
	fz_clear_dir(fz_home);
	fz_clear_dir(fz_creds);
	if (flags & 8)
		fz_write(fz_home, ".env", part[0], len[0], 0);
	if ((flags & 16) && name[0] != '\0')
		fz_write(fz_creds, name, part[1], len[1], 0);
	if (flags & 32)
		setenv("CREDENTIALS_DIRECTORY", fz_creds, 1);
	else
		unsetenv("CREDENTIALS_DIRECTORY");
	if (name[0] != '\0' && (flags & 64))
		setenv(name, "from-the-environment", 1);
	else if (name[0] != '\0')
		unsetenv(name);

	if (name[0] != '\0' && (flags & 64))
		want = xstrdup("from-the-environment");
	if (want == NULL && (flags & 8) && (want = config_dotenv_get(dotenv, name)) != NULL &&
	    want[0] == '\0') {
		free(want);
		want = NULL;
	}
	if (want == NULL && (flags & 48) == 48 && name[0] != '\0' && name[0] != '.') {
		size_t n;

		cred = xstrndup((const char *)part[1], len[1]);
		n = strlen(cred);
		while (n > 0 && (cred[n - 1] == '\n' || cred[n - 1] == '\r'))
			cred[--n] = '\0';
		if (n > 0)
			want = cred;
		else
			free(cred);
	}
	got = config_secret(name);
	FZ_CHECK((got == NULL) == (want == NULL) && (got == NULL || strcmp(got, want) == 0),
	    "secret %s: got \"%s\", expected \"%s\"", name, got ? got : "(none)",
	    want ? want : "(none)");
	free(got);
	free(want);
	free(dotenv);
	if (name[0] != '\0')
		unsetenv(name);
}

/* ---- lists -------------------------------------------------------------- */

static void
check_list(const char *text)
{
	char **l = config_split_list(text);
	const char *s = text;
	size_t i = 0;

	for (;;) {
		const char *end = strchr(s, ',');
		const char *b = s, *e = end != NULL ? end : s + strlen(s);

		while (b < e && isspace((unsigned char)*b))
			b++;
		while (e > b && isspace((unsigned char)e[-1]))
			e--;
		if (e > b) {
			FZ_CHECK(l[i] != NULL && strlen(l[i]) == (size_t)(e - b) &&
			    memcmp(l[i], b, (size_t)(e - b)) == 0, "item %zu", i);
			FZ_CHECK(config_list_has(l, l[i]), "list does not have its item %zu", i);
			i++;
		}
		if (end == NULL)
			break;
		s = end + 1;
	}
	FZ_CHECK(l[i] == NULL, "more items than fields (%zu)", i);
	config_list_free(l);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_in in = { data, size };
	uint8_t mode = fz_u8(&in), flags = fz_u8(&in);
	char *text;
	size_t len;

	switch (mode % 5) {
	case 0:
	case 1:
		text = fz_rest_str(&in, &len);
		check_json(text, len, flags, mode % 5 == 1);
		free(text);
		break;
	case 2:
		check_env_file(&in, flags);
		break;
	case 3:
		check_secret(&in, flags);
		break;
	default:
		text = fz_rest_str(&in, NULL);
		check_list(text);
		free(text);
		break;
	}
	return 0;
}
