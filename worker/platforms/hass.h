/*
 * hass.h - the pure parts of the Home Assistant platform
 * (homeassistant.c has the connection): which entities are watched, a
 * state change in words, stable message ids, addresses, and the snapshot
 * of the states seen with its file.
 */
#ifndef HERMES_HASS_H
#define HERMES_HASS_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "platform.h"

#define HASS_CHAT "ha_events"   /* the chat of every event: persistent notifications */
#define HASS_USER "homeassistant" /* the user every event comes from */

/* What is watched: ignore wins; then a listed domain or entity; else watch_all. */
struct hass_filter {
	char **domains, **entities, **ignore;   /* NULL-terminated; may be NULL */
	int all;
};
int hass_filter_match(const struct hass_filter *f, const char *entity_id);
/* 1 when nothing at all can match (no list, no watch_all). */
int hass_filter_empty(const struct hass_filter *f);
/* Reads watch_domains, watch_entities, ignore_entities, watch_all; 0 or -1 with err. */
int hass_filter_conf(const struct plat_env *env, struct hass_filter *f, char *err,
    size_t errlen);
/* Frees the lists (not f). */
void hass_filter_clear(struct hass_filter *f);

/* An entity id Home Assistant could send: "<domain>.<object>", printable, bounded. */
int hass_entity_ok(const char *id);

/*
 * One state change in words, per domain (climate, sensor, binary_sensor,
 * light, switch, fan, alarm_control_panel, anything else); old_state is
 * the previous state string (NULL: unknown).  Newly allocated; NULL when
 * there is no new state or the state string did not change (an
 * attribute-only update).  Never begins with '/' (never a command).
 */
char *hass_render(const char *entity_id, const char *old_state, const cJSON *new_state);

/*
 * The message id of a state change, stable across restarts:
 * "<entity_id>@<last_changed>", or "ha-" and a hash of it when that would
 * not fit (more than 100 bytes, or not printable ASCII).  len >= 37.
 */
void hass_message_id(const char *entity_id, const char *last_changed, char *out, size_t len);
/* The first nhex (<= 64) hex digits of sha256(s) into out (nhex + 1 bytes). */
void hass_hash_hex(const char *s, char *out, unsigned nhex);

/* The notify service a chat id names ("notify." prefix optional) into svc; 0 for
 * HASS_CHAT (persistent notifications, svc ""), 1 for a service, -1 when not usable. */
int hass_chat_service(const char *chat_id, char *svc, size_t len);
/* ws(s)://host[:port][/path]/api/websocket from the http(s) base URL; newly allocated. */
char *hass_ws_url(const char *base);
/* 1 when the URL's host is a loopback address (localhost, 127.x, ::1). */
int hass_url_loopback(const char *url);

/* ---- the snapshot of states seen ---- */

struct hass_snap;
struct hass_ent {
	char *id;                       /* entity_id */
	char *state;                    /* last state seen */
	char *changed;                  /* its last_changed ("" when unknown) */
	int64_t reported;               /* wall-clock time of the last report, 0: none */
	int64_t pending;                /* in memory: a report being committed */
	uint64_t rev;                   /* in memory: the event that set state */
	unsigned seen;                  /* in memory: the last get_states it was in */
	size_t slot;                    /* in memory: its place in the snapshot */
};

struct hass_snap *hass_snap_new(void);
void hass_snap_free(struct hass_snap *s);
struct hass_ent *hass_snap_get(const struct hass_snap *s, const char *id);
/* Sets an entity's state and last_changed (creating it); returns it. */
struct hass_ent *hass_snap_set(struct hass_snap *s, const char *id, const char *state,
    const char *changed);
void hass_snap_del(struct hass_snap *s, const char *id);
size_t hass_snap_count(const struct hass_snap *s);
/* Calls fn for each entity (fn may delete the one it is given). */
void hass_snap_each(struct hass_snap *s, void (*fn)(void *arg, struct hass_ent *e), void *arg);
/* {"v":1,"entities":{"<id>":{"s":..,"c":..,"r":..}}}; newly allocated. */
char *hass_snap_format(const struct hass_snap *s);
/* Replaces the content with a formatted snapshot; returns 0, or -1 when damaged (left empty). */
int hass_snap_parse(struct hass_snap *s, const char *text, size_t len);
/*
 * Reads path (logging what it found as name); returns 1 loaded, 0 no file
 * yet, -1 unreadable or damaged (the snapshot is left empty).
 */
int hass_snap_load(struct hass_snap *s, const char *path, const char *name);
/* Writes it atomically (temp file, fsync, rename); 0, or -1 with errno. */
int hass_snap_save(const struct hass_snap *s, const char *path);

/*
 * ---- the tracker: the snapshot, the filter, and which states seen are
 * reported.  A watched entity's actual change (its state string, not an
 * attribute) outside its cooldown is handed to report; the snapshot
 * takes a reported state only once the journal holds it
 * (hass_track_committed), so a commit that failed leaves the old state
 * and the next get_states finds the change again.
 */
struct hass_track;
struct hass_batch;

/* Hands one change to the journal: 1 staged for the next commit, 0 not (a duplicate...). */
typedef int (*hass_report_fn)(void *arg, const char *entity_id, const char *text,
    const char *msg_id);

/* Takes f's lists (f is left empty). */
struct hass_track *hass_track_new(struct hass_filter *f, double cooldown);
void hass_track_free(struct hass_track *t);
struct hass_snap *hass_track_snap(struct hass_track *t);
/* One state_changed event (ns NULL: the entity was removed). */
void hass_track_event(struct hass_track *t, const char *entity_id, const char *old_state,
    const cJSON *ns, int64_t now, hass_report_fn report, void *arg);
/*
 * The answer to get_states: each watched entity whose state differs from
 * the snapshot's is reported (one the snapshot lacks is recorded only);
 * entities gone or no longer watched are forgotten.  Returns the changes
 * reported.
 */
size_t hass_track_sync(struct hass_track *t, const cJSON *states, int64_t now,
    hass_report_fn report, void *arg);
/* The changes reported since the last call (to commit together), or NULL. */
struct hass_batch *hass_track_batch(struct hass_track *t);
/* The batch's commit is done (ok) or failed; frees it. */
void hass_track_committed(struct hass_track *t, struct hass_batch *b, int ok);
void hass_batch_free(struct hass_batch *b);
/* 1 when the snapshot changed since the last hass_track_clean(). */
int hass_track_dirty(const struct hass_track *t);
void hass_track_clean(struct hass_track *t);

#endif
