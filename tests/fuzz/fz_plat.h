/*
 * fz_plat.h - what the platform harnesses share: a loopback listening
 * socket (handed to the console as an inherited one, so nothing binds a
 * fixed port), bringing a console up and any platform down, and the
 * console's identifier rule the invariants check.
 */
#ifndef HERMES_FZ_PLAT_H
#define HERMES_FZ_PLAT_H

#include <netinet/in.h>

#include <cjson/cJSON.h>

#include "fz_hub.h"
#include "platform.h"

struct event_base;

/*
 * Sets a platform harness up: fz_setup(), no token in the environment,
 * HERMES_HOME and the state directory (returned in *state_dir) in the
 * scratch directory.  Returns the harness's event base.
 */
struct event_base *fz_plat_init(char **state_dir);
/* A listening socket on 127.0.0.1 (an ephemeral port, written to *addr); aborts on failure. */
int fz_listen_loopback(struct sockaddr_in *addr);
/*
 * Creates and starts a console on listen_fd keeping its state in state,
 * with a bearer token when token is not NULL, reporting to a new fz_hub
 * instance configured by hc.  Aborts unless it comes up.
 */
void *fz_console_up(const struct fz_hub_conf *hc, const char *state, int listen_fd,
    const char *token);
/* Stops a platform, runs the loop until its stop callback, frees it. */
void fz_platform_down(struct event_base *base, const struct platform_ops *ops, void *self);
/* console.c's identifier rule: 1 to 128 bytes of UTF-8 without control characters. */
int fz_console_ident_ok(const char *s);
/* dir/name parsed as JSON; NULL when missing or not JSON. */
cJSON *fz_read_json(const char *dir, const char *name);

#endif
