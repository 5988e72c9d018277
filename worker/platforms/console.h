/*
 * console.h - the local console platform: a small HTTP API and web page.
 *
 * POST /v1/messages, GET /v1/chats/{chat_id}/messages (long-poll),
 * GET /v1/status and GET / (the web console), served by libevent's evhttp
 * on the worker's event_base.  Listens on 127.0.0.1:8642 by default (or on
 * a socket passed in LISTEN_FDS as "console").  A token, when set
 * (platforms.console.token or HERMES_CONSOLE_TOKEN), is required as
 * "Authorization: Bearer TOKEN" on every API request; binding anything but
 * loopback without one is a config error.
 *
 * State kept in state_dir: console.inbox.json (inbound messages not yet
 * handled when the worker stopped, replayed with the same ids by the next
 * worker), console.outbox.json (the bounded outbound log), console.journal
 * (what happened since those were written, for a worker that is killed)
 * and console.seq (the id counter's reserved high-water mark, so ids never
 * repeat even after a crash).  A message is acknowledged only once the
 * journal holds it (503 with Retry-After otherwise), and a reply is
 * recorded there before anyone sees it.  Without a token every local
 * process is trusted with every user id, admins included.
 */
#ifndef HERMES_CONSOLE_H
#define HERMES_CONSOLE_H

#include "platform.h"

extern const struct platform_ops console_ops;

#endif
