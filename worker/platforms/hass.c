/* hass.c - the pure parts of the Home Assistant platform (see hass.h). */
#include "platforms/hass.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>

#include "json.h"
#include "log.h"
#include "strmap.h"
#include "util.h"

#define HASS_SNAP_MAX   (32u << 20)     /* the largest snapshot file read */

/* ---- filters, words, ids and addresses ---------------------------------- */

static int
hass_in(char *const *list, const char *s, size_t n)
{
	for (; list != NULL && *list != NULL; list++)
		if (strlen(*list) == n && strncmp(*list, s, n) == 0)
			return 1;
	return 0;
}

int
hass_filter_match(const struct hass_filter *f, const char *entity_id)
{
	const char *dot = strchr(entity_id, '.');

	if (hass_in(f->ignore, entity_id, strlen(entity_id)))
		return 0;
	if ((f->domains != NULL && f->domains[0] != NULL) ||
	    (f->entities != NULL && f->entities[0] != NULL))
		return (dot != NULL && hass_in(f->domains, entity_id, (size_t)(dot - entity_id))) ||
		    hass_in(f->entities, entity_id, strlen(entity_id));
	return f->all;
}

/* Copies at most len - 1 bytes of src, never splitting a UTF-8 sequence. */
static void
hass_copy(char *dst, size_t len, const char *src)
{
	size_t n = strlen(src);

	if (n >= len) {
		n = len - 1;
		while (n > 0 && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* An attribute as text: a string or a number, else dflt. */
static void
hass_attr(const cJSON *attrs, const char *key, const char *dflt, char *out, size_t len)
{
	const cJSON *v = cJSON_GetObjectItemCaseSensitive(attrs, key);

	if (cJSON_IsString(v))
		hass_copy(out, len, v->valuestring);
	else if (cJSON_IsNumber(v))
		snprintf(out, len, "%.15g", v->valuedouble);
	else
		hass_copy(out, len, dflt);
}

static int
hass_onoff(const char *s)
{
	return strcmp(s, "on") == 0 || strcmp(s, "off") == 0;
}

static const char *
hass_trig(const char *s)
{
	return strcmp(s, "on") == 0 ? "triggered" : strcmp(s, "off") == 0 ? "cleared" : s;
}

char *
hass_render(const char *id, const char *old_state, const cJSON *new_state)
{
	const cJSON *at = json_obj(new_state, "attributes");
	const char *st = json_str(new_state, "state"), *dot = strchr(id, '.');
	char name[208], o[260], n[260], a[64], b[64], dom[64];

	if (st == NULL || strcmp(old_state != NULL ? old_state : "unknown", st) == 0)
		return NULL;
	hass_attr(at, "friendly_name", id, name, sizeof(name));
	hass_copy(o, sizeof(o), old_state != NULL ? old_state : "unknown");
	hass_copy(n, sizeof(n), st);
	snprintf(dom, sizeof(dom), "%.*s", dot != NULL ? (int)(dot - id) : 0, id);
	if (strcmp(dom, "climate") == 0) {
		hass_attr(at, "current_temperature", "?", a, sizeof(a));
		hass_attr(at, "temperature", "?", b, sizeof(b));
		return xasprintf("[Home Assistant] %s: HVAC mode changed from '%s' to '%s' "
		    "(current: %s, target: %s)", name, o, n, a, b);
	}
	if (strcmp(dom, "sensor") == 0) {
		hass_attr(at, "unit_of_measurement", "", a, sizeof(a));
		return xasprintf("[Home Assistant] %s: changed from %s%s to %s%s", name, o, a, n, a);
	}
	if (strcmp(dom, "binary_sensor") == 0 && hass_onoff(n))
		return xasprintf("[Home Assistant] %s: %s (was %s)", name, hass_trig(n), hass_trig(o));
	if ((strcmp(dom, "light") == 0 || strcmp(dom, "switch") == 0 ||
	    strcmp(dom, "fan") == 0) && hass_onoff(n))
		return xasprintf("[Home Assistant] %s: turned %s", name, n);
	if (strcmp(dom, "alarm_control_panel") == 0)
		return xasprintf("[Home Assistant] %s: alarm state changed from '%s' to '%s'",
		    name, o, n);
	return xasprintf("[Home Assistant] %s (%s): changed from '%s' to '%s'", name, id, o, n);
}

/* The first nhex hex digits of sha256(s) into out (at least nhex + 1 bytes). */
void
hass_hash_hex(const char *s, char *out, unsigned nhex)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0, i;

	if (EVP_Digest(s, strlen(s), md, &mdlen, EVP_sha256(), NULL) != 1 || mdlen * 2 < nhex)
		fatalx("%s: sha256 failed", __func__);
	for (i = 0; i < nhex; i++)
		out[i] = "0123456789abcdef"[(md[i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
	out[nhex] = '\0';
}

void
hass_message_id(const char *entity_id, const char *last_changed, char *out, size_t len)
{
	char *s = xasprintf("%s@%s", entity_id, last_changed);
	size_t n = strlen(s), i;
	int ok = n <= 100 && n < len;

	for (i = 0; ok && i < n; i++)
		ok = (unsigned char)s[i] > 0x20 && (unsigned char)s[i] < 0x7f;
	if (ok)
		memcpy(out, s, n + 1);
	else if (len > 36) {
		memcpy(out, "ha-", 3);
		hass_hash_hex(s, out + 3, 32);
	} else
		out[0] = '\0';
	free(s);
}

int
hass_chat_service(const char *chat_id, char *svc, size_t len)
{
	const char *p;

	svc[0] = '\0';
	if (strcmp(chat_id, HASS_CHAT) == 0)
		return 0;
	if (strncmp(chat_id, "notify.", 7) == 0)
		chat_id += 7;
	if (chat_id[0] == '\0' || strlen(chat_id) >= len)
		return -1;
	for (p = chat_id; *p != '\0'; p++)
		if (!islower((unsigned char)*p) && !isdigit((unsigned char)*p) && *p != '_')
			return -1;
	memcpy(svc, chat_id, strlen(chat_id) + 1);
	return 1;
}

char *
hass_ws_url(const char *base)
{
	if (strncmp(base, "https://", 8) == 0)
		return xasprintf("wss://%s/api/websocket", base + 8);
	return xasprintf("ws://%s/api/websocket", base + (strncmp(base, "http://", 7) == 0 ? 7 : 0));
}

int
hass_url_loopback(const char *url)
{
	const char *h = strstr(url, "://"), *end;
	char host[256];
	size_t n;

	if (h == NULL)
		return 0;
	h += 3;
	if (*h == '[')
		end = strchr(++h, ']');
	else
		end = h + strcspn(h, ":/?#");
	if (end == NULL || (n = (size_t)(end - h)) == 0 || n >= sizeof(host))
		return 0;
	memcpy(host, h, n);
	host[n] = '\0';
	return strcasecmp(host, "localhost") == 0 || strcmp(host, "::1") == 0 ||
	    (strncmp(host, "127.", 4) == 0 && strspn(host, "0123456789.") == n);
}

int
hass_entity_ok(const char *id)
{
	size_t i, n = id != NULL ? strlen(id) : 0;

	if (n == 0 || n > 255 || strchr(id, '.') == NULL || id[0] == '.')
		return 0;
	for (i = 0; i < n; i++)
		if ((unsigned char)id[i] <= 0x20 || (unsigned char)id[i] >= 0x7f)
			return 0;
	return 1;
}

/* ---- the snapshot of states seen ------------------------------------------ */

struct hass_snap {
	struct strmap *map;             /* id -> entity */
	struct hass_ent **v;              /* every entity, in no order */
	size_t n, cap;
};

struct hass_snap *
hass_snap_new(void)
{
	struct hass_snap *s = xcalloc(1, sizeof(*s));

	s->map = strmap_new();
	return s;
}

static void
hass_ent_free(struct hass_ent *e)
{
	free(e->id);
	free(e->state);
	free(e->changed);
	free(e);
}

static void
hass_snap_clear(struct hass_snap *s)
{
	while (s->n > 0)
		hass_snap_del(s, s->v[s->n - 1]->id);
}

void
hass_snap_free(struct hass_snap *s)
{
	if (s == NULL)
		return;
	hass_snap_clear(s);
	strmap_free(s->map, NULL);
	free(s->v);
	free(s);
}

struct hass_ent *
hass_snap_get(const struct hass_snap *s, const char *id)
{
	return strmap_get(s->map, id);
}

struct hass_ent *
hass_snap_set(struct hass_snap *s, const char *id, const char *state, const char *changed)
{
	struct hass_ent *e = strmap_get(s->map, id);

	if (e == NULL) {
		e = xcalloc(1, sizeof(*e));
		e->id = xstrdup(id);
		if (s->n == s->cap) {
			s->cap = s->cap ? s->cap * 2 : 64;
			s->v = xrealloc(s->v, s->cap * sizeof(*s->v));
		}
		e->slot = s->n;
		s->v[s->n++] = e;
		strmap_put(s->map, id, e);
	}
	free(e->state);
	free(e->changed);
	e->state = xstrdup(state);
	e->changed = xstrdup(changed);
	return e;
}

void
hass_snap_del(struct hass_snap *s, const char *id)
{
	struct hass_ent *e = strmap_del(s->map, id);

	if (e == NULL)
		return;
	s->v[e->slot] = s->v[--s->n];
	s->v[e->slot]->slot = e->slot;
	hass_ent_free(e);
}

size_t
hass_snap_count(const struct hass_snap *s)
{
	return s->n;
}

void
hass_snap_each(struct hass_snap *s, void (*fn)(void *arg, struct hass_ent *e), void *arg)
{
	size_t i;

	for (i = s->n; i-- > 0;)
		if (i < s->n)
			fn(arg, s->v[i]);
}

char *
hass_snap_format(const struct hass_snap *s)
{
	cJSON *o = cJSON_CreateObject(), *ents, *e;
	char *out;
	size_t i;

	if (o == NULL || !cJSON_AddNumberToObject(o, "v", 1) ||
	    (ents = cJSON_AddObjectToObject(o, "entities")) == NULL)
		fatalx("%s: out of memory", __func__);
	for (i = 0; i < s->n; i++)
		if ((e = cJSON_AddObjectToObject(ents, s->v[i]->id)) == NULL ||
		    !cJSON_AddStringToObject(e, "s", s->v[i]->state) ||
		    !cJSON_AddStringToObject(e, "c", s->v[i]->changed) ||
		    !cJSON_AddNumberToObject(e, "r", (double)s->v[i]->reported))
			fatalx("%s: out of memory", __func__);
	out = cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (out == NULL)
		fatalx("%s: out of memory", __func__);
	return out;
}

int
hass_snap_parse(struct hass_snap *s, const char *text, size_t len)
{
	cJSON *o = cJSON_ParseWithLength(text, len);
	const cJSON *e, *ents;
	const char *st, *ch;
	double r;
	int64_t v = 0;
	int bad = o == NULL || json_i64(o, "v", 1, 1, &v) < 0 || json_obj(o, "entities") == NULL;

	hass_snap_clear(s);
	ents = bad ? NULL : json_obj(o, "entities");
	cJSON_ArrayForEach(e, ents) {
		st = json_str(e, "s");
		ch = json_str(e, "c");
		if (!hass_entity_ok(e->string) || st == NULL || ch == NULL ||
		    json_num(e, "r", &r) < 0 || r < 0 || r > 1e12) {
			bad = 1;
			break;
		}
		hass_snap_set(s, e->string, st, ch)->reported = (int64_t)r;
	}
	cJSON_Delete(o);
	if (bad)
		hass_snap_clear(s);
	return bad ? -1 : 0;
}

int
hass_snap_load(struct hass_snap *s, const char *path, const char *name)
{
	size_t len = 0;
	char *text = read_file(path, HASS_SNAP_MAX, &len);
	int r = 1;

	if (text == NULL && errno == ENOENT) {
		log_info("%s: no states recorded yet: this first connection only records them",
		    name);
		return 0;
	}
	if (text == NULL || hass_snap_parse(s, text, len) < 0) {
		if (text == NULL)
			log_warn("%s: %s cannot be read", name, path);
		else
			log_warnx("%s: %s is damaged", name, path);
		log_warnx("%s: changes made while the gateway was down are not reported this "
		    "time", name);
		r = -1;
	} else
		log_info("%s: %zu entity states from the last run", name, hass_snap_count(s));
	free(text);
	return r;
}

int
hass_snap_save(const struct hass_snap *s, const char *path)
{
	char *text = hass_snap_format(s);
	int r = write_file_atomic(path, text, strlen(text), 0600);

	free(text);
	return r;
}

/* ---- the tracker ------------------------------------------------------------------ */

/* A reported change whose commit is under way. */
struct hass_change {
	char *entity, *state, *changed;
	uint64_t rev;
	int64_t at;
};

struct hass_batch {
	struct hass_change *v;
	size_t n, cap;
};

struct hass_track {
	struct hass_filter filter;
	double cooldown;
	struct hass_snap *snap;
	uint64_t rev;                   /* events seen, in order */
	unsigned sync_gen;              /* get_states compared */
	int dirty;
	struct hass_batch *staged;
};

struct hass_track *
hass_track_new(struct hass_filter *f, double cooldown)
{
	struct hass_track *t = xcalloc(1, sizeof(*t));

	t->filter = *f;
	memset(f, 0, sizeof(*f));
	t->cooldown = cooldown;
	t->snap = hass_snap_new();
	return t;
}

void
hass_batch_free(struct hass_batch *b)
{
	size_t i;

	for (i = 0; b != NULL && i < b->n; i++) {
		free(b->v[i].entity);
		free(b->v[i].state);
		free(b->v[i].changed);
	}
	if (b != NULL)
		free(b->v);
	free(b);
}

void
hass_track_free(struct hass_track *t)
{
	if (t == NULL)
		return;
	hass_filter_clear(&t->filter);
	hass_snap_free(t->snap);
	hass_batch_free(t->staged);
	free(t);
}

struct hass_snap *
hass_track_snap(struct hass_track *t)
{
	return t->snap;
}

int
hass_track_dirty(const struct hass_track *t)
{
	return t->dirty;
}

void
hass_track_clean(struct hass_track *t)
{
	t->dirty = 0;
}

static int
hass_cooling(const struct hass_ent *e, double cooldown, int64_t now)
{
	int64_t last;

	if (e == NULL || cooldown <= 0)
		return 0;
	last = e->reported > e->pending ? e->reported : e->pending;
	return last > 0 && (double)(now - last) < cooldown;
}

/* Records a state seen, unless a later event already set the entity's. */
static void
hass_track_apply(struct hass_track *t, const char *id, const char *state, const char *changed,
    uint64_t rev)
{
	struct hass_ent *e = hass_snap_get(t->snap, id);

	if (e != NULL && e->rev > rev)
		return;
	if (e == NULL || strcmp(e->state, state) != 0 || strcmp(e->changed, changed) != 0) {
		e = hass_snap_set(t->snap, id, state, changed);
		t->dirty = 1;
	}
	e->rev = rev;
	e->seen = t->sync_gen;
}

static void
hass_track_stage(struct hass_track *t, const char *id, const char *state, const char *changed,
    int64_t at)
{
	struct hass_batch *b = t->staged;
	struct hass_change *c;

	if (b == NULL)
		b = t->staged = xcalloc(1, sizeof(*b));
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 16;
		b->v = xrealloc(b->v, b->cap * sizeof(*b->v));
	}
	c = &b->v[b->n++];
	c->entity = xstrdup(id);
	c->state = xstrdup(state);
	c->changed = xstrdup(changed);
	c->rev = ++t->rev;
	c->at = at;
}

/* One state seen, live (old: the event's) or from get_states (sync: the snapshot's). */
static void
hass_track_see(struct hass_track *t, const char *id, const char *old, const cJSON *ns, int sync,
    int64_t now, hass_report_fn report, void *arg)
{
	const char *st = json_str(ns, "state"), *ch = json_str(ns, "last_changed");
	struct hass_ent *e;
	char *text, mid[128];

	if (!hass_entity_ok(id) || !hass_filter_match(&t->filter, id) || st == NULL)
		return;
	if (ch == NULL && (ch = json_str(ns, "last_updated")) == NULL)
		ch = "";
	e = hass_snap_get(t->snap, id);
	if (sync && e == NULL) {        /* not seen before: recorded only */
		hass_track_apply(t, id, st, ch, ++t->rev);
		return;
	}
	if (sync) {
		e->seen = t->sync_gen;
		old = e->state;
	}
	text = hass_render(id, old, ns);
	hass_message_id(id, ch, mid, sizeof(mid));
	if (text == NULL || hass_cooling(e, t->cooldown, now) || !report(arg, id, text, mid))
		hass_track_apply(t, id, st, ch, ++t->rev);
	else {
		/* until the commit is done the old state stays: a failed one is found again */
		if (e == NULL)
			e = hass_snap_set(t->snap, id, old != NULL ? old : "unknown", "");
		e->pending = now;
		hass_track_stage(t, id, st, ch, now);
	}
	free(text);
}

void
hass_track_event(struct hass_track *t, const char *id, const char *old, const cJSON *ns,
    int64_t now, hass_report_fn report, void *arg)
{
	if (ns == NULL && hass_entity_ok(id) && hass_snap_get(t->snap, id) != NULL) {
		hass_snap_del(t->snap, id);     /* the entity was removed */
		t->dirty = 1;
	} else if (ns != NULL)
		hass_track_see(t, id, old, ns, 0, now, report, arg);
}

static void
hass_track_drop(void *arg, struct hass_ent *e)
{
	struct hass_track *t = arg;

	if (e->seen != t->sync_gen) {
		hass_snap_del(t->snap, e->id);
		t->dirty = 1;
	}
}

size_t
hass_track_sync(struct hass_track *t, const cJSON *states, int64_t now, hass_report_fn report,
    void *arg)
{
	const cJSON *s;
	size_t before = t->staged != NULL ? t->staged->n : 0;

	t->sync_gen++;
	cJSON_ArrayForEach(s, states)
		hass_track_see(t, json_str(s, "entity_id"), NULL, s, 1, now, report, arg);
	hass_snap_each(t->snap, hass_track_drop, t);
	return (t->staged != NULL ? t->staged->n : 0) - before;
}

struct hass_batch *
hass_track_batch(struct hass_track *t)
{
	struct hass_batch *b = t->staged;

	t->staged = NULL;
	return b;
}

void
hass_track_committed(struct hass_track *t, struct hass_batch *b, int ok)
{
	struct hass_ent *e;
	size_t i;

	for (i = 0; b != NULL && i < b->n; i++) {
		if ((e = hass_snap_get(t->snap, b->v[i].entity)) == NULL)
			continue;
		if (e->pending == b->v[i].at)
			e->pending = 0;
		if (!ok)
			continue;
		if (b->v[i].at > e->reported) {
			e->reported = b->v[i].at;
			t->dirty = 1;
		}
		hass_track_apply(t, b->v[i].entity, b->v[i].state, b->v[i].changed, b->v[i].rev);
	}
	hass_batch_free(b);
}

/* ---- the filter's configuration ---------------------------------------------- */

static int
hass_conf_list(const struct plat_env *env, const char *key, char ***out, char *err, size_t len)
{
	const cJSON *a = cJSON_GetObjectItemCaseSensitive(env->conf, key), *it = NULL;
	size_t n = 0;

	if (a == NULL || cJSON_IsNull(a))
		return 0;
	if (cJSON_IsArray(a))
		cJSON_ArrayForEach(it, a)
			if (!cJSON_IsString(it) || it->valuestring[0] == '\0')
				break;
	if (!cJSON_IsArray(a) || it != NULL) {
		snprintf(err, len, "platforms.%s.%s: must be an array of non-empty strings",
		    env->name, key);
		return -1;
	}
	*out = xcalloc((size_t)cJSON_GetArraySize(a) + 1, sizeof(char *));
	cJSON_ArrayForEach(it, a)
		(*out)[n++] = xstrdup(it->valuestring);
	return 0;
}

int
hass_filter_conf(const struct plat_env *env, struct hass_filter *f, char *err, size_t errlen)
{
	const cJSON *all = cJSON_GetObjectItemCaseSensitive(env->conf, "watch_all");

	if (all != NULL && !cJSON_IsNull(all) && !cJSON_IsBool(all)) {
		snprintf(err, errlen, "platforms.%s.watch_all: must be true or false", env->name);
		return -1;
	}
	f->all = cJSON_IsTrue(all);
	return hass_conf_list(env, "watch_domains", &f->domains, err, errlen) < 0 ||
	    hass_conf_list(env, "watch_entities", &f->entities, err, errlen) < 0 ||
	    hass_conf_list(env, "ignore_entities", &f->ignore, err, errlen) < 0 ? -1 : 0;
}

static void
hass_list_free(char **l)
{
	size_t i;

	for (i = 0; l != NULL && l[i] != NULL; i++)
		free(l[i]);
	free(l);
}

void
hass_filter_clear(struct hass_filter *f)
{
	hass_list_free(f->domains);
	hass_list_free(f->entities);
	hass_list_free(f->ignore);
	f->domains = f->entities = f->ignore = NULL;
}

int
hass_filter_empty(const struct hass_filter *f)
{
	return !f->all && (f->domains == NULL || f->domains[0] == NULL) &&
	    (f->entities == NULL || f->entities[0] == NULL);
}
