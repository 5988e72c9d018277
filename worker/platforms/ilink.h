/*
 * ilink.h - the parts of Tencent's iLink bot API (Weixin) that the
 * platform (weixin.h) and the login (weixin_login.h) share: the headers
 * and base_info of every request, the classification of answers (errors
 * come as HTTP 200 with ret/errcode), the cursor, messages, client ids,
 * and the files the Python gateway keeps under
 * $HERMES_HOME/weixin/accounts/ (read and written in its format).
 *
 * Pure functions but for the file ones; exported for the unit tests.
 */
#ifndef HERMES_ILINK_H
#define HERMES_ILINK_H

#include <stddef.h>
#include <time.h>

#include <cjson/cJSON.h>

struct http_response;

#define ILINK_DEFAULT_BASE "https://ilinkai.weixin.qq.com"

/* The headers of every iLink request but Authorization; a fresh X-WECHAT-UIN each time. */
struct ilink_hdrs {
	char uin[48];
	const char *v[5];               /* NULL-terminated, for http_req.headers */
};
void ilink_headers(struct ilink_hdrs *h);
/* base_info of every request body. */
cJSON *ilink_base_info(void);
/* A request body: o (consumed) with base_info; newly allocated. */
char *ilink_body(cJSON *o);

enum ilink_err {
	ILINK_OK = 0,
	ILINK_FAILED,                   /* network, 5xx, a body that is not JSON: transient */
	ILINK_EXPIRED,                  /* ret/errcode -14 (or HTTP 401/403): log in again */
	ILINK_LIMITED,                  /* ret/errcode -2: rate limited, or a stale context_token */
	ILINK_REFUSED,                  /* any other error: the request is refused */
};
/*
 * Classifies one iLink answer to what ("getupdates", ...).  On OK *out is
 * the parsed body (the caller deletes it), else NULL and why says what
 * went wrong (no secret in it).
 */
enum ilink_err ilink_answer(const char *what, const struct http_response *r, cJSON **out,
    char *why, size_t len);

/* The kit cursor holding get_updates_buf (newly allocated), and back (NULL when damaged). */
char *ilink_cursor_format(const char *buf);
char *ilink_cursor_parse(const char *cursor);

enum ilink_groups {
	ILINK_GROUPS_DISABLED = 0,      /* group messages are ignored (the default) */
	ILINK_GROUPS_COMMANDS,          /* only commands are answered in groups */
	ILINK_GROUPS_ALL,
};

/* One WeixinMessage, normalized; strings point into the message but text. */
struct ilink_msg {
	char id[40];                    /* message_id, else "seq:<seq>" */
	const char *from, *chat, *context_token;
	char *text;                     /* the caller frees */
	int group, addressed;
	time_t time;
};
/*
 * Parses one entry of getupdates' msgs.  Returns 1 and fills m for a
 * message the hub should see; 0 when it is to be skipped (why says: ours,
 * a bot's, one still being generated, no text, a group's while groups are
 * off); -1 when malformed.
 */
int ilink_msg_parse(const cJSON *o, const char *self, enum ilink_groups groups,
    struct ilink_msg *m, const char **why);

/* The client_id of a piece: "hermes-" and 32 hex digits of its key's SHA-256. */
void ilink_client_id(const char *key, char out[48]);
/*
 * The sendmessage body of one text piece to a user or group, its client_id
 * from key, echoing token (NULL: none); newly allocated.
 */
char *ilink_send_body(const char *to, const char *key, const char *text, const char *token);

/* The account file the Python gateway and `hermes-worker login weixin` write. */
struct ilink_account {
	char *token, *base_url, *user_id;
};
/* <home>/weixin/accounts/<account><suffix>, or NULL when account is not a usable file name. */
char *ilink_account_path(const char *home, const char *account, const char *suffix);
/* Reads it (a UTF-8 BOM is skipped).  Returns 0, or -1 with why in err. */
int ilink_account_load(const char *path, struct ilink_account *a, char *err, size_t errlen);
/*
 * Writes it atomically with mode 0600 ({"token", "base_url", "user_id",
 * "saved_at"}; base_url and user_id may be NULL), its directory created
 * 0700.  Returns 0, or -1 with why in err.
 */
int ilink_account_save(const char *path, const char *token, const char *base_url,
    const char *user_id, char *err, size_t errlen);
void ilink_account_clear(struct ilink_account *a);

/*
 * The context tokens, {"peer": "token", ...}, as the Python gateway keeps
 * them: load (an empty object when the file is missing or damaged), set
 * (1 when it changed; the oldest peer goes past ILINK_MAX_PEERS), save
 * atomically (0 or -1 with errno).
 */
#define ILINK_MAX_PEERS 10000
cJSON *ilink_tokens_load(const char *path);
int ilink_tokens_set(cJSON *tokens, const char *peer, const char *token);
int ilink_tokens_save(const char *path, const cJSON *tokens);

/*
 * What the Python gateway left in $HERMES_HOME/weixin/accounts/ for
 * account: its context tokens (an empty object when none) and its cursor
 * (<account>.sync.json's get_updates_buf, newly allocated, in *cursor;
 * NULL when none).
 */
cJSON *ilink_python_state(const char *account, char **cursor);

/* A small JSON object file (a UTF-8 BOM skipped), or NULL with errno (EINVAL: not an object). */
cJSON *ilink_read_json(const char *path);

#endif
