/*
 * hub.h - routing between platforms, sessions, commands and the agent.
 *
 * This header holds the part of the hub's API that platforms use; the
 * worker's main sets the hub up (see the rest of the declarations below).
 */
#ifndef HERMES_HUB_H
#define HERMES_HUB_H

#include "platform.h"

struct hub;

/*
 * Hands one inbound message to the hub.  The hub copies what it keeps and
 * calls done(arg) exactly once when the message is handled (answered,
 * refused, ignored, recognized as a duplicate, or a command done), so the
 * platform may then acknowledge it to its server.  During a restart drain
 * the hub does not take the message: done is not called, and the platform
 * must leave it unacknowledged for the next worker.
 */
void hub_inbound(struct hub *h, const char *platform, const struct inbound *m,
    plat_done_fn done, void *arg);

/* A platform reports a state change; detail (may be NULL) says why. */
void hub_platform_state(struct hub *h, const char *platform, enum plat_state st,
    const char *detail);

#endif
