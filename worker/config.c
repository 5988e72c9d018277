/* config.c - the JSON configuration: load, validate, defaults, environment, secrets. */
#include "config.h"
#include "platform.h"
#include "log.h"
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
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
	"state_dir", "drain_timeout", "sessions", "tls", "agent", "platforms", NULL
};
static const char *const config_session_keys[] = {
	"idle_timeout", "max_age", "max_count", "max_bytes", NULL
};
static const char *const config_common_keys[] = {
	"enabled", "allowed_users", "admins", "home_channel", NULL
};

#define DRAIN_MAX_USEC (3600ULL * 1000000ULL)
/* Every integer a double holds exactly; config numbers stay below it. */
#define CONFIG_EXACT_MAX (1ULL << 53)
#define SESSION_IDLE_MIN_USEC 100000ULL                         /* 0.1 s */
#define SESSION_IDLE_MAX_USEC (366ULL * 86400ULL * 1000000ULL)  /* a year */
#define SESSION_AGE_MAX_SEC (100ULL * 366ULL * 86400ULL)        /* a century */
#define SESSION_COUNT_MAX (1ULL << 32)
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

/* prefix ("QQ", or the platform's name when NULL) in capitals, "_", suffix. */
static char *
env_name(const char *prefix, const char *platform, const char *suffix)
{
	char *s = xasprintf("%s_%s", prefix != NULL ? prefix : platform, suffix);
	char *p;

	for (p = s; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	return s;
}

/* A copy of a NULL-terminated list (an empty one for NULL). */
static char **
list_copy(const char *const *l)
{
	size_t n = 0, i;
	char **out;

	while (l != NULL && l[n] != NULL)
		n++;
	out = xcalloc(n + 1, sizeof(*out));
	for (i = 0; i < n; i++)
		out[i] = xstrdup(l[i]);
	return out;
}

/* Applies <P>_ALLOWED_USERS, <P>_ALLOW_ALL_USERS and <P>_HOME_CHANNEL. */
static void
platform_env_overrides(struct config_platform *p)
{
	char *n;
	const char *v;

	const char *uenv = p->ops != NULL ? p->ops->users_env : NULL;
	const char *henv = p->ops != NULL ? p->ops->home_env : NULL;

	n = env_name(uenv, p->name, "ALLOWED_USERS");
	if ((v = getenv(n)) != NULL && *v != '\0') {
		config_list_free(p->allowed_users);
		p->allowed_users = config_split_list(v);
	}
	free(n);
	n = env_name(uenv, p->name, "ALLOW_ALL_USERS");
	if (env_true(n)) {
		config_list_free(p->allowed_users);
		p->allowed_users = config_split_list("*");
	}
	free(n);
	n = env_name(henv, p->name, "HOME_CHANNEL");
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
	/* A platform's own defaults (the console: everyone, admin "local"). */
	if (p->allowed_users == NULL)
		p->allowed_users = list_copy(p->ops != NULL ? p->ops->default_users : NULL);
	if (p->admins == NULL)
		p->admins = list_copy(p->ops != NULL ? p->ops->default_admins : NULL);
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
	/* Keys given twice were refused before (config_find_duplicate). */
	cJSON_ArrayForEach(sec, plats) {
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

/* 1 when v is a number from min to max (written so that NaN fails too). */
static int
config_number_in(const cJSON *v, double min, double max)
{
	/* cJSON turns 1e999 into infinity, which fails here like any big value. */
	return cJSON_IsNumber(v) && v->valuedouble >= min && v->valuedouble <= max;
}

int
config_get_uint(const cJSON *obj, const char *key, const char *what, uint64_t min,
    uint64_t max, uint64_t *out, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);

	if (max > CONFIG_EXACT_MAX || min > max)
		fatalx("%s: bad range for %s", __func__, what);
	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!config_number_in(v, (double)min, (double)max) ||
	    v->valuedouble != floor(v->valuedouble)) {
		snprintf(err, errlen, "key \"%s\": expected a whole number from %llu to %llu", what,
		    (unsigned long long)min, (unsigned long long)max);
		return -1;
	}
	*out = (uint64_t)v->valuedouble;
	return 1;
}

int
config_get_seconds(const cJSON *obj, const char *key, const char *what, uint64_t min_usec,
    uint64_t max_usec, uint64_t *usec, char *err, size_t errlen)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
	double us;

	if (max_usec > CONFIG_EXACT_MAX || min_usec > max_usec)
		fatalx("%s: bad range for %s", __func__, what);
	if (v == NULL || cJSON_IsNull(v))
		return 0;
	if (!config_number_in(v, (double)min_usec / 1e6, (double)max_usec / 1e6)) {
		snprintf(err, errlen, "key \"%s\": expected a number of seconds from %.15g to %.15g",
		    what, (double)min_usec / 1e6, (double)max_usec / 1e6);
		return -1;
	}
	us = floor(v->valuedouble * 1e6 + 0.5);
	*usec = us < (double)min_usec ? min_usec : us > (double)max_usec ? max_usec : (uint64_t)us;
	return 1;
}

/* Validates the sessions section into c->sessions. */
static int
parse_sessions(const char *file, const cJSON *sec, struct config *c, char *err, size_t errlen)
{
	struct config_sessions *s = &c->sessions;
	char what[512];
	const cJSON *it;

	if (!cJSON_IsObject(sec)) {
		config_err(err, errlen, file, "sessions", "expected an object");
		return -1;
	}
	cJSON_ArrayForEach(it, sec) {
		char key[256];

		snprintf(key, sizeof(key), "sessions.%s", it->string);
		if (!key_in(config_session_keys, it->string)) {
			config_err(err, errlen, file, key, "unknown key");
			return -1;
		}
	}
	if (config_get_seconds(sec, "idle_timeout", "sessions.idle_timeout",
	    SESSION_IDLE_MIN_USEC, SESSION_IDLE_MAX_USEC, &s->idle_usec, what, sizeof(what)) < 0 ||
	    config_get_uint(sec, "max_age", "sessions.max_age", 0, SESSION_AGE_MAX_SEC,
	    &s->max_age_sec, what, sizeof(what)) < 0 ||
	    config_get_uint(sec, "max_count", "sessions.max_count", 0, SESSION_COUNT_MAX,
	    &s->max_count, what, sizeof(what)) < 0 ||
	    config_get_uint(sec, "max_bytes", "sessions.max_bytes", 0, CONFIG_EXACT_MAX,
	    &s->max_bytes, what, sizeof(what)) < 0) {
		config_err(err, errlen, file, NULL, "%s", what);
		return -1;
	}
	return 0;
}

/* Validates the top level and fills c; the platforms and tls sections in helpers. */
static int
parse_top(const char *file, struct config *c, char *err, size_t errlen)
{
	char what[512];
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
			if (config_get_seconds(c->root, "drain_timeout", "drain_timeout", 0,
			    DRAIN_MAX_USEC, &c->drain_usec, what, sizeof(what)) < 0) {
				config_err(err, errlen, file, NULL, "%s", what);
				return -1;
			}
		} else if (strcmp(it->string, "sessions") == 0) {
			if (parse_sessions(file, it, c, err, errlen) < 0)
				return -1;
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

static int
config_cmp_names(const void *a, const void *b)
{
	return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* Appends ".name" (or "name" at the top, or "[i]") to the key path of len bytes. */
static size_t
config_path_push(char *path, size_t pathlen, size_t len, const char *name, int index)
{
	int n;

	if (name != NULL)
		n = snprintf(path + len, pathlen - len, "%s%s", len > 0 ? "." : "", name);
	else
		n = snprintf(path + len, pathlen - len, "[%d]", index);
	return n < 0 || (size_t)n >= pathlen - len ? pathlen - 1 : len + (size_t)n;
}

/*
 * Finds a key given twice in one object anywhere below node (cJSON keeps
 * both, and a getter would silently see the first).  Returns 1 with its
 * key path in path, else 0.  Sorting each object's names keeps this
 * O(n log n) however wide an object is.
 */
static int
config_find_duplicate(const cJSON *node, char *path, size_t pathlen, size_t len)
{
	size_t n = 0, i;
	const cJSON *it, **v;
	int found = 0, index = 0;

	if (!cJSON_IsObject(node) && !cJSON_IsArray(node))
		return 0;
	if (cJSON_IsObject(node) && node->child != NULL) {
		v = xcalloc((size_t)cJSON_GetArraySize(node), sizeof(*v));
		cJSON_ArrayForEach(it, node)
			v[n++] = it;
		qsort(v, n, sizeof(*v), config_cmp_names);
		for (i = 1; i < n && !found; i++)
			if (strcmp(v[i - 1]->string, v[i]->string) == 0) {
				config_path_push(path, pathlen, len, v[i]->string, 0);
				found = 1;
			}
		free(v);
		if (found)
			return 1;
	}
	cJSON_ArrayForEach(it, node) {
		size_t sub = config_path_push(path, pathlen, len,
		    cJSON_IsObject(node) ? it->string : NULL, index++);

		if (config_find_duplicate(it, path, pathlen, sub))
			return 1;
		path[len] = '\0';
	}
	return 0;
}

struct config *
config_parse(const char *text, const char *name, char *err, size_t errlen)
{
	struct config *c = xcalloc(1, sizeof(*c));
	char key[512] = "";
	const char *v;

	c->hermes_home = config_hermes_home();
	c->state_dir = xasprintf("%s/state", c->hermes_home);
	c->drain_usec = 10 * 1000000ULL;
	c->sessions.idle_usec = CONFIG_SESSION_IDLE_USEC;
	c->sessions.max_age_sec = CONFIG_SESSION_MAX_AGE_SEC;
	c->sessions.max_count = CONFIG_SESSION_MAX_COUNT;
	c->sessions.max_bytes = CONFIG_SESSION_MAX_BYTES;
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
	if (config_find_duplicate(c->root, key, sizeof(key), 0)) {
		config_err(err, errlen, name, key, "given twice (each key may appear once)");
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
