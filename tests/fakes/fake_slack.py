#!/usr/bin/python3
"""A protocol-faithful fake of Slack's Web API and Socket Mode, for tests.

TLS on 127.0.0.1 with a certificate from a throwaway CA (trustme, written to
<dir>/ca.pem): the Web API at https://127.0.0.1:PORT/api/<method> and the
Socket Mode links at wss://127.0.0.1:PORT/link/?ticket=...; a plain-HTTP
control port for tests.  Sources: python-slack-sdk (socket_mode request,
response, the mock server's hello and disconnect frames, the 429 retry
handler), Slack's method pages as quoted in platforms-west.md section 2.

What it does as Slack does:
- auth.test and chat.postMessage take the bot token (xoxb), apps.connections
  .open the app-level token (xapp); none: not_authed; unknown: invalid_auth;
  the wrong kind: not_allowed_token_type; errors are HTTP 200 {ok:false,error}.
- apps.connections.open returns a single-use URL: a ticket used twice, or
  older than ticket_ttl, is refused at the upgrade (HTTP 401).
- a link starts with hello; each event goes out in an events_api envelope
  (a fresh envelope_id per delivery, retry_attempt, retry_reason); one not
  acknowledged ({"envelope_id"}) within ack_timeout is delivered again,
  retry_delays[n] later, to whichever link is open, up to len(retry_delays)
  times, then dropped; with no link open a delivery goes nowhere and times
  out the same way.  Events spread round-robin over the open links (also
  one told to disconnect, until it closes).
- disconnect {reason}: the link is closed close_after seconds later.
- the server pings every server_ping_interval and answers pings.
- a channel mention makes two events, message and app_mention, as for an
  app subscribed to both; the bot's own posts come back as message events
  (with bot_id) when echo_own is set.
- chat.postMessage: channel_not_found, not_in_channel, no_text; text over
  40,000 characters is truncated with the warning message_truncated; a JSON
  body without a charset gets the warning missing_charset; a channel gets at
  most post_rate[0] posts per post_rate[1] seconds, then HTTP 429 with
  Retry-After and error ratelimited.
Where it departs from Slack [inferred]: the exact close codes, the refusal of
a reused ticket (Slack's behaviour is undocumented), retry_reason "timeout"
for every retry.

Control API (JSON) on the control port:
  POST /message {channel | dm, user, text, thread_ts, mention_bot, is_bot,
                 subtype}                           -> {"ts", "channel", "event_ids"}
  POST /messages {"messages": [spec, ...]}          -> {"messages": [...]}
  GET  /sent?after=N&wait=S                         -> {"sent", "last"}
  GET  /state: stats, links, deliveries, config
  POST /fault {kind: disconnect (reason, close_after, which: all | newest) |
       drop | silent | close (code) | ignore_acks (count) | dup (count)}
  POST /web_fault {kind: 429 (retry_after) | 500 | error (error) | drop |
       drop_after, method ("*" or a method name), count}
  POST /clear_faults, /revoke (which: bot: token_revoked | app: invalid_auth,
       links closed), /config {fields}, /reset
Run: fake_slack.py --dir DIR [--bot-token T] [--app-token T]; prints one JSON
line (ports, urls, ca, ids) when ready, also written to <dir>/fake-slack.json.
"""
import argparse
import asyncio
import collections
import json
import math
import os
import signal
import sys
import time
import urllib.parse
import uuid

from aiohttp import web, WSMsgType

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fake_discord import make_tls, start_site, write_atomic   # noqa: E402 (shared)

TEAM, TEAM_NAME = "T0HERMES", "Hermes Test"
BOT_USER, BOT_ID, APP_ID = "U0BOT", "B0BOT", "A0APP"
CHANNELS = {"general": "C0GENERAL", "second": "C0SECOND", "notin": "C0NOTIN"}
DEFAULT_USER = "U0USER1"
MAX_TEXT = 40000


def escape(text):
    """Slack's encoding of &, < and > in message text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Config:
    """Everything a test may change at run time through POST /config."""

    def __init__(self, args):
        self.bot_token = args.bot_token
        self.app_token = args.app_token
        self.ack_timeout = 3.0                  # s: Slack's ~3 s
        self.retry_delays = [0.0, 60.0, 300.0]  # s after each missed ack
        self.server_ping_interval = 10.0
        self.ticket_ttl = 30.0
        self.close_after = {"warning": 10.0, "refresh_requested": 5.0,
                            "link_disabled": 2.0, "too_many_websockets": 1.0}
        self.app_mention = True                 # a channel mention also gives app_mention
        self.echo_own = True                    # our posts come back as message events
        self.post_rate = [5, 5.0]               # per channel: posts per window (s)

    def update(self, body):
        for key, value in body.items():
            if key.startswith("_") or not hasattr(self, key):
                raise ValueError("unknown setting %r" % key)
            cur = getattr(self, key)
            if cur is not None and not isinstance(value, type(cur)) and not (
                    isinstance(cur, float) and isinstance(value, int)):
                raise ValueError("%s must be %s" % (key, type(cur).__name__))
            if key == "close_after":
                self.close_after.update(value)
            else:
                setattr(self, key, value)

    def public(self):
        return {k: v for k, v in vars(self).items() if not k.endswith("_token")}


class Link:
    """One Socket Mode WebSocket."""

    def __init__(self, lid, ws, request):
        self.id, self.ws, self.request = lid, ws, request
        self.opened = time.monotonic()
        self.closed_at = None
        self.retiring = None                    # the disconnect reason sent
        self.silent = False                     # half-open: sends nothing, answers nothing

    def alive(self):
        return self.closed_at is None and not self.ws.closed

    async def send(self, obj):
        if self.silent or not self.alive():
            return False
        try:
            await self.ws.send_str(json.dumps(obj))
            return True
        except (ConnectionError, RuntimeError):
            return False

    def drop(self):
        if self.request.transport is not None:
            self.request.transport.abort()

    def summary(self):
        return {"id": self.id, "alive": self.alive(), "retiring": self.retiring,
                "silent": self.silent}


class Delivery:
    """One event until it is acknowledged or its retries run out."""

    def __init__(self, event_id, payload):
        self.event_id, self.payload = event_id, payload
        self.attempt = 0
        self.envelopes = []                     # (envelope_id, link id or None)
        self.acked = asyncio.Event()
        self.state = "pending"                  # acked | dropped
        self.sent_at = {}                       # envelope_id -> monotonic send time


class Fake:
    def __init__(self, args):
        self.args = args
        self.cfg = Config(args)
        self.urls = {}
        self.reset_state()

    def reset_state(self):
        self.stats = collections.Counter({k: 0 for k in (
            "links", "envelopes", "acks", "retries", "dropped", "duplicated", "no_link",
            "acks_ignored", "acks_unknown", "link_refused", "disconnects", "post_429")})
        self.sent = []
        self.sent_cond = asyncio.Condition()
        self.links = {}
        self.next_link = 0
        self.rr = 0
        self.tickets = {}                       # ticket -> (issued at, used)
        self.pending = {}                       # envelope_id -> Delivery
        self.deliveries = {}                    # event_id -> Delivery
        self.web_faults = []
        self.revoked = set()                    # bot tokens that read token_revoked
        self.ignore_acks = 0
        self.dup = 0
        self.ts_last = 0
        self.events = 0
        self.messages = collections.defaultdict(list)    # channel -> ts list
        self.post_times = collections.defaultdict(collections.deque)
        self.max_links = 0
        self.ack_ms = collections.deque(maxlen=100000)   # send to ack, per envelope
        self.gaps = 0                           # deliveries made with no link open

    # -- ids ----------------------------------------------------------------
    def ts(self):
        now = int(time.time() * 1e6)
        self.ts_last = max(now, self.ts_last + 1)
        return "%d.%06d" % divmod(self.ts_last, 1000000)

    def event_id(self):
        self.events += 1
        return "Ev%08dHERMES" % self.events

    # -- events ---------------------------------------------------------------
    def publish(self, event):
        """Wraps event in an event_callback payload and starts delivering it."""
        eid = self.event_id()
        payload = {"token": "fake-verification-token", "team_id": TEAM, "api_app_id": APP_ID,
                   "event": event, "type": "event_callback", "event_id": eid,
                   "event_time": int(time.time()), "is_ext_shared_channel": False,
                   "event_context": "4-" + uuid.uuid4().hex,
                   "authorizations": [{"enterprise_id": None, "team_id": TEAM,
                                       "user_id": BOT_USER, "is_bot": True,
                                       "is_enterprise_install": False}]}
        d = Delivery(eid, payload)
        self.deliveries[eid] = d
        asyncio.ensure_future(self.run_delivery(d))
        return eid

    def open_links(self):
        return [k for k in self.links.values() if k.alive()]

    async def send_envelope(self, d, link):
        env_id = str(uuid.uuid4())
        env = {"envelope_id": env_id, "payload": d.payload, "type": "events_api",
               "accepts_response_payload": False, "retry_attempt": d.attempt,
               "retry_reason": "timeout" if d.attempt > 0 else ""}
        self.pending[env_id] = d
        d.envelopes.append((env_id, link.id if link else None))
        if link is None or not await link.send(env):
            self.stats["deliveries_lost"] += 1
        else:
            d.sent_at[env_id] = time.monotonic()        # written to the socket
            self.stats["envelopes"] += 1
            if d.attempt > 0:
                self.stats["retries"] += 1

    async def deliver_once(self, d):
        links = self.open_links()
        if not links:
            self.gaps += 1
            self.stats["no_link"] += 1
            await self.send_envelope(d, None)
            return
        self.rr += 1
        await self.send_envelope(d, links[self.rr % len(links)])
        if self.dup > 0:
            self.dup -= 1
            self.stats["duplicated"] += 1
            await self.send_envelope(d, links[(self.rr + 1) % len(links)])

    async def run_delivery(self, d):
        while True:
            await self.deliver_once(d)
            try:
                await asyncio.wait_for(d.acked.wait(), self.cfg.ack_timeout)
                d.state = "acked"
                return
            except asyncio.TimeoutError:
                pass
            if d.attempt >= len(self.cfg.retry_delays):
                d.state = "dropped"
                self.stats["dropped"] += 1
                return
            await asyncio.sleep(self.cfg.retry_delays[d.attempt])
            d.attempt += 1
            if d.acked.is_set():                # a late ack arrived meanwhile
                d.state = "acked"
                return

    def ack(self, link, env_id):
        d = self.pending.get(env_id)
        if d is None:
            self.stats["acks_unknown"] += 1
            return
        if self.ignore_acks > 0:
            self.ignore_acks -= 1
            self.stats["acks_ignored"] += 1
            return
        self.stats["acks"] += 1
        if env_id in d.sent_at:
            self.ack_ms.append((time.monotonic() - d.sent_at[env_id]) * 1000)
        if d.acked.is_set():
            self.stats["acks_again"] += 1
        d.acked.set()

    def inject(self, spec):
        """A user's message; returns what the test needs to know of it."""
        user = str(spec.get("user", DEFAULT_USER))
        if spec.get("dm"):
            channel, ctype = "D" + user[1:], "im"
        else:
            channel = str(spec.get("channel", CHANNELS["general"]))
            if channel not in CHANNELS.values():
                raise ValueError("unknown channel %s" % channel)
            ctype = "channel"
        text = escape(str(spec.get("text", "")))
        if spec.get("mention_bot"):
            text = "<@%s> %s" % (BOT_USER, text)
        ts = self.ts()
        self.messages[channel].append(ts)
        ev = {"type": "message", "channel": channel, "user": user, "text": text, "ts": ts,
              "team": TEAM, "event_ts": ts, "channel_type": ctype,
              "client_msg_id": str(uuid.uuid4()),
              "blocks": [{"type": "rich_text", "block_id": "b", "elements": []}]}
        if spec.get("thread_ts"):
            ev["thread_ts"] = str(spec["thread_ts"])
            ev["parent_user_id"] = user
        if spec.get("is_bot"):
            ev["bot_id"] = "B" + user[1:]
            ev["bot_profile"] = {"id": ev["bot_id"], "name": "another bot"}
        if spec.get("subtype"):
            ev["subtype"] = str(spec["subtype"])
        ids = [self.publish(ev)]
        if ctype == "channel" and spec.get("mention_bot") and self.cfg.app_mention:
            am = {k: ev[k] for k in ("user", "text", "ts", "channel", "event_ts", "team",
                                     "client_msg_id", "blocks")}
            am["type"] = "app_mention"
            am.update({k: ev[k] for k in ("thread_ts", "bot_id", "bot_profile") if k in ev})
            ids.append(self.publish(am))
        return {"ts": ts, "channel": channel, "event_ids": ids}

    # -- Socket Mode ------------------------------------------------------------
    async def link_handler(self, request):
        ticket = request.query.get("ticket", "")
        got = self.tickets.get(ticket)
        if got is None or got[1] or time.monotonic() - got[0] > self.cfg.ticket_ttl:
            self.stats["link_refused"] += 1
            self.stats["link_refused_" + ("reused" if got and got[1] else "unknown"
                                          if got is None else "expired")] += 1
            return web.Response(status=401, text="invalid or used ticket")
        self.tickets[ticket] = (got[0], True)
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        self.next_link += 1
        link = Link(self.next_link, ws, request)
        self.links[link.id] = link
        self.stats["links"] += 1
        self.max_links = max(self.max_links, len(self.open_links()))
        await link.send({"type": "hello", "num_connections": len(self.open_links()),
                         "debug_info": {"host": "applink-fake-%d" % link.id,
                                        "build_number": 1,
                                        "approximate_connection_time": 18060},
                         "connection_info": {"app_id": APP_ID}})
        pinger = asyncio.ensure_future(self.ping_loop(link))
        try:
            await self.read_loop(link)
        finally:
            pinger.cancel()
            link.closed_at = time.monotonic()
        return ws

    async def ping_loop(self, link):
        while link.alive():
            await asyncio.sleep(self.cfg.server_ping_interval)
            if not link.silent and link.alive():
                try:
                    await link.ws.ping()
                except (ConnectionError, RuntimeError):
                    return

    async def read_loop(self, link):
        async for msg in link.ws:
            if msg.type == WSMsgType.PING:
                if not link.silent:
                    await link.ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT:
                if link.silent:
                    continue
                try:
                    body = json.loads(msg.data)
                except ValueError:
                    self.stats["bad_frames"] += 1
                    continue
                if isinstance(body, dict) and isinstance(body.get("envelope_id"), str):
                    self.ack(link, body["envelope_id"])
                else:
                    self.stats["bad_frames"] += 1
            elif msg.type == WSMsgType.BINARY:
                self.stats["bad_frames"] += 1

    async def disconnect(self, link, reason, close_after):
        link.retiring = reason
        self.stats["disconnects"] += 1
        await link.send({"type": "disconnect", "reason": reason,
                         "debug_info": {"host": "applink-fake-%d" % link.id}})
        await asyncio.sleep(close_after)
        if link.alive():
            await link.ws.close(code=1001, message=b"disconnect")

    async def fault(self, f):
        kind = f.get("kind")
        links = self.open_links()
        if kind == "disconnect":
            reason = str(f.get("reason", "warning"))
            after = float(f.get("close_after", self.cfg.close_after.get(reason, 5.0)))
            targets = links[-1:] if f.get("which") == "newest" else links
            for k in targets:
                asyncio.ensure_future(self.disconnect(k, reason, after))
        elif kind == "drop":
            for k in links:
                k.drop()
        elif kind == "silent":
            for k in links:
                k.silent = True
        elif kind == "close":
            for k in links:
                await k.ws.close(code=int(f.get("code", 1011)), message=b"fault")
        elif kind == "ignore_acks":
            self.ignore_acks = int(f.get("count", 1))
        elif kind == "dup":
            self.dup = int(f.get("count", 1))
        else:
            raise ValueError("unknown fault %r" % kind)
        return len(links)

    # -- Web API ----------------------------------------------------------------
    async def api_handler(self, request):
        method = request.match_info["method"]
        self.stats["api_" + method] += 1
        fault = self.take_fault(method)
        if fault is not None and fault["kind"] != "drop_after":
            return await self.apply_fault(request, fault)
        handler = {"auth.test": self.auth_test, "apps.connections.open": self.conn_open,
                   "chat.postMessage": self.post_message}.get(method)
        if handler is None:
            return web.json_response({"ok": False, "error": "unknown_method"})
        args, warnings = await self.read_args(request)
        kind = "app" if method == "apps.connections.open" else "bot"
        err = self.check_token(request, args, kind)
        if err is not None:
            self.stats["auth_" + err] += 1
            return web.json_response({"ok": False, "error": err})
        resp = await handler(request, args)
        if fault is not None:                   # drop_after: done, but the answer is lost
            request.transport.abort()
            return resp
        if warnings and isinstance(resp, dict):
            resp["warning"] = ",".join(warnings)
            resp.setdefault("response_metadata", {})["warnings"] = warnings
        return web.json_response(resp) if isinstance(resp, dict) else resp

    def take_fault(self, method):
        for f in self.web_faults:
            if f["method"] in ("*", method) and f["count"] > 0:
                f["count"] -= 1
                self.stats["web_fault_" + str(f["kind"])] += 1
                return f
        return None

    async def apply_fault(self, request, f):
        kind = str(f["kind"])
        if kind == "429":
            ra = f.get("retry_after", 1)
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(ra)})
        if kind == "error":
            return web.json_response({"ok": False, "error": f.get("error", "internal_error")})
        if kind == "drop":
            request.transport.abort()
            return web.Response(status=500)
        return web.json_response({"ok": False, "error": "internal_error"}, status=int(kind))

    async def read_args(self, request):
        warnings = []
        if request.method != "POST":
            return dict(request.query), warnings
        ctype = request.headers.get("Content-Type", "")
        raw = await request.read()
        if ctype.startswith("application/json"):
            if "charset" not in ctype:
                warnings.append("missing_charset")
            try:
                args = json.loads(raw or b"{}")
            except ValueError:
                args = {}
            return (args if isinstance(args, dict) else {}), warnings
        return dict(urllib.parse.parse_qsl(raw.decode(errors="replace"))), warnings

    def check_token(self, request, args, kind):
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else args.get("token")
        if not token:
            return "not_authed"
        want = self.cfg.app_token if kind == "app" else self.cfg.bot_token
        if token == want:
            return None
        if token in self.revoked:
            return "token_revoked"
        other = self.cfg.bot_token if kind == "app" else self.cfg.app_token
        if token == other or (kind == "app") != token.startswith("xapp-"):
            return "not_allowed_token_type"
        return "invalid_auth"

    async def auth_test(self, request, args):
        return {"ok": True, "url": "https://hermes-test.slack.com/", "team": TEAM_NAME,
                "user": "hermes", "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID,
                "is_enterprise_install": False}

    async def conn_open(self, request, args):
        if request.method != "POST":
            return {"ok": False, "error": "invalid_request"}
        ticket = uuid.uuid4().hex
        self.tickets[ticket] = (time.monotonic(), False)
        return {"ok": True, "url": "%s/link/?ticket=%s&app_id=%s" % (
            self.urls["wss_base"], ticket, APP_ID)}

    def rate_limited(self, channel):
        """Seconds to wait when channel is over post_rate, else 0."""
        count, window = self.cfg.post_rate
        q, now = self.post_times[channel], time.monotonic()
        while q and now - q[0] >= window:
            q.popleft()
        if len(q) >= count:
            return max(1, math.ceil(window - (now - q[0])))
        q.append(now)
        return 0

    async def post_message(self, request, args):
        channel, text = str(args.get("channel", "")), args.get("text")
        known = set(CHANNELS.values()) | {c for c in self.messages if c.startswith("D")}
        if channel not in known:
            return {"ok": False, "error": "channel_not_found"}
        if channel == CHANNELS["notin"]:
            return {"ok": False, "error": "not_in_channel"}
        if not isinstance(text, str) or text == "":
            return {"ok": False, "error": "no_text"}
        wait = self.rate_limited(channel)
        if wait:
            self.stats["post_429"] += 1
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": str(wait)})
        resp = {"ok": True, "channel": channel}
        if len(text) > MAX_TEXT:
            text = text[:MAX_TEXT]
            resp["warning"] = "message_truncated"
            resp["response_metadata"] = {"warnings": ["message_truncated"]}
        ts = self.ts()
        thread_ts = args.get("thread_ts")
        msg = {"type": "message", "text": text, "user": BOT_USER, "bot_id": BOT_ID,
               "app_id": APP_ID, "team": TEAM, "ts": ts}
        if thread_ts:
            msg["thread_ts"] = str(thread_ts)
        resp.update(ts=ts, message=msg)
        self.messages[channel].append(ts)
        rec = {"channel": channel, "text": text, "ts": ts, "thread_ts": thread_ts,
               "mrkdwn": args.get("mrkdwn"), "thread_known": thread_ts in self.messages[channel]
               if thread_ts else None, "time": time.time()}
        self.sent.append(rec)
        async with self.sent_cond:
            self.sent_cond.notify_all()
        if self.cfg.echo_own:
            ev = dict(msg, channel=channel, event_ts=ts,
                      channel_type="im" if channel.startswith("D") else "channel")
            self.publish(ev)
        return resp


class Control:
    def __init__(self, fake):
        self.fake = fake

    def routes(self, app):
        r = app.router
        r.add_post("/message", self.message)
        r.add_post("/messages", self.messages)
        r.add_get("/sent", self.sent)
        r.add_get("/state", self.state)
        r.add_post("/fault", self.fault)
        r.add_post("/web_fault", self.web_fault)
        r.add_post("/clear_faults", self.clear_faults)
        r.add_post("/revoke", self.revoke)
        r.add_post("/config", self.config)
        r.add_post("/reset", self.reset)

    @staticmethod
    @web.middleware
    async def bad_input(request, handler):
        try:
            return await handler(request)
        except (ValueError, TypeError, KeyError) as e:
            return web.json_response({"error": str(e)}, status=400)

    async def _body(self, request):
        body = await request.json() if request.can_read_body else {}
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    async def message(self, request):
        return web.json_response(self.fake.inject(await self._body(request)))

    async def messages(self, request):
        specs = (await self._body(request)).get("messages", [])
        return web.json_response({"messages": [self.fake.inject(s) for s in specs]})

    async def sent(self, request):
        f = self.fake
        after = int(request.query.get("after", 0))
        deadline = time.monotonic() + float(request.query.get("wait", 0))
        while len(f.sent) <= after and time.monotonic() < deadline:
            try:
                async with f.sent_cond:
                    await asyncio.wait_for(f.sent_cond.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
        return web.json_response({"sent": f.sent[after:], "last": len(f.sent)})

    async def state(self, request):
        f = self.fake
        dl = collections.Counter(d.state for d in f.deliveries.values())
        retried = [{"event_id": d.event_id, "attempts": d.attempt + 1, "state": d.state,
                    "envelopes": d.envelopes} for d in f.deliveries.values() if d.attempt > 0]
        return web.json_response({
            "stats": f.stats, "links": [k.summary() for k in f.links.values()],
            "open_links": len(f.open_links()), "max_links": f.max_links, "gaps": f.gaps,
            "deliveries": dl, "retried": retried, "ack_ms": list(f.ack_ms),
            "config": f.cfg.public()})

    async def fault(self, request):
        return web.json_response({"links": await self.fake.fault(await self._body(request))})

    async def web_fault(self, request):
        f = await self._body(request)
        if str(f.get("kind")) not in ("429", "500", "502", "503", "error", "drop",
                                      "drop_after"):
            raise ValueError("unknown web fault %r" % f.get("kind"))
        f.setdefault("method", "*")
        f["count"] = int(f.get("count", 1))
        self.fake.web_faults.append(f)
        return web.json_response({"ok": True})

    async def clear_faults(self, request):
        f = self.fake
        f.web_faults.clear()
        f.ignore_acks = f.dup = 0
        return web.json_response({"ok": True})

    async def revoke(self, request):
        """A token is revoked: the bot's reads token_revoked; the app's: links close."""
        which = (await self._body(request)).get("which", "bot")
        if which == "app":
            self.fake.cfg.app_token = "xapp-revoked-" + uuid.uuid4().hex
            # an app-level token reads invalid_auth on apps.connections.open [inferred]
            for k in self.fake.open_links():
                await k.ws.close(code=1000, message=b"token revoked")
        else:
            self.fake.revoked.add(self.fake.cfg.bot_token)
            self.fake.cfg.bot_token = "xoxb-revoked-" + uuid.uuid4().hex
        return web.json_response({"ok": True})

    async def config(self, request):
        self.fake.cfg.update(await self._body(request))
        return web.json_response(self.fake.cfg.public())

    async def reset(self, request):
        f = self.fake
        for k in f.open_links():
            k.drop()
        for d in f.deliveries.values():
            d.acked.set()                       # ends their retry loops
        f.reset_state()
        f.cfg = Config(f.args)
        return web.json_response({"ok": True})


async def serve(args):
    fake = Fake(args)
    ctx, ca_path = make_tls(args.dir)
    api = web.Application(client_max_size=1 << 20)
    api.router.add_route("*", "/api/{method}", fake.api_handler)
    api.router.add_get("/link/", fake.link_handler)
    ctl = web.Application(middlewares=[Control.bad_input])
    Control(fake).routes(ctl)
    (r1, port), (r2, ctl_port) = [await start_site(a, p, t) for a, p, t in
                                  ((api, args.port, ctx), (ctl, args.ctl_port, None))]
    fake.urls = {"wss_base": "wss://127.0.0.1:%d" % port}
    info = {"api_url": "https://127.0.0.1:%d/api" % port, "port": port, "ctl_port": ctl_port,
            "ca": ca_path, "bot_token": args.bot_token, "app_token": args.app_token,
            "team_id": TEAM, "bot_user": BOT_USER, "bot_id": BOT_ID, "channels": CHANNELS,
            "user": DEFAULT_USER}
    write_atomic(os.path.join(args.dir, "fake-slack.json"), json.dumps(info))
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for k in fake.open_links():
        k.drop()
    for runner in (r1, r2):
        await runner.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem and fake-slack.json go")
    ap.add_argument("--bot-token", default="xoxb-1100-2200-hermesFakeBotToken")
    ap.add_argument("--app-token", default="xapp-1-A0APP-3300-hermesFakeAppToken")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctl-port", type=int, default=0)
    asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
