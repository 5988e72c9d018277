#!/usr/bin/python3
"""A protocol-faithful fake of the QQ Bot open platform (API v2), for tests.

TLS on 127.0.0.1 with a certificate from a throwaway CA (trustme, written to
<dir>/ca.pem), one port for all of it: the token endpoint
(POST /app/getAppAccessToken, bots.qq.com in reality), the OpenAPI (GET
/gateway, the message endpoints) and the gateway WebSocket (/websocket/, the
url GET /gateway returns); a plain-HTTP control port for tests.

Facts, from tencent-connect/bot-docs (api-use.md, event-emit.md, send.md,
error-trace/websocket.md, openapi/error/error.md) and botpy (gateway.py,
flags.py); [I] marks what the docs leave open and the fake decides:
- The token: {appId, clientSecret} -> {access_token, expires_in} with
  expires_in a string ("7200"); a new token is issued only within the old
  one's last renew_window (60) seconds, else the same one comes back with
  what is left; the old one stays valid token_grace (60) s after a new one.
  A wrong secret gets HTTP 200 {"code": 100016, "message": ...} [I: the
  code].  Every OpenAPI call needs `Authorization: QQBot <token>`, else 401
  {"code": 11241} [I: which of 11241-11244].
- The gateway: Hello (op 10), Identify (op 2: token, intents, shard) -> READY;
  Resume (op 6: token, session_id, seq) replays the session's dispatches
  after seq, then RESUMED; heartbeats (op 1, d = last s) are ACKed (op 11).
  Each dispatch {op 0, s, t, d} (QQ adds an event id the client has no use
  for; the fake leaves it out).  Close codes: a bad token 4004, unknown
  intent bits 4013, intents not permitted 4014, a bad shard 4010, a bad op
  4001, a bad payload 4002, a seq from the future 4007, an unknown session
  id (as a fault) 4006; a session unknown, ended or past resume_timeout
  gets op 9 false.  A
  client missing heartbeats is closed with 4009 [I], as is a client told to
  reconnect (op 7) that has not gone after reconnect_grace [I].  A client
  close 1000/1001 ends the session [I]; any other close or a drop keeps it
  resumable for resume_timeout.
- Events: C2C_MESSAGE_CREATE and GROUP_AT_MESSAGE_CREATE (intent 1<<25),
  AT_MESSAGE_CREATE (1<<30), DIRECT_MESSAGE_CREATE (1<<12).  The bot's own
  replies in a guild DM come back as DIRECT_MESSAGE_CREATE with author.bot
  [I], so a client must skip them.
- Replies are passive: msg_id must be a message of that chat (else 304026
  [I: also when missing, as proactive messages are gone since 2025-04-21]),
  within its window (C2C 3600 s, others 300 s; else 304027), at most
  reply_cap (5) per msg_id (22009); in C2C and groups (msg_id, msg_seq) is
  unique: the same pair again gets 40054005 and is not posted twice.  With
  require_gateway, a send while the bot has no gateway connection gets
  304018.  Text is msg_type 0; markdown (2) gets 50056 unless allowed.

Control API (JSON) on the control port:
  POST /message {kind: c2c | group | guild | dm, user, group, channel, guild,
                 content, age (s), is_bot, username} -> {"id", "chat"}
  POST /messages {"messages": [spec, ...]}          -> {"messages": [...]}
  GET  /sent?after=N&wait=S[&chat=C]                -> {"sent", "last"}
  GET  /state: counters, sessions, tokens, config
  POST /gateway_fault {kind: reconnect | invalid_session (resumable) | close
       (code, invalidate) | drop | stop_acks | resume_acks | duplicate (count)}
  POST /rest_fault {kind: 429 | 500 | 502 | 503 | 304018 | slow (delay) | drop
       | drop_after, route ("*", "POST /token", "GET /gateway", "POST
       /v2/users/{id}/messages", ...), count}
  POST /clear_faults, /revoke_token, /config {Config fields}, /reset
Run: fake_qqbot.py --dir DIR; prints one JSON line (urls, ca, ids) when ready.
"""
import argparse
import asyncio
import collections
import json
import os
import re
import signal
import sys
import time
from datetime import datetime, timedelta, timezone

from aiohttp import web

import fake_discord
from fake_util import bad_input, make_tls, quiet_resets, start_site

quiet_resets()

APP_ID = "102000001"
SECRET = "hermes-test-qq-client-secret-7f3a9c"
BOT_ID = "11000000000000000001"
BOT_NAME = "hermes-test"
GUILD_ID = "12000000000000000001"
CHANNEL_ID = "13000000000000000001"

GUILDS, GUILD_MEMBERS, DIRECT_MESSAGE = 1 << 0, 1 << 1, 1 << 12
GROUP_AND_C2C, INTERACTION, PUBLIC_GUILD_MESSAGES = 1 << 25, 1 << 26, 1 << 30
KNOWN_INTENTS = sum(1 << b for b in (0, 1, 9, 10, 12, 25, 26, 27, 28, 29, 30))
KINDS = {  # kind -> (event, intent, v2 send path prefix)
    "c2c": ("C2C_MESSAGE_CREATE", GROUP_AND_C2C, "/v2/users/"),
    "group": ("GROUP_AT_MESSAGE_CREATE", GROUP_AND_C2C, "/v2/groups/"),
    "guild": ("AT_MESSAGE_CREATE", PUBLIC_GUILD_MESSAGES, "/channels/"),
    "dm": ("DIRECT_MESSAGE_CREATE", DIRECT_MESSAGE, "/dms/"),
}
CLOSE_REASONS = {
    4001: "invalid opcode", 4002: "invalid payload", 4004: "invalid token",
    4006: "session no longer valid", 4007: "invalid seq", 4008: "send too fast",
    4009: "connection expired", 4010: "invalid shard", 4011: "too many guilds",
    4012: "invalid version", 4013: "invalid intent", 4014: "disallowed intent",
    4914: "bot offline: sandbox only", 4915: "bot banned"}
ENDS_SESSION = {4004, 4006, 4007, 4010, 4011, 4012, 4013, 4014, 4914, 4915}
CST = timezone(timedelta(hours=8))


def error(status, code, message):
    return web.json_response({"message": message, "code": code, "err_code": code,
                              "trace_id": os.urandom(16).hex()}, status=status)


class Config:
    """Everything a test may change at run time through POST /config."""

    update = fake_discord.Config.update     # an unknown name or a wrong type raises

    def __init__(self, args):
        self.app_id, self.client_secret = APP_ID, SECRET
        self.token_lifetime = 7200          # s
        self.renew_window = 60              # s before expiry a new token is issued
        self.token_grace = 60               # s the old token works after a new one
        self.expires_as_string = True
        self.heartbeat_interval = args.heartbeat_interval   # ms, sent in Hello
        self.heartbeat_grace = 1.5          # closed without a heartbeat for interval*grace
        self.heartbeat_close_code = 4009
        self.resume_timeout = args.resume_timeout
        self.session_buffer = 1000
        self.permitted_intents = KNOWN_INTENTS
        self.reconnect_grace = 5.0
        self.c2c_window = 3600.0            # s a message may be replied to, per kind
        self.group_window = 300.0
        self.guild_window = 300.0
        self.dm_window = 300.0
        self.reply_cap = 5
        self.require_gateway = True
        self.markdown_allowed = False
        self.max_content = 4000

    def window(self, kind):
        return getattr(self, kind + "_window")

    def public(self):
        return {k: v for k, v in vars(self).items() if k != "client_secret"}


class Tokens:
    """App access tokens: one current, older ones in their grace period."""

    def __init__(self, cfg, stats):
        self.cfg, self.stats = cfg, stats
        self.current, self.expires = None, 0.0
        self.old = {}                       # token -> valid until (monotonic)
        self.issued = []

    def issue(self):
        now = time.monotonic()
        if self.current is not None and self.expires - now > self.cfg.renew_window:
            return self.current, int(self.expires - now)
        if self.current is not None:
            self.old[self.current] = min(self.expires, now + self.cfg.token_grace)
            if now >= self.expires:
                self.stats["tokens_late"] += 1      # asked for only once it had expired
        self.current = "qqtok-" + os.urandom(18).hex()
        self.expires = now + self.cfg.token_lifetime
        self.issued.append(self.current)
        self.stats["tokens_issued"] += 1
        return self.current, self.cfg.token_lifetime

    def valid(self, token):
        now = time.monotonic()
        if token is not None and token == self.current:
            return now < self.expires
        return token in self.old and now < self.old[token]

    def revoke(self):
        self.current, self.expires, self.old = None, 0.0, {}


class Connection(fake_discord.Connection):
    reasons = CLOSE_REASONS


class Gateway(fake_discord.Gateway):
    """Identify and Resume, QQ's close codes, events by intent (see the module doc)."""

    RECONNECT_CLOSE = 4009

    def __init__(self, cfg, tokens, stats):
        super().__init__(cfg, None, stats)
        self.tokens = tokens
        self.duplicate = 0                  # the next n events are pushed twice

    async def handle(self, request):
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20, timeout=5)
        await ws.prepare(request)
        await self.run(Connection(ws, request, "gateway", self.cfg.heartbeat_interval / 1000),
                       True)
        return ws

    async def _on_text(self, conn, text):
        if conn.server_close is not None:
            return
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        op = payload.get("op") if isinstance(payload, dict) else None
        if not isinstance(op, int) or isinstance(op, bool):
            return await conn.close(4002)
        d = payload.get("d")
        if op == 1:
            return self._heartbeat(conn, d)
        if op == 2:
            return await self._identify(conn, d)
        if op == 6:
            return await self._resume(conn, d)
        return await conn.close(4001)

    def _token_ok(self, d):
        tok = d.get("token") if isinstance(d, dict) else None
        return (isinstance(tok, str) and tok.startswith("QQBot ")
                and self.tokens.valid(tok[6:]))

    async def _identify(self, conn, d):
        if conn.session is not None or not isinstance(d, dict):
            return await conn.close(4002)
        if not self._token_ok(d):
            return await conn.close(4004)
        intents = d.get("intents")
        if (not isinstance(intents, int) or isinstance(intents, bool) or intents <= 0
                or intents & ~KNOWN_INTENTS):
            return await conn.close(4013)
        if intents & ~self.cfg.permitted_intents:
            return await conn.close(4014)
        if d.get("shard") not in (None, [0, 1]):
            return await conn.close(4010)
        self.stats["identify"] += 1
        self.stats["identifies"] = (self.stats["identifies"] + [
            {k: v for k, v in d.items() if k != "token"}])[-20:]
        s = fake_discord.Session(intents, self.cfg.session_buffer)
        self.sessions[s.id] = s
        s.attach(conn)
        conn.session = s
        s.dispatch("READY", {"version": 1, "session_id": s.id, "shard": [0, 1],
                             "user": {"id": BOT_ID, "username": BOT_NAME, "bot": True,
                                      "status": 1}})

    async def _resume(self, conn, d):
        if conn.session is not None or not isinstance(d, dict):
            return await conn.close(4002)
        if not isinstance(d.get("session_id"), str) or not isinstance(d.get("seq"), int):
            return await conn.close(4002)
        if not self._token_ok(d):
            return await conn.close(4004)
        self.stats["resume"] += 1
        await self.resume(conn, self.sessions.get(d["session_id"]), d["seq"], "")

    def connected(self):
        return any(s.conn is not None for s in self.sessions.values())

    def publish(self, t, d, intent):
        """Pushes an event to every live session that asked for its intent."""
        times = 2 if self.duplicate > 0 else 1
        self.duplicate = max(0, self.duplicate - 1)
        self.stats["duplicated"] += times - 1
        for sid, s in list(self.sessions.items()):
            if not s.alive(self.cfg.resume_timeout):
                del self.sessions[sid]
            elif s.intents & intent:
                for _ in range(times):
                    s.dispatch(t, d)

    def fault_extra(self, kind, body, conns):
        if kind != "duplicate":
            return False
        self.duplicate = int(body.get("count", 1))
        return True

    async def close_all(self, code, invalidate):
        await asyncio.gather(*(c.close(code, invalidate) for c in list(self.conns)))


class World:
    """The messages users wrote, by id, with the replies each has had."""

    def __init__(self):
        self.messages = {}
        self.n = 0

    def new_id(self):
        self.n += 1
        return "ROBOT1.0_%s.%06d" % (os.urandom(6).hex(), self.n)

    def inject(self, spec):
        """A user's message from a control-API spec: (chat, event type, d, intent)."""
        kind = str(spec.get("kind", "c2c"))
        if kind not in KINDS:
            raise ValueError("unknown kind %r" % kind)
        user = str(spec.get("user", "E4F4AEA33253A2797FB897C50B81D7ED"))
        content = str(spec.get("content", ""))
        created = time.time() - float(spec.get("age", 0))
        ts = datetime.fromtimestamp(created, CST).isoformat(timespec="seconds")
        mid = self.new_id()
        author = {"id": user, "username": spec.get("username") or "user" + user[-4:],
                  "bot": bool(spec.get("is_bot", False)), "avatar": ""}
        d = {"id": mid, "content": content, "timestamp": ts, "attachments": []}
        if kind == "c2c":
            chat = user
            d["author"] = {"id": user, "user_openid": user, "union_openid": "U" + user}
        elif kind == "group":
            chat = str(spec.get("group", "9B3F0E2C5A7D4E1F8C6B2A9D0E3F7C1A"))
            d.update(content=" " + content, group_id=chat, group_openid=chat,
                     author={"id": user, "member_openid": user, "union_openid": "U" + user})
        elif kind == "guild":
            chat = str(spec.get("channel", CHANNEL_ID))
            d.update(content="<@!%s> %s" % (BOT_ID, content), channel_id=chat,
                     guild_id=GUILD_ID, author=author, seq=self.n, seq_in_channel=str(self.n),
                     member={"roles": ["1"], "joined_at": "2024-01-01T00:00:00+08:00"})
        else:
            chat = str(spec.get("guild", "14000000000000000001"))
            d.update(channel_id="15" + chat[2:], guild_id=chat, src_guild_id=GUILD_ID,
                     author=author, direct_message=True, seq=self.n)
        self.messages[mid] = {"id": mid, "kind": kind, "chat": chat, "created": created,
                              "replies": 0, "seqs": set()}
        event, intent, _ = KINDS[kind]
        return "%s:%s" % (kind, chat), event, d, intent


class Rest:
    """The token endpoint and the OpenAPI routes, with auth and faults around them."""

    _take_fault = fake_discord.Rest._take_fault

    def __init__(self, cfg, tokens, world, gateway, stats):
        self.cfg, self.tokens, self.world = cfg, tokens, world
        self.gateway, self.stats = gateway, stats
        self.faults = []
        self.sent = []
        self.sent_cond = asyncio.Condition()
        self.gateway_url = None
        self.routes = [(method + " " + path, re.compile(
            re.sub(r"\{(\w+)\}", r"(?P<\1>[A-Za-z0-9_.-]+)", path)), method, handler)
            for method, path, handler in (
                ("GET", "/gateway", self.get_gateway),
                ("GET", "/gateway/bot", self.get_gateway_bot),
                ("GET", "/users/@me", self.get_me),
                ("POST", "/v2/users/{target}/messages", self.post_message),
                ("POST", "/v2/groups/{target}/messages", self.post_message),
                ("POST", "/channels/{target}/messages", self.post_message),
                ("POST", "/dms/{target}/messages", self.post_message),
                ("PUT", "/interactions/{target}", self.put_interaction))]

    async def _faulted(self, request, name):
        """The response a fault gives instead of the real one, or None; "after" for drop_after."""
        fault = self._take_fault(name)
        kind = fault and str(fault["kind"])
        if kind == "slow":
            await asyncio.sleep(float(fault.get("delay", 5)))
        elif kind == "drop":
            request.transport.abort()
            return web.Response(status=500)
        elif kind == "429":
            return error(429, 22007, "request too frequent")
        elif kind in ("500", "502", "503"):
            return error(int(kind), 500000 + int(kind), "server error")
        elif kind == "304018":
            return error(400, 304018, "bot not connected to gateway")
        return "after" if kind == "drop_after" else None

    async def token(self, request):
        name = "POST /token"
        self.stats["rest"][name] += 1
        fault = await self._faulted(request, name)
        if isinstance(fault, web.Response):
            return fault
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        self.stats["token_requests"] += 1
        if (not isinstance(body, dict) or body.get("appId") != self.cfg.app_id
                or body.get("clientSecret") != self.cfg.client_secret):
            self.stats["token_refused"] += 1
            return web.json_response({"code": 100016, "message": "invalid appid or secret"})
        tok, left = self.tokens.issue()
        resp = web.json_response({"access_token": tok, "expires_in":
                                  str(left) if self.cfg.expires_as_string else left})
        if fault == "after":
            request.transport.abort()
        return resp

    async def handle(self, request):
        tail = "/" + request.match_info["tail"]
        for name, rx, method, handler in self.routes:
            m = rx.fullmatch(tail)
            if m and method == request.method:
                break
        else:
            return error(404, 404, "not found")
        name = re.sub(r"\{\w+\}", "{id}", name)
        self.stats["rest"][name] += 1
        fault = await self._faulted(request, name)
        if isinstance(fault, web.Response):
            return fault
        auth = request.headers.get("Authorization", "")
        if not (auth.startswith("QQBot ") and self.tokens.valid(auth[6:])):
            self.stats["rest_401"] += 1
            return error(401, 11241, "token not exist or expire")
        resp = await handler(request, tail, **m.groupdict())
        if fault == "after":
            request.transport.abort()
        return resp

    async def get_gateway(self, request, tail):
        return web.json_response({"url": self.gateway_url})

    async def get_gateway_bot(self, request, tail):
        return web.json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": max(0, 1000 - self.stats["identify"]),
            "reset_after": 86400000, "max_concurrency": 1}})

    async def get_me(self, request, tail):
        return web.json_response({"id": BOT_ID, "username": BOT_NAME, "avatar": "",
                                  "union_openid": "", "union_user_account": ""})

    async def put_interaction(self, request, tail, target):
        self.stats["interaction_acks"] += 1
        return web.json_response({})

    def _check(self, kind, target, body):
        """The error a send gets, or None (see the module doc for the rules)."""
        content, v2 = body.get("content"), kind in ("c2c", "group")
        if not isinstance(content, str) or not content.strip():
            return error(400, 40034003, "content is empty")
        if len(content) > self.cfg.max_content:
            return error(400, 40034028, "content too long")
        if v2 and body.get("msg_type", 0) not in (0, 2):
            return error(400, 40034001, "msg_type not supported")
        if v2 and body.get("msg_type") == 2 and not self.cfg.markdown_allowed:
            return error(400, 50056, "markdown not allowed")
        if self.cfg.require_gateway and not self.gateway.connected():
            self.stats["not_connected"] += 1
            return error(400, 304018, "bot not connected to gateway")
        m = self.world.messages.get(str(body.get("msg_id")))
        if m is None or m["kind"] != kind or m["chat"] != target:
            self.stats["unknown_msg_id"] += 1
            return error(400, 304026, "msg_id wrong or missing")
        if time.time() - m["created"] > self.cfg.window(kind):
            self.stats["expired"] += 1
            return error(400, 304027, "msg_id expired")
        seq = body.get("msg_seq", 1)
        if v2 and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1):
            return error(400, 40034002, "msg_seq must be a positive integer")
        if v2 and seq in m["seqs"]:
            self.stats["dedup"] += 1
            return error(400, 40054005, "消息被去重，请检查请求msgseq")
        if m["replies"] >= self.cfg.reply_cap:
            self.stats["limit"] += 1
            return error(400, 22009, "msg limit exceed")
        return None

    async def post_message(self, request, tail, target):
        kind = next(k for k, v in KINDS.items() if tail.startswith(v[2]))
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, 40034000, "invalid json")
        bad = self._check(kind, target, body)
        if bad is not None:
            return bad
        m = self.world.messages[body["msg_id"]]
        m["replies"] += 1
        m["seqs"].add(body.get("msg_seq", 1))
        mid = self.world.new_id()
        ts = datetime.now(CST).isoformat(timespec="seconds")
        self.sent.append({"n": len(self.sent) + 1, "id": mid, "chat": "%s:%s" % (kind, target),
                          "content": body["content"], "msg_id": body["msg_id"],
                          "msg_seq": body.get("msg_seq"), "msg_type": body.get("msg_type"),
                          "time": time.time()})
        async with self.sent_cond:
            self.sent_cond.notify_all()
        if kind == "dm":                    # the bot's own DM comes back as an event
            self.gateway.publish("DIRECT_MESSAGE_CREATE", {
                "id": mid, "content": body["content"], "timestamp": ts, "guild_id": target,
                "channel_id": "15" + target[2:], "src_guild_id": GUILD_ID,
                "direct_message": True,
                "author": {"id": BOT_ID, "username": BOT_NAME, "bot": True}}, DIRECT_MESSAGE)
        if kind in ("c2c", "group"):
            return web.json_response({"id": mid, "timestamp": ts})
        return web.json_response({"id": mid, "channel_id": target, "content": body["content"],
                                  "timestamp": ts, "author": {"id": BOT_ID, "bot": True}})


def new_stats():
    counters = ("connections identify resume resumed replayed invalid_sessions heartbeats "
                "heartbeat_acks heartbeats_unacked heartbeat_timeouts reconnects client_drops duplicated "
                "rest_401 token_requests tokens_issued tokens_late token_refused dedup expired limit "
                "not_connected unknown_msg_id interaction_acks").split()
    stats = dict.fromkeys(counters, 0)
    stats.update(last_heartbeat_d=None, client_closes=collections.Counter(),
                 server_closes=collections.Counter(), rest=collections.Counter(),
                 identifies=[])
    return stats


class Fake:
    """The whole fake; reset() swaps in fresh state behind the same ports."""

    def __init__(self, args):
        self.args = args
        self.gateway_url = None
        self.reset_state()

    def reset_state(self):
        self.cfg = Config(self.args)
        self.stats = new_stats()
        self.tokens = Tokens(self.cfg, self.stats)
        self.world = World()
        self.gateway = Gateway(self.cfg, self.tokens, self.stats)
        self.rest = Rest(self.cfg, self.tokens, self.world, self.gateway, self.stats)
        self.rest.gateway_url = self.gateway_url


class Control(fake_discord.Control):
    """The control API (see the module doc)."""

    chat_key = "chat"

    def _inject(self, spec):
        if not isinstance(spec, dict):
            raise ValueError("a message spec must be a JSON object")
        chat, t, d, intent = self.fake.world.inject(spec)
        self.fake.gateway.publish(t, d, intent)
        return {"id": d["id"], "chat": chat}

    async def state(self, request):
        f = self.fake
        return web.json_response({
            "stats": f.stats, "sessions": [s.summary() for s in f.gateway.sessions.values()],
            "open_connections": len(f.gateway.conns), "acks": f.gateway.acks,
            "tokens": f.tokens.issued, "rest_faults": f.rest.faults, "config": f.cfg.public()})

    async def rest_fault(self, request):
        body = await self._body(request)
        if body.get("kind") != "304018":
            return await super().rest_fault(request)
        self.fake.rest.faults.append(dict(body, route=body.get("route", "*"),
                                          count=int(body.get("count", 1))))
        return web.json_response({"ok": True})

    async def clear_faults(self, request):
        self.fake.gateway.duplicate = 0
        return await super().clear_faults(request)

    async def revoke_token(self, request):
        """Every token stops working; gateway connections end with 4004."""
        self.fake.tokens.revoke()
        await self.fake.gateway.close_all(4004, True)
        return web.json_response({"ok": True})


async def serve(args):
    fake = Fake(args)
    ctx, ca_path = make_tls(args.dir)
    api = web.Application(client_max_size=1 << 20)

    async def token_handler(request):
        return await fake.rest.token(request)

    async def gateway_handler(request):
        return await fake.gateway.handle(request)

    async def rest_handler(request):
        return await fake.rest.handle(request)
    api.router.add_post("/app/getAppAccessToken", token_handler)
    api.router.add_get("/websocket/", gateway_handler)
    api.router.add_route("*", "/{tail:.*}", rest_handler)
    ctl = web.Application(middlewares=[bad_input])
    Control(fake).routes(ctl)
    runners = [web.AppRunner(app, access_log=None, handle_signals=False) for app in (api, ctl)]
    for r in runners:
        await r.setup()
    port = await start_site(runners[0], args.port, ctx)
    ctl_port = await start_site(runners[1], args.ctl_port, None)
    fake.gateway_url = "wss://127.0.0.1:%d/websocket/" % port
    fake.reset_state()
    info = {"api_url": "https://127.0.0.1:%d" % port, "gateway_url": fake.gateway_url,
            "token_url": "https://127.0.0.1:%d/app/getAppAccessToken" % port,
            "port": port, "ctl_port": ctl_port, "ca": ca_path, "app_id": APP_ID,
            "client_secret": SECRET, "bot_id": BOT_ID, "guild_id": GUILD_ID,
            "channel_id": CHANNEL_ID}
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.wait_for(fake.gateway.shutdown(), 5)
    for r in runners:
        await r.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem goes")
    ap.add_argument("--heartbeat-interval", type=int, default=45000, help="ms, sent in Hello")
    ap.add_argument("--resume-timeout", type=float, default=180.0)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctl-port", type=int, default=0)
    asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
