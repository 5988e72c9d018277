/*
 * commands.h - the gateway's own chat commands: parsing and reply texts.
 *
 * Commands are handled by the hub and never sent to the agent.  A
 * "/cmd@botname" form is the platform's business: it strips what is
 * addressed to this bot, so a remaining '@' means "not ours".
 */
#ifndef HERMES_COMMANDS_H
#define HERMES_COMMANDS_H

#include <cjson/cJSON.h>

enum cmd {
	CMD_NONE = 0,                   /* not a gateway command: goes to the agent */
	CMD_HELP,
	CMD_STATUS,
	CMD_PING,
	CMD_NEW,
	CMD_RESET,
	CMD_STOP,
	CMD_WHOAMI,
	CMD_RESTART,
};

/*
 * Parses text: "/name" or "/name args", name case-insensitive, leading
 * spaces allowed.  Returns CMD_NONE for anything else (plain text, an
 * unknown command, "/name@other").  *args (may be NULL) points at the
 * arguments, or at "".
 */
enum cmd cmd_parse(const char *text, const char **args);
/* "help", "status", ... */
const char *cmd_name(enum cmd c);
/* 1 for commands only admins may run. */
int cmd_admin_only(enum cmd c);
/*
 * Whether user_id may /stop an agent call that owner_id started: one's
 * own call, or anyone's for an admin.  In a shared session (a group
 * thread, a forum topic) members never stop each other's answers.
 */
int cmd_may_stop(const char *owner_id, const char *user_id, int admin);
/* The reply to a /stop that cmd_may_stop() refused. */
#define CMD_STOP_REFUSED "Only the user who asked, or an admin, can stop this answer."
/* The /help reply. */
const char *cmd_help_text(void);
/* The /status reply built from hub_status_json(); newly allocated. */
char *cmd_status_text(const cJSON *status);

#endif
