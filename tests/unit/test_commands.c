/* test_commands.c - command parsing and reply texts. */
#include <check.h>
#include <string.h>

#include "commands.h"
#include "unit_util.h"

START_TEST(test_parse)
{
	const char *args;

	ck_assert_int_eq(cmd_parse("/help", NULL), CMD_HELP);
	ck_assert_int_eq(cmd_parse("/status", NULL), CMD_STATUS);
	ck_assert_int_eq(cmd_parse("/ping", NULL), CMD_PING);
	ck_assert_int_eq(cmd_parse("/new", NULL), CMD_NEW);
	ck_assert_int_eq(cmd_parse("/reset", NULL), CMD_RESET);
	ck_assert_int_eq(cmd_parse("/stop", NULL), CMD_STOP);
	ck_assert_int_eq(cmd_parse("/whoami", NULL), CMD_WHOAMI);
	ck_assert_int_eq(cmd_parse("/restart", NULL), CMD_RESTART);
	ck_assert_int_eq(cmd_parse("  /RESTART\n", NULL), CMD_RESTART);
	ck_assert_int_eq(cmd_parse("/Ping now please", &args), CMD_PING);
	ck_assert_str_eq(args, "now please");
	ck_assert_int_eq(cmd_parse("/help", &args), CMD_HELP);
	ck_assert_str_eq(args, "");
}
END_TEST

START_TEST(test_not_commands)
{
	ck_assert_int_eq(cmd_parse("hello", NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse("", NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse(NULL, NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse("/", NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse("/restarting", NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse("/restart@otherbot", NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse("/unknown", NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse("please /restart", NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse("/re-start", NULL), CMD_NONE);
	ck_assert_int_eq(cmd_parse("//restart", NULL), CMD_NONE);
}
END_TEST

START_TEST(test_names_and_rights)
{
	ck_assert_str_eq(cmd_name(CMD_RESTART), "restart");
	ck_assert_str_eq(cmd_name(CMD_WHOAMI), "whoami");
	ck_assert_int_eq(cmd_admin_only(CMD_RESTART), 1);
	ck_assert_int_eq(cmd_admin_only(CMD_STATUS), 0);
	ck_assert_int_eq(cmd_admin_only(CMD_STOP), 0);
	ck_assert_ptr_nonnull(strstr(cmd_help_text(), "/restart"));
	ck_assert_ptr_nonnull(strstr(cmd_help_text(), "/whoami"));
}
END_TEST

START_TEST(test_stop_rights)
{
	/* One's own call, or an admin; never another member's. */
	ck_assert_int_eq(cmd_may_stop("alice", "alice", 0), 1);
	ck_assert_int_eq(cmd_may_stop("alice", "mallory", 0), 0);
	ck_assert_int_eq(cmd_may_stop("alice", "boss", 1), 1);
	ck_assert_int_eq(cmd_may_stop(NULL, "mallory", 0), 0);
	ck_assert_int_eq(cmd_may_stop("alice", NULL, 0), 0);
	ck_assert_int_eq(cmd_may_stop("alice", "Alice", 0), 0);
	ck_assert_ptr_nonnull(strstr(cmd_help_text(), "/stop - cancel your running answer"));
}
END_TEST

START_TEST(test_status_text)
{
	cJSON *st = cJSON_Parse("{\"worker_pid\": 42, \"supervisor_pid\": 7, \"generation\": 3,"
	    "\"uptime\": 3725.5, \"platforms\": [{\"name\": \"console\", \"state\": \"up\","
	    "\"since\": 1, \"detail\": null}, {\"name\": \"telegram\", \"state\": \"backoff\","
	    "\"since\": 2, \"detail\": \"409 Conflict\"}], \"agent\": \"echo\", \"sessions\": 5,"
	    "\"memory_kb\": 4000}");
	char *t = cmd_status_text(st);

	ck_assert_ptr_nonnull(strstr(t, "worker pid: 42\n"));
	ck_assert_ptr_nonnull(strstr(t, "supervisor pid: 7\n"));
	ck_assert_ptr_nonnull(strstr(t, "generation: 3\n"));
	ck_assert_ptr_nonnull(strstr(t, "uptime: 1h 2m 5s\n"));
	ck_assert_ptr_nonnull(strstr(t, "console: up\n"));
	ck_assert_ptr_nonnull(strstr(t, "telegram: backoff (409 Conflict)\n"));
	ck_assert_ptr_nonnull(strstr(t, "agent: echo\n"));
	ck_assert_ptr_nonnull(strstr(t, "active sessions: 5\n"));
	ck_assert_ptr_nonnull(strstr(t, "memory: 4000 KiB"));
	free(t);
	cJSON_Delete(st);
	st = cJSON_Parse("{\"worker_pid\": 1, \"supervisor_pid\": null, \"platforms\": []}");
	t = cmd_status_text(st);
	ck_assert_ptr_nonnull(strstr(t, "supervisor pid: none"));
	free(t);
	cJSON_Delete(st);
}
END_TEST

static Suite *
commands_suite(void)
{
	Suite *s = suite_create("commands");
	TCase *tc = tcase_create("commands");

	tcase_add_test(tc, test_parse);
	tcase_add_test(tc, test_not_commands);
	tcase_add_test(tc, test_names_and_rights);
	tcase_add_test(tc, test_stop_rights);
	tcase_add_test(tc, test_status_text);
	suite_add_tcase(s, tc);
	return s;
}

RUN_SUITE(commands_suite)
