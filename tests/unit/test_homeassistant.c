/*
 * test_homeassistant.c - the Home Assistant platform's pure parts: filters,
 * words, message ids, addresses, the snapshot and its file, the tracker
 * (what is reported, what the snapshot remembers), the section's config
 * and the HASS_* environment.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "config.h"
#include "platforms/hass.h"
#include "platforms/homeassistant.h"
#include "unit_util.h"
#include "util.h"

static cJSON *
js(const char *text)
{
	cJSON *o = cJSON_Parse(text);

	ck_assert_ptr_nonnull(o);
	return o;
}

/* ---- filters, words, ids, addresses ---- */

START_TEST(test_filter)
{
	char *dom[] = { "light", "climate", NULL }, *ent[] = { "sensor.temp", NULL };
	char *ign[] = { "light.noisy", NULL };
	struct hass_filter f = { .domains = dom, .entities = ent, .ignore = ign };
	struct hass_filter all = { .ignore = ign, .all = 1 }, none = { 0 };

	ck_assert_int_eq(hass_filter_match(&f, "light.kitchen"), 1);
	ck_assert_int_eq(hass_filter_match(&f, "climate.hall"), 1);
	ck_assert_int_eq(hass_filter_match(&f, "sensor.temp"), 1);
	ck_assert_int_eq(hass_filter_match(&f, "sensor.other"), 0);
	ck_assert_int_eq(hass_filter_match(&f, "light.noisy"), 0);     /* ignore wins */
	ck_assert_int_eq(hass_filter_match(&f, "lightx.a"), 0);        /* a whole domain */
	ck_assert_int_eq(hass_filter_match(&all, "switch.any"), 1);
	ck_assert_int_eq(hass_filter_match(&all, "light.noisy"), 0);
	ck_assert_int_eq(hass_filter_match(&none, "switch.any"), 0);   /* closed by default */
	ck_assert_int_eq(hass_filter_empty(&none), 1);
	ck_assert_int_eq(hass_filter_empty(&all), 0);
	ck_assert_int_eq(hass_filter_empty(&f), 0);
}
END_TEST

/* Renders entity from old to the state object given as JSON. */
static char *
render(const char *entity, const char *old, const char *ns)
{
	cJSON *o = js(ns);
	char *t = hass_render(entity, old, o);

	cJSON_Delete(o);
	return t;
}

static void
expect_render(const char *entity, const char *old, const char *ns, const char *want)
{
	char *t = render(entity, old, ns);

	ck_assert_ptr_nonnull(t);
	ck_assert_str_eq(t, want);
	ck_assert_int_ne(t[0], '/');
	free(t);
}

START_TEST(test_render_domains)
{
	expect_render("climate.hall", "heat", "{\"state\":\"cool\",\"attributes\":{"
	    "\"friendly_name\":\"Hall\",\"current_temperature\":21.5,\"temperature\":19}}",
	    "[Home Assistant] Hall: HVAC mode changed from 'heat' to 'cool' "
	    "(current: 21.5, target: 19)");
	expect_render("climate.x", "off", "{\"state\":\"heat\"}",
	    "[Home Assistant] climate.x: HVAC mode changed from 'off' to 'heat' "
	    "(current: ?, target: ?)");
	expect_render("sensor.t", "20.5", "{\"state\":\"21\",\"attributes\":{"
	    "\"friendly_name\":\"Temp\",\"unit_of_measurement\":\"°C\"}}",
	    "[Home Assistant] Temp: changed from 20.5°C to 21°C");
	expect_render("binary_sensor.door", "off", "{\"state\":\"on\","
	    "\"attributes\":{\"friendly_name\":\"Door\"}}",
	    "[Home Assistant] Door: triggered (was cleared)");
	expect_render("binary_sensor.door", "unavailable", "{\"state\":\"off\"}",
	    "[Home Assistant] binary_sensor.door: cleared (was unavailable)");
	expect_render("light.k", "off", "{\"state\":\"on\",\"attributes\":{"
	    "\"friendly_name\":\"Kitchen\"}}", "[Home Assistant] Kitchen: turned on");
	expect_render("switch.s", "on", "{\"state\":\"off\"}",
	    "[Home Assistant] switch.s: turned off");
	expect_render("fan.f", NULL, "{\"state\":\"on\"}", "[Home Assistant] fan.f: turned on");
	/* a light that became unavailable is not "turned off" */
	expect_render("light.k", "on", "{\"state\":\"unavailable\"}",
	    "[Home Assistant] light.k (light.k): changed from 'on' to 'unavailable'");
	expect_render("alarm_control_panel.home", "disarmed", "{\"state\":\"armed_away\"}",
	    "[Home Assistant] alarm_control_panel.home: alarm state changed from 'disarmed' "
	    "to 'armed_away'");
	expect_render("input_text.note", "a", "{\"state\":\"/restart\"}",
	    "[Home Assistant] input_text.note (input_text.note): changed from 'a' to "
	    "'/restart'");
	expect_render("person.ann", NULL, "{\"state\":\"home\"}",
	    "[Home Assistant] person.ann (person.ann): changed from 'unknown' to 'home'");
}
END_TEST

START_TEST(test_render_skips)
{
	/* attribute-only: the state string is the same */
	ck_assert_ptr_null(render("light.k", "on", "{\"state\":\"on\",\"attributes\":"
	    "{\"brightness\":10}}"));
	ck_assert_ptr_null(render("light.k", "on", "{\"attributes\":{}}"));
	ck_assert_ptr_null(hass_render("light.k", "on", NULL));
	ck_assert_ptr_null(render("sensor.x", NULL, "{\"state\":\"unknown\"}"));
}
END_TEST

START_TEST(test_render_bounds_utf8)
{
	char name[600], ns[800], *t;
	size_t i;

	for (i = 0; i + 2 < 500; i += 2)
		memcpy(name + i, "\xc3\xa9", 2);                /* é, two bytes each */
	name[i] = '\0';
	snprintf(ns, sizeof(ns), "{\"state\":\"on\",\"attributes\":{\"friendly_name\":\"%s\"}}",
	    name);
	t = render("light.long", "off", ns);
	ck_assert_ptr_nonnull(t);
	ck_assert_uint_lt(strlen(t), 300);
	/* cut between sequences: every 0xc3 is followed by its 0xa9 */
	for (i = 0; t[i] != '\0'; i++)
		if ((unsigned char)t[i] == 0xc3)
			ck_assert_int_eq((unsigned char)t[i + 1], 0xa9);
	free(t);
}
END_TEST

START_TEST(test_message_id)
{
	char a[128], b[128], c[128], longid[300];

	hass_message_id("light.k", "2024-05-01T10:00:00.123456+00:00", a, sizeof(a));
	ck_assert_str_eq(a, "light.k@2024-05-01T10:00:00.123456+00:00");
	hass_message_id("light.k", "2024-05-01T10:00:00.123456+00:00", b, sizeof(b));
	ck_assert_str_eq(a, b);
	hass_message_id("light.k", "2024-05-01T10:00:01.000000+00:00", c, sizeof(c));
	ck_assert_str_ne(a, c);
	memset(longid, 'x', 200);
	memcpy(longid, "sensor.", 7);
	longid[200] = '\0';
	hass_message_id(longid, "2024-05-01T10:00:00+00:00", a, sizeof(a));
	ck_assert_uint_eq(strlen(a), 35);
	ck_assert(strncmp(a, "ha-", 3) == 0);
	hass_message_id(longid, "2024-05-01T10:00:01+00:00", b, sizeof(b));
	ck_assert_str_ne(a, b);                 /* the time is not cut off */
	hass_message_id("light.k", "a time with spaces", c, sizeof(c));
	ck_assert(strncmp(c, "ha-", 3) == 0);
	ck_assert_ptr_null(strchr(c, ' '));
}
END_TEST

START_TEST(test_addresses)
{
	char svc[64], *u;

	ck_assert_int_eq(hass_chat_service(HASS_CHAT, svc, sizeof(svc)), 0);
	ck_assert_str_eq(svc, "");
	ck_assert_int_eq(hass_chat_service("mobile_app_phone", svc, sizeof(svc)), 1);
	ck_assert_str_eq(svc, "mobile_app_phone");
	ck_assert_int_eq(hass_chat_service("notify.mobile_app_2", svc, sizeof(svc)), 1);
	ck_assert_str_eq(svc, "mobile_app_2");
	ck_assert_int_eq(hass_chat_service("notify.", svc, sizeof(svc)), -1);
	ck_assert_int_eq(hass_chat_service("", svc, sizeof(svc)), -1);
	ck_assert_int_eq(hass_chat_service("Phone", svc, sizeof(svc)), -1);
	ck_assert_int_eq(hass_chat_service("../states", svc, sizeof(svc)), -1);
	ck_assert_int_eq(hass_chat_service("a/b", svc, sizeof(svc)), -1);

	u = hass_ws_url("http://homeassistant.local:8123");
	ck_assert_str_eq(u, "ws://homeassistant.local:8123/api/websocket");
	free(u);
	u = hass_ws_url("https://ha.example.org/proxy");
	ck_assert_str_eq(u, "wss://ha.example.org/proxy/api/websocket");
	free(u);

	ck_assert_int_eq(hass_url_loopback("http://127.0.0.1:8123"), 1);
	ck_assert_int_eq(hass_url_loopback("http://127.1.2.3"), 1);
	ck_assert_int_eq(hass_url_loopback("http://LOCALHOST:8123/x"), 1);
	ck_assert_int_eq(hass_url_loopback("http://[::1]:8123"), 1);
	ck_assert_int_eq(hass_url_loopback("http://homeassistant.local:8123"), 0);
	ck_assert_int_eq(hass_url_loopback("http://127.0.0.1.evil.com"), 0);
	ck_assert_int_eq(hass_url_loopback("http://192.168.1.5:8123"), 0);
	ck_assert_int_eq(hass_url_loopback("nonsense"), 0);

	ck_assert_int_eq(hass_entity_ok("light.k"), 1);
	ck_assert_int_eq(hass_entity_ok("light"), 0);
	ck_assert_int_eq(hass_entity_ok(".k"), 0);
	ck_assert_int_eq(hass_entity_ok("light.a b"), 0);
	ck_assert_int_eq(hass_entity_ok(NULL), 0);
}
END_TEST

/* ---- the snapshot ---- */

static int
count_each(struct hass_snap *s)
{
	return (int)hass_snap_count(s);
}

static void
del_sensors(void *arg, struct hass_ent *e)
{
	if (strncmp(e->id, "sensor.", 7) == 0)
		hass_snap_del(arg, e->id);
}

START_TEST(test_snapshot_round_trip)
{
	struct hass_snap *s = hass_snap_new(), *t = hass_snap_new();
	char *text, id[32];
	int i;

	hass_snap_set(s, "light.k", "on", "2024-01-01T00:00:00+00:00")->reported = 1700000000;
	hass_snap_set(s, "sensor.t", "21.5", "");
	hass_snap_set(s, "light.k", "off", "2024-01-02T00:00:00+00:00");       /* replaced */
	ck_assert_int_eq(count_each(s), 2);
	text = hass_snap_format(s);
	ck_assert_int_eq(hass_snap_parse(t, text, strlen(text)), 0);
	free(text);
	ck_assert_int_eq(count_each(t), 2);
	ck_assert_str_eq(hass_snap_get(t, "light.k")->state, "off");
	ck_assert_str_eq(hass_snap_get(t, "light.k")->changed, "2024-01-02T00:00:00+00:00");
	ck_assert_int_eq(hass_snap_get(t, "light.k")->reported, 1700000000);
	ck_assert_str_eq(hass_snap_get(t, "sensor.t")->state, "21.5");
	for (i = 0; i < 300; i++) {
		snprintf(id, sizeof(id), "sensor.s%d", i);
		hass_snap_set(t, id, "1", "");
	}
	hass_snap_each(t, del_sensors, t);
	ck_assert_int_eq(count_each(t), 1);
	ck_assert_ptr_nonnull(hass_snap_get(t, "light.k"));
	hass_snap_del(t, "light.k");
	hass_snap_del(t, "light.k");
	ck_assert_int_eq(count_each(t), 0);
	hass_snap_free(s);
	hass_snap_free(t);
	hass_snap_free(NULL);
}
END_TEST

START_TEST(test_snapshot_damaged)
{
	static const char *const bad[] = {
		"", "not json", "[]", "{\"v\":2,\"entities\":{}}", "{\"v\":1}",
		"{\"v\":1,\"entities\":{\"light.k\":{\"c\":\"\",\"r\":0}}}",
		"{\"v\":1,\"entities\":{\"nodot\":{\"s\":\"on\",\"c\":\"\",\"r\":0}}}",
		"{\"v\":1,\"entities\":{\"light.k\":{\"s\":\"on\",\"c\":\"\",\"r\":-1}}}",
		"{\"v\":1,\"entities\":{\"light.k\":{\"s\":\"on\",\"c\":\"\",\"r\":1e300}}}",
		"{\"v\":1,\"entities\":{\"light.k\":{\"s\":\"on\",\"c\":\"\",\"r\":1},"
		    "\"light.j\":{\"s\":5,\"c\":\"\",\"r\":1}}}",
	};
	struct hass_snap *s = hass_snap_new();
	size_t i;

	for (i = 0; i < ARRAY_LEN(bad); i++) {
		hass_snap_set(s, "light.old", "on", "");
		ck_assert_msg(hass_snap_parse(s, bad[i], strlen(bad[i])) == -1, "%s", bad[i]);
		ck_assert_int_eq(count_each(s), 0);
	}
	hass_snap_free(s);
}
END_TEST

START_TEST(test_snapshot_file)
{
	char *dir = tmpdir_new(), path[512];
	struct hass_snap *s = hass_snap_new(), *t = hass_snap_new();

	snprintf(path, sizeof(path), "%s/homeassistant.states", dir);
	ck_assert_int_eq(hass_snap_load(t, path, "homeassistant"), 0);     /* none yet */
	hass_snap_set(s, "light.k", "on", "x");
	ck_assert_int_eq(hass_snap_save(s, path), 0);
	ck_assert_int_eq(hass_snap_load(t, path, "homeassistant"), 1);
	ck_assert_str_eq(hass_snap_get(t, "light.k")->state, "on");
	file_put(dir, "homeassistant.states", "{\"v\":1,\"entities\":", 0600);
	ck_assert_int_eq(hass_snap_load(t, path, "homeassistant"), -1);
	ck_assert_int_eq(count_each(t), 0);
	hass_snap_free(s);
	hass_snap_free(t);
	tmpdir_free(dir);
}
END_TEST

/* ---- the tracker ---- */

/* What report() was handed, and what it answers. */
struct reports {
	int n;
	char text[8][300], mid[8][128];
	int answer;                     /* 1: staged, 0: a duplicate */
};

static int
report(void *arg, const char *id, const char *text, const char *mid)
{
	struct reports *r = arg;

	(void)id;
	ck_assert_int_lt(r->n, 8);
	snprintf(r->text[r->n], sizeof(r->text[0]), "%s", text);
	snprintf(r->mid[r->n], sizeof(r->mid[0]), "%s", mid);
	r->n++;
	return r->answer;
}

static struct hass_track *
tracker(double cooldown)
{
	static char *dom[] = { "light", NULL }, *ign[] = { "light.ignored", NULL };
	struct hass_filter f = { .domains = NULL, .ignore = NULL };
	struct hass_track *t;
	size_t i;

	f.domains = xcalloc(ARRAY_LEN(dom), sizeof(char *));
	for (i = 0; dom[i] != NULL; i++)
		f.domains[i] = xstrdup(dom[i]);
	f.ignore = xcalloc(ARRAY_LEN(ign), sizeof(char *));
	for (i = 0; ign[i] != NULL; i++)
		f.ignore[i] = xstrdup(ign[i]);
	t = hass_track_new(&f, cooldown);
	ck_assert_ptr_null(f.domains);          /* taken */
	return t;
}

/* A state_changed event of entity from old to state (changed at time ch). */
static void
event(struct hass_track *t, const char *entity, const char *old, const char *state,
    const char *ch, int64_t now, struct reports *r)
{
	char text[300];
	cJSON *ns;

	snprintf(text, sizeof(text), "{\"entity_id\":\"%s\",\"state\":\"%s\","
	    "\"last_changed\":\"%s\",\"attributes\":{}}", entity, state, ch);
	ns = js(text);
	hass_track_event(t, entity, old, ns, now, report, r);
	cJSON_Delete(ns);
}

static void
commit(struct hass_track *t, int ok)
{
	struct hass_batch *b = hass_track_batch(t);

	ck_assert_ptr_nonnull(b);
	hass_track_committed(t, b, ok);
	ck_assert_ptr_null(hass_track_batch(t));
}

static const char *
seen(struct hass_track *t, const char *id)
{
	struct hass_ent *e = hass_snap_get(hass_track_snap(t), id);

	return e != NULL ? e->state : NULL;
}

START_TEST(test_track_live)
{
	struct hass_track *t = tracker(0);
	struct reports r = { .answer = 1 };

	event(t, "light.k", "off", "on", "t1", 100, &r);
	ck_assert_int_eq(r.n, 1);
	ck_assert_str_eq(r.text[0], "[Home Assistant] light.k: turned on");
	ck_assert_str_eq(r.mid[0], "light.k@t1");
	ck_assert_str_eq(seen(t, "light.k"), "off");    /* not before the journal has it */
	commit(t, 1);
	ck_assert_str_eq(seen(t, "light.k"), "on");
	ck_assert_int_eq(hass_track_dirty(t), 1);
	hass_track_clean(t);
	event(t, "light.k", "on", "on", "t1", 101, &r);         /* attributes only */
	event(t, "switch.x", "off", "on", "t2", 101, &r);       /* not watched */
	event(t, "light.ignored", "off", "on", "t2", 101, &r);
	ck_assert_int_eq(r.n, 1);
	ck_assert_ptr_null(hass_track_batch(t));
	ck_assert_int_eq(hass_track_dirty(t), 0);
	ck_assert_ptr_null(seen(t, "switch.x"));
	hass_track_event(t, "light.k", "on", NULL, 102, report, &r);    /* removed */
	ck_assert_ptr_null(seen(t, "light.k"));
	hass_track_free(t);
}
END_TEST

START_TEST(test_track_cooldown)
{
	struct hass_track *t = tracker(30);
	struct reports r = { .answer = 1 };

	event(t, "light.k", "off", "on", "t1", 1000, &r);
	event(t, "light.k", "on", "off", "t2", 1001, &r);       /* pending counts */
	ck_assert_int_eq(r.n, 1);
	commit(t, 1);
	ck_assert_str_eq(seen(t, "light.k"), "off");   /* the later state is not overwritten */
	event(t, "light.k", "off", "on", "t3", 1029, &r);
	ck_assert_int_eq(r.n, 1);
	event(t, "light.j", "off", "on", "t3", 1029, &r);       /* per entity */
	ck_assert_int_eq(r.n, 2);
	event(t, "light.k", "on", "off", "t4", 1030, &r);
	ck_assert_int_eq(r.n, 3);
	hass_track_free(t);
}
END_TEST

static size_t
sync_states(struct hass_track *t, const char *states, int64_t now, struct reports *r)
{
	cJSON *a = js(states);
	size_t n = hass_track_sync(t, a, now, report, r);

	cJSON_Delete(a);
	return n;
}

START_TEST(test_track_sync)
{
	struct hass_track *t = tracker(0);
	struct reports r = { .answer = 1 };

	/* the first get_states only records */
	ck_assert_uint_eq(sync_states(t, "[{\"entity_id\":\"light.a\",\"state\":\"off\","
	    "\"last_changed\":\"t0\"},{\"entity_id\":\"light.b\",\"state\":\"on\","
	    "\"last_changed\":\"t0\"},{\"entity_id\":\"light.c\",\"state\":\"on\","
	    "\"last_changed\":\"t0\"},{\"entity_id\":\"switch.z\",\"state\":\"on\"}]", 10, &r),
	    0);
	ck_assert_int_eq(r.n, 0);
	ck_assert_ptr_null(seen(t, "switch.z"));
	ck_assert_str_eq(seen(t, "light.a"), "off");
	/* a changed while away; b flipped and back (lost by design); c gone; d new */
	ck_assert_uint_eq(sync_states(t, "[{\"entity_id\":\"light.a\",\"state\":\"on\","
	    "\"last_changed\":\"t5\"},{\"entity_id\":\"light.b\",\"state\":\"on\","
	    "\"last_changed\":\"t6\"},{\"entity_id\":\"light.d\",\"state\":\"on\","
	    "\"last_changed\":\"t6\"}]", 20, &r), 1);
	ck_assert_int_eq(r.n, 1);
	ck_assert_str_eq(r.text[0], "[Home Assistant] light.a: turned on");
	ck_assert_str_eq(r.mid[0], "light.a@t5");
	ck_assert_ptr_null(seen(t, "light.c"));
	ck_assert_str_eq(seen(t, "light.d"), "on");
	/* the commit failed: the old state stays, the next get_states reports it again */
	commit(t, 0);
	ck_assert_str_eq(seen(t, "light.a"), "off");
	ck_assert_uint_eq(sync_states(t, "[{\"entity_id\":\"light.a\",\"state\":\"on\","
	    "\"last_changed\":\"t5\"}]", 21, &r), 1);
	ck_assert_str_eq(r.mid[1], "light.a@t5");       /* the same id: deduplicated */
	commit(t, 1);
	ck_assert_str_eq(seen(t, "light.a"), "on");
	ck_assert_uint_eq(sync_states(t, "[{\"entity_id\":\"light.a\",\"state\":\"on\","
	    "\"last_changed\":\"t5\"}]", 22, &r), 0);
	hass_track_free(t);
}
END_TEST

START_TEST(test_track_duplicate_and_new_entity)
{
	struct hass_track *t = tracker(30);
	struct reports r = { .answer = 0 };

	/* a duplicate (already journaled) is recorded at once, no cooldown started */
	event(t, "light.k", "off", "on", "t1", 100, &r);
	ck_assert_int_eq(r.n, 1);
	ck_assert_ptr_null(hass_track_batch(t));
	ck_assert_str_eq(seen(t, "light.k"), "on");
	r.answer = 1;
	event(t, "light.k", "on", "off", "t2", 101, &r);
	ck_assert_int_eq(r.n, 2);
	/* an entity seen first in a live event keeps its old state until committed */
	event(t, "light.new", NULL, "on", "t3", 102, &r);
	ck_assert_int_eq(r.n, 3);
	ck_assert_str_eq(r.text[2], "[Home Assistant] light.new: turned on");
	ck_assert_str_eq(seen(t, "light.new"), "unknown");
	commit(t, 0);
	ck_assert_str_eq(seen(t, "light.new"), "unknown");
	ck_assert_str_eq(seen(t, "light.k"), "on");
	hass_track_free(t);
}
END_TEST

/* ---- config ---- */

START_TEST(test_config_defaults_and_env)
{
	char err[512];
	const struct config_platform *p;
	struct config *c;

	unsetenv("HASS_HOME_CHANNEL");
	unsetenv("HASS_ALLOWED_USERS");
	c = config_parse("{\"platforms\":{\"homeassistant\":{\"token\":\"t\"}}}", "f", err,
	    sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	p = config_platform(c, "homeassistant");
	ck_assert_str_eq(p->allowed_users[0], "homeassistant");     /* events are allowed */
	ck_assert_ptr_null(p->allowed_users[1]);
	ck_assert_ptr_null(p->admins[0]);
	ck_assert_ptr_null(p->home_channel);
	config_free(c);

	setenv("HASS_HOME_CHANNEL", "mobile_app_phone", 1);
	c = config_parse("{\"platforms\":{\"homeassistant\":{\"allowed_users\":[\"x\"]}}}",
	    "f", err, sizeof(err));
	ck_assert_ptr_nonnull(c);
	p = config_platform(c, "homeassistant");
	ck_assert_str_eq(p->home_channel, "mobile_app_phone");
	ck_assert_str_eq(p->allowed_users[0], "x");
	config_free(c);
	unsetenv("HASS_HOME_CHANNEL");

	c = config_parse("{\"platforms\":{\"homeassistant\":{\"bogus\":1}}}", "f", err,
	    sizeof(err));
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(err, "platforms.homeassistant.bogus"));
}
END_TEST

/* ops.create on a section; returns the platform (freed by the caller) or NULL with err. */
static void *
create(struct event_base *base, const char *section, char *err, size_t len)
{
	cJSON *conf = js(section);
	struct plat_env env = { .base = base, .name = "homeassistant", .state_dir = "/nonexistent",
		.conf = conf, .listen_fd = -1 };
	void *p = homeassistant_ops.create(&env, err, len);

	cJSON_Delete(conf);
	return p;
}

START_TEST(test_create_errors)
{
	static const struct { const char *conf, *want; } cases[] = {
		{ "{}", "platforms.homeassistant.token: missing (set it, or HASS_TOKEN)" },
		{ "{\"token\":\"t\",\"url\":\"ftp://x\"}", "platforms.homeassistant.url" },
		{ "{\"token\":\"t\",\"watch_domains\":\"light\"}", "watch_domains: must be an array" },
		{ "{\"token\":\"t\",\"watch_entities\":[\"\"]}", "watch_entities: must be an array" },
		{ "{\"token\":\"t\",\"ignore_entities\":[1]}", "ignore_entities: must be an array" },
		{ "{\"token\":\"t\",\"watch_all\":\"yes\"}", "watch_all: must be true or false" },
		{ "{\"token\":\"t\",\"cooldown\":-1}", "cooldown: must be a number of seconds" },
		{ "{\"token\":\"t\",\"ping_interval\":0}", "ping_interval: must be a number" },
		{ "{\"token\":\"t\",\"limits\":{\"chat_rate\":\"fast\"}}", "limits" },
	};
	struct event_base *base = event_base_new();
	char err[512];
	size_t i;
	void *p;

	unsetenv("HASS_TOKEN");
	unsetenv("HASS_URL");
	setenv("HERMES_HOME", "/nonexistent", 1);
	for (i = 0; i < ARRAY_LEN(cases); i++) {
		err[0] = '\0';
		ck_assert_ptr_null(create(base, cases[i].conf, err, sizeof(err)));
		ck_assert_msg(strstr(err, cases[i].want) != NULL, "%s: %s", cases[i].conf, err);
	}
	setenv("HASS_TOKEN", "from-env", 1);
	setenv("HASS_URL", "https://ha.example:8123/", 1);
	p = create(base, "{\"watch_all\":true,\"cooldown\":0}", err, sizeof(err));
	ck_assert_msg(p != NULL, "%s", err);
	homeassistant_ops.free(p);
	setenv("HASS_URL", "not a url", 1);
	ck_assert_ptr_null(create(base, "{}", err, sizeof(err)));
	ck_assert_ptr_nonnull(strstr(err, "HASS_URL"));
	unsetenv("HASS_TOKEN");
	unsetenv("HASS_URL");
	event_base_free(base);
}
END_TEST

static Suite *
homeassistant_suite(void)
{
	Suite *s = suite_create("homeassistant");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, test_filter);
	tcase_add_test(tc, test_render_domains);
	tcase_add_test(tc, test_render_skips);
	tcase_add_test(tc, test_render_bounds_utf8);
	tcase_add_test(tc, test_message_id);
	tcase_add_test(tc, test_addresses);
	tcase_add_test(tc, test_snapshot_round_trip);
	tcase_add_test(tc, test_snapshot_damaged);
	tcase_add_test(tc, test_snapshot_file);
	tcase_add_test(tc, test_track_live);
	tcase_add_test(tc, test_track_cooldown);
	tcase_add_test(tc, test_track_sync);
	tcase_add_test(tc, test_track_duplicate_and_new_entity);
	tcase_add_test(tc, test_config_defaults_and_env);
	tcase_add_test(tc, test_create_errors);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(homeassistant_suite)
