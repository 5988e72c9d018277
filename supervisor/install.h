/*
 * install.h - `hermes-supervisor install-service` and `uninstall-service`.
 *
 * Generates a systemd unit for the gateway (system or user manager, one
 * per profile name), writes it, reloads systemd and enables it; or prints
 * it with --dry-run.  Libc only; its inputs are the command line and the
 * environment, never anything from the network.
 *
 * Every returned string is newly allocated and freed by the caller.
 */
#ifndef HERMES_INSTALL_H
#define HERMES_INSTALL_H

/* Longest profile name accepted by --name. */
#define INSTALL_NAME_MAX 64

/* What the unit is generated from; all strings borrowed. */
struct install_opts {
	int user;               /* 1: a user unit (systemctl --user) */
	const char *name;       /* profile name, or NULL for the default profile */
	const char *bindir;     /* absolute directory holding hermes-supervisor */
	const char *config;     /* absolute config path, or NULL for the default */
};

/*
 * Entry point of both subcommands: argv[0] is "install-service" or
 * "uninstall-service", followed by the options
 *   [--user|--system] [--config FILE] [--name NAME] [--dry-run].
 * Returns the process exit status: 0 done, 1 failure, 2 usage error.
 */
int install_service_main(int argc, char **argv);

/* 1 when name is a usable profile name ([A-Za-z0-9_-], 1..64, not starting with '-'). */
int install_name_valid(const char *name);

/* "hermes-gateway.service", or "hermes-gateway-NAME.service" for a profile. */
char *install_unit_name(const char *name);

/*
 * Quotes one word for a unit file: '%' becomes "%%", and for an Exec*=
 * line (exec = 1) '$' becomes "$$"; a word with blanks, quotes or
 * backslashes is put in double quotes with C escapes.  Returns NULL when
 * the word holds a control character or is empty (it cannot be written).
 */
char *install_quote(const char *word, int exec);

/*
 * The unit's text.  Returns NULL when a path cannot be written into a
 * unit file (control characters) or the name is invalid.
 */
char *install_unit_text(const struct install_opts *o);

/*
 * The directory the unit goes to: /etc/systemd/system, or for a user
 * unit $XDG_CONFIG_HOME/systemd/user (default ~/.config/systemd/user).
 * Returns NULL when neither XDG_CONFIG_HOME nor HOME is set.
 */
char *install_unit_dir(int user);

#endif
