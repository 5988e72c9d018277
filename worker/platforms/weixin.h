/*
 * weixin.h - Weixin (WeChat) through Tencent's iLink bot API, on the
 * platform kit: a long poll of ilink/bot/getupdates for messages,
 * sendmessage for replies.
 *
 * Nothing is lost across a restart: the opaque get_updates_buf cursor is
 * the acknowledgement (the server replays whatever came after the cursor
 * it is sent), and the kit's long-poll driver commits it with the journal
 * before the next poll, so the server never hears a cursor past a message
 * the journal does not hold.  A worker killed before that resends the
 * old cursor, the batch comes again, and the journal's handled set drops
 * what was already answered.  Replies echo the peer's latest
 * context_token (kept in <state_dir>/<name>.context-tokens.json, written
 * atomically before the batch that brought it is committed) and carry a
 * client_id derived from the reply's key, the same on every retry.
 *
 * Errors come as HTTP 200 with ret/errcode: -14 is an expired session
 * (state "unauthorized", slow retries, the account file read again on
 * each, so a new `hermes-worker login weixin` is picked up), -2 a rate
 * limit or a stale context_token (backoff and retries; a reply is never
 * dropped without a log line).
 *
 * The protocol's pure parts are in ilink.h.
 */
#ifndef HERMES_WEIXIN_H
#define HERMES_WEIXIN_H

#include "platform.h"

extern const struct platform_ops weixin_ops;

#endif
