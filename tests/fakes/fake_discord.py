#!/usr/bin/python3
"""A protocol-faithful fake of Discord's REST API (v10) and Gateway, for tests.

TLS on 127.0.0.1 with a certificate from a throwaway CA (trustme, written to
<dir>/ca.pem): REST at https://127.0.0.1:PORT/api/v10, the gateway (the url of
GET /gateway/bot) and the resume gateway (READY's resume_gateway_url) on two
more ports; a plain-HTTP control port for tests.  Facts and their sources
(discord-api-docs gateway.mdx, opcodes-and-status-codes.mdx, rate-limits.mdx,
message.mdx) are in the docstrings below.  Where it departs from Discord:
- one guild with three text channels (one the bot cannot see) and DMs;
- JSON only: `compress=` and `encoding=etf` get HTTP 400, permessage-deflate
  is never negotiated;
- a RESUME on the main gateway url gets op 9 false (strict_resume_url), to
  prove the client uses resume_gateway_url; Discord only disconnects such
  clients more often;
- heartbeats do not count toward the 120 payloads/minute (tests shorten the
  interval); a missed heartbeat closes with 4009 and the session stays
  resumable (gateway.mdx: "your connection will be closed and you will be
  forced to Resume"; the close code is not documented).

Control API (JSON) on the control port:
  POST /message {channel_id | dm, user_id, username, content, is_bot,
                 mention_bot, reply_to, reply_to_bot}  -> {"id", "channel_id"}
  POST /messages {"messages": [spec, ...]}            -> {"messages": [...]}
  GET  /sent?after=N&wait=S[&channel_id=C]            -> {"sent", "last"}
  GET  /state: counters, sessions, config
  POST /gateway_fault {kind: reconnect | invalid_session (resumable) | close
       (code, invalidate) | drop | heartbeat_request | stop_acks | resume_acks}
  POST /rest_fault {kind: 429 (retry_after, global, scope) | 500 | 502 | 503 |
       504 | slow (delay) | drop | drop_after, route ("*" or "POST
       /channels/{id}/messages"), count}
  POST /clear_faults, /revoke_token, /config {Config fields}, /reset
Run: fake_discord.py --dir DIR [--token T] [--heartbeat-interval MS]; prints
one JSON line (ports, urls, ca, ids) when ready, also written to
<dir>/fake-discord.json.
"""
import argparse
import asyncio
import collections
import copy
import hashlib
import json
import logging
import math
import os
import re
import signal
import ssl
import sys
import time
from datetime import datetime, timezone

from aiohttp import web, WSMsgType
import trustme

API = "/api/v10"
BOT_ID = "1100000000000000001"
BOT_NAME = "hermes-test"
GUILD_ID = "1200000000000000001"
CHANNELS = {"general": "1300000000000000001", "second": "1300000000000000002",
            "forbidden": "1300000000000000003"}
DEFAULT_USER = "1400000000000000001"
DISCORD_EPOCH_MS = 1420070400000

GUILDS, GUILD_MEMBERS, GUILD_PRESENCES = 1 << 0, 1 << 1, 1 << 8
GUILD_MESSAGES, DIRECT_MESSAGES, MESSAGE_CONTENT = 1 << 9, 1 << 12, 1 << 15
KNOWN_INTENTS = sum(1 << b for b in list(range(17)) + [20, 21, 24, 25])
PRIVILEGED = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT
CLOSE_REASONS = {
    4000: "Unknown error", 4001: "Unknown opcode", 4002: "Decode error",
    4003: "Not authenticated", 4004: "Authentication failed",
    4005: "Already authenticated", 4007: "Invalid seq", 4008: "Rate limited",
    4009: "Session timed out", 4010: "Invalid shard", 4011: "Sharding required",
    4012: "Invalid API version", 4013: "Invalid intent(s)", 4014: "Disallowed intent(s)"}
ENDS_SESSION = {4004, 4007, 4010, 4011, 4012, 4013, 4014}
MENTION = re.compile(r"<@!?(\d{15,21})>")


class _DropResets(logging.Filter):
    """Clients that drop mid-answer (and drop_after faults) are expected here."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (ConnectionError, RuntimeError))


logging.getLogger("aiohttp.server").addFilter(_DropResets())


def iso_now():
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def frame(op, d=None):
    """A non-dispatch gateway payload."""
    return {"op": op, "d": d, "s": None, "t": None}


def error(status, message, code, errors=None):
    body = {"message": message, "code": code}
    if errors is not None:
        body["errors"] = errors
    return web.json_response(body, status=status)


def form_error(field, code, message):
    return error(400, "Invalid Form Body", 50035,
                 {field: {"_errors": [{"code": code, "message": message}]}})


class Config:
    """Everything a test may change at run time through POST /config."""

    def __init__(self, args):
        self.token = args.token
        self.heartbeat_interval = args.heartbeat_interval   # ms, sent in HELLO
        self.heartbeat_grace = 1.5          # closed without a heartbeat for interval*grace
        self.heartbeat_close_code = 4009
        self.resume_timeout = args.resume_timeout   # s a detached session stays resumable
        self.session_buffer = 1000          # dispatches kept per session for RESUME
        self.portal_intents = MESSAGE_CONTENT  # privileged intents enabled in the portal
        self.strict_resume_url = True
        self.reconnect_grace = 5.0          # s after op 7 before the fake closes (4000)
        self.identify_interval = 0.0        # s between IDENTIFYs (max_concurrency 1); 0: off
        self.gateway_rate = [120, 60.0]     # client payloads per connection per window
        self.nonce_window = 300.0           # s a nonce is remembered ("a few minutes")
        self.global_rate = [50, 1.0]
        self.routes = {"POST /channels/{id}/messages": [5, 5.0],
                       "POST /channels/{id}/typing": [5, 5.0], "default": [50, 1.0]}

    def update(self, body):
        """Applies settings; an unknown name or a value of the wrong type raises."""
        for key, value in body.items():
            if key.startswith("_") or not hasattr(self, key):
                raise ValueError("unknown setting %r" % key)
            current = getattr(self, key)
            kind = {"token": str, "routes": dict}.get(key, type(current))
            if not isinstance(value, (int, float) if kind is float else kind):
                raise ValueError("%s must be %s" % (key, kind.__name__))
            if key == "routes":
                self.routes.update(value)
            else:
                setattr(self, key, value)

    def public(self):
        return {k: v for k, v in vars(self).items() if k != "token"}


class Snowflakes:
    """Discord ids: milliseconds since 2015 shifted by 22 bits, strictly increasing."""

    def __init__(self):
        self.last = 0

    def next(self):
        now = (int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22
        self.last = max(now, self.last + 1)
        return str(self.last)


class World:
    """Users, the one guild, its channels, DMs and messages, as Discord stores them."""

    def __init__(self):
        self.ids = Snowflakes()
        self.bot = {"id": BOT_ID, "username": BOT_NAME, "discriminator": "0",
                    "global_name": "Hermes", "avatar": None, "bot": True}
        self.users = {BOT_ID: self.bot}
        self.channels = {}
        for pos, (name, cid) in enumerate(CHANNELS.items()):
            self.channels[cid] = {"id": cid, "type": 0, "guild_id": GUILD_ID, "name": name,
                                  "position": pos, "parent_id": None, "topic": None,
                                  "nsfw": False, "rate_limit_per_user": 0,
                                  "permission_overwrites": []}
        self.hidden = {CHANNELS["forbidden"]}   # the bot lacks VIEW_CHANNEL there
        self.messages = collections.defaultdict(list)   # channel -> ascending
        self.by_id = {}

    def user(self, uid, username=None, is_bot=False):
        if uid not in self.users:
            self.users[uid] = {"id": uid, "username": username or "user%s" % uid[-4:],
                               "discriminator": "0", "global_name": None, "avatar": None}
            if is_bot:
                self.users[uid]["bot"] = True
        return self.users[uid]

    def dm_channel(self, uid):
        cid = "15" + uid[2:]
        if cid not in self.channels:
            self.channels[cid] = {"id": cid, "type": 1, "last_message_id": None,
                                  "recipients": [self.users[uid]]}
        return cid

    def member(self):
        return {"roles": [], "joined_at": "2024-01-01T00:00:00.000000+00:00", "nick": None,
                "deaf": False, "mute": False, "flags": 0}

    def guild(self):
        """The GUILD_CREATE payload that follows READY."""
        return {"id": GUILD_ID, "name": "Hermes Test Guild", "unavailable": False,
                "owner_id": DEFAULT_USER, "member_count": len(self.users), "large": False,
                "joined_at": "2024-01-01T00:00:00.000000+00:00",
                "channels": [c for c in self.channels.values()
                             if c["type"] == 0 and c["id"] not in self.hidden],
                "threads": [], "roles": [{"id": GUILD_ID, "name": "@everyone"}],
                "members": [dict(self.member(), user=self.bot)], "voice_states": [],
                "presences": []}

    def create(self, cid, author, content, ref=None, nonce=None):
        """Stores a new message in channel cid and returns it."""
        mentioned = dict.fromkeys(MENTION.findall(content))
        msg = {"id": self.ids.next(), "channel_id": cid, "author": dict(author),
               "content": content, "timestamp": iso_now(), "edited_timestamp": None,
               "tts": False, "mention_everyone": False,
               "mentions": [self.users[u] for u in mentioned if u in self.users],
               "mention_roles": [], "attachments": [], "embeds": [], "components": [],
               "pinned": False, "type": 0, "flags": 0}
        if nonce is not None:
            msg["nonce"] = nonce
        if ref is not None:
            msg["type"] = 19
            msg["message_reference"] = {"type": 0, "message_id": ref["id"], "channel_id": cid}
            if self.channels[cid]["type"] == 0:
                msg["message_reference"]["guild_id"] = GUILD_ID
            msg["referenced_message"] = {k: v for k, v in ref.items()
                                         if k not in ("referenced_message", "nonce")}
        self.messages[cid].append(msg)
        self.by_id[msg["id"]] = msg
        return msg

    def inject(self, spec):
        """A user's message from a control-API spec; raises ValueError on a bad spec."""
        uid = str(spec.get("user_id", DEFAULT_USER))
        author = self.user(uid, spec.get("username"), bool(spec.get("is_bot")))
        cid = self.dm_channel(uid) if spec.get("dm") else str(
            spec.get("channel_id", CHANNELS["general"]))
        if cid not in self.channels:
            raise ValueError("unknown channel %s" % cid)
        content = str(spec.get("content", ""))
        if spec.get("mention_bot") and BOT_ID not in MENTION.findall(content):
            content = "<@%s> %s" % (BOT_ID, content)
        ref = None
        if spec.get("reply_to_bot"):
            ref = next((m for m in reversed(self.messages[cid])
                        if m["author"]["id"] == BOT_ID), None)
            if ref is None:
                raise ValueError("the bot has not posted in %s" % cid)
        elif spec.get("reply_to") is not None:
            ref = self.by_id.get(str(spec["reply_to"]))
            if ref is None or ref["channel_id"] != cid:
                raise ValueError("unknown message %s" % spec["reply_to"])
        return self.create(cid, author, content, ref)

    def wants(self, msg, intents):
        """Whether a session with these intents receives this MESSAGE_CREATE."""
        if msg["channel_id"] in self.hidden:
            return False
        dm = self.channels[msg["channel_id"]]["type"] == 1
        return bool(intents & (DIRECT_MESSAGES if dm else GUILD_MESSAGES))

    def view(self, msg, intents):
        """MESSAGE_CREATE's d for a session with these intents."""
        d = copy.deepcopy(msg)
        if self.channels[msg["channel_id"]]["type"] == 0:
            d["guild_id"] = GUILD_ID
            d["member"] = self.member()
            d["mentions"] = [dict(u, member=self.member()) for u in d["mentions"]]
        if not intents & MESSAGE_CONTENT:
            self.strip_content(d)
            if d.get("referenced_message"):
                self.strip_content(d["referenced_message"])
        return d

    def strip_content(self, d):
        """The MESSAGE_CONTENT rule: DMs, own messages and mentions of the bot keep it."""
        if (d["author"]["id"] == BOT_ID or self.channels[d["channel_id"]]["type"] == 1
                or BOT_ID in MENTION.findall(d["content"])):
            return
        d.update(content="", embeds=[], attachments=[], components=[])


class Session:
    """One gateway session: its seq and the dispatches it keeps for RESUME."""

    def __init__(self, intents, cap):
        self.id = os.urandom(16).hex()
        self.intents = intents
        self.seq = 0
        self.events = collections.deque(maxlen=cap)
        self.conn = None
        self.ended = False
        self.detached_at = None

    def dispatch(self, t, d):
        self.seq += 1
        payload = {"op": 0, "d": d, "s": self.seq, "t": t}
        self.events.append(payload)
        if self.conn is not None:
            self.conn.send(payload)

    def missed(self, seq):
        """The dispatches after seq, or None when they are no longer buffered."""
        if seq < self.seq and (not self.events or self.events[0]["s"] > seq + 1):
            return None
        return [e for e in self.events if e["s"] > seq]

    def attach(self, conn):
        self.conn, self.detached_at = conn, None

    def detach(self):
        self.conn, self.detached_at = None, time.monotonic()

    def alive(self, timeout):
        return not self.ended and (self.conn is not None
                                   or time.monotonic() - self.detached_at <= timeout)

    def summary(self):
        return {"id": self.id, "seq": self.seq, "intents": self.intents,
                "attached": self.conn is not None, "ended": self.ended,
                "buffered": len(self.events)}


class Connection:
    """One gateway WebSocket: an ordered outbound queue and what the fake did to it."""

    reasons = CLOSE_REASONS             # close code -> reason (a subclass may differ)

    def __init__(self, ws, request, via, interval):
        self.ws, self.request, self.via = ws, request, via
        self.interval = interval        # s, as announced in this connection's HELLO
        self.session = None
        self.last_beat = time.monotonic()
        self.received = collections.deque()
        self.server_close = None        # the code the fake closed with, or "drop"
        self.invalidate = False         # the fake's close also ends the session
        self.queue = asyncio.Queue()
        self.writer = asyncio.ensure_future(self._write())
        self.closed = asyncio.Event()   # set when the fake's own close is complete

    def send(self, payload):
        self.queue.put_nowait(payload)

    async def _write(self):
        while True:
            payload = await self.queue.get()
            if payload is None:
                return
            try:
                await self.ws.send_str(json.dumps(payload))
            except (ConnectionError, RuntimeError):
                return

    async def close(self, code, invalidate=False):
        """Closes with code after what is queued; invalidate ends the session too."""
        if self.server_close is not None or self.ws.closed:
            return
        self.server_close, self.invalidate = code, invalidate
        self.queue.put_nowait(None)
        await asyncio.wait([self.writer], timeout=5)
        try:
            await self.ws.close(code=code, message=self.reasons.get(code, "").encode())
        finally:
            self.closed.set()

    def drop(self):
        """Drops TCP without a close frame, as a network failure would."""
        if self.server_close is None and self.request.transport is not None:
            self.server_close = "drop"
            self.request.transport.abort()


class Gateway:
    """The gateway: connections, sessions, IDENTIFY/RESUME, heartbeats, faults.

    HELLO, then heartbeats (op 1) ACKed with op 11.  IDENTIFY checks the token
    (4004), intents (4013 unknown bits, 4014 privileged ones not enabled in the
    portal) and shard (4010), then READY and GUILD_CREATE.  RESUME replays the
    session's dispatches after seq, then RESUMED; an unknown, ended or expired
    session gets op 9 false, a seq from the future 4007.  A client close
    1000/1001 ends the session; another code or a dropped connection keeps it
    for resume_timeout.  Payloads over 4096 bytes or not JSON: 4002; an
    unknown op: 4001; others before IDENTIFY: 4003; a second IDENTIFY: 4005;
    over gateway_rate: 4008.
    """

    RECONNECT_CLOSE = 4000              # after op 7 and reconnect_grace; a taken-over zombie

    def __init__(self, cfg, world, stats):
        self.cfg, self.world, self.stats = cfg, world, stats
        self.sessions = {}
        self.conns = set()
        self.acks = True
        self.last_identify = 0.0
        self.resume_url = None

    async def handle(self, request):
        q = request.query
        if "compress" in q or q.get("encoding", "json") != "json":
            return web.Response(status=400, text="this fake speaks uncompressed JSON only")
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20, timeout=5)
        await ws.prepare(request)
        via = request.app["via"]
        conn = Connection(ws, request, via, self.cfg.heartbeat_interval / 1000)
        self.stats["connections_" + via] += 1
        await self.run(conn, q.get("v") == "10")
        return ws

    async def run(self, conn, ok):
        """Serves a connection: HELLO and its payloads, or (not ok) a close with 4012."""
        self.conns.add(conn)
        self.stats["connections"] += 1
        watchdog = None
        if not ok:
            await conn.close(4012)
        else:
            conn.send(frame(10, {"heartbeat_interval": self.cfg.heartbeat_interval}))
            watchdog = asyncio.ensure_future(self._watchdog(conn, self.cfg.heartbeat_grace))
        try:
            await self._read(conn)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            conn.queue.put_nowait(None)
            self.conns.discard(conn)

    async def _read(self, conn):
        while True:
            msg = await conn.ws.receive()
            if msg.type == WSMsgType.TEXT:
                await self._on_text(conn, msg.data)
                continue
            if msg.type == WSMsgType.BINARY:
                await conn.close(4002)
                continue
            if msg.type == WSMsgType.CLOSING and conn.server_close is not None:
                await asyncio.wait_for(conn.closed.wait(), 10)  # our close, from a fault
            self._gone(conn, msg.data if msg.type == WSMsgType.CLOSE else None)
            return

    def _gone(self, conn, client_code):
        """After a connection ends: detach its session, or end it (1000/1001)."""
        if conn.server_close is not None:
            self.stats["server_closes"][str(conn.server_close)] += 1
        elif client_code is not None:
            self.stats["client_closes"][str(client_code)] += 1
        else:
            self.stats["client_drops"] += 1
        s = conn.session
        if s is None or s.conn is not conn:
            return
        s.detach()
        if client_code in (1000, 1001) or conn.invalidate:
            self.end(s)

    def end(self, s):
        """Invalidates a session: a RESUME of it gets op 9 false from now on."""
        s.ended = True
        self.sessions.pop(s.id, None)

    async def _watchdog(self, conn, grace):
        """Closes a connection whose client stopped heartbeating."""
        limit = conn.interval * grace
        while conn.server_close is None and not conn.ws.closed:
            left = conn.last_beat + limit - time.monotonic()
            if left <= 0:
                self.stats["heartbeat_timeouts"] += 1
                await conn.close(self.cfg.heartbeat_close_code)
                return
            await asyncio.sleep(left)

    def _over_rate(self, conn):
        limit, window = self.cfg.gateway_rate
        now = time.monotonic()
        conn.received.append(now)
        while conn.received and conn.received[0] < now - window:
            conn.received.popleft()
        return len(conn.received) > limit

    async def _on_text(self, conn, text):
        if conn.server_close is not None:
            return
        try:
            payload = json.loads(text) if len(text.encode()) <= 4096 else None
        except ValueError:
            payload = None
        op = payload.get("op") if isinstance(payload, dict) else None
        if not isinstance(op, int) or isinstance(op, bool):
            return await conn.close(4002)
        d = payload.get("d")
        if op == 1:
            return self._heartbeat(conn, d)
        if self._over_rate(conn):
            return await conn.close(4008)
        if op == 2:
            return await self._identify(conn, d)
        if op == 6:
            return await self._resume(conn, d)
        if op not in (3, 4, 8, 31, 43):
            return await conn.close(4001)
        if conn.session is None:
            return await conn.close(4003)

    def _heartbeat(self, conn, d):
        conn.last_beat = time.monotonic()
        self.stats["heartbeats"] += 1
        self.stats["last_heartbeat_d"] = d
        if self.acks:
            self.stats["heartbeat_acks"] += 1
            conn.send(frame(11))
        else:
            self.stats["heartbeats_unacked"] += 1

    async def _identify(self, conn, d):
        if conn.session is not None:
            return await conn.close(4005)
        if not isinstance(d, dict) or not isinstance(d.get("properties"), dict):
            return await conn.close(4001)
        if self.cfg.token is None or d.get("token") != self.cfg.token:
            return await conn.close(4004)
        intents = d.get("intents")
        if (not isinstance(intents, int) or isinstance(intents, bool) or intents < 0
                or intents & ~KNOWN_INTENTS):
            return await conn.close(4013)
        if intents & PRIVILEGED & ~self.cfg.portal_intents:
            return await conn.close(4014)
        if d.get("shard") not in (None, [0, 1]):
            return await conn.close(4010)
        now = time.monotonic()
        if self.cfg.identify_interval and now - self.last_identify < self.cfg.identify_interval:
            self.stats["identify_throttled"] += 1
            return self._invalid(conn, False)
        self.last_identify = now
        self.stats["identify"] += 1
        self.stats["identifies"] = (self.stats["identifies"] + [
            {k: v for k, v in d.items() if k != "token"}])[-20:]
        s = Session(intents, self.cfg.session_buffer)
        self.sessions[s.id] = s
        s.attach(conn)
        conn.session = s
        ready = {"v": 10, "user": self.world.bot, "guilds": [{"id": GUILD_ID,
                 "unavailable": True}], "session_id": s.id, "session_type": "normal",
                 "resume_gateway_url": self.resume_url, "private_channels": [],
                 "application": {"id": BOT_ID, "flags": 0}, "_trace": ["fake-discord"]}
        if d.get("shard") is not None:
            ready["shard"] = [0, 1]
        s.dispatch("READY", ready)
        if intents & GUILDS:
            s.dispatch("GUILD_CREATE", self.world.guild())

    async def _resume(self, conn, d):
        if conn.session is not None:
            return await conn.close(4005)
        if (not isinstance(d, dict) or not isinstance(d.get("session_id"), str)
                or not isinstance(d.get("seq"), int)):
            return await conn.close(4001)
        if self.cfg.token is None or d.get("token") != self.cfg.token:
            return await conn.close(4004)
        self.stats["resume"] += 1
        s = self.sessions.get(d["session_id"])
        if self.cfg.strict_resume_url and conn.via != "resume":
            self.stats["resume_wrong_url"] += 1
            return self._invalid(conn, False)
        await self.resume(conn, s, d["seq"], {"_trace": ["fake-discord"]})

    async def resume(self, conn, s, seq, resumed):
        """Session s (None: unknown) goes on on conn after seq: op 9 false when it has
        ended, expired or no longer holds those events, 4007 for a seq from the future;
        else the dispatches after seq, then RESUMED with d = resumed."""
        if s is None or not s.alive(self.cfg.resume_timeout):
            return self._invalid(conn, False)
        if seq > s.seq or seq < 0:
            return await conn.close(4007)
        missed = s.missed(seq)
        if missed is None:
            return self._invalid(conn, False)
        if s.conn is not None:              # a zombie still holds it: take it over
            old = s.conn
            s.detach()
            asyncio.ensure_future(old.close(self.RECONNECT_CLOSE))
        s.attach(conn)
        conn.session = s
        self.stats["replayed"] = self.stats.get("replayed", 0) + len(missed)
        for e in missed:
            conn.send(e)
        s.dispatch("RESUMED", resumed)
        self.stats["resumed"] += 1

    def _invalid(self, conn, resumable):
        self.stats["invalid_sessions"] += 1
        conn.send(frame(9, resumable))

    def publish(self, msg):
        """Delivers MESSAGE_CREATE to every live session that wants it."""
        for sid, s in list(self.sessions.items()):
            if not s.alive(self.cfg.resume_timeout):
                del self.sessions[sid]
            elif self.world.wants(msg, s.intents):
                s.dispatch("MESSAGE_CREATE", self.world.view(msg, s.intents))

    async def fault(self, body):
        """A fault on every open connection; returns how many it reached."""
        kind = body.get("kind")
        conns = [c for c in self.conns if c.server_close is None and not c.ws.closed]
        if kind in ("stop_acks", "resume_acks"):
            self.acks = kind == "resume_acks"
        elif kind == "heartbeat_request":
            self.stats["heartbeat_requests"] += len(conns)
            for c in conns:
                c.send(frame(1))
        elif kind == "reconnect":
            self.stats["reconnects"] += len(conns)
            for c in conns:
                c.send(frame(7))
                asyncio.get_running_loop().call_later(
                    self.cfg.reconnect_grace,
                    lambda c=c: asyncio.ensure_future(c.close(self.RECONNECT_CLOSE)))
        elif kind == "invalid_session":
            resumable = bool(body.get("resumable", False))
            for c in conns:
                self._invalid(c, resumable)
                s, c.session = c.session, None
                if s is not None and s.conn is c:
                    s.detach()
                    if not resumable:
                        self.end(s)
        elif kind == "close":
            code = int(body.get("code", 4000))
            invalidate = bool(body.get("invalidate", code in ENDS_SESSION))
            await asyncio.gather(*(c.close(code, invalidate) for c in conns))
        elif kind == "drop":
            for c in conns:
                c.drop()
        elif not self.fault_extra(kind, body, conns):
            raise ValueError("unknown gateway fault %r" % kind)
        return len(conns)

    def fault_extra(self, kind, body, conns):
        """A subclass's own gateway fault; False when kind is none."""
        return False

    async def shutdown(self, code=1001):
        await asyncio.gather(*(c.close(code) for c in list(self.conns)),
                             return_exceptions=True)


class RateLimiter:
    """Per-route buckets (per major parameter, the channel) and the global limit.

    X-RateLimit-Limit/-Remaining/-Reset/-Reset-After/-Bucket on every answer of
    a known route; a 429 has Retry-After, X-RateLimit-Scope (X-RateLimit-Global
    when global) and {"message", "retry_after" (float s), "global"}.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.buckets = {}
        self.global_hits = collections.deque()

    def _bucket(self, route, major, now):
        limit, window = self.cfg.routes.get(route, self.cfg.routes["default"])
        b = self.buckets.get((route, major))
        if b is None or now >= b["reset"]:
            b = self.buckets[(route, major)] = {"limit": limit, "remaining": limit,
                                                "reset": now + window}
        return b

    def headers(self, route, major):
        now = time.time()
        b = self._bucket(route, major, now)
        return {"X-RateLimit-Limit": str(b["limit"]),
                "X-RateLimit-Remaining": str(b["remaining"]),
                "X-RateLimit-Reset": "%.3f" % b["reset"],
                "X-RateLimit-Reset-After": "%.3f" % max(0.0, b["reset"] - now),
                "X-RateLimit-Bucket": hashlib.sha1(route.encode()).hexdigest()[:20]}

    def take(self, route, major):
        """Counts one request; returns a 429 response when a limit is reached."""
        now = time.time()
        glimit, gwindow = self.cfg.global_rate
        while self.global_hits and self.global_hits[0] <= now - gwindow:
            self.global_hits.popleft()
        if len(self.global_hits) >= glimit:
            return self.too_many(route, major, self.global_hits[0] + gwindow - now, True)
        b = self._bucket(route, major, now)
        if b["remaining"] <= 0:
            return self.too_many(route, major, b["reset"] - now, False)
        b["remaining"] -= 1
        self.global_hits.append(now)
        return None

    def too_many(self, route, major, retry, is_global, scope=None):
        retry = max(0.001, retry)
        h = self.headers(route, major)
        h["Retry-After"] = str(math.ceil(retry))
        h["X-RateLimit-Scope"] = scope or ("global" if is_global else "user")
        if is_global:
            h["X-RateLimit-Global"] = "true"
        body = {"message": "You are being rate limited.", "retry_after": round(retry, 3),
                "global": is_global}
        return web.json_response(body, status=429, headers=h)


class Rest:
    """The REST routes under /api/v10, with auth, faults and rate limits around them.

    `Authorization: Bot <token>` or 401 {"message": "401: Unauthorized", "code":
    0}; errors are {"message", "code"[, "errors"]}.  Creating a message honours
    nonce + enforce_nonce (the same nonce within nonce_window returns the first
    message, nothing is posted twice) and message_reference (type 19,
    referenced_message); the bot's own messages come back as MESSAGE_CREATE.
    """

    def __init__(self, cfg, world, gateway, stats):
        self.cfg, self.world, self.gateway, self.stats = cfg, world, gateway, stats
        self.limiter = RateLimiter(cfg)
        self.faults = []
        self.nonces = {}                    # nonce -> (time, message)
        self.sent = []
        self.sent_cond = asyncio.Condition()
        self.gateway_url = None
        self.routes = [(method + " " + path, re.compile(
            re.sub(r"\{(\w+)\}", r"(?P<\1>\\d+)", path)), method, handler, auth)
            for method, path, handler, auth in (
                ("GET", "/gateway", self.get_gateway, False),
                ("GET", "/gateway/bot", self.get_gateway_bot, True),
                ("GET", "/users/@me", self.get_me, True),
                ("GET", "/channels/{cid}", self.get_channel, True),
                ("GET", "/channels/{cid}/messages", self.get_messages, True),
                ("GET", "/channels/{cid}/messages/{mid}", self.get_message, True),
                ("POST", "/channels/{cid}/messages", self.post_message, True),
                ("POST", "/channels/{cid}/typing", self.post_typing, True))]

    def _match(self, request):
        """(route name as in the docs, handler, needs auth, path parameters)."""
        tail = "/" + request.match_info["tail"]
        for name, rx, method, handler, auth in self.routes:
            m = rx.fullmatch(tail)
            if m and method == request.method:
                return re.sub(r"\{\w+\}", "{id}", name), handler, auth, m.groupdict()
        return None, None, None, None

    async def handle(self, request):
        name, handler, auth, params = self._match(request)
        if name is None:
            return error(404, "404: Not Found", 0)
        self.stats["rest"][name] += 1
        if not request.headers.get("User-Agent", "").startswith("DiscordBot"):
            self.stats["bad_user_agent"] += 1
        major = params.get("cid")
        resp = await self._answer(request, name, handler, auth, params)
        if resp.status in (401, 403, 429):
            self.stats["rest_%d" % resp.status] += 1
        if "X-RateLimit-Bucket" not in resp.headers:
            resp.headers.update(self.limiter.headers(name, major))
        return resp

    async def _answer(self, request, name, handler, auth, params):
        fault = self._take_fault(name)
        kind = fault and str(fault["kind"])
        if kind == "slow":
            await asyncio.sleep(float(fault.get("delay", 5)))
        if kind == "drop":
            request.transport.abort()
            return web.Response(status=500)
        if auth and (self.cfg.token is None
                     or request.headers.get("Authorization") != "Bot " + self.cfg.token):
            return error(401, "401: Unauthorized", 0)
        if kind == "429":
            g = bool(fault.get("global", False))
            return self.limiter.too_many(name, params.get("cid"),
                                         float(fault.get("retry_after", 1.0)), g,
                                         fault.get("scope"))
        if kind in ("500", "502", "503", "504"):
            return error(int(kind), "%s: Server Error" % kind, 0)
        limited = self.limiter.take(name, params.get("cid"))
        if limited is not None:
            return limited
        resp = await handler(request, **params)
        if kind == "drop_after":
            request.transport.abort()
        return resp

    def _take_fault(self, name):
        for f in self.faults:
            if f.get("route", "*") in ("*", name):
                f["count"] -= 1
                if f["count"] <= 0:
                    self.faults.remove(f)
                return f
        return None

    def _channel_error(self, cid):
        if cid not in self.world.channels:
            return error(404, "Unknown Channel", 10003)
        if cid in self.world.hidden:
            return error(403, "Missing Access", 50001)
        return None

    async def get_gateway(self, request):
        return web.json_response({"url": self.gateway_url})

    async def get_gateway_bot(self, request):
        return web.json_response({"url": self.gateway_url, "shards": 1, "session_start_limit": {
            "total": 1000, "remaining": max(0, 1000 - self.stats["identify"]),
            "reset_after": 86400000, "max_concurrency": 1}})

    async def get_me(self, request):
        return web.json_response(dict(self.world.bot, verified=True, flags=0,
                                      mfa_enabled=False))

    async def get_channel(self, request, cid):
        bad = self._channel_error(cid)
        return bad if bad is not None else web.json_response(self.world.channels[cid])

    async def get_message(self, request, cid, mid):
        msg = self.world.by_id.get(mid)
        bad = self._channel_error(cid)
        if bad is not None or msg is None or msg["channel_id"] != cid:
            return bad if bad is not None else error(404, "Unknown Message", 10008)
        return web.json_response({k: v for k, v in msg.items() if k != "nonce"})

    async def get_messages(self, request, cid):
        """History, newest first, as Discord returns it; after= and before= page."""
        bad = self._channel_error(cid)
        if bad is not None:
            return bad
        try:
            limit = int(request.query.get("limit", 50))
            after, before = (int(request.query.get(k, d)) for k, d in
                             (("after", 0), ("before", 1 << 64)))
        except ValueError:
            return form_error("limit", "NUMBER_TYPE_COERCE", "Value is not int.")
        if not 1 <= limit <= 100:
            return form_error("limit", "NUMBER_TYPE_MAX", "Must be between 1 and 100.")
        msgs = [m for m in self.world.messages[cid] if after < int(m["id"]) < before]
        msgs = msgs[:limit] if "after" in request.query else msgs[-limit:]
        return web.json_response([{k: v for k, v in m.items() if k != "nonce"}
                                  for m in reversed(msgs)])

    async def post_typing(self, request, cid):
        bad = self._channel_error(cid)
        if bad is not None:
            return bad
        self.stats["typing"] = (self.stats["typing"] + [{"channel_id": cid,
                                                         "time": time.time()}])[-200:]
        return web.Response(status=204)

    async def post_message(self, request, cid):
        bad = self._channel_error(cid)
        if bad is not None:
            return bad
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return error(400, "The request body contains invalid JSON.", 50109)
        content, nonce = body.get("content", ""), body.get("nonce")
        bad = self._check_message(content, nonce, body)
        if bad is not None:
            return bad
        enforce = bool(body.get("enforce_nonce")) and nonce is not None
        now = time.monotonic()
        self.nonces = {k: v for k, v in self.nonces.items()
                       if now - v[0] <= self.cfg.nonce_window}
        if enforce and str(nonce) in self.nonces:
            self.stats["nonce_dedup"] += 1
            return web.json_response(self.nonces[str(nonce)][1])
        ref, bad = self._reference(cid, body.get("message_reference"))
        if bad is not None:
            return bad
        msg = self.world.create(cid, self.world.bot, content, ref, nonce)
        if enforce:
            self.nonces[str(nonce)] = (now, msg)
        await self._record(msg, body, enforce)
        self.gateway.publish(msg)
        return web.json_response(msg)

    def _check_message(self, content, nonce, body):
        if not isinstance(content, str):
            return form_error("content", "BASE_TYPE_STRING", "Must be a string.")
        if len(content) > 2000:
            return form_error("content", "BASE_TYPE_MAX_LENGTH",
                              "Must be 2000 or fewer in length.")
        if nonce is not None and (isinstance(nonce, bool)
                                  or not isinstance(nonce, (int, str)) or len(str(nonce)) > 25):
            return form_error("nonce", "NONCE_TYPE_INVALID", "Invalid nonce.")
        if not content.strip() and not body.get("embeds") and not body.get("sticker_ids"):
            return error(400, "Cannot send an empty message", 50006)
        return None

    def _reference(self, cid, ref):
        """The message replied to, or an error; fail_if_not_exists false drops it."""
        if ref is None:
            return None, None
        if not isinstance(ref, dict):
            return None, form_error("message_reference", "MODEL_TYPE_CONVERT",
                                    "Only dictionaries may be used in a ModelType")
        target = self.world.by_id.get(str(ref.get("message_id")))
        if (target is None or target["channel_id"] != cid
                or str(ref.get("channel_id", cid)) != cid):
            if ref.get("fail_if_not_exists", True):
                return None, form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                                        "Unknown message")
            return None, None
        return target, None

    async def _record(self, msg, body, enforce):
        self.sent.append({"n": len(self.sent) + 1, "id": msg["id"],
                          "channel_id": msg["channel_id"], "content": msg["content"],
                          "nonce": body.get("nonce"), "enforce_nonce": enforce,
                          "message_reference": body.get("message_reference"),
                          "allowed_mentions": body.get("allowed_mentions"),
                          "time": time.time()})
        async with self.sent_cond:
            self.sent_cond.notify_all()


def new_stats():
    counters = ("connections connections_gateway connections_resume identify resume resumed "
                "resume_wrong_url invalid_sessions identify_throttled heartbeats "
                "heartbeat_acks heartbeats_unacked heartbeat_timeouts heartbeat_requests "
                "reconnects client_drops rest_401 rest_403 rest_429 bad_user_agent "
                "nonce_dedup").split()
    stats = dict.fromkeys(counters, 0)
    stats.update(last_heartbeat_d=None, client_closes=collections.Counter(),
                 server_closes=collections.Counter(), rest=collections.Counter(),
                 identifies=[], typing=[])
    return stats


class Fake:
    """The whole fake; reset() swaps in fresh state behind the same ports."""

    def __init__(self, args):
        self.args = args
        self.urls = {}
        self.reset_state()

    def reset_state(self):
        self.cfg = Config(self.args)
        self.stats = new_stats()
        self.world = World()
        self.gateway = Gateway(self.cfg, self.world, self.stats)
        self.rest = Rest(self.cfg, self.world, self.gateway, self.stats)
        self.gateway.resume_url = self.urls.get("resume_url")
        self.rest.gateway_url = self.urls.get("gateway_url")


class Control:
    """The tests' side door: inject messages, read what the bot did, switch faults."""

    def __init__(self, fake):
        self.fake = fake

    @staticmethod
    @web.middleware
    async def bad_input(request, handler):
        """Any bad control request gets a 400 that says why; the fake stays up."""
        try:
            return await handler(request)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise web.HTTPBadRequest(text="%s: %s" % (type(e).__name__, e))

    def routes(self, app):
        for method, path, fn in (
                ("POST", "/message", self.message), ("POST", "/messages", self.messages),
                ("GET", "/sent", self.sent), ("GET", "/state", self.state),
                ("POST", "/gateway_fault", self.gateway_fault),
                ("POST", "/rest_fault", self.rest_fault),
                ("POST", "/clear_faults", self.clear_faults),
                ("POST", "/revoke_token", self.revoke_token),
                ("POST", "/config", self.config), ("POST", "/reset", self.reset)):
            app.router.add_route(method, path, fn)

    @staticmethod
    async def _body(request):
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    def _inject(self, spec):
        if not isinstance(spec, dict):
            raise ValueError("a message spec must be a JSON object")
        msg = self.fake.world.inject(spec)
        self.fake.gateway.publish(msg)
        return {"id": msg["id"], "channel_id": msg["channel_id"]}

    async def message(self, request):
        return web.json_response(self._inject(await self._body(request)))

    async def messages(self, request):
        specs = (await self._body(request)).get("messages", [])
        return web.json_response({"messages": [self._inject(s) for s in specs]})

    chat_key = "channel_id"     # what a sent message's chat is called (a subclass may differ)

    async def sent(self, request):
        rest, key = self.fake.rest, self.chat_key
        after = int(request.query.get("after", 0))
        deadline = time.monotonic() + float(request.query.get("wait", 0))
        chan = request.query.get(key)

        def pick():
            return [s for s in rest.sent[after:] if chan is None or s[key] == chan]
        out = pick()
        while not out and time.monotonic() < deadline:
            try:
                async with rest.sent_cond:
                    await asyncio.wait_for(rest.sent_cond.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            out = pick()
        return web.json_response({"sent": out, "last": len(rest.sent)})

    async def state(self, request):
        f = self.fake
        return web.json_response({
            "stats": f.stats, "sessions": [s.summary() for s in f.gateway.sessions.values()],
            "open_connections": len(f.gateway.conns), "acks": f.gateway.acks,
            "rest_faults": f.rest.faults, "config": f.cfg.public()})

    async def gateway_fault(self, request):
        n = await self.fake.gateway.fault(await self._body(request))
        return web.json_response({"connections": n})

    async def rest_fault(self, request):
        f = await self._body(request)
        if str(f.get("kind")) not in ("429", "500", "502", "503", "504", "slow", "drop",
                                      "drop_after"):
            raise ValueError("unknown rest fault %r" % f.get("kind"))
        f.setdefault("route", "*")
        f["count"] = int(f.get("count", 1))
        self.fake.rest.faults.append(f)
        return web.json_response({"ok": True})

    async def clear_faults(self, request):
        self.fake.rest.faults.clear()
        self.fake.gateway.acks = True
        return web.json_response({"ok": True})

    async def revoke_token(self, request):
        """The token is reset: REST answers 401, sessions end with 4004."""
        f = self.fake
        f.cfg.token = None
        await asyncio.gather(*(c.close(4004, True) for c in list(f.gateway.conns)))
        for s in list(f.gateway.sessions.values()):
            f.gateway.end(s)
        return web.json_response({"ok": True})

    async def config(self, request):
        self.fake.cfg.update(await self._body(request))
        return web.json_response(self.fake.cfg.public())

    async def reset(self, request):
        for c in list(self.fake.gateway.conns):
            c.drop()
        self.fake.reset_state()
        return web.json_response({"ok": True})


def make_tls(directory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path = os.path.join(directory, "ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx, ca_path


def write_atomic(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


async def start_site(app, port, tls):
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=tls, backlog=256)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def serve(args):
    fake = Fake(args)
    ctx, ca_path = make_tls(args.dir)
    rest = web.Application(client_max_size=1 << 20)

    async def rest_handler(request):
        return await fake.rest.handle(request)

    async def gateway_handler(request):
        return await fake.gateway.handle(request)
    rest.router.add_route("*", API + "/{tail:.*}", rest_handler)
    apps = [(rest, args.port, ctx)]
    for via, port in (("gateway", args.gateway_port), ("resume", args.resume_port)):
        gw = web.Application()
        gw["via"] = via
        gw.router.add_get("/", gateway_handler)
        apps.append((gw, port, ctx))
    ctl = web.Application(middlewares=[Control.bad_input])
    Control(fake).routes(ctl)
    apps.append((ctl, args.ctl_port, None))
    started = [await start_site(app, port, tls) for app, port, tls in apps]
    ports = [p for _, p in started]
    fake.urls = {"gateway_url": "wss://127.0.0.1:%d" % ports[1],
                 "resume_url": "wss://127.0.0.1:%d" % ports[2]}
    fake.reset_state()
    info = dict(fake.urls, port=ports[0], gateway_port=ports[1], resume_port=ports[2],
                ctl_port=ports[3], api_url="https://127.0.0.1:%d%s" % (ports[0], API),
                ca=ca_path, token=args.token, bot_id=BOT_ID, bot_username=BOT_NAME,
                guild_id=GUILD_ID, channels=CHANNELS, user_id=DEFAULT_USER)
    write_atomic(os.path.join(args.dir, "fake-discord.json"), json.dumps(info))
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await asyncio.wait_for(fake.gateway.shutdown(), 5)
    for runner, _ in started:
        await runner.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem and fake-discord.json go")
    ap.add_argument("--token", default="MTEwMDAwMDAwMDAwMDAwMDAwMQ.fake.hermes-test-token")
    ap.add_argument("--heartbeat-interval", type=int, default=41250, help="ms, sent in HELLO")
    ap.add_argument("--resume-timeout", type=float, default=180.0)
    for name in ("port", "gateway-port", "resume-port", "ctl-port"):
        ap.add_argument("--" + name, type=int, default=0)
    asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
