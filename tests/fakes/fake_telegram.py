#!/usr/bin/python3
"""A protocol-faithful fake of the Telegram Bot API, for tests and benchmarks.

Serves https://127.0.0.1:PORT/bot<TOKEN>/<method> with a certificate from a
throwaway CA (trustme), written to <dir>/ca.pem for the client's tls.ca_file.
A second, plain-HTTP port on 127.0.0.1 is the control API for tests.

Behaviour copied from the real Bot API:
- getUpdates long-polls: held open until an update arrives or `timeout` ends.
  `offset` confirms (forgets) every update with a smaller id; unconfirmed
  updates are delivered again.  A negative offset keeps the last -offset
  updates.  `limit` 1..100.  `allowed_updates` is remembered across calls.
  A new getUpdates terminates a still-pending one with 409 Conflict.
- Parameters in the query string, a JSON body or a form body.
- Errors are {"ok":false,"error_code":N,"description":"..."} with
  "parameters":{"retry_after":S} on 429; a wrong token gets 401, an unknown
  method 404.
- sendMessage: text 1..4096 UTF-16 units, parse_mode "Markdown" is checked
  for unbalanced entities ("can't parse entities"), message_thread_id,
  reply_parameters / reply_to_message_id; every message sent is recorded.
- Messages in forum topics carry message_thread_id, is_topic_message and the
  topic-creation service message as reply_to_message, as Telegram does.

Control API (JSON), on the control port:
  POST /message   {chat_id, text | caption, chat_type, user_id, username,
                   thread_id, reply_to_bot, is_bot}  -> {"update_id", "message_id"}
  POST /messages  {"messages": [...]}                  -> {"update_ids": [...]}
  POST /update    {raw update without update_id}      -> {"update_id"}
  GET  /sent?after=N&wait=S[&chat_id=C]                -> {"sent": [...], "last": M}
  POST /fault     {method, kind, count, retry_after, delay, size}
                  kind: 409 429 401 404 500 502 slow truncated garbage
                        oversized reset cant_parse empty (getUpdates: [] at once,
                        as a misbehaving proxy answers)
  POST /clear_faults, GET /state, POST /config {"chat_rate": N, "token": T},
  POST /reset (back to the initial state)
Run: fake_telegram.py --dir DIR [--token T] ; prints one JSON line
{"port", "ctl_port", "ca", "token", "bot_id", "bot_username"} when ready.
"""
import argparse
import asyncio
import json
import os
import re
import signal
import ssl
import sys
import time
import urllib.parse

from aiohttp import web
import trustme

BOT_ID = 7000001
BOT_USERNAME = "hermes_test_bot"


def utf16_len(s):
    return len(s.encode("utf-16-le")) // 2


def tg_error(code, description, retry_after=None):
    body = {"ok": False, "error_code": code, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return web.json_response(body, status=code)


def markdown_error(text):
    """Returns Telegram's error for legacy Markdown that does not parse, or None."""
    data = text.encode("utf-8")
    i = 0
    n = len(data)
    while i < n:
        c = data[i:i + 1]
        if c == b"\\" and i + 1 < n and data[i + 1:i + 2] in (b"_", b"*", b"`", b"["):
            i += 2
            continue
        if data[i:i + 3] == b"```":
            end = data.find(b"```", i + 3)
            if end < 0:
                return "Can't find end of the entity starting at byte offset %d" % i
            i = end + 3
            continue
        if c in (b"*", b"_", b"`"):
            end = data.find(c, i + 1)
            if end < 0:
                return "Can't find end of the entity starting at byte offset %d" % i
            i = end + 1
            continue
        i += 1
    return None


def compute_entities(text):
    """bot_command and mention entities, offsets in UTF-16 code units."""
    ents = []
    for m in re.finditer(r"(?<![\w/@])(/[A-Za-z0-9_]{1,64}(?:@[A-Za-z0-9_]{3,64})?)", text):
        if m.start() == 0 or text[m.start() - 1].isspace():
            ents.append(("bot_command", m.start(), m.end()))
    for m in re.finditer(r"(?<![\w@])@[A-Za-z0-9_]{3,64}", text):
        ents.append(("mention", m.start(), m.end()))
    out = []
    for kind, a, b in sorted(ents, key=lambda e: e[1]):
        off = utf16_len(text[:a])
        out.append({"type": kind, "offset": off, "length": utf16_len(text[a:b])})
    return out


class Fake:
    def __init__(self, token):
        self.token = token
        self.updates = []               # unconfirmed updates, ascending ids
        self.next_update_id = 500000
        self.allowed_updates = None
        self.msg_ids = {}               # chat_id -> last message_id
        self.last_bot_msg = {}          # chat_id -> message object
        self.sent = []
        self.actions = []
        self.faults = []
        self.wakeup = asyncio.Event()
        self.poller = None              # the pending getUpdates' future
        self.stats = {"getUpdates": 0, "sendMessage": 0, "sendChatAction": 0,
                      "getMe": 0, "conflicts": 0, "unauthorized": 0,
                      "cant_parse": 0, "too_many": 0, "offsets": []}
        self.chat_rate = 0              # > 0: 429 beyond this many sends/s per chat
        self.chat_sends = {}
        self.sent_cond = asyncio.Condition()
        self.started = time.time()

    # -- helpers ---------------------------------------------------------
    def next_msg_id(self, chat_id):
        self.msg_ids[chat_id] = self.msg_ids.get(chat_id, 0) + 1
        return self.msg_ids[chat_id]

    def add_update(self, upd):
        upd = dict(upd)
        upd["update_id"] = self.next_update_id
        self.next_update_id += 1
        self.updates.append(upd)
        self.wakeup.set()
        return upd["update_id"]

    def build_message(self, spec):
        chat_type = spec.get("chat_type", "private")
        user_id = int(spec.get("user_id", 1001))
        username = spec.get("username", "user%d" % user_id)
        chat_id = int(spec.get("chat_id", user_id if chat_type == "private" else -100123))
        user = {"id": user_id, "is_bot": bool(spec.get("is_bot", False)),
                "first_name": spec.get("first_name", "User%d" % user_id)}
        if username:
            user["username"] = username
        if chat_type == "private":
            chat = {"id": chat_id, "type": "private", "first_name": user["first_name"]}
            if username:
                chat["username"] = username
        else:
            chat = {"id": chat_id, "type": chat_type, "title": "Group %d" % chat_id}
        msg = {"message_id": self.next_msg_id(chat_id), "from": user, "chat": chat,
               "date": int(time.time())}
        key = "caption" if "caption" in spec else "text"
        if key in spec:
            msg[key] = spec[key]
            ents = spec.get("entities")
            if ents is None:
                ents = compute_entities(spec[key])
            if ents:
                msg["caption_entities" if key == "caption" else "entities"] = ents
            if key == "caption":
                msg["photo"] = [{"file_id": "AgAD", "file_unique_id": "u1", "width": 90,
                                 "height": 90}]
        elif "sticker" in spec:
            msg["sticker"] = {"file_id": "CAAD", "file_unique_id": "s1", "width": 512,
                              "height": 512, "is_animated": False, "is_video": False,
                              "type": "regular"}
        thread = spec.get("thread_id")
        if thread is not None:
            chat["is_forum"] = True
            msg["message_thread_id"] = int(thread)
            msg["is_topic_message"] = True
            creator = ({"id": BOT_ID, "is_bot": True, "first_name": "Hermes",
                        "username": BOT_USERNAME} if spec.get("topic_by_bot") else user)
            msg["reply_to_message"] = {
                "message_id": int(thread), "from": creator, "chat": chat,
                "date": int(time.time()) - 60, "message_thread_id": int(thread),
                "forum_topic_created": {"name": "Topic %s" % thread, "icon_color": 7322096}}
        if spec.get("reply_to_bot"):
            prev = self.last_bot_msg.get(chat_id) or {
                "message_id": 1, "chat": chat, "date": int(time.time()) - 5,
                "from": {"id": BOT_ID, "is_bot": True, "first_name": "Hermes",
                         "username": BOT_USERNAME}, "text": "earlier"}
            msg["reply_to_message"] = prev
        if spec.get("reply_to_user"):
            msg["reply_to_message"] = {
                "message_id": 1, "chat": chat, "date": int(time.time()) - 5,
                "from": {"id": 4242, "is_bot": False, "first_name": "Other"}, "text": "hi"}
        return msg

    def take_fault(self, method):
        for f in self.faults:
            if f["method"] in (method, "*") and f["count"] > 0:
                f["count"] -= 1
                if f["count"] == 0:
                    self.faults.remove(f)
                return f
        return None

    # -- Bot API ---------------------------------------------------------
    async def params(self, request):
        p = dict(request.query)
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            raw = await request.read()
            if ctype == "application/json":
                try:
                    body = json.loads(raw.decode("utf-8"))
                except (UnicodeDecodeError, ValueError):
                    raise web.HTTPBadRequest(text="bad json")
                if not isinstance(body, dict):
                    raise web.HTTPBadRequest(text="bad json")
                p.update(body)
            elif ctype == "application/x-www-form-urlencoded":
                p.update(dict(urllib.parse.parse_qsl(raw.decode("utf-8"))))
        return p

    async def api(self, request):
        token = request.match_info["token"]
        method = request.match_info["method"]
        if token != self.token:
            self.stats["unauthorized"] += 1
            return tg_error(401, "Unauthorized")
        fault = self.take_fault(method)
        if fault is not None:
            resp = await self.apply_fault(request, fault)
            if resp is not None:
                return resp
        try:
            p = await self.params(request)
        except web.HTTPBadRequest:
            return tg_error(400, "Bad Request: can't parse JSON object")
        handler = {"getUpdates": self.get_updates, "getMe": self.get_me,
                   "sendMessage": self.send_message,
                   "sendChatAction": self.send_chat_action}.get(method)
        if handler is None:
            return tg_error(404, "Not Found")
        self.stats[method] += 1
        return await handler(request, p, fault)

    async def apply_fault(self, request, f):
        kind = str(f["kind"])
        if kind in ("409",):
            self.stats["conflicts"] += 1
            return tg_error(409, "Conflict: terminated by other getUpdates request; "
                            "make sure that only one bot instance is running")
        if kind == "429":
            ra = int(f.get("retry_after", 1))
            return tg_error(429, "Too Many Requests: retry after %d" % ra, ra)
        if kind == "401":
            return tg_error(401, "Unauthorized")
        if kind == "404":
            return tg_error(404, "Not Found")
        if kind in ("500", "502", "503"):
            return tg_error(int(kind), "Internal Server Error" if kind == "500"
                            else "Bad Gateway")
        if kind == "slow":
            await asyncio.sleep(float(f.get("delay", 5)))
            return None
        if kind == "garbage":
            return web.Response(status=200, text="<html><body>502 Bad Gateway</body></html>",
                                content_type="text/html")
        if kind == "oversized":
            size = int(f.get("size", 12 << 20))
            pad = "x" * size
            return web.Response(status=200, text='{"ok":true,"result":[],"pad":"%s"}' % pad,
                                content_type="application/json")
        if kind in ("truncated", "reset"):
            resp = web.StreamResponse(status=200)
            resp.content_type = "application/json"
            resp.content_length = 4000
            if kind == "truncated":
                await resp.prepare(request)
                await resp.write(b'{"ok":true,"result":[{"update_id":')
                await asyncio.sleep(0.05)
            if request.transport is not None:
                request.transport.close()
            return resp
        if kind == "cant_parse":
            f["_cant_parse"] = True
            return None
        if kind == "empty":
            m = request.match_info["method"]
            self.stats[m] = self.stats.get(m, 0) + 1
            return web.json_response({"ok": True, "result": []})
        return None

    async def get_me(self, request, p, fault):
        return web.json_response({"ok": True, "result": {
            "id": BOT_ID, "is_bot": True, "first_name": "Hermes", "username": BOT_USERNAME,
            "can_join_groups": True, "can_read_all_group_messages": False,
            "supports_inline_queries": False}})

    def confirm(self, offset):
        if offset > 0:
            self.updates = [u for u in self.updates if u["update_id"] >= offset]
        elif offset < 0:
            self.updates = self.updates[offset:]

    def deliverable(self, limit):
        out = []
        for u in self.updates:
            if self.allowed_updates:
                kinds = [k for k in u if k != "update_id"]
                if not any(k in self.allowed_updates for k in kinds):
                    continue
            out.append(u)
            if len(out) >= limit:
                break
        return out

    async def get_updates(self, request, p, fault):
        try:
            offset = int(p.get("offset", 0))
            limit = int(p.get("limit", 100))
            timeout = float(p.get("timeout", 0))
        except (TypeError, ValueError):
            return tg_error(400, "Bad Request: wrong parameter")
        limit = max(1, min(100, limit))
        au = p.get("allowed_updates")
        if isinstance(au, str):
            try:
                au = json.loads(au)
            except ValueError:
                return tg_error(400, "Bad Request: can't parse allowed_updates")
        if isinstance(au, list):
            self.allowed_updates = au or None
        self.stats["offsets"].append(offset)
        del self.stats["offsets"][:-50]
        # A newer getUpdates terminates an older one still waiting.
        if self.poller is not None and not self.poller.done():
            self.poller.set_result("conflict")
        me = asyncio.get_running_loop().create_future()
        self.poller = me
        self.confirm(offset)
        deadline = time.monotonic() + timeout
        while True:
            out = self.deliverable(limit)
            if out or time.monotonic() >= deadline:
                break
            self.wakeup.clear()
            waiter = asyncio.ensure_future(self.wakeup.wait())
            done, _ = await asyncio.wait({waiter, me}, timeout=deadline - time.monotonic(),
                                         return_when=asyncio.FIRST_COMPLETED)
            if not waiter.done():
                waiter.cancel()
            if me.done():
                self.stats["conflicts"] += 1
                return tg_error(409, "Conflict: terminated by other getUpdates request; "
                                "make sure that only one bot instance is running")
        if self.poller is me:
            self.poller = None
        return web.json_response({"ok": True, "result": out})

    async def send_message(self, request, p, fault):
        try:
            chat_id = int(p.get("chat_id"))
        except (TypeError, ValueError):
            return tg_error(400, "Bad Request: chat not found")
        text = p.get("text")
        if not isinstance(text, str) or not text.strip():
            return tg_error(400, "Bad Request: message text is empty")
        if utf16_len(text) > 4096:
            return tg_error(400, "Bad Request: message is too long")
        mode = p.get("parse_mode")
        if mode:
            if mode not in ("Markdown", "MarkdownV2", "HTML"):
                return tg_error(400, "Bad Request: unsupported parse_mode")
            err = "forced" if fault and fault.get("_cant_parse") else None
            if mode == "Markdown" and err is None:
                err = markdown_error(text)
            if err is not None:
                self.stats["cant_parse"] += 1
                return tg_error(400, "Bad Request: can't parse entities: %s" % err)
        if self.chat_rate > 0:
            now = time.monotonic()
            hist = [t for t in self.chat_sends.get(chat_id, []) if now - t < 1.0]
            if len(hist) >= self.chat_rate:
                self.stats["too_many"] += 1
                return tg_error(429, "Too Many Requests: retry after 1", 1)
            hist.append(now)
            self.chat_sends[chat_id] = hist
        thread = p.get("message_thread_id")
        reply_to = p.get("reply_to_message_id")
        rp = p.get("reply_parameters")
        if isinstance(rp, str):
            try:
                rp = json.loads(rp)
            except ValueError:
                return tg_error(400, "Bad Request: can't parse reply parameters JSON object")
        if isinstance(rp, dict):
            reply_to = rp.get("message_id")
        mid = self.next_msg_id(chat_id)
        chat = {"id": chat_id, "type": "private" if chat_id > 0 else "supergroup"}
        msg = {"message_id": mid, "from": {"id": BOT_ID, "is_bot": True,
                                           "first_name": "Hermes", "username": BOT_USERNAME},
               "chat": chat, "date": int(time.time()), "text": text}
        if thread is not None:
            msg["message_thread_id"] = int(thread)
            msg["is_topic_message"] = True
        self.last_bot_msg[chat_id] = msg
        rec = {"seq": len(self.sent) + 1, "chat_id": chat_id, "text": text,
               "parse_mode": mode, "message_thread_id": int(thread) if thread is not None
               else None, "reply_to": int(reply_to) if reply_to is not None else None,
               "message_id": mid, "time": time.time()}
        self.sent.append(rec)
        async with self.sent_cond:
            self.sent_cond.notify_all()
        return web.json_response({"ok": True, "result": msg})

    async def send_chat_action(self, request, p, fault):
        action = p.get("action")
        if action not in ("typing", "upload_photo", "record_voice", "upload_document"):
            return tg_error(400, "Bad Request: wrong parameter action in request")
        self.actions.append({"chat_id": p.get("chat_id"), "action": action,
                             "message_thread_id": p.get("message_thread_id"),
                             "time": time.time()})
        del self.actions[:-1000]
        return web.json_response({"ok": True, "result": True})

    # -- control API -----------------------------------------------------
    async def ctl_message(self, request):
        spec = await request.json()
        msg = self.build_message(spec)
        uid = self.add_update({"edited_message" if spec.get("edited") else "message": msg})
        return web.json_response({"update_id": uid, "message_id": msg["message_id"],
                                  "chat_id": msg["chat"]["id"]})

    async def ctl_messages(self, request):
        specs = (await request.json())["messages"]
        out = []
        for spec in specs:
            msg = self.build_message(spec)
            out.append({"update_id": self.add_update({"message": msg}),
                        "message_id": msg["message_id"], "chat_id": msg["chat"]["id"]})
        return web.json_response({"updates": out})

    async def ctl_update(self, request):
        return web.json_response({"update_id": self.add_update(await request.json())})

    async def ctl_sent(self, request):
        after = int(request.query.get("after", 0))
        wait = float(request.query.get("wait", 0))
        chat = request.query.get("chat_id")
        deadline = time.monotonic() + wait

        def pick():
            return [s for s in self.sent[after:]
                    if chat is None or str(s["chat_id"]) == chat]
        out = pick()
        while not out and time.monotonic() < deadline:
            try:
                async with self.sent_cond:
                    await asyncio.wait_for(self.sent_cond.wait(),
                                           deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
            out = pick()
        return web.json_response({"sent": out, "last": len(self.sent)})

    async def ctl_fault(self, request):
        f = await request.json()
        f.setdefault("method", "getUpdates")
        f.setdefault("count", 1)
        self.faults.append(f)
        return web.json_response({"ok": True})

    async def ctl_clear_faults(self, request):
        self.faults = []
        return web.json_response({"ok": True})

    async def ctl_config(self, request):
        c = await request.json()
        if "chat_rate" in c:
            self.chat_rate = int(c["chat_rate"])
        if "token" in c:
            self.token = str(c["token"])
        return web.json_response({"ok": True})

    async def ctl_reset(self, request):
        """Forgets everything a test did (a fresh fake, same port and CA)."""
        if self.poller is not None and not self.poller.done():
            self.poller.set_result("conflict")
        self.__init__(request.app["token"])
        return web.json_response({"ok": True})

    async def ctl_state(self, request):
        return web.json_response({
            "unconfirmed": [u["update_id"] for u in self.updates],
            "next_update_id": self.next_update_id, "polling": self.poller is not None,
            "sent": len(self.sent), "actions": self.actions[-200:],
            "allowed_updates": self.allowed_updates, "faults": self.faults,
            "stats": self.stats})


def make_tls(directory):
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_path = os.path.join(directory, "ca.pem")
    ca.cert_pem.write_to_path(ca_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    return ctx, ca_path


async def serve(args):
    fake = Fake(args.token)
    ctx, ca_path = make_tls(args.dir)
    api = web.Application(client_max_size=8 << 20)
    api.router.add_route("*", "/bot{token}/{method}", fake.api)
    ctl = web.Application()
    ctl.router.add_post("/message", fake.ctl_message)
    ctl.router.add_post("/messages", fake.ctl_messages)
    ctl.router.add_post("/update", fake.ctl_update)
    ctl.router.add_get("/sent", fake.ctl_sent)
    ctl.router.add_post("/fault", fake.ctl_fault)
    ctl.router.add_post("/clear_faults", fake.ctl_clear_faults)
    ctl.router.add_post("/config", fake.ctl_config)
    ctl.router.add_get("/state", fake.ctl_state)
    ctl.router.add_post("/reset", fake.ctl_reset)
    ctl["token"] = args.token
    runners = []
    for app, port, tls in ((api, args.port, ctx), (ctl, args.ctl_port, None)):
        r = web.AppRunner(app, access_log=None, handle_signals=False)
        await r.setup()
        site = web.TCPSite(r, "127.0.0.1", port, ssl_context=tls, backlog=1024)
        await site.start()
        runners.append((r, site))
    ports = [s._server.sockets[0].getsockname()[1] for _, s in runners]
    print(json.dumps({"port": ports[0], "ctl_port": ports[1], "ca": ca_path,
                      "token": args.token, "bot_id": BOT_ID,
                      "bot_username": BOT_USERNAME}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for r, _ in runners:
        await r.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem is written")
    ap.add_argument("--token", default="123456:TEST-token_abcdefghijklmnopqrstuvwxyz")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--ctl-port", type=int, default=0)
    args = ap.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
