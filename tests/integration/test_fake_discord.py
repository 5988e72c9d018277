"""The fake Discord behaves as Discord does where the gateway will rely on it.

These pin down the fake itself (sessions, RESUME replay, close codes, intents,
heartbeats, nonce, rate limits, faults) with a plain aiohttp client, so that the
gateway's Discord platform is later tested against known semantics.
"""
import asyncio
import json
import ssl
import time
import urllib.error

import aiohttp
import pytest
from aiohttp import WSMsgType

from discord_util import (FakeDiscord, CHAT_INTENTS, DIRECT_MESSAGES, GUILD_MEMBERS,
                          GUILD_MESSAGES, GUILDS, MESSAGE_CONTENT)

QUERY = "/?v=10&encoding=json"
MANY_POSTS = {"POST /channels/{id}/messages": [100, 1.0]}
UA = "DiscordBot (https://example.invalid/hermes, 0.1)"


class Closed(Exception):
    """The gateway connection ended; code is None for a dropped connection."""

    def __init__(self, code):
        super().__init__(code)
        self.code = code


class Gateway:
    """A minimal gateway client: HELLO, optional heartbeats, frames in order."""

    def __init__(self, ws):
        self.ws = ws
        self.seq = None
        self.acks = 0
        self.beats = None

    async def hello(self, heartbeat):
        hello = await self.recv()
        assert hello == {"op": 10, "d": hello["d"], "s": None, "t": None}
        self.interval = hello["d"]["heartbeat_interval"] / 1000
        if heartbeat:
            self.beats = asyncio.ensure_future(self._beat())
        return hello

    async def _beat(self):
        while True:
            try:
                await self.send(1, self.seq)
            except (ConnectionError, RuntimeError):
                return
            await asyncio.sleep(self.interval / 2)

    async def send(self, op, d):
        await self.ws.send_str(json.dumps({"op": op, "d": d}))

    async def recv(self, timeout=15, acks=False):
        """The next payload (heartbeat ACKs counted and skipped unless acks)."""
        end = time.monotonic() + timeout
        while True:
            msg = await asyncio.wait_for(self.ws.receive(), end - time.monotonic())
            if msg.type != WSMsgType.TEXT:
                raise Closed(msg.data if msg.type == WSMsgType.CLOSE else None)
            p = json.loads(msg.data)
            if p["op"] == 11:
                self.acks += 1
                if not acks:
                    continue
            if p["s"] is not None:
                self.seq = p["s"]
            return p

    async def dispatch(self, t, timeout=15):
        p = await self.recv(timeout)
        assert (p["op"], p["t"]) == (0, t), p
        return p

    async def silent(self, seconds):
        """Asserts that nothing but ACKs arrives for a while."""
        with pytest.raises(asyncio.TimeoutError):
            p = await self.recv(timeout=seconds)
            pytest.fail(f"unexpected payload {p!r}")

    async def closed(self, timeout=15):
        with pytest.raises(Closed) as e:
            while True:
                await self.recv(timeout)
        return e.value.code

    async def identify(self, token, intents=CHAT_INTENTS, **extra):
        d = {"token": token, "intents": intents,
             "properties": {"os": "linux", "browser": "hermes", "device": "hermes"}}
        await self.send(2, dict(d, **extra))
        ready = await self.dispatch("READY")
        if intents & GUILDS:
            await self.dispatch("GUILD_CREATE")
        return ready["d"]

    async def resume(self, token, session_id, seq):
        await self.send(6, {"token": token, "session_id": session_id, "seq": seq})

    def stop_beats(self):
        if self.beats is not None:
            self.beats.cancel()

    async def close(self, code):
        self.stop_beats()
        await self.ws.close(code=code)

    def abort(self):
        """Drops TCP without a close frame."""
        self.stop_beats()
        self.ws._writer.transport.abort()


class Harness:
    """One test's client side: an aiohttp session, REST calls, gateway connections."""

    def __init__(self, fake):
        self.fake = fake
        self.ctx = ssl.create_default_context(cafile=fake.ca)
        self.token = fake.token
        self.general = fake.channels["general"]

    def run(self, body, timeout=120):
        async def main():
            async with aiohttp.ClientSession() as self.http:
                self.gateways = []
                try:
                    await asyncio.wait_for(body(), timeout)
                finally:
                    for g in self.gateways:
                        g.stop_beats()
                        await g.ws.close()
        asyncio.run(main())

    async def connect(self, url=None, query=QUERY, heartbeat=True, hello=True, **kw):
        ws = await self.http.ws_connect((url or self.fake.gateway_url) + query,
                                        ssl=self.ctx, **kw)
        g = Gateway(ws)
        self.gateways.append(g)
        if hello:
            await g.hello(heartbeat)
        return g

    async def session(self, intents=CHAT_INTENTS):
        """A connected, identified gateway and its READY."""
        g = await self.connect()
        return g, await g.identify(self.token, intents)

    async def rest(self, method, path, body=None, token=None, headers=None):
        h = {"Authorization": "Bot " + (self.token if token is None else token),
             "User-Agent": UA}
        h.update(headers or {})
        async with self.http.request(method, self.fake.api_url + path, json=body,
                                     headers=h, ssl=self.ctx) as r:
            raw = await r.read()
            return r.status, r.headers, json.loads(raw) if raw else None

    async def post(self, channel=None, **body):
        return await self.rest("POST", f"/channels/{channel or self.general}/messages", body)


async def wait_for(pred, what, timeout=15):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeDiscord(tmp_path_factory.mktemp("fake"), heartbeat_interval=2000) as f:
        yield f


@pytest.fixture
def dc(fake):
    fake.reset()
    return Harness(fake)


def detached(fake):
    return lambda: any(not s["attached"] for s in fake.state()["sessions"])


# -- REST ------------------------------------------------------------------------

def test_discovery_auth_and_headers(dc):
    async def body():
        st, h, gw = await dc.rest("GET", "/gateway/bot")
        assert st == 200 and gw["url"] == dc.fake.gateway_url and gw["shards"] == 1
        assert set(gw["session_start_limit"]) == {"total", "remaining", "reset_after",
                                                  "max_concurrency"}
        assert (await dc.rest("GET", "/gateway", headers={"Authorization": ""}))[0] == 200
        st, h, me = await dc.rest("GET", "/users/@me")
        assert st == 200 and me["id"] == dc.fake.bot_id and me["bot"] is True
        for name in ("Limit", "Remaining", "Reset", "Reset-After", "Bucket"):
            assert "X-RateLimit-" + name in h
        for token in ("wrong", ""):
            st, h, err = await dc.rest("GET", "/users/@me", token=token)
            assert (st, err) == (401, {"message": "401: Unauthorized", "code": 0})
            assert "X-RateLimit-Bucket" in h
        st, _, err = await dc.rest("GET", "/users/@me",
                                   headers={"Authorization": dc.token})   # no "Bot "
        assert st == 401
        assert (await dc.rest("GET", "/nowhere"))[2] == {"message": "404: Not Found",
                                                          "code": 0}
        assert dc.fake.stats()["rest_401"] == 3
    dc.run(body)


def test_message_validation_and_errors(dc):
    dc.fake.configure(routes=MANY_POSTS)

    async def body():
        st, _, err = await dc.post(content="x" * 2001)
        assert st == 400 and err["code"] == 50035
        assert err["errors"]["content"]["_errors"][0]["code"] == "BASE_TYPE_MAX_LENGTH"
        assert (await dc.post(content="é" * 2000))[0] == 200
        assert (await dc.post(content=""))[2]["code"] == 50006
        assert (await dc.post(content="hi", nonce="n" * 26))[2]["code"] == 50035
        st, _, err = await dc.post(channel="999999999999999999", content="hi")
        assert (st, err) == (404, {"message": "Unknown Channel", "code": 10003})
        st, _, err = await dc.post(channel=dc.fake.channels["forbidden"], content="hi")
        assert (st, err) == (403, {"message": "Missing Access", "code": 50001})
        st, _, err = await dc.post(content="re", message_reference={"message_id": "123456789012345678"})
        assert st == 400 and err["errors"]["message_reference"]["_errors"][0]["code"] == \
            "MESSAGE_REFERENCE_UNKNOWN_MESSAGE"
        st, _, msg = await dc.post(content="re", message_reference={
            "message_id": "123456789012345678", "fail_if_not_exists": False})
        assert st == 200 and msg["type"] == 0 and "message_reference" not in msg
        async with dc.http.post(dc.fake.api_url + f"/channels/{dc.general}/messages",
                                data=b"{nope", ssl=dc.ctx, headers={
                                    "Authorization": "Bot " + dc.token}) as r:
            assert r.status == 400 and (await r.json())["code"] == 50109
        st, h, _ = await dc.rest("POST", f"/channels/{dc.general}/typing")
        assert st == 204 and "X-RateLimit-Bucket" in h
        assert [t["channel_id"] for t in dc.fake.state()["stats"]["typing"]] == [dc.general]
        assert [s["content"] for s in dc.fake.all_sent()] == ["é" * 2000, "re"]
    dc.run(body)


def test_history_and_fetch(dc):
    async def body():
        ids = [m["id"] for m in dc.fake.messages([{"content": f"h{i}"} for i in range(4)])]
        st, _, page = await dc.rest("GET", f"/channels/{dc.general}/messages?after={ids[0]}&limit=2")
        assert st == 200 and [m["id"] for m in page] == [ids[2], ids[1]]   # newest first
        st, _, msg = await dc.rest("GET", f"/channels/{dc.general}/messages/{ids[3]}")
        assert st == 200 and msg["content"] == "h3"
        st, _, err = await dc.rest("GET", f"/channels/{dc.general}/messages/1234567890123456789")
        assert (st, err["code"]) == (404, 10008)
    dc.run(body)


def test_nonce_dedup(dc):
    dc.fake.configure(routes=MANY_POSTS)

    async def body():
        g, _ = await dc.session()
        _, _, a = await dc.post(content="once", nonce="n-1", enforce_nonce=True)
        _, _, b = await dc.post(content="once", nonce="n-1", enforce_nonce=True)
        assert a["id"] == b["id"] and a["nonce"] == "n-1"
        echo = await g.dispatch("MESSAGE_CREATE")
        assert echo["d"]["id"] == a["id"]
        await g.silent(0.5)                                  # echoed once only
        _, _, c = await dc.post(content="twice", nonce="n-2")
        _, _, d = await dc.post(content="twice", nonce="n-2")
        assert c["id"] != d["id"]                            # without enforce_nonce
        sent = dc.fake.all_sent()
        assert [(s["content"], s["nonce"], s["enforce_nonce"]) for s in sent] == [
            ("once", "n-1", True), ("twice", "n-2", False), ("twice", "n-2", False)]
        assert dc.fake.stats()["nonce_dedup"] == 1
        dc.fake.configure(nonce_window=0.3)
        await asyncio.sleep(0.6)
        _, _, e = await dc.post(content="once", nonce="n-1", enforce_nonce=True)
        assert e["id"] != a["id"]                            # outside the window
    dc.run(body)


def test_route_bucket_enforced_with_429(dc):
    dc.fake.configure(routes={"POST /channels/{id}/messages": [3, 4.0]})

    async def body():
        buckets = set()
        for left in (2, 1, 0):
            st, h, _ = await dc.post(content="r")
            assert st == 200 and h["X-RateLimit-Limit"] == "3"
            assert h["X-RateLimit-Remaining"] == str(left)
            assert 0 < float(h["X-RateLimit-Reset-After"]) <= 4.0
            assert abs(float(h["X-RateLimit-Reset"]) - time.time() -
                       float(h["X-RateLimit-Reset-After"])) < 1.0
            buckets.add(h["X-RateLimit-Bucket"])
        st, h, err = await dc.post(content="r")
        assert st == 429 and err["global"] is False and err["message"]
        assert isinstance(err["retry_after"], float) and 0 < err["retry_after"] <= 4.0
        assert h["X-RateLimit-Scope"] == "user" and h["X-RateLimit-Remaining"] == "0"
        assert int(h["Retry-After"]) >= err["retry_after"] and "X-RateLimit-Global" not in h
        st, h, _ = await dc.post(channel=dc.fake.channels["second"], content="r")
        assert st == 200 and h["X-RateLimit-Bucket"] in buckets   # same bucket, own channel
        await asyncio.sleep(err["retry_after"] + 0.1)
        assert (await dc.post(content="r"))[0] == 200
        assert len(dc.fake.all_sent()) == 5 and dc.fake.stats()["rest_429"] == 1
    dc.run(body)


def test_global_limit(dc):
    dc.fake.configure(global_rate=[3, 5.0])

    async def body():
        for _ in range(3):
            assert (await dc.rest("GET", "/users/@me"))[0] == 200
        st, h, err = await dc.rest("GET", "/users/@me")
        assert st == 429 and err["global"] is True
        assert h["X-RateLimit-Global"] == "true" and h["X-RateLimit-Scope"] == "global"
    dc.run(body)


def test_rest_faults(dc):
    async def body():
        dc.fake.rest_fault("429", count=2, retry_after=2.5, **{"global": True})
        for _ in range(2):
            st, h, err = await dc.rest("GET", "/users/@me")
            assert (st, err["retry_after"], err["global"]) == (429, 2.5, True)
            assert h["Retry-After"] == "3" and h["X-RateLimit-Scope"] == "global"
        assert (await dc.rest("GET", "/users/@me"))[0] == 200
        dc.fake.rest_fault("429", route="POST /channels/{id}/messages", scope="shared")
        assert (await dc.rest("GET", "/users/@me"))[0] == 200      # another route
        st, h, _ = await dc.post(content="x")
        assert st == 429 and h["X-RateLimit-Scope"] == "shared"
        for code in (500, 502, 503, 504):
            dc.fake.rest_fault(str(code))
            st, _, err = await dc.post(content="x")
            assert st == code and err["code"] == 0
        dc.fake.rest_fault("slow", delay=1.0)
        t0 = time.monotonic()
        assert (await dc.post(content="slow"))[0] == 200
        assert time.monotonic() - t0 >= 1.0
        assert [s["content"] for s in dc.fake.all_sent()] == ["slow"]
    dc.run(body)


def test_drop_faults_and_idempotent_retry(dc):
    async def body():
        dc.fake.rest_fault("drop")
        with pytest.raises(aiohttp.ClientError):
            await dc.post(content="lost")
        assert dc.fake.all_sent() == []                        # dropped before posting
        dc.fake.rest_fault("drop_after")
        with pytest.raises(aiohttp.ClientError):
            await dc.post(content="kept", nonce="k-1", enforce_nonce=True)
        first = dc.fake.all_sent()
        assert [s["content"] for s in first] == ["kept"]      # posted, answer lost
        st, _, msg = await dc.post(content="kept", nonce="k-1", enforce_nonce=True)
        assert st == 200 and msg["id"] == first[0]["id"] and len(dc.fake.all_sent()) == 1
    dc.run(body)


# -- gateway ---------------------------------------------------------------------

def test_identify_ready_and_message_create(dc):
    async def body():
        g = await dc.connect()
        await g.send(2, {"token": dc.token, "intents": CHAT_INTENTS,
                         "properties": {"os": "linux", "browser": "h", "device": "h"}})
        ready = await g.dispatch("READY")
        assert ready["s"] == 1
        d = ready["d"]
        assert d["v"] == 10 and d["user"]["id"] == dc.fake.bot_id and d["user"]["bot"]
        assert d["session_id"] and d["guilds"] == [{"id": dc.fake.guild_id,
                                                    "unavailable": True}]
        assert d["resume_gateway_url"] == dc.fake.resume_url != dc.fake.gateway_url
        guild = await g.dispatch("GUILD_CREATE")
        assert guild["s"] == 2 and dc.fake.channels["forbidden"] not in [
            c["id"] for c in guild["d"]["channels"]]
        mid = dc.fake.message(content="hello", mention_bot=True)["id"]
        ev = await g.dispatch("MESSAGE_CREATE")
        m = ev["d"]
        assert ev["s"] == 3 and m["id"] == mid and m["channel_id"] == dc.general
        assert m["guild_id"] == dc.fake.guild_id and "member" in m and m["type"] == 0
        assert m["content"] == f"<@{dc.fake.bot_id}> hello"
        assert [u["id"] for u in m["mentions"]] == [dc.fake.bot_id]
        assert m["author"]["id"] == dc.fake.user_id and "bot" not in m["author"]
        dc.fake.message(content="psst", dm=True, user_id="1400000000000000777")
        m = (await g.dispatch("MESSAGE_CREATE"))["d"]
        assert "guild_id" not in m and m["content"] == "psst" and m["mentions"] == []
        st, _, ch = await dc.rest("GET", f"/channels/{m['channel_id']}")
        assert st == 200 and ch["type"] == 1
        dc.fake.message(content="beep", is_bot=True, user_id="1400000000000000888")
        assert (await g.dispatch("MESSAGE_CREATE"))["d"]["author"]["bot"] is True
        dc.fake.message(content="hidden", channel_id=dc.fake.channels["forbidden"])
        await g.silent(0.5)                                 # the bot cannot see it
        assert g.seq == 5
    dc.run(body)


def test_own_messages_echoed_and_replies(dc):
    async def body():
        g, _ = await dc.session()
        user_mid = dc.fake.message(content="question")["id"]
        await g.dispatch("MESSAGE_CREATE")
        _, _, posted = await dc.post(content="answer", nonce="a-1",
                                     message_reference={"message_id": user_mid})
        assert posted["type"] == 19 and posted["referenced_message"]["id"] == user_mid
        echo = (await g.dispatch("MESSAGE_CREATE"))["d"]
        assert echo["id"] == posted["id"] and echo["author"]["id"] == dc.fake.bot_id
        assert echo["author"]["bot"] is True and echo["nonce"] == "a-1"
        assert echo["message_reference"]["message_id"] == user_mid
        dc.fake.message(content="thanks", reply_to_bot=True)
        reply = (await g.dispatch("MESSAGE_CREATE"))["d"]
        assert reply["type"] == 19 and reply["referenced_message"]["id"] == posted["id"]
        assert reply["referenced_message"]["author"]["bot"] is True
        rec = dc.fake.all_sent()[0]
        assert rec["message_reference"] == {"message_id": user_mid} and rec["nonce"] == "a-1"
    dc.run(body)


def test_tcp_drop_then_resume_replays_in_order(dc):
    async def body():
        g, ready = await dc.session()
        seq = g.seq
        g.abort()
        await wait_for(detached(dc.fake), "the fake to notice the drop")
        ids = [m["id"] for m in dc.fake.messages([{"content": f"m{i}"} for i in range(5)])]
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], seq)
        replayed = [await r.dispatch("MESSAGE_CREATE") for _ in ids]
        assert [p["d"]["id"] for p in replayed] == ids
        assert [p["s"] for p in replayed] == list(range(seq + 1, seq + 6))
        assert (await r.dispatch("RESUMED"))["s"] == seq + 6
        dc.fake.message(content="live")
        live = await r.dispatch("MESSAGE_CREATE")
        assert live["s"] == seq + 7 and live["d"]["content"] == "live"
        st = dc.fake.stats()
        assert (st["resume"], st["resumed"], st["client_drops"]) == (1, 1, 1)
        assert st["connections_resume"] == 1
    dc.run(body)


@pytest.mark.parametrize("code", [1000, 1001])
def test_clean_close_ends_session(dc, code):
    async def body():
        g, ready = await dc.session()
        seq = g.seq
        await g.close(code)
        await wait_for(lambda: dc.fake.state()["sessions"] == [], "the session to end")
        dc.fake.message(content="missed")
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], seq)
        assert await r.recv() == {"op": 9, "d": False, "s": None, "t": None}
        fresh = await r.identify(dc.token)                  # on the same connection
        assert fresh["session_id"] != ready["session_id"] and r.seq == 2
        await r.silent(0.5)                                 # never sees what it missed
        assert dc.fake.stats()["client_closes"] == {str(code): 1}
    dc.run(body)


def test_other_close_code_keeps_session(dc):
    async def body():
        g, ready = await dc.session()
        seq = g.seq
        await g.close(4000)
        await wait_for(detached(dc.fake), "the session to detach")
        dc.fake.message(content="kept")
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], seq)
        assert (await r.dispatch("MESSAGE_CREATE"))["d"]["content"] == "kept"
        await r.dispatch("RESUMED")
    dc.run(body)


def test_new_identify_is_a_new_session(dc):
    async def body():
        g, old = await dc.session()
        seq = g.seq
        g.abort()
        await wait_for(detached(dc.fake), "the drop")
        dc.fake.message(content="for the old session")
        n, new = await dc.session()
        assert new["session_id"] != old["session_id"] and n.seq == 2
        await n.silent(0.5)
        r = await dc.connect(dc.fake.resume_url)           # the old one is still alive
        await r.resume(dc.token, old["session_id"], seq)
        assert (await r.dispatch("MESSAGE_CREATE"))["d"]["content"] == "for the old session"
        await r.dispatch("RESUMED")
        dc.fake.message(content="both")                     # two sessions: both get it
        assert (await n.dispatch("MESSAGE_CREATE"))["d"]["content"] == "both"
        assert (await r.dispatch("MESSAGE_CREATE"))["d"]["content"] == "both"
    dc.run(body)


def test_resume_refusals(dc):
    async def body():
        g, ready = await dc.session()
        seq, sid = g.seq, ready["session_id"]
        g.abort()
        await wait_for(detached(dc.fake), "the drop")
        main = await dc.connect()                           # not resume_gateway_url
        await main.resume(dc.token, sid, seq)
        assert (await main.recv())["op"] == 9 and dc.fake.stats()["resume_wrong_url"] == 1
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, "0" * 32, 1)
        assert await r.recv() == {"op": 9, "d": False, "s": None, "t": None}
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, sid, seq + 10)
        assert await r.closed() == 4007
        r = await dc.connect(dc.fake.resume_url)
        await r.resume("bad-token", sid, seq)
        assert await r.closed() == 4004
        dc.fake.configure(strict_resume_url=False)
        main = await dc.connect()
        await main.resume(dc.token, sid, seq)
        await main.dispatch("RESUMED")
    dc.run(body)


def test_detached_session_expires(dc):
    dc.fake.configure(resume_timeout=0.5)

    async def body():
        g, ready = await dc.session()
        g.abort()
        await wait_for(detached(dc.fake), "the drop")
        await asyncio.sleep(1.0)
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], g.seq)
        assert await r.recv() == {"op": 9, "d": False, "s": None, "t": None}
    dc.run(body)


def test_identify_checks(dc):
    async def body():
        cases = [({"token": "wrong"}, 4004), ({"intents": CHAT_INTENTS | GUILD_MEMBERS}, 4014),
                 ({"intents": 1 << 30}, 4013), ({"intents": "37377"}, 4013),
                 ({"shard": [1, 2]}, 4010)]
        for change, code in cases:
            g = await dc.connect()
            d = dict({"token": dc.token, "intents": CHAT_INTENTS,
                      "properties": {"os": "linux", "browser": "h", "device": "h"}}, **change)
            await g.send(2, d)
            assert await g.closed() == code, change
        dc.fake.configure(portal_intents=0)
        g = await dc.connect()
        await g.send(2, {"token": dc.token, "intents": CHAT_INTENTS, "properties": {}})
        assert await g.closed() == 4014
        ident = dc.fake.stats()["identifies"]
        assert ident == [] and dc.fake.stats()["identify"] == 0
        dc.fake.configure(portal_intents=MESSAGE_CONTENT, identify_interval=30)
        await dc.session()
        g = await dc.connect()
        await g.send(2, {"token": dc.token, "intents": CHAT_INTENTS, "properties": {}})
        assert (await g.recv())["op"] == 9                  # max_concurrency exceeded
        st = dc.fake.stats()
        assert st["identify_throttled"] == 1 and "token" not in st["identifies"][0]
    dc.run(body)


def test_content_empty_without_message_content_intent(dc):
    async def body():
        g, _ = await dc.session(GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES)
        dc.fake.message(content="secret")
        assert (await g.dispatch("MESSAGE_CREATE"))["d"]["content"] == ""
        dc.fake.message(content="to you", mention_bot=True)
        assert (await g.dispatch("MESSAGE_CREATE"))["d"]["content"].endswith("to you")
        dc.fake.message(content="dm", dm=True)
        assert (await g.dispatch("MESSAGE_CREATE"))["d"]["content"] == "dm"
        await dc.post(content="mine")
        assert (await g.dispatch("MESSAGE_CREATE"))["d"]["content"] == "mine"
        dms, _ = await dc.session(DIRECT_MESSAGES)          # no GUILD_MESSAGES: no guild events
        dc.fake.message(content="guild")
        dc.fake.message(content="dm2", dm=True)
        assert (await dms.dispatch("MESSAGE_CREATE"))["d"]["content"] == "dm2"
    dc.run(body)


def test_heartbeats_enforced(dc):
    dc.fake.configure(heartbeat_interval=1000)

    async def body():
        t0 = time.monotonic()
        g = await dc.connect(heartbeat=False)
        assert g.interval == 1.0
        ready = await g.identify(dc.token)
        assert await g.closed() == 4009
        assert time.monotonic() - t0 >= 1.0       # closed after interval * grace
        ok = await dc.connect(heartbeat=True)               # a heartbeating client stays
        await ok.silent(2.5)
        r = await dc.connect(dc.fake.resume_url)            # the timed-out one resumes
        await r.resume(dc.token, ready["session_id"], g.seq)
        await r.dispatch("RESUMED")
        st = dc.fake.stats()
        assert st["heartbeat_timeouts"] == 1 and st["server_closes"]["4009"] == 1
        assert st["heartbeats"] >= 3 and ok.acks >= 3
    dc.run(body)


def test_heartbeat_acks_requests_and_stopped_acks(dc):
    async def body():
        g = await dc.connect(heartbeat=False)
        await g.send(1, None)
        assert await g.recv(acks=True) == {"op": 11, "d": None, "s": None, "t": None}
        assert dc.fake.gateway_fault("heartbeat_request") == 1
        assert await g.recv() == {"op": 1, "d": None, "s": None, "t": None}
        dc.fake.gateway_fault("stop_acks")
        await g.send(1, 7)
        with pytest.raises(asyncio.TimeoutError):
            await g.recv(timeout=0.7, acks=True)
        dc.fake.gateway_fault("resume_acks")
        await g.send(1, 7)
        assert (await g.recv(acks=True))["op"] == 11
        st = dc.fake.stats()
        assert (st["heartbeats"], st["heartbeat_acks"], st["heartbeats_unacked"]) == (3, 2, 1)
        assert st["last_heartbeat_d"] == 7 and st["heartbeat_requests"] == 1
    dc.run(body)


def test_reconnect_op7(dc):
    dc.fake.configure(reconnect_grace=0.5)

    async def body():
        g, ready = await dc.session()
        dc.fake.gateway_fault("reconnect")
        assert await g.recv() == {"op": 7, "d": None, "s": None, "t": None}
        assert await g.closed() == 4000                     # the fake closes if we linger
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], g.seq)
        await r.dispatch("RESUMED")
    dc.run(body)


@pytest.mark.parametrize("resumable", [True, False])
def test_invalid_session_op9(dc, resumable):
    async def body():
        g, ready = await dc.session()
        dc.fake.gateway_fault("invalid_session", resumable=resumable)
        assert await g.recv() == {"op": 9, "d": resumable, "s": None, "t": None}
        await g.close(4000)
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], g.seq)
        if resumable:
            await r.dispatch("RESUMED")
        else:
            assert (await r.recv())["op"] == 9
    dc.run(body)


@pytest.mark.parametrize("code,resumable", [(4000, True), (4009, True), (4007, False),
                                            (4014, False)])
def test_close_with_code(dc, code, resumable):
    async def body():
        g, ready = await dc.session()
        assert dc.fake.gateway_fault("close", code=code) == 1
        assert await g.closed() == code
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], g.seq)
        p = await r.recv()
        assert (p["t"] == "RESUMED") if resumable else (p["op"], p["d"]) == (9, False)
    dc.run(body)


def test_server_drop_keeps_session(dc):
    async def body():
        g, ready = await dc.session()
        dc.fake.gateway_fault("drop")
        assert await g.closed() is None                     # no close frame at all
        dc.fake.message(content="after the drop")
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], g.seq)
        assert (await r.dispatch("MESSAGE_CREATE"))["d"]["content"] == "after the drop"
        await r.dispatch("RESUMED")
    dc.run(body)


def test_protocol_errors(dc):
    dc.fake.configure(gateway_rate=[3, 60.0])

    async def body():
        for payload, code in (("x" * 5000, 4002), ("not json", 4002),
                              (json.dumps({"op": 99, "d": None}), 4001),
                              (json.dumps({"op": 3, "d": {}}), 4003)):
            g = await dc.connect()
            await g.ws.send_str(payload)
            assert await g.closed() == code
        g, _ = await dc.session()
        await g.send(2, {"token": dc.token, "intents": CHAT_INTENTS, "properties": {}})
        assert await g.closed() == 4005
        g, _ = await dc.session()
        for _ in range(3):
            await g.send(3, {"status": "online", "afk": False, "since": None,
                             "activities": []})
        assert await g.closed() == 4008
        g = await dc.connect(query="/?v=9&encoding=json", hello=False)
        assert await g.closed() == 4012
        for query in ("/?v=10&encoding=json&compress=zlib-stream", "/?v=10&encoding=etf"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as e:
                await dc.connect(query=query)
            assert e.value.status == 400
        g = await dc.connect(compress=15)                  # permessage-deflate offered
        assert g.ws.compress == 0
    dc.run(body)


def test_revoked_token(dc):
    async def body():
        g, _ = await dc.session()
        dc.fake.revoke_token()
        assert await g.closed() == 4004
        assert (await dc.rest("GET", "/users/@me"))[0] == 401
        g = await dc.connect()
        await g.send(2, {"token": dc.token, "intents": CHAT_INTENTS, "properties": {}})
        assert await g.closed() == 4004
        dc.fake.configure(token="new-token")
        assert (await dc.rest("GET", "/users/@me", token="new-token"))[0] == 200
    dc.run(body)


def test_counters(dc):
    async def body():
        g, ready = await dc.session()
        g.abort()
        await wait_for(detached(dc.fake), "the drop")
        r = await dc.connect(dc.fake.resume_url)
        await r.resume(dc.token, ready["session_id"], g.seq)
        await r.dispatch("RESUMED")
        await r.close(4000)
        st = dc.fake.state()
        await wait_for(lambda: dc.fake.stats()["client_closes"] == {"4000": 1}, "the close")
        s = dc.fake.stats()
        assert (s["connections"], s["connections_gateway"], s["connections_resume"]) == (2, 1, 1)
        assert (s["identify"], s["resume"], s["resumed"], s["client_drops"]) == (1, 1, 1, 1)
        assert s["identifies"][0]["intents"] == CHAT_INTENTS
        assert s["rest"] == {} and s["bad_user_agent"] == 0
        assert st["sessions"][0]["seq"] == 3 and st["config"]["heartbeat_interval"] == 2000
        assert "token" not in st["config"]
    dc.run(body)


def test_control_rejects_bad_input(fake):
    fake.reset()
    for call in (lambda: fake.configure(heartbeat_interval="fast"),
                 lambda: fake.configure(no_such_setting=1),
                 lambda: fake.message(channel_id="999"),
                 lambda: fake.message(reply_to="123"),
                 lambda: fake.gateway_fault("explode"),
                 lambda: fake.rest_fault("418"),
                 lambda: fake._ctl("POST", "/messages", {"messages": [1]}),
                 lambda: fake._ctl("GET", "/sent?after=x")):
        with pytest.raises(urllib.error.HTTPError) as e:
            call()
        assert e.value.code == 400 and e.value.read()
    assert fake.configure(heartbeat_interval=1500)["heartbeat_interval"] == 1500
    assert fake.message(content="still up")["channel_id"] == fake.channels["general"]


def test_startup_file_and_clean_shutdown(tmp_path):
    fake = FakeDiscord(tmp_path, heartbeat_interval=2000).start()
    try:
        written = json.loads((fake.dir / "fake-discord.json").read_text())
        assert written == fake.info and written["ca"].endswith("ca.pem")
        h = Harness(fake)

        async def body():
            g = await h.connect()
            fake.proc.send_signal(15)
            assert await g.closed() == 1001
        h.run(body)
        assert fake.proc.wait(timeout=15) == 0
    finally:
        fake.stop()
