/*
 * platform.h - the one interface every chat platform implements.
 *
 * A platform is one file pair in worker/platforms/ plus one entry in the
 * table in worker/platforms/registry.c.  It owns its connections and its
 * reconnect loop (jittered exponential backoff), reports its state to the
 * hub with hub_platform_state(), hands each inbound message to the hub
 * with hub_inbound() and acknowledges it to its server only once the hub
 * calls the done callback (at-least-once intake; the hub deduplicates by
 * message id).
 */
#ifndef HERMES_PLATFORM_H
#define HERMES_PLATFORM_H

#include <stddef.h>
#include <time.h>

#include <cjson/cJSON.h>

struct event_base;
struct evdns_base;
struct hub;
struct tls_ctx;

enum plat_state {
	PLAT_STOPPED = 0,
	PLAT_CONNECTING,
	PLAT_UP,
	PLAT_BACKOFF,
	PLAT_UNAUTHORIZED,
};

/* "stopped", "connecting", "up", "backoff", "unauthorized". */
const char *plat_state_name(enum plat_state st);

enum chat_type {
	CHAT_DM = 0,
	CHAT_GROUP,
	CHAT_THREAD,
};

/* One normalized inbound message.  Strings are borrowed for the call; the hub copies. */
struct inbound {
	const char *chat_id;
	enum chat_type chat_type;
	const char *thread_id;          /* NULL when none */
	const char *user_id;
	const char *user_name;          /* may be NULL */
	const char *message_id;         /* unique within the platform; the dedup key */
	const char *text;
	time_t time;
	int addressed;                  /* in a group: a command, a mention or a reply to us */
};

/* One outbound message.  text is already split to the platform's max_text. */
struct outbound {
	const char *chat_id;
	const char *thread_id;          /* NULL when none */
	const char *reply_to;           /* message id, or NULL */
	const char *text;
};

/* Called once when a send has finished: ok = 1 delivered, 0 given up. */
typedef void (*plat_sent_fn)(void *arg, int ok);
/* Called once when the hub has handled an inbound message. */
typedef void (*plat_done_fn)(void *arg);
/* Called once when a platform has finished stopping. */
typedef void (*plat_stopped_fn)(void *arg);

/* What the worker hands a platform when creating it.  All borrowed; valid until free. */
struct plat_env {
	struct event_base *base;
	struct evdns_base *dns;
	struct tls_ctx *tls;            /* client TLS (system CAs + tls.ca_file) */
	struct hub *hub;
	const char *name;               /* the platform's name, e.g. "telegram" */
	const char *state_dir;          /* the platform may keep files named "<name>.*" here */
	const cJSON *conf;              /* its section of the config (never NULL) */
	int listen_fd;                  /* a socket passed in LISTEN_FDS under its name, or -1 */
};

struct platform_ops {
	const char *name;
	size_t max_text;                /* longest text one message may carry, in bytes */
	/*
	 * The config keys this platform accepts in its section beyond the
	 * common ones (enabled, allowed_users, admins, home_channel);
	 * NULL-terminated.  Any other key is a config error.
	 */
	const char *const *keys;
	/*
	 * Validates its section (secrets may come from config_secret()) and
	 * allocates its state.  On a config error returns NULL with a message
	 * naming the key in err.  Does no I/O.
	 */
	void *(*create)(const struct plat_env *env, char *err, size_t errlen);
	/* Starts connecting; never blocks; failures go into its reconnect loop. */
	void (*start)(void *self);
	/* Sends one message; cb is called exactly once (also when stopping). */
	void (*send)(void *self, const struct outbound *msg, plat_sent_fn cb, void *arg);
	/* Stops within a bounded time, persisting what it must; then calls cb. */
	void (*stop)(void *self, plat_stopped_fn cb, void *arg);
	/* Frees everything; only after stop has completed.  free(NULL) is a no-op. */
	void (*free)(void *self);
	/*
	 * Optional: shows "typing" in a chat once (best effort, never
	 * retried).  The hub calls it when an agent call starts and every
	 * typing_every_ms (0: 4 s) until the reply is ready.
	 */
	void (*typing)(void *self, const char *chat_id, const char *thread_id);
	unsigned typing_every_ms;
	/*
	 * The prefixes of the environment variables that override the common
	 * keys, as the Python gateway named them: <users_env>_ALLOWED_USERS
	 * and _ALLOW_ALL_USERS, <home_env>_HOME_CHANNEL.  NULL: the name in
	 * capitals.
	 */
	const char *users_env, *home_env;
	/* allowed_users when the config names none (NULL-terminated); NULL: nobody. */
	const char *const *default_users;
	/* admins when the config names none; NULL: none. */
	const char *const *default_admins;
};

/* The table of all platforms, NULL-terminated (worker/platforms/registry.c). */
extern const struct platform_ops *const platform_table[];
/* Looks a platform up by name; NULL when unknown. */
const struct platform_ops *platform_find(const char *name);

#endif
