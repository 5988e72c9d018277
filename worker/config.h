/*
 * config.h - the gateway's JSON configuration, secrets and environment.
 *
 * Only the secret lookup is declared here so far; the worker core adds
 * the rest.
 */
#ifndef HERMES_CONFIG_H
#define HERMES_CONFIG_H

/*
 * Looks a secret up by its environment name (e.g. "TELEGRAM_BOT_TOKEN"):
 * the environment, then $HERMES_HOME/.env, then a file of that name in
 * $CREDENTIALS_DIRECTORY (systemd LoadCredential=).  Returns a newly
 * allocated string (trailing newline stripped) or NULL.  Never logs the
 * value.
 */
char *config_secret(const char *name);

#endif
