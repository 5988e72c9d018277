/*
 * args.h - the supervisor's command line (a contract: see --help).
 *
 * args_parse() only borrows strings from argv; args_free() releases the
 * arrays it allocated.
 */
#ifndef HERMES_SUP_ARGS_H
#define HERMES_SUP_ARGS_H

#include <stddef.h>
#include <stdint.h>

enum sup_cmd {
	CMD_RUN, CMD_STATUS, CMD_RESTART, CMD_STOP, CMD_HELP, CMD_VERSION,
	CMD_INSTALL, CMD_UNINSTALL
};

struct sup_args {
	enum sup_cmd cmd;
	int foreground;
	int replace;
	const char *config;
	const char *runtime_dir;
	const char *pidfile;
	uint64_t stop_timeout;          /* microseconds */
	uint64_t watchdog;              /* microseconds; 0 = none */
	uint64_t backoff_max;           /* microseconds */
	unsigned crash_limit;           /* failures ... */
	uint64_t crash_window;          /* ... within this many microseconds */
	const char **listen;            /* NAME=ADDR:PORT specs */
	size_t nlisten;
	char **worker_argv;             /* after "--", NULL-terminated; NULL if none */
};

/*
 * Parses argv into a (defaults first).  Returns 0, or -1 with a message
 * for the user in err.
 */
int args_parse(struct sup_args *a, int argc, char **argv, char *err, size_t errsz);
void args_free(struct sup_args *a);
/* The --help text. */
const char *args_usage(void);

#endif
