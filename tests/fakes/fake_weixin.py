#!/usr/bin/python3
"""A protocol-faithful fake of Tencent's iLink bot API (Weixin), for tests.

TLS on 127.0.0.1 with a certificate from a throwaway CA (trustme, written to
<dir>/ca.pem): the API at https://127.0.0.1:PORT/ilink/bot/..., the same API
on a second port that QR logins are redirected to (an "IDC redirect"), and a
plain-HTTP control port for tests.  What it does, with the sources
(Tencent/openclaw-weixin docs/protocol.md and src/auth/login-qr.ts, the
Python gateway's gateway/platforms/weixin.py):

- every bot request is a POST of JSON with base_info{channel_version} and
  the headers AuthorizationType: ilink_bot_token, Authorization: Bearer
  <bot_token>, X-WECHAT-UIN (base64 of the decimal of a random uint32, new
  per request), iLink-App-Id: bot, iLink-App-ClientVersion; a request that
  lacks one gets ret -1 and is counted (bad_headers);
- errors are HTTP 200 with ret/errcode/errmsg: an unknown or expired token
  gets -14 (session timeout), a rate limit or a stale context_token -2;
- getupdates holds the request until a message comes or `hold` seconds
  pass (longpolling_timeout_ms says how long), answers at most batch_max
  messages with a new opaque get_updates_buf (also for an empty answer),
  and the cursor is the acknowledgement: a request with an older cursor
  gets the same messages again;
- sendmessage needs the peer's latest context_token (an older one is -2
  "unknown error"); without one it is accepted while tokenless_ok;
- getconfig hands out typing tickets, sendtyping checks them;
- get_bot_qrcode / get_qrcode_status (GET, no token) follow a script of
  statuses (wait, scaned, redirect, expired, verify, confirmed) and mint a
  new bot token on confirmed.

Inferred, not documented (marked [I] where it matters): iLink's handling of
a repeated client_id (the fake posts a message once per client_id, as the
reply's idempotency key would need; `dedup_client_id` turns that off), its
text limit (4000 characters here, the docs' figure), an unknown token
answering -14, and the bot's own messages coming back through getupdates
with message_type 2 (`echo_own`).

Control API (JSON) on the control port:
  POST /message {from, text, group_id, voice, items, message_type,
                 message_state, message_id}     -> {"message_id", "context_token"}
  POST /messages {"messages": [spec, ...]}      -> {"messages": [...]}
  GET  /sent?after=N&wait=S[&to=U]              -> {"sent", "last"}
  GET  /state: stats, config, typing, the last polls
  POST /fault {kind: ret (ret, errcode, errmsg) | empty_now | slow (delay) |
       not_json | http (status) | stall_batch | hold_next_poll, route
       ("getupdates", "sendmessage", "*"), count}
  POST /clear_faults, /release (stalled and held polls go on), /expire_session
       (every token so far answers -14), /revive, /rotate_token {chat}, /cursor
       {pos} (a get_updates_buf at that position), /config {Config fields},
       /qr_script {"steps": [...]}, /reset
Run: fake_weixin.py --dir DIR [--token T]; prints one JSON line (urls, ca,
token, account, ports) when ready.
"""
import argparse
import asyncio
import base64
import collections
import json
import os
import signal
import sys
import time

from aiohttp import web

from fake_util import bad_input, make_tls, quiet_resets, start_site

ACCOUNT = "e1c5a0d2b7f3@im.bot"
OWNER = "o9cq800owner0000000000000@im.wechat"
VERIFY_CODE = "424242"
FIRST_MESSAGE_ID = 7300000000000001        # large, as iLink's are, and exact in a double


def b64(n):
    return base64.b64encode(os.urandom(n)).decode()


class Config:
    """Everything a test may change at run time through POST /config."""

    def __init__(self, args):
        self.hold = args.hold                # s a getupdates is held without messages
        self.batch_max = 10                  # messages per getupdates answer
        self.tokenless_ok = True             # sendmessage without context_token accepted
        self.dedup_client_id = True          # [I] a client_id is posted once
        self.echo_own = True                 # [I] the bot's sends come back (message_type 2)
        self.max_text = 4000                 # [I] characters per text item
        self.qr_hold = 0.3                   # s a get_qrcode_status is held

    def update(self, body):
        for key, value in body.items():
            if key.startswith("_") or not hasattr(self, key):
                raise ValueError("unknown setting %r" % key)
            cur = getattr(self, key)
            if isinstance(cur, bool) != isinstance(value, bool) or not isinstance(
                    value, (int, float) if isinstance(cur, (int, float)) else type(cur)):
                raise ValueError("%s must be %s" % (key, type(cur).__name__))
            setattr(self, key, value)


def new_stats():
    names = ("polls getupdates_batches replayed cursor_regressions bad_cursor bad_headers "
             "bad_token uin_repeats expired_answers limited_answers send_ok send_stale "
             "send_tokenless send_dedup send_refused getconfig sendtyping bad_ticket "
             "qr_codes qr_polls qr_polls_redirect qr_wrong_host qr_wrong_verify "
             "stalled held").split()
    return dict.fromkeys(names, 0)


class Ilink:
    """The bot's server side: its message log, cursors, peers, sends and logins."""

    def __init__(self, args, urls):
        self.args, self.urls = args, urls
        self.cfg = Config(args)
        self.stats = new_stats()
        self.tokens = {args.token}
        self.revoked = set()                # tokens whose session expired
        self.log = []                       # every WeixinMessage, in order
        self.cursors = {"": 0}              # get_updates_buf -> position
        self.max_acked = 0                  # the furthest position a poll has come from
        self.deliveries = collections.Counter()
        self.ctx = {}                       # chat -> its current context_token
        self.tickets = {}                   # typing_ticket -> user
        self.sent, self.client_ids = [], {}
        self.typing, self.polls = [], collections.deque(maxlen=200)
        self.faults, self.last_uin = [], None
        self.cond = asyncio.Condition()
        self.release_ev = asyncio.Event()
        self.hold_polls = False
        self.qr_script = ["wait", "scaned", "confirmed"]
        self.qr = None                      # {code, step, redirected}
        self.next_id, self.seq = FIRST_MESSAGE_ID, 0

    # -- requests ----------------------------------------------------------------
    def check_headers(self, request, authed=True):
        """The reason a request is refused, or None; counts what was wrong."""
        h = request.headers
        if h.get("iLink-App-Id") != "bot" or not h.get("iLink-App-ClientVersion", "").isdigit():
            return self._bad("iLink-App-Id / iLink-App-ClientVersion")
        if not authed:
            return None
        if h.get("AuthorizationType") != "ilink_bot_token":
            return self._bad("AuthorizationType")
        uin = h.get("X-WECHAT-UIN", "")
        try:
            dec = base64.b64decode(uin, validate=True).decode()
            if not dec.isdigit() or int(dec) >= 1 << 32:
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            return self._bad("X-WECHAT-UIN")
        if uin == self.last_uin:
            self.stats["uin_repeats"] += 1
        self.last_uin = uin
        if not request.content_type == "application/json":
            return self._bad("Content-Type")
        return None

    def _bad(self, what):
        self.stats["bad_headers"] += 1
        return "invalid request header: " + what

    def token_ok(self, request):
        auth = request.headers.get("Authorization", "")
        ok = auth.startswith("Bearer ") and auth[7:] in self.tokens
        self.stats["bad_token"] += not ok and auth[7:] not in self.revoked
        return ok

    def fault(self, route):
        for f in self.faults:
            if f["route"] in ("*", route) and f["count"] != 0:
                f["count"] -= 1
                return f
        return None

    # -- messages ----------------------------------------------------------------
    def chat_token(self, chat):
        if chat not in self.ctx:
            self.ctx[chat] = "ctx-" + b64(24)
        return self.ctx[chat]

    def add_message(self, spec):
        """A user's message from a control spec; returns it."""
        if not isinstance(spec, dict) or not isinstance(spec.get("from", ""), str):
            raise ValueError("a message spec is an object with a string 'from'")
        frm = spec.get("from") or "o9cq800user00000000000001@im.wechat"
        group = spec.get("group_id") or ""
        items = spec.get("items")
        if items is None and spec.get("voice") is not None:
            items = [{"type": 3, "voice_item": {"text": str(spec["voice"])}}]
        if items is None:
            items = [{"type": 1, "text_item": {"text": str(spec.get("text", ""))}}]
        mid = spec.get("message_id")
        if mid is None:
            mid, self.next_id = self.next_id, self.next_id + 1
        self.seq += 1
        now = int(time.time() * 1000)
        msg = {"seq": self.seq, "message_id": mid, "from_user_id": frm, "to_user_id": ACCOUNT,
               "client_id": "", "create_time_ms": now, "update_time_ms": now,
               "session_id": "", "group_id": group,
               "message_type": spec.get("message_type", 1),
               "message_state": spec.get("message_state", 2), "item_list": items,
               "context_token": self.chat_token(group or frm)}
        self.log.append(msg)
        return msg

    async def publish(self):
        async with self.cond:
            self.cond.notify_all()

    def new_cursor(self, pos):
        cur = b64(18) + "/" + str(pos)      # opaque, with '/', '+' and '=' in it
        self.cursors[cur] = pos
        return cur

    # -- bot API -------------------------------------------------------------------
    async def handle(self, request):
        endpoint = request.match_info["endpoint"]
        if request.method == "GET" and endpoint in ("get_bot_qrcode", "get_qrcode_status"):
            bad = self.check_headers(request, authed=False)
            if bad is not None:
                return web.json_response({"ret": -1, "errcode": -1, "errmsg": bad})
            return await (self.get_bot_qrcode(request) if endpoint == "get_bot_qrcode"
                          else self.get_qrcode_status(request))
        if request.method != "POST":
            return web.Response(status=405)
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        bad = self.check_headers(request)
        if bad is None and (not isinstance(body, dict) or not isinstance(
                body.get("base_info"), dict) or not body["base_info"].get("channel_version")):
            bad = self._bad("base_info")
        if bad is not None:
            return web.json_response({"ret": -1, "errcode": -1, "errmsg": bad})
        if not self.token_ok(request):
            self.stats["expired_answers"] += 1
            return web.json_response({"ret": -14, "errcode": -14, "errmsg": "session timeout"})
        fn = {"getupdates": self.getupdates, "sendmessage": self.sendmessage,
              "getconfig": self.getconfig, "sendtyping": self.sendtyping}.get(endpoint)
        if fn is None:
            return web.json_response({"ret": -1, "errmsg": "unknown endpoint"})
        f = self.fault(endpoint)
        if f is not None and f["kind"] != "stall_batch" and f["kind"] != "hold_next_poll":
            answer = await self.apply_fault(f, body)
            if answer is not None:
                return answer
        elif f is not None:
            f["count"] += 1                 # armed: used by getupdates itself
        return await fn(request, body)

    async def apply_fault(self, f, body):
        kind = f["kind"]
        if kind == "ret":
            if f.get("ret") == -2 or f.get("errcode") == -2:
                self.stats["limited_answers"] += 1
            body = {"ret": f.get("ret", -1), "errcode": f.get("errcode", f.get("ret", -1))}
            if f.get("errmsg") is not None:
                body["errmsg"] = f["errmsg"]
            return web.json_response(body)
        if kind == "empty_now":
            self.stats["polls"] += 1
            self.polls.append({"time": time.time(), "empty_now": True})
            return web.json_response({"ret": 0, "msgs": [],
                                      "get_updates_buf": self.new_cursor(self.cursors.get(
                                          body.get("get_updates_buf"), self.max_acked)),
                                      "longpolling_timeout_ms": int(self.cfg.hold * 1000)})
        if kind == "slow":
            await asyncio.sleep(float(f.get("delay", 60)))
            return None
        if kind == "not_json":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>",
                                content_type="text/html")
        if kind == "http":
            return web.Response(status=int(f.get("status", 502)), text="upstream error")
        raise ValueError("unknown fault %r" % kind)

    async def getupdates(self, request, body):
        cur = body.get("get_updates_buf")
        if not isinstance(cur, str) or cur not in self.cursors:
            self.stats["bad_cursor"] += 1
            return web.json_response({"ret": -1, "errcode": -1, "errmsg": "bad get_updates_buf"})
        pos = self.cursors[cur]
        self.stats["polls"] += 1
        if pos < self.max_acked:
            self.stats["cursor_regressions"] += 1
        self.max_acked = max(self.max_acked, pos)
        self.polls.append({"time": time.time(), "pos": pos, "cursor": cur})
        if self.hold_polls:
            self.stats["held"] += 1
            await self.release_ev.wait()
        deadline = time.monotonic() + self.cfg.hold
        async with self.cond:
            while len(self.log) <= pos and time.monotonic() < deadline:
                try:
                    await asyncio.wait_for(self.cond.wait(), deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
        if request.transport is None or request.transport.is_closing():
            return web.Response(status=499)  # the client is gone: nothing was delivered
        batch = self.log[pos:pos + self.cfg.batch_max]
        answer = {"ret": 0, "msgs": batch, "get_updates_buf": self.new_cursor(pos + len(batch)),
                  "longpolling_timeout_ms": int(self.cfg.hold * 1000)}
        if not batch:
            return web.json_response(answer)
        self.stats["getupdates_batches"] += 1
        for m in batch:
            self.deliveries[m["message_id"]] += 1
            self.stats["replayed"] += self.deliveries[m["message_id"]] == 2
        f = self.fault("getupdates")
        if f is not None and f["kind"] == "hold_next_poll":
            self.hold_polls = True
        elif f is not None and f["kind"] == "stall_batch":
            return await self.stalled(request, answer)
        elif f is not None:
            f["count"] += 1
        return web.json_response(answer)

    async def stalled(self, request, answer):
        """Sends all of the answer but its last byte, then waits for /release."""
        data = json.dumps(answer).encode()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(data)
        await resp.prepare(request)
        await resp.write(data[:-1])
        self.stats["stalled"] += 1
        await self.release_ev.wait()
        await resp.write(data[-1:])
        await resp.write_eof()
        return resp

    async def sendmessage(self, request, body):
        msg = body.get("msg")
        if not isinstance(msg, dict):
            return web.json_response({"ret": -1, "errmsg": "msg missing"})
        to, cid, items = msg.get("to_user_id"), msg.get("client_id"), msg.get("item_list")
        texts = [i.get("text_item", {}).get("text") for i in items or [] if isinstance(i, dict)
                 and i.get("type") == 1]
        if (not isinstance(to, str) or not to or not isinstance(cid, str) or not cid
                or msg.get("message_type") != 2 or msg.get("message_state") != 2
                or len(texts) != 1 or not isinstance(texts[0], str) or not texts[0].strip()):
            self.stats["send_refused"] += 1
            return web.json_response({"ret": -1, "errcode": -1, "errmsg": "invalid msg"})
        if len(texts[0]) > self.cfg.max_text:
            self.stats["send_refused"] += 1
            return web.json_response({"ret": -1, "errcode": -1, "errmsg": "text too long"})
        tok = msg.get("context_token")
        if tok is None and not self.cfg.tokenless_ok or tok is not None and tok != self.ctx.get(to):
            self.stats["send_stale"] += 1
            return web.json_response({"ret": -2, "errcode": -2, "errmsg": "unknown error"})
        if self.cfg.dedup_client_id and cid in self.client_ids:
            self.stats["send_dedup"] += 1
            return web.json_response({"ret": 0, "errmsg": ""})
        self.stats["send_ok"] += 1
        self.stats["send_tokenless"] += tok is None
        rec = {"n": len(self.sent) + 1, "to": to, "text": texts[0], "client_id": cid,
               "context_token": tok, "time": time.time()}
        self.client_ids[cid] = rec
        self.sent.append(rec)
        if self.cfg.echo_own:
            self.seq += 1
            self.log.append({"seq": self.seq, "message_id": self.next_id,
                             "from_user_id": ACCOUNT, "to_user_id": to, "client_id": cid,
                             "message_type": 2, "message_state": 2, "item_list": items,
                             "create_time_ms": int(time.time() * 1000), "group_id": ""})
            self.next_id += 1
        await self.publish()
        return web.json_response({"ret": 0, "errmsg": ""})

    async def getconfig(self, request, body):
        user = body.get("ilink_user_id")
        if not isinstance(user, str) or not user:
            return web.json_response({"ret": -1, "errmsg": "ilink_user_id missing"})
        self.stats["getconfig"] += 1
        ticket = b64(16)
        self.tickets[ticket] = user
        return web.json_response({"ret": 0, "typing_ticket": ticket})

    async def sendtyping(self, request, body):
        user, ticket, st = body.get("ilink_user_id"), body.get("typing_ticket"), body.get("status")
        if self.tickets.get(ticket) != user or st not in (1, 2):
            self.stats["bad_ticket"] += 1
            return web.json_response({"ret": -1, "errmsg": "bad typing_ticket"})
        self.stats["sendtyping"] += 1
        self.typing = (self.typing + [{"user": user, "status": st, "time": time.time()}])[-500:]
        return web.json_response({"ret": 0})

    # -- QR login ---------------------------------------------------------------------
    async def get_bot_qrcode(self, request):
        if request.query.get("bot_type") != "3":
            return web.json_response({"ret": -1, "errmsg": "bad bot_type"})
        self.stats["qr_codes"] += 1
        code = os.urandom(16).hex()
        self.qr = {"code": code, "step": 0 if self.qr is None else self.qr["step"],
                   "redirected": False, "verified": False}
        return web.json_response({"ret": 0, "qrcode": code, "qrcode_img_content":
                                  "https://liteapp.weixin.qq.com/q/7GiQu1?qrcode=%s&bot_type=3"
                                  % code})

    async def get_qrcode_status(self, request):
        via = request.app["via"]
        self.stats["qr_polls"] += 1
        self.stats["qr_polls_redirect"] += via == "redirect"
        await asyncio.sleep(self.cfg.qr_hold)
        q = self.qr
        if q is None or request.query.get("qrcode") != q["code"]:
            return web.json_response({"ret": 0, "status": "expired"})
        if q["redirected"] and via != "redirect":
            self.stats["qr_wrong_host"] += 1
            return web.json_response({"ret": 0, "status": "scaned_but_redirect",
                                      "redirect_host": self.urls["redirect_host"]})
        step = self.qr_script[min(q["step"], len(self.qr_script) - 1)]
        if step == "verify" and request.query.get("verify_code") is not None:
            if request.query["verify_code"] == VERIFY_CODE:
                q["step"] += 1
                step = self.qr_script[min(q["step"], len(self.qr_script) - 1)]
            else:
                self.stats["qr_wrong_verify"] += 1
        if step != "verify":
            q["step"] += 1
        return web.json_response(self.qr_answer(step, q))

    def qr_answer(self, step, q):
        if step == "redirect":
            q["redirected"] = True
            return {"ret": 0, "status": "scaned_but_redirect",
                    "redirect_host": self.urls["redirect_host"]}
        if step == "expired":
            self.qr = dict(q, code=None)   # the client must fetch a new code
            return {"ret": 0, "status": "expired"}
        if step == "verify":
            return {"ret": 0, "status": "need_verifycode"}
        if step == "confirmed":
            token = "%s:%s" % (os.urandom(6).hex(), b64(24))
            self.tokens.add(token)
            return {"ret": 0, "status": "confirmed", "bot_token": token, "ilink_bot_id": ACCOUNT,
                    "baseurl": self.urls["api_url"], "ilink_user_id": OWNER}
        return {"ret": 0, "status": step}


class Control:
    """The tests' side door: inject messages, read what the bot did, switch faults."""

    def __init__(self, holder):
        self.h = holder

    @property
    def f(self):
        return self.h["ilink"]

    def routes(self, app):
        for method, path, fn in (
                ("POST", "/message", self.message), ("POST", "/messages", self.messages),
                ("GET", "/sent", self.sent), ("GET", "/state", self.state),
                ("POST", "/fault", self.fault), ("POST", "/clear_faults", self.clear_faults),
                ("POST", "/release", self.release), ("POST", "/expire_session", self.expire),
                ("POST", "/revive", self.revive), ("POST", "/cursor", self.cursor),
                ("POST", "/rotate_token", self.rotate),
                ("POST", "/config", self.config), ("POST", "/qr_script", self.qr_script),
                ("POST", "/reset", self.reset)):
            app.router.add_route(method, path, fn)

    @staticmethod
    async def _body(request):
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    async def message(self, request):
        m = self.f.add_message(await self._body(request))
        await self.f.publish()
        return web.json_response({"message_id": m["message_id"], "context_token": m["context_token"]})

    async def messages(self, request):
        specs = (await self._body(request)).get("messages", [])
        ms = [self.f.add_message(s) for s in specs]
        await self.f.publish()
        return web.json_response({"messages": [{"message_id": m["message_id"]} for m in ms]})

    async def sent(self, request):
        f = self.f
        after = int(request.query.get("after", 0))
        deadline = time.monotonic() + float(request.query.get("wait", 0))
        to = request.query.get("to")

        def pick():
            return [s for s in f.sent[after:] if to is None or s["to"] == to]
        out = pick()
        while not out and time.monotonic() < deadline:
            try:
                async with f.cond:
                    await asyncio.wait_for(f.cond.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            out = pick()
        return web.json_response({"sent": out, "last": len(f.sent)})

    async def state(self, request):
        f = self.f
        return web.json_response({"stats": f.stats, "config": vars(f.cfg),
                                  "typing": f.typing[-50:], "polls": list(f.polls)[-50:],
                                  "log_size": len(f.log), "max_acked": f.max_acked,
                                  "tokens": len(f.tokens)})

    async def fault(self, request):
        body = await self._body(request)
        if body.get("kind") not in ("ret", "empty_now", "slow", "not_json", "http",
                                    "stall_batch", "hold_next_poll"):
            raise ValueError("unknown fault %r" % body.get("kind"))
        body.setdefault("route", "getupdates")
        body["count"] = int(body.get("count", 1))
        self.f.faults.append(body)
        return web.json_response({"ok": True})

    async def clear_faults(self, request):
        self.f.faults.clear()
        return web.json_response({"ok": True})

    async def release(self, request):
        f = self.f
        f.hold_polls = False
        f.release_ev.set()
        f.release_ev = asyncio.Event()
        return web.json_response({"ok": True})

    async def expire(self, request):
        self.f.revoked |= self.f.tokens
        self.f.tokens = set()
        return web.json_response({"ok": True})

    async def revive(self, request):
        self.f.tokens |= self.f.revoked
        self.f.revoked = set()
        return web.json_response({"ok": True})

    async def cursor(self, request):
        pos = int((await self._body(request)).get("pos", 0))
        if not 0 <= pos <= len(self.f.log):
            raise ValueError("pos out of range")
        return web.json_response({"cursor": self.f.new_cursor(pos)})

    async def rotate(self, request):
        chat = (await self._body(request))["chat"]
        self.f.ctx[chat] = "ctx-" + b64(24)
        return web.json_response({"context_token": self.f.ctx[chat]})

    async def config(self, request):
        self.f.cfg.update(await self._body(request))
        return web.json_response(vars(self.f.cfg))

    async def qr_script(self, request):
        steps = (await self._body(request)).get("steps")
        if not isinstance(steps, list) or not steps or not all(
                s in ("wait", "scaned", "redirect", "expired", "verify", "confirmed")
                for s in steps):
            raise ValueError("steps: a list of wait, scaned, redirect, expired, verify, confirmed")
        self.f.qr_script, self.f.qr = steps, None
        return web.json_response({"ok": True})

    async def reset(self, request):
        old = self.h["ilink"]
        old.release_ev.set()
        self.h["ilink"] = Ilink(old.args, old.urls)
        return web.json_response({"ok": True})


async def start_app(app, port, tls):
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    return runner, await start_site(runner, port, tls)


async def serve(args):
    quiet_resets()
    holder = {}
    ctx, ca_path = make_tls(args.dir)

    async def api(request):
        return await holder["ilink"].handle(request)
    apps = []
    for via, port in (("main", args.port), ("redirect", 0)):
        app = web.Application(client_max_size=4 << 20)
        app["via"] = via
        app.router.add_route("*", "/ilink/bot/{endpoint}", api)
        apps.append((app, port, ctx))
    ctl = web.Application(middlewares=[bad_input])
    Control(holder).routes(ctl)
    apps.append((ctl, args.ctl_port, None))
    started = [await start_app(app, port, tls) for app, port, tls in apps]
    ports = [p for _, p in started]
    urls = {"api_url": "https://127.0.0.1:%d" % ports[0],
            "redirect_host": "127.0.0.1:%d" % ports[1]}
    holder["ilink"] = Ilink(args, urls)
    info = dict(urls, port=ports[0], redirect_port=ports[1], ctl_port=ports[2], ca=ca_path,
                token=args.token, account=ACCOUNT, owner=OWNER, verify_code=VERIFY_CODE)
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    holder["ilink"].release_ev.set()
    for runner, _ in started:
        await runner.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem goes")
    ap.add_argument("--token", default="f3a9c2e1b0d4:hermes-test-bot-token")
    ap.add_argument("--hold", type=float, default=35.0, help="s a getupdates is held")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctl-port", type=int, default=0)
    asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
