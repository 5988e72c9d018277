/*
 * config.h - the gateway's JSON configuration, secrets and environment.
 *
 * config_load() reads one JSON file (default $HERMES_HOME/gateway.json),
 * validates every key, applies the environment overrides the Python
 * gateway used (<P>_ALLOWED_USERS, <P>_ALLOW_ALL_USERS, <P>_HOME_CHANNEL,
 * GATEWAY_ALLOWED_USERS, GATEWAY_ALLOW_ALL_USERS, HERMES_CONSOLE_TOKEN)
 * and returns a struct config the caller frees with config_free().
 * Platform-specific keys are checked against the platform's ops->keys;
 * their values are validated later by ops->create(), and the agent
 * section by agent_new().
 */
#ifndef HERMES_CONFIG_H
#define HERMES_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

struct platform_ops;

/* One platform section, after defaults and environment overrides. */
struct config_platform {
	char *name;
	const struct platform_ops *ops;
	int enabled;
	char **allowed_users;           /* NULL-terminated; "*" = everyone */
	char **admins;                  /* NULL-terminated */
	char *home_channel;             /* NULL when none */
	cJSON *section;                 /* its section of the document (owned by root) */
};

/* The "sessions" section: how long histories stay in memory and on disk. */
struct config_sessions {
	uint64_t idle_usec;             /* idle_timeout: unused this long, one leaves memory */
	uint64_t max_age_sec;           /* files unchanged this long are removed; 0: no limit */
	uint64_t max_count;             /* files kept at most; 0: no limit */
	uint64_t max_bytes;             /* their total size at most; 0: no limit */
};

struct config {
	char *path;                     /* the file read, or NULL for the embedded default */
	char *hermes_home;
	char *state_dir;
	uint64_t drain_usec;            /* drain_timeout */
	struct config_sessions sessions;
	char *ca_file;                  /* tls.ca_file, or NULL */
	cJSON *root;                    /* the whole document */
	const cJSON *agent;             /* the "agent" object, or NULL (echo) */
	struct config_platform *platforms;
	size_t nplatforms;
	char **gateway_allowed;         /* GATEWAY_ALLOWED_USERS, NULL-terminated */
	int gateway_allow_all;          /* GATEWAY_ALLOW_ALL_USERS */
};

/* Defaults of the sessions section. */
#define CONFIG_SESSION_IDLE_USEC (600ULL * 1000000ULL)
#define CONFIG_SESSION_MAX_AGE_SEC (30ULL * 86400ULL)
#define CONFIG_SESSION_MAX_COUNT 0ULL
#define CONFIG_SESSION_MAX_BYTES (1ULL << 30)

/* Longest configuration file accepted. */
#define CONFIG_MAX_SIZE (1024 * 1024)

/* $HERMES_HOME, else ~/.hermes; newly allocated. */
char *config_hermes_home(void);

/*
 * Loads and validates the configuration.  path NULL means the default
 * file; when that does not exist the embedded default is used (and said
 * so in the log).  An explicit path that does not exist is an error.  On
 * any error returns NULL with one message naming the file and the key in
 * err (the caller exits 78).
 */
struct config *config_load(const char *path, char *err, size_t errlen);
/* Parses a document held in memory; name is used in messages. */
struct config *config_parse(const char *text, const char *name, char *err, size_t errlen);
void config_free(struct config *c);
/*
 * The checked way to read a number from the configuration: the value of
 * key in obj, when present and not null, must be a number from min to max
 * (max at most 2^53, so every value converts exactly).  Returns 1 with the
 * value in *out, 0 when the key is absent (*out untouched), or -1 with
 * "<what> expected ..." in err, where what names the key (e.g.
 * "platforms.telegram.timeout").
 */
int config_get_uint(const cJSON *obj, const char *key, const char *what, uint64_t min,
    uint64_t max, uint64_t *out, char *err, size_t errlen);
/* The same for a number of seconds with a fraction, into microseconds. */
int config_get_seconds(const cJSON *obj, const char *key, const char *what, uint64_t min_usec,
    uint64_t max_usec, uint64_t *usec, char *err, size_t errlen);

/* The section of a platform, or NULL when it is not configured. */
const struct config_platform *config_platform(const struct config *c, const char *name);

/*
 * Looks a secret up by its environment name (e.g. "TELEGRAM_BOT_TOKEN"):
 * the environment, then $HERMES_HOME/.env, then a file of that name in
 * $CREDENTIALS_DIRECTORY (systemd LoadCredential=).  Returns a newly
 * allocated string (trailing newline stripped) or NULL.  Never logs the
 * value.
 */
char *config_secret(const char *name);

/*
 * Finds key in the text of a .env file (KEY=VALUE lines, optional
 * "export ", '#' comments, single or double quotes).  Returns a newly
 * allocated value or NULL.
 */
char *config_dotenv_get(const char *text, const char *key);

/* Splits a comma-separated list into a NULL-terminated array of trimmed, non-empty items. */
char **config_split_list(const char *s);
void config_list_free(char **list);
/* 1 when list contains s. */
int config_list_has(char *const *list, const char *s);

#endif
