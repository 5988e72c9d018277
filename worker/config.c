/* config.c - the JSON configuration: load, validate, defaults, environment, secrets. */
#include "config.h"
#include "platform.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Used when no configuration file exists: the console and the echo agent. */
static const char config_embedded[] =
	"{ \"agent\": { \"backend\": \"echo\" },\n"
	"  \"platforms\": { \"console\": { \"enabled\": true, \"listen\": \"127.0.0.1:8642\",\n"
	"    \"allowed_users\": [\"*\"], \"admins\": [\"local\"] } } }\n";

static const char *const config_top_keys[] = {
	"state_dir", "drain_timeout", "tls", "agent", "platforms", NULL
};
static const char *const config_common_keys[] = {
	"enabled", "allowed_users", "admins", "home_channel", NULL
};

#define DRAIN_MAX_USEC (3600ULL * 1000000ULL)
#define DOTENV_MAX (256 * 1024)

/* Formats "<file>: <key>: <what>" into err; returns NULL for the caller's convenience. */
static void *
config_err(char *err, size_t errlen, const char *file, const char *key, const char *fmt, ...)
{
	char what[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (key != NULL)
		snprintf(err, errlen, "%s: key \"%s\": %s", file, key, what);
	else
		snprintf(err, errlen, "%s: %s", file, what);
	return NULL;
}

static int
key_in(const char *const *keys, const char *k)
{
	if (keys == NULL)
		return 0;
	for (; *keys != NULL; keys++)
		if (strcmp(*keys, k) == 0)
			return 1;
	return 0;
}

char *
config_hermes_home(void)
{
	const char *h = getenv("HERMES_HOME");
	const char *home;

	if (h != NULL && *h != '\0')
		return xstrdup(h);
	home = getenv("HOME");
	if (home == NULL || *home == '\0') {
		struct passwd *pw = getpwuid(getuid());

		home = pw != NULL ? pw->pw_dir : "/";
	}
	return xasprintf("%s/.hermes", home);
}

void
config_list_free(char **list)
{
	char **p;

	if (list == NULL)
		return;
	for (p = list; *p != NULL; p++)
		free(*p);
	free(list);
}

int
config_list_has(char *const *list, const char *s)
{
	if (list == NULL || s == NULL)
		return 0;
	for (; *list != NULL; list++)
		if (strcmp(*list, s) == 0)
			return 1;
	return 0;
}

char **
config_split_list(const char *s)
{
	char **list = xcalloc(1, sizeof(char *));
	size_t n = 0;

	while (s != NULL && *s != '\0') {
		const char *end = strchr(s, ',');
		const char *b = s, *e = end != NULL ? end : s + strlen(s);

		while (b < e && isspace((unsigned char)*b))
			b++;
		while (e > b && isspace((unsigned char)e[-1]))
			e--;
		if (e > b) {
			list = xrealloc(list, (n + 2) * sizeof(char *));
			list[n++] = xstrndup(b, (size_t)(e - b));
			list[n] = NULL;
		}
		s = end != NULL ? end + 1 : NULL;
	}
	return list;
}

/* Converts a JSON array of strings into a list; -1 when it is not one. */
static int
json_string_list(const cJSON *arr, char ***out)
{
	const cJSON *it;
	size_t n = 0;
	char **list;

	if (!cJSON_IsArray(arr))
		return -1;
	cJSON_ArrayForEach(it, arr)
		if (!cJSON_IsString(it))
			return -1;
	list = xcalloc((size_t)cJSON_GetArraySize(arr) + 1, sizeof(char *));
	cJSON_ArrayForEach(it, arr)
		list[n++] = xstrdup(it->valuestring);
	*out = list;
	return 0;
}

static int
env_true(const char *name)
{
	const char *v = getenv(name);

	return v != NULL && (strcasecmp(v, "true") == 0 || strcmp(v, "1") == 0 ||
	    strcasecmp(v, "yes") == 0 || strcasecmp(v, "on") == 0);
}

/* "console" -> "CONSOLE_" + suffix. */
static char *
env_name(const char *platform, const char *suffix)
{
	char *s = xasprintf("%s_%s", platform, suffix);
	char *p;

	for (p = s; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	return s;
}

/* Applies <P>_ALLOWED_USERS, <P>_ALLOW_ALL_USERS and <P>_HOME_CHANNEL. */
static void
platform_env_overrides(struct config_platform *p)
{
	char *n;
	const char *v;

	n = env_name(p->name, "ALLOWED_USERS");
	if ((v = getenv(n)) != NULL && *v != '\0') {
		config_list_free(p->allowed_users);
		p->allowed_users = config_split_list(v);
	}
	free(n);
	n = env_name(p->name, "ALLOW_ALL_USERS");
	if (env_true(n)) {
		config_list_free(p->allowed_users);
		p->allowed_users = config_split_list("*");
	}
	free(n);
	n = env_name(p->name, "HOME_CHANNEL");
	if ((v = getenv(n)) != NULL && *v != '\0') {
		free(p->home_channel);
		p->home_channel = xstrdup(v);
	}
	free(n);
	if (strcmp(p->name, "console") == 0 &&
	    (v = getenv("HERMES_CONSOLE_TOKEN")) != NULL && *v != '\0') {
		cJSON *tok = cJSON_CreateString(v);

		if (tok == NULL)
			fatalx("out of memory");
		if (cJSON_GetObjectItemCaseSensitive(p->section, "token") != NULL)
			cJSON_ReplaceItemInObjectCaseSensitive(p->section, "token", tok);
		else
			cJSON_AddItemToObject(p->section, "token", tok);
	}
}

/* Validates the common keys of one platform section and fills p. */
static int
parse_platform(const char *file, cJSON *sec, struct config_platform *p, char *err, size_t errlen)
{
	char key[256];
	const cJSON *it;

	p->name = xstrdup(sec->string);
	p->section = sec;
	p->enabled = 1;
	p->ops = platform_find(sec->string);
	snprintf(key, sizeof(key), "platforms.%s", sec->string);
	if (p->ops == NULL) {
		config_err(err, errlen, file, key, "unknown platform");
		return -1;
	}
	if (!cJSON_IsObject(sec)) {
		config_err(err, errlen, file, key, "expected an object");
		return -1;
	}
	cJSON_ArrayForEach(it, sec) {
		snprintf(key, sizeof(key), "platforms.%s.%s", p->name, it->string);
		if (!key_in(config_common_keys, it->string) && !key_in(p->ops->keys, it->string)) {
			config_err(err, errlen, file, key, "unknown key");
			return -1;
		}
		if (strcmp(it->string, "enabled") == 0) {
			if (!cJSON_IsBool(it)) {
				config_err(err, errlen, file, key, "expected true or false");
				return -1;
			}
			p->enabled = cJSON_IsTrue(it);
		} else if (strcmp(it->string, "allowed_users") == 0 ||
		    strcmp(it->string, "admins") == 0) {
			char ***dst = strcmp(it->string, "admins") == 0 ? &p->admins :
			    &p->allowed_users;

			if (json_string_list(it, dst) < 0) {
				config_err(err, errlen, file, key, "expected an array of strings");
				return -1;
			}
		} else if (strcmp(it->string, "home_channel") == 0) {
			if (cJSON_IsString(it))
				p->home_channel = xstrdup(it->valuestring);
			else if (!cJSON_IsNull(it)) {
				config_err(err, errlen, file, key, "expected a string or null");
				return -1;
			}
		}
	}
	/* The local console is usable out of the box: everyone, admin "local". */
	if (strcmp(p->name, "console") == 0) {
		if (p->allowed_users == NULL)
			p->allowed_users = config_split_list("*");
		if (p->admins == NULL)
			p->admins = config_split_list("local");
	}
	if (p->allowed_users == NULL)
		p->allowed_users = xcalloc(1, sizeof(char *));
	if (p->admins == NULL)
		p->admins = xcalloc(1, sizeof(char *));
	platform_env_overrides(p);
	return 0;
}

static int
parse_platforms(const char *file, cJSON *plats, struct config *c, char *err, size_t errlen)
{
	cJSON *sec;
	size_t n = 0;

	if (!cJSON_IsObject(plats)) {
		config_err(err, errlen, file, "platforms", "expected an object");
		return -1;
	}
	c->platforms = xcalloc((size_t)cJSON_GetArraySize(plats) + 1, sizeof(*c->platforms));
	cJSON_ArrayForEach(sec, plats) {
		size_t i;

		for (i = 0; i < n; i++)
			if (strcmp(c->platforms[i].name, sec->string) == 0) {
				char key[256];

				snprintf(key, sizeof(key), "platforms.%s", sec->string);
				config_err(err, errlen, file, key, "given twice");
				return -1;
			}
		c->nplatforms = n + 1;
		if (parse_platform(file, sec, &c->platforms[n], err, errlen) < 0)
			return -1;
		n++;
	}
	return 0;
}

static int
parse_tls(const char *file, const cJSON *tls, struct config *c, char *err, size_t errlen)
{
	const cJSON *it;

	if (!cJSON_IsObject(tls)) {
		config_err(err, errlen, file, "tls", "expected an object");
		return -1;
	}
	cJSON_ArrayForEach(it, tls) {
		if (strcmp(it->string, "ca_file") != 0) {
			char key[256];

			snprintf(key, sizeof(key), "tls.%s", it->string);
			config_err(err, errlen, file, key, "unknown key");
			return -1;
		}
		if (cJSON_IsString(it))
			c->ca_file = xstrdup(it->valuestring);
		else if (!cJSON_IsNull(it)) {
			config_err(err, errlen, file, "tls.ca_file", "expected a string or null");
			return -1;
		}
	}
	return 0;
}

/* Validates the top level and fills c; the platforms and tls sections in helpers. */
static int
parse_top(const char *file, struct config *c, char *err, size_t errlen)
{
	cJSON *it;

	if (!cJSON_IsObject(c->root)) {
		config_err(err, errlen, file, NULL, "the configuration must be a JSON object");
		return -1;
	}
	cJSON_ArrayForEach(it, c->root) {
		if (!key_in(config_top_keys, it->string)) {
			config_err(err, errlen, file, it->string, "unknown key");
			return -1;
		}
		if (strcmp(it->string, "state_dir") == 0) {
			if (!cJSON_IsString(it) || it->valuestring[0] == '\0') {
				config_err(err, errlen, file, "state_dir", "expected a non-empty string");
				return -1;
			}
			free(c->state_dir);
			c->state_dir = xstrdup(it->valuestring);
		} else if (strcmp(it->string, "drain_timeout") == 0) {
			if (!cJSON_IsNumber(it) || it->valuedouble < 0 ||
			    it->valuedouble * 1e6 > (double)DRAIN_MAX_USEC) {
				config_err(err, errlen, file, "drain_timeout",
				    "expected a number of seconds from 0 to 3600");
				return -1;
			}
			c->drain_usec = (uint64_t)(it->valuedouble * 1e6);
		} else if (strcmp(it->string, "tls") == 0) {
			if (parse_tls(file, it, c, err, errlen) < 0)
				return -1;
		} else if (strcmp(it->string, "agent") == 0) {
			if (!cJSON_IsObject(it)) {
				config_err(err, errlen, file, "agent", "expected an object");
				return -1;
			}
			c->agent = it;
		} else if (strcmp(it->string, "platforms") == 0) {
			if (parse_platforms(file, it, c, err, errlen) < 0)
				return -1;
		}
	}
	return 0;
}

struct config *
config_parse(const char *text, const char *name, char *err, size_t errlen)
{
	struct config *c = xcalloc(1, sizeof(*c));
	const char *v;

	c->hermes_home = config_hermes_home();
	c->state_dir = xasprintf("%s/state", c->hermes_home);
	c->drain_usec = 10 * 1000000ULL;
	c->root = cJSON_Parse(text);
	if (c->root == NULL) {
		const char *at = cJSON_GetErrorPtr();
		size_t line = 1;
		const char *p;

		for (p = text; at != NULL && p < at && *p != '\0'; p++)
			if (*p == '\n')
				line++;
		config_err(err, errlen, name, NULL, "not valid JSON (near line %zu)", line);
		config_free(c);
		return NULL;
	}
	if (parse_top(name, c, err, errlen) < 0) {
		config_free(c);
		return NULL;
	}
	if (c->platforms == NULL)
		c->platforms = xcalloc(1, sizeof(*c->platforms));
	v = getenv("GATEWAY_ALLOWED_USERS");
	c->gateway_allowed = config_split_list(v);
	c->gateway_allow_all = env_true("GATEWAY_ALLOW_ALL_USERS");
	return c;
}

/* 1 when a key name suggests a secret value (token, password, api_key...). */
static int
secret_key(const char *k)
{
	if (strcmp(k, "api_key_env") == 0)
		return 0;
	return strcasestr(k, "token") != NULL || strcasestr(k, "secret") != NULL ||
	    strcasestr(k, "password") != NULL || strcasecmp(k, "api_key") == 0;
}

/* 1 when the document holds a non-empty string under a secret-looking key. */
static int
json_has_secret(const cJSON *j)
{
	const cJSON *it;

	cJSON_ArrayForEach(it, j) {
		if (it->string != NULL && secret_key(it->string) && cJSON_IsString(it) &&
		    it->valuestring[0] != '\0')
			return 1;
		if ((cJSON_IsObject(it) || cJSON_IsArray(it)) && json_has_secret(it))
			return 1;
	}
	return 0;
}

/* Warns when a file holding secrets can be read by group or others. */
static void
warn_if_exposed(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0 && (st.st_mode & 077) != 0)
		log_warnx("%s holds secrets and is readable by group or others (mode %04o); "
		    "chmod 600 it", path, (unsigned)(st.st_mode & 07777));
}

struct config *
config_load(const char *path, char *err, size_t errlen)
{
	struct config *c;
	char *home = NULL, *dflt = NULL, *text;

	if (path == NULL) {
		home = config_hermes_home();
		dflt = xasprintf("%s/gateway.json", home);
		path = dflt;
	}
	text = read_file(path, CONFIG_MAX_SIZE, NULL);
	if (text == NULL && errno == ENOENT && dflt != NULL) {
		log_info("no configuration at %s: using the embedded default "
		    "(console on 127.0.0.1:8642, echo agent)", path);
		c = config_parse(config_embedded, "embedded default", err, errlen);
		free(home);
		free(dflt);
		return c;
	}
	if (text == NULL) {
		config_err(err, errlen, path, NULL, "cannot read: %s",
		    errno == EFBIG ? "larger than 1 MiB" : strerror(errno));
		free(home);
		free(dflt);
		return NULL;
	}
	c = config_parse(text, path, err, errlen);
	free(text);
	if (c != NULL) {
		c->path = xstrdup(path);
		if (json_has_secret(c->root))
			warn_if_exposed(path);
	}
	free(home);
	free(dflt);
	return c;
}

void
config_free(struct config *c)
{
	size_t i;

	if (c == NULL)
		return;
	for (i = 0; i < c->nplatforms; i++) {
		free(c->platforms[i].name);
		config_list_free(c->platforms[i].allowed_users);
		config_list_free(c->platforms[i].admins);
		free(c->platforms[i].home_channel);
	}
	free(c->platforms);
	config_list_free(c->gateway_allowed);
	cJSON_Delete(c->root);
	free(c->path);
	free(c->hermes_home);
	free(c->state_dir);
	free(c->ca_file);
	free(c);
}

const struct config_platform *
config_platform(const struct config *c, const char *name)
{
	size_t i;

	for (i = 0; i < c->nplatforms; i++)
		if (strcmp(c->platforms[i].name, name) == 0)
			return &c->platforms[i];
	return NULL;
}

/* Parses the value part of a .env line starting at p; returns it newly allocated. */
static char *
dotenv_value(const char *p, const char *eol)
{
	char *out = xmalloc((size_t)(eol - p) + 1);
	size_t n = 0;

	while (p < eol && (*p == ' ' || *p == '\t'))
		p++;
	if (p < eol && (*p == '"' || *p == '\'')) {
		char q = *p++;

		while (p < eol && *p != q) {
			if (q == '"' && *p == '\\' && p + 1 < eol) {
				p++;
				out[n++] = *p == 'n' ? '\n' : *p;
			} else
				out[n++] = *p;
			p++;
		}
	} else {
		const char *e = p;

		while (e < eol && !(*e == '#' && (e == p || e[-1] == ' ' || e[-1] == '\t')))
			e++;
		while (e > p && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
			e--;
		memcpy(out, p, (size_t)(e - p));
		n = (size_t)(e - p);
	}
	out[n] = '\0';
	return out;
}

char *
config_dotenv_get(const char *text, const char *key)
{
	size_t klen = strlen(key);
	char *found = NULL;
	const char *line = text;

	while (line != NULL && *line != '\0') {
		const char *eol = strchr(line, '\n');
		const char *p = line;

		if (eol == NULL)
			eol = line + strlen(line);
		while (p < eol && (*p == ' ' || *p == '\t'))
			p++;
		if ((size_t)(eol - p) > 7 && strncmp(p, "export ", 7) == 0)
			p += 7;
		while (p < eol && (*p == ' ' || *p == '\t'))
			p++;
		if ((size_t)(eol - p) > klen && strncmp(p, key, klen) == 0) {
			const char *q = p + klen;

			while (q < eol && (*q == ' ' || *q == '\t'))
				q++;
			if (q < eol && *q == '=') {
				/* The last assignment wins, as in a shell. */
				free(found);
				found = dotenv_value(q + 1, eol);
			}
		}
		line = *eol == '\n' ? eol + 1 : NULL;
	}
	return found;
}

static int
valid_secret_name(const char *name)
{
	const char *p;

	if (*name == '\0')
		return 0;
	for (p = name; *p != '\0'; p++)
		if (!isalnum((unsigned char)*p) && *p != '_' && *p != '-' && *p != '.')
			return 0;
	return name[0] != '.';
}

static void
strip_newlines(char *s)
{
	size_t n = strlen(s);

	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
}

char *
config_secret(const char *name)
{
	const char *v = getenv(name);
	const char *cred;
	char *home, *path, *text, *val = NULL;

	if (v != NULL && *v != '\0')
		return xstrdup(v);
	home = config_hermes_home();
	path = xasprintf("%s/.env", home);
	text = read_file(path, DOTENV_MAX, NULL);
	if (text != NULL) {
		val = config_dotenv_get(text, name);
		if (val != NULL)
			warn_if_exposed(path);
		free(text);
	}
	free(path);
	free(home);
	if (val != NULL && *val != '\0')
		return val;
	free(val);
	val = NULL;
	cred = getenv("CREDENTIALS_DIRECTORY");
	if (cred != NULL && *cred != '\0' && valid_secret_name(name)) {
		path = xasprintf("%s/%s", cred, name);
		val = read_file(path, DOTENV_MAX, NULL);
		free(path);
		if (val != NULL) {
			strip_newlines(val);
			if (*val == '\0') {
				free(val);
				val = NULL;
			}
		}
	}
	return val;
}
