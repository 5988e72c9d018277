#!/usr/bin/python3
"""A protocol-faithful fake of Home Assistant's WebSocket API and REST service calls.

One aiohttp application served twice on 127.0.0.1: over plain http and over
TLS with a certificate from a throwaway CA (trustme, written to <dir>/ca.pem),
plus a plain-HTTP control port for tests.  Facts and their sources
(developers.home-assistant.io/docs/api/websocket and /docs/api/rest,
home-assistant/core components/websocket_api const.py, http.py, auth.py) are
in the docstrings below.  Where it departs from Home Assistant:
- one user, one long-lived access token; entities exist only as states
  (no registry, no services besides the ones below);
- messages are never coalesced into arrays (HA does that only for a client
  that sent supported_features coalesce_messages, which the gateway never does);
- a "hold" setting keeps new connections waiting before auth_required, so a
  test can change states while no client is subscribed.

Control API (JSON) on the control port:
  POST /seed {"states": [{entity_id, state, attributes}]}   set, no event fired
  POST /set_state {entity_id, state, attributes}  -> {"state", "fired"}
  POST /set_states {"states": [spec, ...]}        -> {"results": [...]}
  POST /remove {entity_id}                        the entity goes (new_state null)
  POST /event {data: {entity_id, old_state, new_state}}   a raw state_changed
  GET  /calls?after=N&wait=S                      -> {"calls", "last"} REST service calls
  GET  /visible                                   -> persistent notifications by id
  GET  /state                                     counters, gaps, connections, config
  POST /fault {kind: auth_invalid | close_after_auth (count) | drop | close (code)
       | slow_consumer | no_pong (on) | rest (status, count, service)}
  POST /config {Config fields}, /release (let held connections go on), /reset
Run: fake_homeassistant.py --dir DIR [--token T]; prints one JSON line (urls,
ca, ports) when ready, also written to <dir>/fake-homeassistant.json.
"""
import argparse
import asyncio
import collections
import json
import os
import signal
import sys
import time
import uuid
from datetime import datetime, timezone

from aiohttp import web, WSMsgType

from fake_util import bad_input, make_tls, quiet_resets, start_site, write_atomic

HA_VERSION = "2024.6.0"
quiet_resets()


def iso_now():
    """HA's timestamps: UTC isoformat with microseconds (homeassistant.util.dt)."""
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def error(msg_id, code, message):
    """A command's failure (websocket_api/messages.py error_message)."""
    return {"id": msg_id, "type": "result", "success": False,
            "error": {"code": code, "message": message}}


class Config:
    """Everything a test may change at run time through POST /config."""

    def __init__(self, args):
        self.token = args.token
        self.auth_timeout = 10.0        # s to send auth (http.py: "within 10 seconds")
        self.max_pending = 2048         # const.py MAX_PENDING_MSG: over it, the client is dropped
        self.hold = False               # new connections wait before auth_required
        self.pong = True                # answer {"type":"ping"}
        self.notify_services = ["mobile_app_phone", "notify"]

    def update(self, body):
        """Applies settings; an unknown name or a value of the wrong type raises."""
        for key, value in body.items():
            if key.startswith("_") or not hasattr(self, key):
                raise ValueError("unknown setting %r" % key)
            kind = type(getattr(self, key))
            if not isinstance(value, (int, float) if kind is float else kind):
                raise ValueError("%s must be %s" % (key, kind.__name__))
            setattr(self, key, value)

    def public(self):
        return {k: v for k, v in vars(self).items() if k != "token"}


class States:
    """The state machine: entity_id -> state object, as hass.states keeps it.

    last_changed moves only when the state string changes, last_updated when
    the state or the attributes change; setting the same state and attributes
    again fires nothing (core.py StateMachine.async_set).
    """

    def __init__(self):
        self.states = {}

    def set(self, entity_id, state, attributes=None):
        """Returns (old, new, fired)."""
        if not isinstance(entity_id, str) or "." not in entity_id:
            raise ValueError("entity_id must be <domain>.<object_id>")
        old = self.states.get(entity_id)
        attributes = dict(attributes if attributes is not None else
                          (old or {}).get("attributes", {}))
        state = str(state)
        if old is not None and old["state"] == state and old["attributes"] == attributes:
            return old, old, False
        now = iso_now()
        changed = now if old is None or old["state"] != state else old["last_changed"]
        new = {"entity_id": entity_id, "state": state, "attributes": attributes,
               "last_changed": changed, "last_reported": now, "last_updated": now,
               "context": {"id": uuid.uuid4().hex.upper()[:26], "parent_id": None,
                           "user_id": None}}
        self.states[entity_id] = new
        return old, new, True

    def remove(self, entity_id):
        return self.states.pop(entity_id, None)


class Conn:
    """One WebSocket client: an ordered outbound queue, its ids and subscriptions."""

    def __init__(self, ws, request, fake):
        self.ws, self.request, self.fake = ws, request, fake
        self.last_id = 0
        self.subs = {}                  # subscription id -> event_type (None: all)
        self.authed = False
        self.closed_by_fake = None
        self.queue = asyncio.Queue()
        self.writer = asyncio.ensure_future(self._write())

    def send(self, payload):
        """Queues a message; over max_pending the client is dropped (http.py _send_message)."""
        if self.closed_by_fake is not None:
            return
        if self.queue.qsize() >= self.fake.cfg.max_pending:
            self.fake.stats["slow_consumer"] += 1
            self.drop("slow_consumer")
            return
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

    def drop(self, why="drop"):
        """Drops TCP without a close frame, as a cancelled handler or a network failure."""
        if self.closed_by_fake is None and self.request.transport is not None:
            self.closed_by_fake = why
            self.request.transport.abort()

    async def close(self, code=1000):
        """Closes after what is queued."""
        if self.closed_by_fake is not None or self.ws.closed:
            return
        self.closed_by_fake = code
        self.queue.put_nowait(None)
        await asyncio.wait([self.writer], timeout=5)
        await self.ws.close(code=code)

    def subscribed(self):
        return self.authed and any(t in (None, "state_changed") for t in self.subs.values())


class Api:
    """The WebSocket API (/api/websocket) and the REST service calls.

    Auth phase (websocket_api/auth.py): auth_required, then the client's
    {"type":"auth","access_token":...} within the auth timeout; a bad token
    gets auth_invalid "Invalid access token or password" and the socket is
    closed; a malformed first message gets auth_invalid "Auth message
    incorrectly formatted: ...".  Then every command carries an integer id
    that must increase within the connection (const.py ERR_ID_REUSE
    "Identifier values have to increase."), answered by a result with the
    same id: subscribe_events (event_type optional), unsubscribe_events
    (subscription), get_states (the list of state objects), ping -> pong;
    anything else is unknown_command.  Events go out as
    {"id": <subscription id>, "type": "event", "event": {...}}.  REST:
    POST /api/services/<domain>/<service> with Authorization: Bearer; a bad
    token is 401, an unknown service 400, success 200 with the list of
    states changed (always [] here).
    """

    def __init__(self, fake):
        self.fake = fake
        self.conns = set()
        self.held = asyncio.Event()
        self.held.set()
        self.faults = collections.Counter()
        self.rest_faults = []
        self.gap_start = time.monotonic()       # no subscriber yet
        self.ctx_n = 0

    # -- subscription gaps ------------------------------------------------------
    def _subscribers(self):
        return sum(1 for c in self.conns if c.subscribed())

    def _sub_changed(self, before):
        now, after = time.monotonic(), self._subscribers()
        if before > 0 and after == 0:
            self.gap_start = now
        elif before == 0 and after > 0 and self.gap_start is not None:
            self.fake.gaps.append(round(now - self.gap_start, 4))
            self.gap_start = None

    # -- WebSocket -------------------------------------------------------------
    async def websocket(self, request):
        ws = web.WebSocketResponse(max_msg_size=16 << 20, heartbeat=None)
        await ws.prepare(request)
        conn = Conn(ws, request, self.fake)
        self.conns.add(conn)
        st = self.fake.stats
        st["connections"] += 1
        try:
            if self.fake.cfg.hold:
                st["held"] += 1
                self.held.clear()
                await self.held.wait()
            conn.send({"type": "auth_required", "ha_version": HA_VERSION})
            if await self._auth(conn):
                await self._commands(conn)
        except asyncio.TimeoutError:
            st["auth_timeout"] += 1
        finally:
            before = self._subscribers()
            conn.authed = False
            self.conns.discard(conn)
            conn.queue.put_nowait(None)
            self._sub_changed(before)
            if not ws.closed:
                await ws.close()
        return ws

    async def _receive(self, conn, timeout=None):
        """The next text message as JSON; None when the connection is over."""
        msg = await asyncio.wait_for(conn.ws.receive(), timeout)
        if msg.type != WSMsgType.TEXT:
            return None
        conn.fake.stats["received"] += 1
        try:
            return json.loads(msg.data)
        except ValueError:
            return "not json"

    async def _auth(self, conn):
        st = self.fake.stats
        msg = await self._receive(conn, self.fake.cfg.auth_timeout)
        if msg is None:
            return False
        if not isinstance(msg, dict) or msg.get("type") != "auth" or \
                not isinstance(msg.get("access_token"), str):
            st["auth_invalid"] += 1
            conn.send({"type": "auth_invalid",
                       "message": "Auth message incorrectly formatted: %r" % (msg,)[:100]})
            await conn.close()
            return False
        if msg["access_token"] != self.fake.cfg.token or self._take("auth_invalid"):
            st["auth_invalid"] += 1
            conn.send({"type": "auth_invalid", "message": "Invalid access token or password"})
            await conn.close()
            return False
        st["auth_ok"] += 1
        conn.authed = True
        conn.send({"type": "auth_ok", "ha_version": HA_VERSION})
        if self._take("close_after_auth"):
            st["closed_after_auth"] += 1
            await conn.close()
            return False
        return True

    def _take(self, kind):
        if self.faults[kind] > 0:
            self.faults[kind] -= 1
            return True
        return False

    async def _commands(self, conn):
        while True:
            msg = await self._receive(conn)
            if msg is None:
                return
            if not isinstance(msg, dict) or not isinstance(msg.get("id"), int) or \
                    isinstance(msg.get("id"), bool) or not isinstance(msg.get("type"), str):
                self.fake.stats["invalid_format"] += 1
                conn.send(error(msg.get("id") if isinstance(msg, dict) else None,
                                "invalid_format", "Message incorrectly formatted."))
                continue
            if msg["id"] <= conn.last_id:
                self.fake.stats["id_reuse"] += 1
                conn.send(error(msg["id"], "id_reuse", "Identifier values have to increase."))
                continue
            conn.last_id = msg["id"]
            self._command(conn, msg)

    def _command(self, conn, msg):
        st, t, mid = self.fake.stats, msg["type"], msg["id"]
        st["cmd_" + t] += 1
        if t == "subscribe_events":
            before = self._subscribers()
            conn.subs[mid] = msg.get("event_type")
            conn.send({"id": mid, "type": "result", "success": True, "result": None})
            self._sub_changed(before)
        elif t == "unsubscribe_events":
            before = self._subscribers()
            if conn.subs.pop(msg.get("subscription"), False) is False:
                conn.send(error(mid, "not_found", "Subscription not found."))
                return
            conn.send({"id": mid, "type": "result", "success": True, "result": None})
            self._sub_changed(before)
        elif t == "get_states":
            conn.send({"id": mid, "type": "result", "success": True,
                       "result": list(self.fake.states.states.values())})
        elif t == "ping":
            if self.fake.cfg.pong:
                conn.send({"id": mid, "type": "pong"})
        else:
            conn.send(error(mid, "unknown_command", "Unknown command."))

    def fire(self, data):
        """Fires state_changed with data to every subscription; returns the receivers."""
        self.ctx_n += 1
        event = {"event_type": "state_changed", "data": data, "origin": "LOCAL",
                 "time_fired": iso_now(),
                 "context": {"id": "%026X" % self.ctx_n, "parent_id": None, "user_id": None}}
        n = 0
        for conn in list(self.conns):
            for sid, etype in conn.subs.items():
                if conn.authed and etype in (None, "state_changed"):
                    conn.send({"id": sid, "type": "event", "event": event})
                    n += 1
        self.fake.stats["events_fired"] += 1
        if n == 0:
            self.fake.stats["events_unheard"] += 1
        return n

    async def fault(self, body):
        kind = body.get("kind")
        if kind in ("auth_invalid", "close_after_auth"):
            self.faults[kind] += int(body.get("count", 1))
        elif kind == "drop":
            for c in list(self.conns):
                c.drop()
        elif kind == "slow_consumer":
            for c in list(self.conns):
                self.fake.stats["slow_consumer"] += 1
                c.drop("slow_consumer")
        elif kind == "close":
            await asyncio.gather(*(c.close(int(body.get("code", 1000)))
                                   for c in list(self.conns)))
        elif kind == "no_pong":
            self.fake.cfg.pong = not body.get("on", True)
        elif kind == "rest":
            self.rest_faults.append({"status": int(body["status"]),
                                     "count": int(body.get("count", 1)),
                                     "service": body.get("service", "*")})
        else:
            raise ValueError("unknown fault %r" % kind)
        return len(self.conns)

    # -- REST --------------------------------------------------------------------
    def _authorized(self, request):
        return request.headers.get("Authorization") == "Bearer " + self.fake.cfg.token

    def _rest_fault(self, service):
        for f in self.rest_faults:
            if f["count"] > 0 and f["service"] in ("*", service):
                f["count"] -= 1
                return f["status"]
        return None

    async def service(self, request):
        domain, name = request.match_info["domain"], request.match_info["service"]
        service = "%s.%s" % (domain, name)
        st = self.fake.stats
        if not self._authorized(request):
            st["rest_401"] += 1
            return web.Response(status=401, text="401: Unauthorized")
        status = self._rest_fault(service)
        if status is not None:
            st["rest_%d" % status] += 1
            return web.json_response({"message": "fault injected"}, status=status)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"message": "Data should be valid JSON."}, status=400)
        known = service == "persistent_notification.create" or (
            domain == "notify" and name in self.fake.cfg.notify_services)
        if not known:
            st["rest_400"] += 1
            return web.json_response({"message": "Service %s not found." % service},
                                     status=400)
        if not isinstance(body, dict) or not isinstance(body.get("message"), str):
            st["rest_400"] += 1
            return web.json_response({"message": "required key not provided @ "
                                      "data['message']"}, status=400)
        self.fake.record(service, body, request)
        return web.json_response([])

    async def api_root(self, request):
        if not self._authorized(request):
            return web.Response(status=401, text="401: Unauthorized")
        return web.json_response({"message": "API running."})


class Fake:
    def __init__(self, args):
        self.cfg = Config(args)
        self.api = None
        self.reset_state()

    def reset_state(self):
        self.states = States()
        self.stats = collections.Counter()
        self.calls = []
        self.visible = {}
        self.gaps = []
        self.cond = asyncio.Condition()

    def record(self, service, body, request):
        call = {"n": len(self.calls) + 1, "service": service, "body": body,
                "tls": request.secure, "time": time.time()}
        self.calls.append(call)
        if service == "persistent_notification.create":
            nid = body.get("notification_id") or uuid.uuid4().hex
            self.visible[nid] = {"title": body.get("title"), "message": body["message"]}
        asyncio.ensure_future(self._notify())

    async def _notify(self):
        async with self.cond:
            self.cond.notify_all()


class Control:
    """The tests' side door: change states, read what the gateway did, switch faults."""

    def __init__(self, fake):
        self.fake = fake

    def routes(self, app):
        for method, path, fn in (
                ("POST", "/seed", self.seed), ("POST", "/set_state", self.set_state),
                ("POST", "/set_states", self.set_states), ("POST", "/remove", self.remove),
                ("POST", "/event", self.event), ("GET", "/calls", self.calls),
                ("GET", "/visible", self.visible), ("GET", "/state", self.state),
                ("POST", "/fault", self.fault), ("POST", "/config", self.config),
                ("POST", "/release", self.release), ("POST", "/reset", self.reset)):
            app.router.add_route(method, path, fn)

    @staticmethod
    async def _body(request):
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        return body

    def _set(self, spec, fire=True):
        if not isinstance(spec, dict):
            raise ValueError("a state spec must be a JSON object")
        old, new, changed = self.fake.states.set(spec["entity_id"], spec["state"],
                                                 spec.get("attributes"))
        receivers = 0
        if changed and fire:
            receivers = self.fake.api.fire({"entity_id": new["entity_id"], "old_state": old,
                                            "new_state": new})
        return {"state": new, "fired": changed and fire, "receivers": receivers}

    async def seed(self, request):
        specs = (await self._body(request)).get("states", [])
        return web.json_response({"results": [self._set(s, fire=False) for s in specs]})

    async def set_state(self, request):
        return web.json_response(self._set(await self._body(request)))

    async def set_states(self, request):
        specs = (await self._body(request)).get("states", [])
        return web.json_response({"results": [self._set(s) for s in specs]})

    async def remove(self, request):
        eid = (await self._body(request))["entity_id"]
        old = self.fake.states.remove(eid)
        if old is None:
            raise ValueError("no entity %s" % eid)
        n = self.fake.api.fire({"entity_id": eid, "old_state": old, "new_state": None})
        return web.json_response({"receivers": n})

    async def event(self, request):
        data = (await self._body(request))["data"]
        return web.json_response({"receivers": self.fake.api.fire(data)})

    async def calls(self, request):
        f = self.fake
        after = int(request.query.get("after", 0))
        deadline = time.monotonic() + float(request.query.get("wait", 0))
        while len(f.calls) <= after and time.monotonic() < deadline:
            try:
                async with f.cond:
                    await asyncio.wait_for(f.cond.wait(), deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
        return web.json_response({"calls": f.calls[after:], "last": len(f.calls)})

    async def visible(self, request):
        return web.json_response(self.fake.visible)

    async def state(self, request):
        f = self.fake
        return web.json_response({
            "stats": f.stats, "gaps": f.gaps, "open_connections": len(f.api.conns),
            "subscribed": f.api._subscribers(), "faults": f.api.faults,
            "rest_faults": f.api.rest_faults, "config": f.cfg.public(),
            "entities": len(f.states.states)})

    async def fault(self, request):
        n = await self.fake.api.fault(await self._body(request))
        return web.json_response({"connections": n})

    async def config(self, request):
        body = await self._body(request)
        self.fake.cfg.update(body)
        if not self.fake.cfg.hold:
            self.fake.api.held.set()
        return web.json_response(self.fake.cfg.public())

    async def release(self, request):
        self.fake.cfg.hold = False
        self.fake.api.held.set()
        return web.json_response({"ok": True})

    async def reset(self, request):
        api = self.fake.api
        for c in list(api.conns):
            c.drop()
        api.faults.clear()
        api.rest_faults.clear()
        self.fake.cfg.hold = False
        self.fake.cfg.pong = True
        api.held.set()
        api.gap_start = None            # the next subscriber starts the count
        self.fake.reset_state()
        return web.json_response({"ok": True})


async def serve(args):
    fake = Fake(args)
    fake.api = Api(fake)
    ctx, ca_path = make_tls(args.dir)
    app = web.Application(client_max_size=1 << 20)
    app.router.add_get("/api/websocket", fake.api.websocket)
    app.router.add_get("/api/", fake.api.api_root)
    app.router.add_post("/api/services/{domain}/{service}", fake.api.service)
    ctl = web.Application(middlewares=[bad_input])
    Control(fake).routes(ctl)
    runners = []
    for a in (app, ctl):
        r = web.AppRunner(a, access_log=None, handle_signals=False)
        await r.setup()
        runners.append(r)
    http_port = await start_site(runners[0], args.port, None)
    https_port = await start_site(runners[0], args.tls_port, ctx)
    ctl_port = await start_site(runners[1], args.ctl_port, None)
    info = {"http_url": "http://127.0.0.1:%d" % http_port,
            "https_url": "https://127.0.0.1:%d" % https_port,
            "ca": ca_path, "ctl_port": ctl_port, "token": args.token}
    write_atomic(os.path.join(args.dir, "fake-homeassistant.json"), json.dumps(info))
    print(json.dumps(info), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    fake.api.held.set()
    for c in list(fake.api.conns):
        c.drop()
    for r in runners:
        await r.cleanup()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True, help="where ca.pem and fake-homeassistant.json go")
    ap.add_argument("--token", default="fake-ha-long-lived-token.hermes-test-0123456789")
    for name in ("port", "tls-port", "ctl-port"):
        ap.add_argument("--" + name, type=int, default=0)
    asyncio.run(serve(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
