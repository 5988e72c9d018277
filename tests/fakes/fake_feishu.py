#!/usr/bin/python3
"""A protocol-faithful fake of Feishu's open platform (long connection + REST), for tests.

TLS on 127.0.0.1 with a certificate from a throwaway CA (trustme, <dir>/ca.pem): the
open API at https://127.0.0.1:PORT (what the client's `domain` points at), the long
connection's WebSocket on a second port, a plain-HTTP control port for tests.

Protocol facts (larksuite/oapi-sdk-go ws/client.go, ws/model.go, ws/pbbp2.pb.go;
open.feishu.cn docs for the event, send, reply, token and error-code pages):
- POST /callback/ws/endpoint {AppID, AppSecret} -> {code, msg, data{URL, ClientConfig
  {ReconnectCount, ReconnectInterval, ReconnectNonce, PingInterval}}}; code 1 (busy) and
  1000040343 are retryable, other codes refuse the app.  The URL's query carries
  device_id and service_id (every frame's `service`).
- Frames are binary protobuf pbbp2.Frame (proto2).  The client pings (method 0, header
  type=ping); the server answers type=pong, optionally with a ClientConfig JSON payload
  whose PingInterval the client must obey.  Events are data frames (method 1, type=event,
  message_id, sum, seq, trace_id); a payload may be split into `sum` fragments.  The
  client acknowledges an event by sending its (last) frame back with a biz_rt header and
  the payload {"code":200}; an event not acknowledged within ack_timeout (3 s) is pushed
  again, to a random connection of the app (cluster mode: each push goes to ONE of them).
- A refused handshake answers with Handshake-Status (514 auth failed, 403 forbidden),
  Handshake-Autherrcode (1000040350: over the 50 connections per app) and Handshake-Msg.
- REST errors come in the body's `code`, with HTTP 200 (99991663 token invalid, 230020
  chat rate, 230011 replied-to message recalled, 230002 bot not in the chat), except the
  app's rate limit: HTTP 429 + 99991400 + x-ogw-ratelimit-limit/-reset headers.
- tenant_access_token: the same token is returned while more than 30 min (or half its
  life, for the short lives tests use) remain; `uuid` on a send succeeds once per hour.
Departures: with echo_own (default on) the bot's own messages in group chats come back
as events (sender_type "app"), to prove the client drops them; the HTTP status of a
refused handshake is the Handshake-Status value; text over 150 KB gets 230025.

Control API (JSON) on the control port:
  POST /message {chat_id | user_id (p2p), text, mention_bot, mention [names], thread
                 (a message id: reply inside its thread), sender_type, message_type,
                 drop_acks (this many of its acks are lost)}
                 -> {"event_id", "message_id", "chat_id"}
  POST /messages {"messages": [spec, ...]}       GET /sent?after=N&wait=S[&chat_id=C]
  GET  /state: stats, events (pushes, acked), connections, config
  POST /fault {kind: drop | close (code) | mute | dup_push (count) |
       missing_fragment (count) | endpoint (code, http, count) | handshake (status,
       autherrcode, count) | rest (route send|reply|token|bot|*, code, http, headers,
       count, drop_after) | revoke_tokens}
  POST /recall {message_id}, /config {Config fields}, /reset
Run: fake_feishu.py --dir DIR; prints one JSON line (urls, ca, ids) when ready.
"""
import argparse
import asyncio
import collections
import json
import os
import random
import signal
import sys
import time
import uuid as uuidlib

from aiohttp import web, WSMsgType

from fake_discord import Control as DiscordControl, make_tls, start_site, write_atomic

APP_ID = "cli_a5fake0000000001"
APP_SECRET = "fake-feishu-app-secret-0123456789abcdef"
BOT_OPEN_ID = "ou_b0t00000000000000000000000000001"
BOT_NAME = "hermes-test"
TENANT = "2ed263bf32cf1651"
GROUPS = {"general": "oc_group0000000000000000000000001",
          "topic": "oc_group0000000000000000000000002",
          "forbidden": "oc_group0000000000000000000000003"}
DEFAULT_USER = "ou_user0000000000000000000000000001"
TEXT_LIMIT = 150 * 1024
RETRYABLE_ENDPOINT = (1, 1000040343)


# ---- pbbp2.Frame ------------------------------------------------------------------

def _varint(n):
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(num, data):
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def encode_frame(f):
    """f: {SeqID, LogID, service, method, headers [(k, v)], payload (bytes|None), ...}."""
    out = bytearray()
    for num, key in ((1, "SeqID"), (2, "LogID"), (3, "service"), (4, "method")):
        out += _varint(num << 3) + _varint(f.get(key, 0))
    for k, v in f.get("headers", []):
        out += _field(5, _field(1, k.encode()) + _field(2, v.encode()))
    for num, key in ((6, "payload_encoding"), (7, "payload_type")):
        if f.get(key) is not None:
            out += _field(num, f[key].encode())
    if f.get("payload") is not None:
        out += _field(8, f["payload"])
    if f.get("LogIDNew") is not None:
        out += _field(9, f["LogIDNew"].encode())
    return bytes(out)


def _read_varint(b, i):
    n = shift = 0
    while True:
        if i >= len(b) or shift > 63:
            raise ValueError("truncated or oversized varint")
        n |= (b[i] & 0x7F) << shift
        shift += 7
        i += 1
        if not b[i - 1] & 0x80:
            return n, i


def _fields(b):
    i = 0
    while i < len(b):
        tag, i = _read_varint(b, i)
        num, wire = tag >> 3, tag & 7
        if wire == 0:
            v, i = _read_varint(b, i)
        elif wire == 2:
            n, i = _read_varint(b, i)
            if i + n > len(b):
                raise ValueError("truncated field %d" % num)
            v, i = b[i:i + n], i + n
        elif wire in (1, 5):
            n = 8 if wire == 1 else 4
            v, i = b[i:i + n], i + n
        else:
            raise ValueError("wire type %d" % wire)
        yield num, wire, v


def decode_frame(b):
    f = {"headers": [], "payload": None}
    names = {1: "SeqID", 2: "LogID", 3: "service", 4: "method"}
    for num, wire, v in _fields(b):
        if num in names:
            if wire != 0:
                raise ValueError("field %d must be a varint" % num)
            if num in (3, 4):
                v &= 0xFFFFFFFF
                v = v - (1 << 32) if v >= 1 << 31 else v
            f[names[num]] = v
        elif num == 5:
            h = {n: x.decode() for n, w, x in _fields(v) if n in (1, 2)}
            if 1 not in h or 2 not in h:
                raise ValueError("a header without key or value")
            f["headers"].append((h[1], h[2]))
        elif num == 8:
            f["payload"] = bytes(v)
        elif num in (6, 7, 9):
            f[{6: "payload_encoding", 7: "payload_type", 9: "LogIDNew"}[num]] = v.decode()
    missing = [n for n in names.values() if n not in f]
    if missing:
        raise ValueError("required fields missing: %s" % missing)
    return f


def header(f, key):
    return next((v for k, v in f["headers"] if k == key), None)


# ---- state ---------------------------------------------------------------------------

class Config:
    """Everything a test may change at run time through POST /config."""

    def __init__(self, args):
        self.app_id, self.app_secret = args.app_id, args.app_secret
        self.ping_interval = args.ping_interval     # s, in the endpoint's ClientConfig
        self.pong_ping_interval = 0     # s put in each pong's ClientConfig; 0: no payload
        self.ack_timeout = args.ack_timeout         # s before an unacked event is re-pushed
        self.fragments = 1              # each event's payload split into this many frames
        self.shuffle_fragments = False
        self.token_expire = 7200
        self.echo_own = True
        self.max_connections = 50
        self.chat_qps = 5               # sends per chat per second (230020 beyond); 0: off

    def update(self, body):
        for key, value in body.items():
            if key.startswith("_") or not hasattr(self, key):
                raise ValueError("unknown setting %r" % key)
            current = getattr(self, key)
            if isinstance(current, bool) != isinstance(value, bool) or not isinstance(
                    value, (int, float) if isinstance(current, (int, float)) else type(current)):
                raise ValueError("%s must be %s" % (key, type(current).__name__))
            setattr(self, key, value)

    def public(self):
        return {k: v for k, v in vars(self).items() if k != "app_secret"}


def now_ms():
    return str(int(time.time() * 1000))


class World:
    """Chats and messages as Feishu stores them; the bot is in every group but one."""

    def __init__(self):
        self.messages = {}
        self.recalled = set()
        self.n = 0

    def new_id(self, prefix):
        self.n += 1
        return "%s_%032x" % (prefix, self.n)

    def p2p(self, uid):
        return "oc_p2p" + uid[7:]

    def chat_type(self, cid):
        return "group" if cid in GROUPS.values() else "p2p"

    def store(self, chat, sender, sender_type, text, parent=None, in_thread=False):
        mid = self.new_id("om")
        root = thread = ""
        if parent is not None:
            root = parent["root_id"] or parent["message_id"]
            thread = parent["thread_id"]
            if in_thread and not thread:
                thread = parent["thread_id"] = self.new_id("omt")
        m = {"message_id": mid, "root_id": root, "parent_id": parent["message_id"] if parent
             else "", "thread_id": thread, "chat_id": chat, "sender": sender,
             "sender_type": sender_type, "text": text, "create_time": now_ms()}
        self.messages[mid] = m
        return m

    def event(self, m, mentions, message_type="text"):
        sid = {"open_id": m["sender"], "union_id": "on_" + m["sender"][3:],
               "user_id": m["sender"][-8:]}
        msg = {"message_id": m["message_id"], "root_id": m["root_id"],
               "parent_id": m["parent_id"], "create_time": m["create_time"],
               "update_time": m["create_time"], "chat_id": m["chat_id"],
               "thread_id": m["thread_id"], "chat_type": self.chat_type(m["chat_id"]),
               "message_type": message_type, "mentions": mentions,
               "content": json.dumps({"text": m["text"]}) if message_type == "text" else
               json.dumps({"image_key": "img_v2_fake"}),
               "user_agent": "Mozilla/5.0 (fake)"}
        return {"schema": "2.0",
                "header": {"event_id": uuidlib.uuid4().hex, "token": "v_fake_token",
                           "create_time": now_ms(), "event_type": "im.message.receive_v1",
                           "tenant_key": TENANT, "app_id": APP_ID},
                "event": {"sender": {"sender_id": sid, "sender_type": m["sender_type"],
                                     "tenant_key": TENANT}, "message": msg}}

    def inject(self, spec):
        """A user's message from a control-API spec -> its event; ValueError on a bad spec."""
        uid = str(spec.get("user_id", DEFAULT_USER))
        if not uid.startswith("ou_"):
            raise ValueError("user ids are open_ids (ou_...)")
        chat = str(spec.get("chat_id") or self.p2p(uid))
        parent = None
        if spec.get("thread"):
            parent = self.messages.get(str(spec["thread"]))
            if parent is None or parent["chat_id"] != chat:
                raise ValueError("unknown message %s in %s" % (spec["thread"], chat))
        text, mentions = str(spec.get("text", "")), []
        names = ([BOT_NAME] if spec.get("mention_bot") else []) + list(spec.get("mention", []))
        for i, name in enumerate(names, 1):
            key = "@_user_%d" % i
            oid = BOT_OPEN_ID if name == BOT_NAME else "ou_" + name.encode().hex()[:32]
            mentions.append({"key": key, "id": {"open_id": oid, "union_id": "on_x",
                                                "user_id": ""}, "name": name,
                             "tenant_key": TENANT})
            text = key + " " + text
        m = self.store(chat, uid, str(spec.get("sender_type", "user")), text, parent,
                       in_thread=parent is not None)
        return self.event(m, mentions, str(spec.get("message_type", "text")))


class Push:
    """One event until it is acknowledged: its frames' ids and what happened to it."""

    def __init__(self, event, seq):
        self.event = event
        self.id = event["header"]["event_id"]
        self.frame_id = "%016x" % random.getrandbits(64)    # the frames' message_id header
        self.seq, self.log = seq, random.getrandbits(48)
        self.pushes, self.acked, self.last, self.conn = 0, False, 0.0, None
        self.drop_acks = 0              # acks of this event to lose (the "ack lost" fault)

    def frames(self, service, n):
        data = json.dumps(self.event).encode()
        step = max(1, -(-len(data) // n))
        parts = [data[i:i + step] for i in range(0, len(data), step)] or [b""]
        return [encode_frame({
            "SeqID": self.seq, "LogID": self.log, "service": service, "method": 1,
            "headers": [("type", "event"), ("message_id", self.frame_id),
                        ("sum", str(len(parts))), ("seq", str(i)),
                        ("trace_id", uuidlib.uuid4().hex), ("timestamp", now_ms())],
            "payload": p}) for i, p in enumerate(parts)]


class Conn:
    def __init__(self, ws, request, service, device):
        self.ws, self.request, self.service, self.device = ws, request, service, device
        self.muted = False
        self.pushed = 0                 # events pushed to this connection
        self.pings = []                 # monotonic times of the client's pings
        self.queue = asyncio.Queue()
        self.writer = asyncio.ensure_future(self._write())

    async def _write(self):
        while True:
            data = await self.queue.get()
            if data is None:
                return
            try:
                await self.ws.send_bytes(data)
            except (ConnectionError, RuntimeError):
                return

    def drop(self):
        if self.request.transport is not None:
            self.request.transport.abort()


class LongConn:
    """The WebSocket side: tickets, connections, pings, pushes, acks and re-pushes."""

    def __init__(self, cfg, stats):
        self.cfg, self.stats = cfg, stats
        self.conns, self.pending, self.tickets = [], collections.OrderedDict(), {}
        self.service = 33554678
        self.seq = 0
        self.faults = collections.Counter()
        self.handshake_fault = None
        self.ws_url = None
        self.task = None

    def endpoint(self):
        ticket = uuidlib.uuid4().hex
        self.tickets[ticket] = time.monotonic()
        return ("%s/ws/v2?fpid=493&aid=552564&device_id=%d&access_key=%s&service_id=%d"
                "&ticket=%s" % (self.ws_url, random.getrandbits(62), uuidlib.uuid4().hex,
                                self.service, ticket))

    def _refuse(self, status, autherr, msg):
        self.stats["handshakes_refused"] += 1
        return web.Response(status=status, reason="Refused", text=msg, headers={
            "Handshake-Status": str(status), "Handshake-Msg": msg,
            "Handshake-Autherrcode": str(autherr)})

    async def handle(self, request):
        q = request.query
        hf = self.handshake_fault
        if hf is not None and hf["count"] > 0:
            hf["count"] -= 1
            return self._refuse(int(hf.get("status", 514)), int(hf.get("autherrcode", 0)),
                                "refused by a fault")
        t = self.tickets.get(q.get("ticket", ""))
        if t is None or time.monotonic() - t > 300 or q.get("service_id") != str(self.service):
            return self._refuse(514, 1000040344, "invalid ticket")
        if len(self.conns) >= self.cfg.max_connections:
            return self._refuse(514, 1000040350, "exceed connection limit")
        ws = web.WebSocketResponse(compress=False, max_msg_size=1 << 20, autoping=True)
        await ws.prepare(request)
        conn = Conn(ws, request, self.service, q.get("device_id"))
        self.conns.append(conn)
        self.stats["connections"] += 1
        for p in self.pending.values():       # what waited for a connection goes out now
            if not p.acked and (p.conn is None or p.conn not in self.conns):
                self.push(p, conn)
        try:
            await self._read(conn)
        finally:
            conn.queue.put_nowait(None)
            self.conns.remove(conn)
        return ws

    async def _read(self, conn):
        while True:
            msg = await conn.ws.receive()
            if msg.type == WSMsgType.BINARY:
                self._on_frame(conn, msg.data)
            elif msg.type == WSMsgType.TEXT:
                self.stats["text_frames"] += 1
            else:
                key = "client_closes" if msg.type == WSMsgType.CLOSE else "client_drops"
                self.stats[key] += 1
                return

    def _on_frame(self, conn, data):
        try:
            f = decode_frame(data)
        except (ValueError, UnicodeDecodeError) as e:
            self.stats["bad_frames"].append(str(e))
            return
        if f["service"] != conn.service:
            self.stats["bad_service"] += 1
        if f["method"] == 0 and header(f, "type") == "ping":
            self._ping(conn, f)
        elif f["method"] == 1:
            self._ack(conn, f)
        else:
            self.stats["bad_frames"].append("unexpected frame %r" % header(f, "type"))

    def _ping(self, conn, f):
        conn.pings.append(time.monotonic())
        self.stats["pings"] += 1
        if conn.muted:
            return
        pong = {"SeqID": 0, "LogID": 0, "service": conn.service, "method": 0,
                "headers": [("type", "pong")], "payload": None}
        if self.cfg.pong_ping_interval:
            pong["payload"] = json.dumps({
                "ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30,
                "PingInterval": self.cfg.pong_ping_interval}).encode()
        conn.queue.put_nowait(encode_frame(pong))

    def _ack(self, conn, f):
        p = next((p for p in self.pending.values() if p.frame_id == header(f, "message_id")),
                 None)
        why = None
        try:
            code = json.loads(f["payload"] or b"null")["code"]
        except (ValueError, TypeError, KeyError):
            code = None
        if p is None:
            why = "an ack for no event we pushed"
        elif (f["SeqID"], f["LogID"]) != (p.seq, p.log) or header(f, "type") != "event":
            why = "an ack whose SeqID, LogID or type differs from the pushed frame"
        elif code != 200 or header(f, "biz_rt") is None:
            why = "an ack without code 200 or biz_rt"
        if why is not None:
            self.stats["bad_acks"].append(why)
            return
        if p.drop_acks > 0:
            p.drop_acks -= 1
            self.stats["acks_dropped"] += 1
            return
        self.stats["dup_acks" if p.acked else "acks"] += 1
        if p.pushes > 1 and not p.acked:
            self.stats["acked_after_repush"] += 1
        p.acked = True

    def publish(self, event, drop_acks=0):
        self.seq += 1
        p = Push(event, self.seq)
        p.drop_acks = drop_acks
        self.pending[p.id] = p
        self.push(p)
        if self.faults["dup_push"] > 0:
            self.faults["dup_push"] -= 1
            self.push(p)
        return p

    def push(self, p, conn=None):
        live = [c for c in self.conns if not c.ws.closed]
        if conn is None and not live:
            return                       # held until a connection comes
        conn = conn or random.choice(live)
        frames = p.frames(conn.service, max(1, self.cfg.fragments))
        if self.cfg.shuffle_fragments:
            random.shuffle(frames)
        if len(frames) > 1 and self.faults["missing_fragment"] > 0:
            self.faults["missing_fragment"] -= 1
            frames.pop(random.randrange(len(frames)))
        p.pushes += 1
        p.last, p.conn = time.monotonic(), conn
        self.stats["pushes"] += 1
        conn.pushed += 1
        if conn.muted:
            return
        for fr in frames:
            conn.queue.put_nowait(fr)

    async def repush_loop(self):
        """Events not acknowledged within ack_timeout are pushed again."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for p in list(self.pending.values()):
                if not p.acked and p.pushes and now - p.last > self.cfg.ack_timeout:
                    self.stats["repushes"] += 1
                    self.push(p)

    async def fault(self, body):
        kind = body.get("kind")
        if kind == "drop":
            for c in self.conns:
                c.drop()
        elif kind == "close":
            await asyncio.gather(*(c.ws.close(code=int(body.get("code", 1000)))
                                   for c in list(self.conns)))
        elif kind == "mute":
            for c in self.conns:
                c.muted = True
        elif kind in ("dup_push", "missing_fragment"):
            self.faults[kind] += int(body.get("count", 1))
        elif kind == "handshake":
            self.handshake_fault = dict(body, count=int(body.get("count", 1)))
        else:
            return False
        return True

    def summary(self):
        return {p.id: {"pushes": p.pushes, "acked": p.acked,
                       "message_id": p.event["event"]["message"]["message_id"]}
                for p in self.pending.values()}


class Rest:
    """The open API: token, bot info, endpoint, send and reply, with faults."""

    def __init__(self, cfg, world, longconn, stats):
        self.cfg, self.world, self.lc, self.stats = cfg, world, longconn, stats
        self.tokens = {}                # token -> expiry (monotonic)
        self.token = None
        self.uuids = {}                 # uuid -> (time, sent entry)
        self.sent = []
        self.sent_cond = asyncio.Condition()
        self.faults = []
        self.chat_times = collections.defaultdict(collections.deque)

    @staticmethod
    def ok(data=None, **extra):
        return web.json_response(dict({"code": 0, "msg": "success", "data": data or {}},
                                      **extra))

    @staticmethod
    def err(code, msg, status=200, headers=None):
        return web.json_response({"code": code, "msg": msg, "data": {}}, status=status,
                                 headers=headers)

    def _fault(self, route):
        for f in self.faults:
            if f["route"] in ("*", route) and f["count"] > 0:
                f["count"] -= 1
                return f
        return None

    async def answer(self, request, route, handler):
        self.stats["rest"][route] += 1
        f = self._fault(route)
        if f is not None and not f.get("drop_after"):
            if f.get("drop"):
                request.transport.abort()
                return web.Response()
            return self.err(int(f.get("code", 0)), f.get("msg", "fault"),
                            int(f.get("http", 200)), f.get("headers"))
        resp = await handler(request)
        if f is not None:                # done, but the answer never arrives
            request.transport.abort()
        return resp

    def authorized(self, request):
        tok = request.headers.get("Authorization", "")[len("Bearer "):]
        exp = self.tokens.get(tok)
        return exp is not None and time.monotonic() < exp

    async def token_internal(self, request):
        body = await request.json()
        if body.get("app_id") != self.cfg.app_id:
            return self.err(10003, "invalid param: app_id")
        if body.get("app_secret") != self.cfg.app_secret:
            return self.err(10014, "app secret invalid")
        now, life = time.monotonic(), self.cfg.token_expire
        left = self.tokens.get(self.token, 0) - now
        if self.token is None or left <= min(1800, life / 2):
            self.token = "t-g1" + uuidlib.uuid4().hex
            self.tokens[self.token] = now + life
            self.stats["tokens_issued"] += 1
            left = life
        return web.json_response({"code": 0, "msg": "ok", "tenant_access_token": self.token,
                                  "expire": int(left)})

    async def bot_info(self, request):
        if not self.authorized(request):
            return self.err(99991663, "Invalid access token for authorization.")
        return web.json_response({"code": 0, "msg": "ok", "bot": {
            "activate_status": 2, "app_name": BOT_NAME, "avatar_url": "",
            "ip_white_list": [], "open_id": BOT_OPEN_ID}})

    async def endpoint(self, request):
        self.stats["endpoint_calls"] += 1
        body = await request.json()
        if request.headers.get("locale") != "zh":
            self.stats["endpoint_no_locale"] += 1
        if body.get("AppID") != self.cfg.app_id or body.get("AppSecret") != self.cfg.app_secret:
            return web.json_response({"code": 1000040345, "msg": "app id or secret invalid",
                                      "data": None})
        return self.ok({"URL": self.lc.endpoint(), "ClientConfig": {
            "ReconnectCount": -1, "ReconnectInterval": 120, "ReconnectNonce": 30,
            "PingInterval": self.cfg.ping_interval}})

    def _check_text(self, body):
        if body.get("msg_type") != "text":
            return self.err(230001, "invalid msg_type: this fake takes text")
        try:
            text = json.loads(body.get("content", ""))["text"]
        except (ValueError, TypeError, KeyError):
            return self.err(230001, "invalid message content")
        if not isinstance(text, str):
            return self.err(230001, "invalid message content")
        if len(body["content"].encode()) > TEXT_LIMIT:
            return self.err(230025, "message content too long")
        u = body.get("uuid")
        if u is not None and (not isinstance(u, str) or len(u) > 50):
            return self.err(99992402, "field validation failed: uuid")
        return text

    def _over_rate(self, chat):
        if not self.cfg.chat_qps:
            return False
        q, now = self.chat_times[chat], time.monotonic()
        while q and now - q[0] > 1.0:
            q.popleft()
        if len(q) >= self.cfg.chat_qps:
            return True
        q.append(now)
        return False

    async def _post(self, request, chat, parent, via):
        """Validates a send or reply body, applies uuid and rate rules, records it."""
        if not self.authorized(request):
            return self.err(99991663, "Invalid access token for authorization.")
        body = await request.json()
        text = self._check_text(body)
        if isinstance(text, web.Response):
            return text
        u = body.get("uuid")
        hit = self.uuids.get(u) if u else None
        if hit is not None and time.monotonic() - hit[0] < 3600:
            self.stats["uuid_dedup"] += 1
            return self.ok(hit[1]["data"])
        if chat == GROUPS["forbidden"] or (chat not in GROUPS.values()
                                           and not chat.startswith("oc_p2p")):
            return self.err(230002, "Bot is not in the chat.")
        if self._over_rate(chat):
            self.stats["rate_limited"] += 1
            return self.err(230020, "message frequency limit", headers={
                "x-ogw-ratelimit-limit": str(self.cfg.chat_qps), "x-ogw-ratelimit-reset": "1"})
        m = self.world.store(chat, BOT_OPEN_ID, "app", text, parent,
                             in_thread=bool(body.get("reply_in_thread")))
        data = {"message_id": m["message_id"], "root_id": m["root_id"],
                "parent_id": m["parent_id"], "thread_id": m["thread_id"], "msg_type": "text",
                "create_time": m["create_time"], "chat_id": chat, "deleted": False,
                "sender": {"id": APP_ID, "id_type": "app_id", "sender_type": "app",
                           "tenant_key": TENANT}, "body": {"content": body["content"]}}
        entry = {"via": via, "chat_id": chat, "text": text, "uuid": u, "data": data,
                 "time": time.time(),
                 "reply_to": parent["message_id"] if parent else None,
                 "reply_in_thread": body.get("reply_in_thread"), "thread_id": m["thread_id"],
                 "root_id": m["root_id"], "message_id": m["message_id"]}
        if u:
            self.uuids[u] = (time.monotonic(), entry)
        async with self.sent_cond:
            self.sent.append(entry)
            self.sent_cond.notify_all()
        if self.cfg.echo_own and chat in GROUPS.values():
            self.lc.publish(self.world.event(m, []))
        return self.ok(data)

    async def send(self, request):
        if request.query.get("receive_id_type") != "chat_id":
            return self.err(230001, "this fake takes receive_id_type=chat_id")
        body = await request.json()
        return await self._post(request, str(body.get("receive_id")), None, "create")

    async def reply(self, request):
        mid = request.match_info["mid"]
        parent = self.world.messages.get(mid)
        if mid in self.world.recalled:
            return self.err(230011, "The message was recalled.")
        if parent is None:
            return self.err(230001, "invalid message_id")
        return await self._post(request, parent["chat_id"], parent, "reply")


def new_stats():
    counters = ("connections handshakes_refused pings bad_service pushes repushes acks "
                "dup_acks acks_dropped acked_after_repush client_closes client_drops "
                "text_frames endpoint_calls endpoint_no_locale tokens_issued uuid_dedup "
                "rate_limited").split()
    stats = dict.fromkeys(counters, 0)
    stats.update(bad_acks=[], bad_frames=[], rest=collections.Counter())
    return stats


class Fake:
    def __init__(self, args):
        self.args = args
        self.ws_url = None
        self.reset_state()

    def reset_state(self):
        self.cfg = Config(self.args)
        self.stats = new_stats()
        self.world = World()
        self.lc = LongConn(self.cfg, self.stats)
        self.lc.ws_url = self.ws_url
        self.rest = Rest(self.cfg, self.world, self.lc, self.stats)
        if getattr(self, "task", None) is not None:
            self.task.cancel()
        self.task = asyncio.ensure_future(self.lc.repush_loop())


class Control(DiscordControl):
    """The tests' side door: inject messages, read what the bot did, switch faults."""

    chat_key = "chat_id"

    def routes(self, app):
        for method, path, fn in (
                ("POST", "/message", self.message), ("POST", "/messages", self.messages),
                ("GET", "/sent", self.sent), ("GET", "/state", self.state),
                ("POST", "/fault", self.fault), ("POST", "/recall", self.recall),
                ("POST", "/config", self.config), ("POST", "/reset", self.reset)):
            app.router.add_route(method, path, fn)

    def _inject(self, spec):
        if not isinstance(spec, dict):
            raise ValueError("a message spec must be a JSON object")
        ev = self.fake.world.inject(spec)
        self.fake.lc.publish(ev, int(spec.get("drop_acks", 0)))
        m = ev["event"]["message"]
        return {"event_id": ev["header"]["event_id"], "message_id": m["message_id"],
                "chat_id": m["chat_id"], "thread_id": m["thread_id"]}

    async def state(self, request):
        f = self.fake
        return web.json_response({
            "stats": f.stats, "events": f.lc.summary(), "config": f.cfg.public(),
            "connections": [{"device_id": c.device, "pings": len(c.pings), "pushed": c.pushed,
                             "ping_gaps": [round(b - a, 3) for a, b in
                                           zip(c.pings, c.pings[1:])][-10:],
                             "muted": c.muted} for c in f.lc.conns]})

    async def fault(self, request):
        body = await self._body(request)
        kind = body.get("kind")
        if kind == "endpoint":
            body = dict(body, route="endpoint")
            kind = "rest"
        if kind == "rest":
            self.fake.rest.faults.append(dict(body, route=body.get("route", "*"),
                                              count=int(body.get("count", 1))))
        elif kind == "revoke_tokens":
            self.fake.rest.tokens.clear()
            self.fake.rest.token = None
        elif not await self.fake.lc.fault(body):
            raise ValueError("unknown fault %r" % kind)
        return web.json_response({"ok": True})

    async def recall(self, request):
        self.fake.world.recalled.add(str((await self._body(request))["message_id"]))
        return web.json_response({"ok": True})

    async def reset(self, request):
        for c in list(self.fake.lc.conns):
            c.drop()
        self.fake.reset_state()
        return web.json_response({"ok": True})


async def serve(args):
    fake = Fake(args)
    ctx, ca_path = make_tls(args.dir)
    api = web.Application(client_max_size=1 << 20)
    routes = (("POST", "/open-apis/auth/v3/tenant_access_token/internal", "token",
               lambda r: fake.rest.token_internal(r)),
              ("GET", "/open-apis/bot/v3/info", "bot", lambda r: fake.rest.bot_info(r)),
              ("POST", "/callback/ws/endpoint", "endpoint", lambda r: fake.rest.endpoint(r)),
              ("POST", "/open-apis/im/v1/messages", "send", lambda r: fake.rest.send(r)),
              ("POST", "/open-apis/im/v1/messages/{mid}/reply", "reply",
               lambda r: fake.rest.reply(r)))
    for method, path, name, fn in routes:
        async def handler(request, name=name, fn=fn):
            return await fake.rest.answer(request, name, fn)
        api.router.add_route(method, path, handler)
    lc = web.Application()

    async def ws_handler(request):
        return await fake.lc.handle(request)
    lc.router.add_get("/ws/v2", ws_handler)
    ctl = web.Application(middlewares=[Control.bad_input])
    Control(fake).routes(ctl)
    started = [await start_site(app, port, tls) for app, port, tls in
               ((api, args.port, ctx), (lc, args.ws_port, ctx), (ctl, args.ctl_port, None))]
    ports = [p for _, p in started]
    fake.ws_url = "wss://127.0.0.1:%d" % ports[1]
    fake.reset_state()
    info = {"domain": "https://127.0.0.1:%d" % ports[0], "ws_url": fake.ws_url,
            "ctl_port": ports[2], "ca": ca_path, "app_id": args.app_id,
            "app_secret": args.app_secret, "bot_open_id": BOT_OPEN_ID, "groups": GROUPS,
            "user_id": DEFAULT_USER}
    write_atomic(os.path.join(args.dir, "fake-feishu.json"), json.dumps(info))
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for c in list(fake.lc.conns):
        c.drop()
    for runner, _ in started:
        await runner.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem and fake-feishu.json go")
    ap.add_argument("--app-id", default=APP_ID)
    ap.add_argument("--app-secret", default=APP_SECRET)
    ap.add_argument("--ping-interval", type=int, default=120, help="s, in ClientConfig")
    ap.add_argument("--ack-timeout", type=float, default=3.0)
    for name in ("port", "ws-port", "ctl-port"):
        ap.add_argument("--" + name, type=int, default=0)
    asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
