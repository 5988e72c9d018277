/*
 * homeassistant.h - the Home Assistant platform: state_changed events from
 * the WebSocket API become messages to the agent, its replies go out as
 * persistent notifications (or through a notify service), on the kit.
 *
 * Home Assistant is not a chat: it pushes state changes and replays none
 * of them to a new connection.  What survives a restart is a snapshot of
 * the last state seen of every watched entity (<state_dir>/<name>.states,
 * see hass.h), which only holds states whose report the journal already
 * has: after each connect the worker subscribes, then asks for get_states
 * and reports every watched entity whose state differs from the snapshot,
 * once.  The message id of a change derives from the entity and its
 * last_changed, so a change seen live and again in get_states (or
 * replayed from the journal) is one message.  Lost by design: states an
 * entity took and left again while no worker was connected.
 *
 * Every event comes from the user "homeassistant" in the chat "ha_events"
 * (a group chat, always addressed); replies to that chat are persistent
 * notifications, replies to any other chat id go to notify.<chat id>.
 */
#ifndef HERMES_HOMEASSISTANT_H
#define HERMES_HOMEASSISTANT_H

#include "platform.h"

extern const struct platform_ops homeassistant_ops;

#endif
