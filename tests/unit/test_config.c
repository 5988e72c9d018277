/* test_config.c - loading, validation errors, environment overrides, secrets. */
#include <check.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "platform.h"
#include "util.h"
#include "unit_util.h"

static char *home;

static void
setup(void)
{
	static const char *const vars[] = {
		"CONSOLE_ALLOWED_USERS", "CONSOLE_ALLOW_ALL_USERS", "CONSOLE_HOME_CHANNEL",
		"GATEWAY_ALLOWED_USERS", "GATEWAY_ALLOW_ALL_USERS", "HERMES_CONSOLE_TOKEN",
		"CREDENTIALS_DIRECTORY", "TEST_SECRET", NULL
	};
	size_t i;

	for (i = 0; vars[i] != NULL; i++)
		unsetenv(vars[i]);
	home = tmpdir_new();
	setenv("HERMES_HOME", home, 1);
}

static void
teardown(void)
{
	tmpdir_free(home);
}

/* Parses text and expects an error containing each of the given fragments. */
static void
expect_error(const char *text, const char *frag1, const char *frag2)
{
	char err[512] = "";
	struct config *c = config_parse(text, "/etc/gw.json", err, sizeof(err));

	ck_assert_msg(c == NULL, "accepted: %s", text);
	ck_assert_msg(strstr(err, "/etc/gw.json") != NULL, "no file name in: %s", err);
	ck_assert_msg(strstr(err, frag1) != NULL, "\"%s\" not in: %s", frag1, err);
	if (frag2 != NULL)
		ck_assert_msg(strstr(err, frag2) != NULL, "\"%s\" not in: %s", frag2, err);
}

START_TEST(test_embedded_default)
{
	char err[512];
	struct config *c = config_load(NULL, err, sizeof(err));
	const struct config_platform *p;
	char *state = NULL;

	ck_assert_ptr_nonnull(c);
	ck_assert_ptr_null(c->path);
	p = config_platform(c, "console");
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(p->enabled, 1);
	ck_assert_str_eq(p->allowed_users[0], "*");
	ck_assert_str_eq(p->admins[0], "local");
	ck_assert_str_eq(cJSON_GetObjectItem(p->section, "listen")->valuestring, "127.0.0.1:8642");
	ck_assert_str_eq(cJSON_GetObjectItem(c->agent, "backend")->valuestring, "echo");
	ck_assert(asprintf(&state, "%s/state", home) > 0);
	ck_assert_str_eq(c->state_dir, state);
	ck_assert_uint_eq(c->drain_usec, 10000000);
	free(state);
	config_free(c);
}
END_TEST

START_TEST(test_default_file_used)
{
	char err[512];
	struct config *c;

	file_put(home, "gateway.json", "{\"drain_timeout\": 2.5, \"state_dir\": \"/x/y\","
	    "\"platforms\": {\"console\": {\"enabled\": false}}}", 0600);
	c = config_load(NULL, err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_ptr_nonnull(c->path);
	ck_assert_uint_eq(c->drain_usec, 2500000);
	ck_assert_str_eq(c->state_dir, "/x/y");
	ck_assert_int_eq(config_platform(c, "console")->enabled, 0);
	config_free(c);
}
END_TEST

START_TEST(test_explicit_missing_file)
{
	char err[512], path[512];
	struct config *c;

	snprintf(path, sizeof(path), "%s/nope.json", home);
	c = config_load(path, err, sizeof(err));
	ck_assert_ptr_null(c);
	ck_assert_ptr_nonnull(strstr(err, path));
	ck_assert_ptr_nonnull(strstr(err, "No such file"));
}
END_TEST

START_TEST(test_bad_json)
{
	expect_error("{\"platforms\": {\n\"console\": {,}}}", "not valid JSON", "line 2");
	expect_error("", "not valid JSON", NULL);
	expect_error("[1, 2]", "must be a JSON object", NULL);
}
END_TEST

START_TEST(test_unknown_keys)
{
	expect_error("{\"bogus\": 1}", "key \"bogus\"", "unknown key");
	expect_error("{\"platforms\": {\"console\": {\"lisen\": \"x\"}}}",
	    "key \"platforms.console.lisen\"", "unknown key");
	expect_error("{\"platforms\": {\"nosuch\": {}}}", "key \"platforms.nosuch\"",
	    "unknown platform");
	expect_error("{\"tls\": {\"cafile\": \"x\"}}", "key \"tls.cafile\"", "unknown key");
}
END_TEST

START_TEST(test_wrong_types)
{
	expect_error("{\"state_dir\": 5}", "key \"state_dir\"", "string");
	expect_error("{\"state_dir\": \"\"}", "key \"state_dir\"", "string");
	expect_error("{\"drain_timeout\": \"10\"}", "key \"drain_timeout\"", "seconds");
	expect_error("{\"drain_timeout\": -1}", "key \"drain_timeout\"", "seconds");
	expect_error("{\"drain_timeout\": 99999}", "key \"drain_timeout\"", "seconds");
	expect_error("{\"tls\": \"x\"}", "key \"tls\"", "object");
	expect_error("{\"tls\": {\"ca_file\": 1}}", "key \"tls.ca_file\"", "string");
	expect_error("{\"agent\": \"echo\"}", "key \"agent\"", "object");
	expect_error("{\"platforms\": []}", "key \"platforms\"", "object");
	expect_error("{\"platforms\": {\"console\": 1}}", "key \"platforms.console\"", "object");
	expect_error("{\"platforms\": {\"console\": {\"enabled\": \"yes\"}}}",
	    "key \"platforms.console.enabled\"", "true or false");
	expect_error("{\"platforms\": {\"console\": {\"allowed_users\": \"*\"}}}",
	    "key \"platforms.console.allowed_users\"", "array of strings");
	expect_error("{\"platforms\": {\"console\": {\"admins\": [1]}}}",
	    "key \"platforms.console.admins\"", "array of strings");
	expect_error("{\"platforms\": {\"console\": {\"home_channel\": 7}}}",
	    "key \"platforms.console.home_channel\"", "string or null");
	expect_error("{\"platforms\": {\"console\": {}, \"console\": {}}}",
	    "key \"platforms.console\"", "twice");
}
END_TEST

/* A key given twice anywhere is refused, naming its path (cJSON would keep both). */
START_TEST(test_duplicate_keys)
{
	char *wide = xstrdup("{\"agent\": {"), *t;
	char err[512];
	struct config *c;
	int i;

	expect_error("{\"drain_timeout\": 1, \"drain_timeout\": 2}", "key \"drain_timeout\"",
	    "given twice");
	expect_error("{\"platforms\": {\"console\": {\"token\": \"first\", "
	    "\"listen\": \"127.0.0.1:1\", \"token\": \"second\"}}}",
	    "key \"platforms.console.token\"", "given twice");
	expect_error("{\"agent\": {\"backend\": \"exec\", \"env\": [{\"a\": 1}, "
	    "{\"b\": 1, \"b\": 2}]}}", "key \"agent.env[1].b\"", "given twice");
	expect_error("{\"platforms\": {\"console\": {}, \"console\": {}}}",
	    "key \"platforms.console\"", "given twice");
	/* Case matters: these are two keys (the second one is unknown). */
	expect_error("{\"state_dir\": \"/a\", \"State_dir\": \"/b\"}", "key \"State_dir\"",
	    "unknown key");
	/* A wide object without duplicates is fine; one at its end is found. */
	for (i = 0; i < 5000; i++) {
		t = xasprintf("%s\"k%d\": %d, ", wide, i, i);
		free(wide);
		wide = t;
	}
	t = xasprintf("%s\"last\": 0}}", wide);
	c = config_parse(t, "/etc/gw.json", err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	config_free(c);
	free(t);
	t = xasprintf("%s\"k4321\": 0}}", wide);
	expect_error(t, "key \"agent.k4321\"", "given twice");
	free(t);
	free(wide);
}
END_TEST

START_TEST(test_sessions_section)
{
	char err[512];
	struct config *c = config_parse("{}", "/etc/gw.json", err, sizeof(err));

	ck_assert_ptr_nonnull(c);
	ck_assert_uint_eq(c->sessions.idle_usec, 600000000ULL);
	ck_assert_uint_eq(c->sessions.max_age_sec, 30 * 86400);
	ck_assert_uint_eq(c->sessions.max_count, 0);
	ck_assert_uint_eq(c->sessions.max_bytes, 1ULL << 30);
	config_free(c);
	c = config_parse("{\"sessions\": {\"idle_timeout\": 1.5, \"max_age\": 0, "
	    "\"max_count\": 500, \"max_bytes\": 9007199254740992}}", "/etc/gw.json", err,
	    sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	ck_assert_uint_eq(c->sessions.idle_usec, 1500000);
	ck_assert_uint_eq(c->sessions.max_age_sec, 0);
	ck_assert_uint_eq(c->sessions.max_count, 500);
	ck_assert_uint_eq(c->sessions.max_bytes, 9007199254740992ULL);
	config_free(c);
	expect_error("{\"sessions\": 1}", "key \"sessions\"", "object");
	expect_error("{\"sessions\": {\"max_files\": 1}}", "key \"sessions.max_files\"",
	    "unknown key");
}
END_TEST

/*
 * Every number read from the configuration is range-checked before it is
 * converted: a value beyond the target type (1e300, 1e999 = infinity,
 * 2^64) would be undefined behaviour in the cast.
 */
START_TEST(test_number_ranges)
{
	static const char *const bad[] = {
		"-1", "1.5", "1e300", "1e999", "-1e999", "18446744073709551616", "\"10\"", "true",
		"[]", NULL
	};
	char text[256];
	size_t i;

	for (i = 0; bad[i] != NULL; i++) {
		snprintf(text, sizeof(text), "{\"sessions\": {\"max_age\": %s}}", bad[i]);
		expect_error(text, "key \"sessions.max_age\"", "whole number");
		snprintf(text, sizeof(text), "{\"sessions\": {\"max_count\": %s}}", bad[i]);
		expect_error(text, "key \"sessions.max_count\"", "whole number");
	}
	expect_error("{\"sessions\": {\"max_bytes\": 9007199254740993e3}}",
	    "key \"sessions.max_bytes\"", "from 0 to 9007199254740992");
	expect_error("{\"sessions\": {\"idle_timeout\": 0}}", "key \"sessions.idle_timeout\"",
	    "seconds from 0.1 to");
	expect_error("{\"sessions\": {\"idle_timeout\": 1e999}}",
	    "key \"sessions.idle_timeout\"", "seconds");
	expect_error("{\"drain_timeout\": 1e999}", "key \"drain_timeout\"",
	    "seconds from 0 to 3600");
	expect_error("{\"drain_timeout\": -1e-9}", "key \"drain_timeout\"", "seconds");
}
END_TEST

/* The getters others use: absent, null, in range, out of range. */
START_TEST(test_getters)
{
	cJSON *o = cJSON_Parse("{\"n\": 7, \"z\": null, \"big\": 1e20, \"s\": 0.25, "
	    "\"neg\": -0.5}");
	uint64_t v = 99;
	char err[256];

	ck_assert_int_eq(config_get_uint(o, "none", "x.none", 0, 10, &v, err, sizeof(err)), 0);
	ck_assert_int_eq(config_get_uint(o, "z", "x.z", 0, 10, &v, err, sizeof(err)), 0);
	ck_assert_uint_eq(v, 99);
	ck_assert_int_eq(config_get_uint(o, "n", "x.n", 0, 10, &v, err, sizeof(err)), 1);
	ck_assert_uint_eq(v, 7);
	ck_assert_int_eq(config_get_uint(o, "n", "x.n", 8, 10, &v, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "key \"x.n\": expected a whole number from 8 to 10");
	ck_assert_int_eq(config_get_uint(o, "big", "x.big", 0, 1ULL << 53, &v, err,
	    sizeof(err)), -1);
	ck_assert_uint_eq(v, 7);
	ck_assert_int_eq(config_get_seconds(o, "s", "x.s", 0, 1000000, &v, err, sizeof(err)), 1);
	ck_assert_uint_eq(v, 250000);
	ck_assert_int_eq(config_get_seconds(o, "neg", "x.neg", 0, 1000000, &v, err,
	    sizeof(err)), -1);
	ck_assert_str_eq(err, "key \"x.neg\": expected a number of seconds from 0 to 1");
	ck_assert_int_eq(config_get_seconds(o, "big", "x.big", 0, 1000000, &v, err,
	    sizeof(err)), -1);
	cJSON_Delete(o);
}
END_TEST

START_TEST(test_platform_keys_and_lists)
{
	char err[512];
	struct config *c = config_parse("{\"platforms\": {\"console\": {\"listen\": \"127.0.0.1:1\","
	    "\"token\": null, \"allowed_users\": [\"alice\", \"@bob\"], \"admins\": [],"
	    "\"home_channel\": \"home\"}}}", "f", err, sizeof(err));
	const struct config_platform *p;

	ck_assert_msg(c != NULL, "%s", err);
	p = config_platform(c, "console");
	ck_assert_ptr_eq(p->ops, platform_find("console"));
	ck_assert_str_eq(p->allowed_users[0], "alice");
	ck_assert_str_eq(p->allowed_users[1], "@bob");
	ck_assert_ptr_null(p->allowed_users[2]);
	ck_assert_ptr_null(p->admins[0]);
	ck_assert_str_eq(p->home_channel, "home");
	ck_assert_ptr_null(config_platform(c, "telegram"));
	config_free(c);
}
END_TEST

/* A platform's own environment names and defaults come from its ops, not config.c. */
START_TEST(test_env_names_from_platform_ops)
{
	char err[512];
	struct config *c;
	const struct config_platform *p;

	setenv("QQ_ALLOWED_USERS", "o1,o2", 1);
	setenv("QQBOT_HOME_CHANNEL", "group:g1", 1);
	setenv("HASS_HOME_CHANNEL", "notify.phone", 1);
	c = config_parse("{\"platforms\": {\"qqbot\": {}, \"homeassistant\": {}, "
	    "\"console\": {}}}", "f", err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	p = config_platform(c, "qqbot");
	ck_assert_str_eq(p->allowed_users[0], "o1");
	ck_assert_str_eq(p->allowed_users[1], "o2");
	ck_assert_str_eq(p->home_channel, "group:g1");
	p = config_platform(c, "homeassistant");
	ck_assert_str_eq(p->allowed_users[0], "homeassistant");
	ck_assert_str_eq(p->home_channel, "notify.phone");
	p = config_platform(c, "console");
	ck_assert_str_eq(p->allowed_users[0], "*");
	ck_assert_str_eq(p->admins[0], "local");
	config_free(c);
	unsetenv("QQ_ALLOWED_USERS");
	unsetenv("QQBOT_HOME_CHANNEL");
	unsetenv("HASS_HOME_CHANNEL");
}
END_TEST

START_TEST(test_env_overrides)
{
	char err[512];
	struct config *c;
	const struct config_platform *p;

	setenv("CONSOLE_ALLOWED_USERS", " ann, bo ,,cy ", 1);
	setenv("CONSOLE_HOME_CHANNEL", "room1", 1);
	setenv("GATEWAY_ALLOWED_USERS", "zed,@yan", 1);
	setenv("HERMES_CONSOLE_TOKEN", "s3cret", 1);
	c = config_parse("{\"platforms\": {\"console\": {\"allowed_users\": [\"x\"],"
	    "\"home_channel\": \"h\", \"token\": \"filetoken\"}}}", "f", err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	p = config_platform(c, "console");
	ck_assert_str_eq(p->allowed_users[0], "ann");
	ck_assert_str_eq(p->allowed_users[1], "bo");
	ck_assert_str_eq(p->allowed_users[2], "cy");
	ck_assert_ptr_null(p->allowed_users[3]);
	ck_assert_str_eq(p->home_channel, "room1");
	ck_assert_str_eq(c->gateway_allowed[0], "zed");
	ck_assert_str_eq(c->gateway_allowed[1], "@yan");
	ck_assert_int_eq(c->gateway_allow_all, 0);
	ck_assert_str_eq(cJSON_GetObjectItem(p->section, "token")->valuestring, "s3cret");
	config_free(c);

	setenv("CONSOLE_ALLOW_ALL_USERS", "true", 1);
	setenv("GATEWAY_ALLOW_ALL_USERS", "1", 1);
	c = config_parse("{\"platforms\": {\"console\": {}}}", "f", err, sizeof(err));
	ck_assert_msg(c != NULL, "%s", err);
	p = config_platform(c, "console");
	ck_assert_str_eq(p->allowed_users[0], "*");
	ck_assert_int_eq(c->gateway_allow_all, 1);
	/* The token is added when the file has none. */
	ck_assert_str_eq(cJSON_GetObjectItem(p->section, "token")->valuestring, "s3cret");
	config_free(c);
}
END_TEST

START_TEST(test_split_list)
{
	char **l = config_split_list("a,b , c,, ");

	ck_assert_str_eq(l[0], "a");
	ck_assert_str_eq(l[1], "b");
	ck_assert_str_eq(l[2], "c");
	ck_assert_ptr_null(l[3]);
	ck_assert_int_eq(config_list_has(l, "b"), 1);
	ck_assert_int_eq(config_list_has(l, "d"), 0);
	config_list_free(l);
	l = config_split_list(NULL);
	ck_assert_ptr_null(l[0]);
	config_list_free(l);
}
END_TEST

START_TEST(test_dotenv)
{
	const char *text =
	    "# comment\n"
	    "\n"
	    "PLAIN=value1\n"
	    "export EXPORTED=value2\n"
	    "  SPACED = value3   \n"
	    "DQ=\"quoted # not a comment\"\n"
	    "SQ='single \\n raw'\n"
	    "ESC=\"a\\\"b\\nc\"\n"
	    "INLINE=abc # trailing comment\n"
	    "HASH=abc#def\n"
	    "EMPTY=\n"
	    "CRLF=win\r\n"
	    "TWICE=first\n"
	    "TWICE=second\n"
	    "PLAINX=wrong\n";
	char *v;

#define EXPECT(k, want) do { v = config_dotenv_get(text, k); \
	ck_assert_msg(v != NULL, "%s missing", k); ck_assert_str_eq(v, want); free(v); } while (0)
	EXPECT("PLAIN", "value1");
	EXPECT("EXPORTED", "value2");
	EXPECT("SPACED", "value3");
	EXPECT("DQ", "quoted # not a comment");
	EXPECT("SQ", "single \\n raw");
	EXPECT("ESC", "a\"b\nc");
	EXPECT("INLINE", "abc");
	EXPECT("HASH", "abc#def");
	EXPECT("EMPTY", "");
	EXPECT("CRLF", "win");
	EXPECT("TWICE", "second");
#undef EXPECT
	ck_assert_ptr_null(config_dotenv_get(text, "MISSING"));
	ck_assert_ptr_null(config_dotenv_get(text, "PLAI"));
	ck_assert_ptr_null(config_dotenv_get(text, "comment"));
}
END_TEST

START_TEST(test_secret_sources)
{
	char *creds = tmpdir_new();
	char *v;

	/* Nowhere. */
	ck_assert_ptr_null(config_secret("TEST_SECRET"));
	/* Credentials directory (trailing newline stripped). */
	setenv("CREDENTIALS_DIRECTORY", creds, 1);
	file_put(creds, "TEST_SECRET", "from-creds\n", 0600);
	v = config_secret("TEST_SECRET");
	ck_assert_str_eq(v, "from-creds");
	free(v);
	/* .env wins over the credentials directory. */
	file_put(home, ".env", "OTHER=1\nTEST_SECRET=\"from-dotenv\"\n", 0600);
	v = config_secret("TEST_SECRET");
	ck_assert_str_eq(v, "from-dotenv");
	free(v);
	/* The environment wins over both. */
	setenv("TEST_SECRET", "from-env", 1);
	v = config_secret("TEST_SECRET");
	ck_assert_str_eq(v, "from-env");
	free(v);
	unsetenv("TEST_SECRET");
	/* Names that could escape the credentials directory are never read. */
	file_put(home, "x", "nope", 0600);
	ck_assert_ptr_null(config_secret("../x"));
	/* An empty credential file is no secret. */
	file_put(creds, "EMPTY_ONE", "\n", 0600);
	ck_assert_ptr_null(config_secret("EMPTY_ONE"));
	unsetenv("CREDENTIALS_DIRECTORY");
	tmpdir_free(creds);
}
END_TEST

START_TEST(test_hermes_home_default)
{
	char *h;

	unsetenv("HERMES_HOME");
	setenv("HOME", "/home/someone", 1);
	h = config_hermes_home();
	ck_assert_str_eq(h, "/home/someone/.hermes");
	free(h);
}
END_TEST

static Suite *
config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_embedded_default);
	tcase_add_test(tc, test_default_file_used);
	tcase_add_test(tc, test_explicit_missing_file);
	tcase_add_test(tc, test_bad_json);
	tcase_add_test(tc, test_unknown_keys);
	tcase_add_test(tc, test_wrong_types);
	tcase_add_test(tc, test_duplicate_keys);
	tcase_add_test(tc, test_sessions_section);
	tcase_add_test(tc, test_number_ranges);
	tcase_add_test(tc, test_getters);
	tcase_add_test(tc, test_platform_keys_and_lists);
	tcase_add_test(tc, test_env_overrides);
	tcase_add_test(tc, test_env_names_from_platform_ops);
	tcase_add_test(tc, test_split_list);
	tcase_add_test(tc, test_dotenv);
	tcase_add_test(tc, test_secret_sources);
	tcase_add_test(tc, test_hermes_home_default);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(config_suite)
