"""The fake QQ behaves as QQ does where the gateway relies on it.

These pin the fake itself (tokens, sessions, Resume replay, close codes,
intents, heartbeats, the passive-reply rules) with a plain aiohttp client, so
that the gateway's QQ platform is tested against known semantics.
"""
import asyncio
import json
import ssl

import aiohttp
import pytest
from aiohttp import WSMsgType

from qqbot_util import FakeQQ, DIRECT_MESSAGE, GROUP_AND_C2C, PUBLIC_GUILD_MESSAGES

INTENTS = GROUP_AND_C2C | PUBLIC_GUILD_MESSAGES | DIRECT_MESSAGE
USER = "F0000000000000000000000000000001"


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with FakeQQ(tmp_path_factory.mktemp("fakeqq"), heartbeat_interval=1000) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    fake_server.reset()
    yield fake_server


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 60))


class Client:
    """An HTTPS session trusting the fake's CA, with a token and a gateway helper."""

    def __init__(self, fake, http):
        self.fake, self.http = fake, http
        self.ssl = ssl.create_default_context(cafile=fake.ca)

    async def token(self, secret=None):
        body = {"appId": self.fake.app_id, "clientSecret": secret or self.fake.client_secret}
        async with self.http.post(self.fake.token_url, json=body, ssl=self.ssl) as r:
            return r.status, await r.json()

    async def call(self, method, path, token, body=None):
        async with self.http.request(method, self.fake.api_url + path, json=body, ssl=self.ssl,
                                     headers={"Authorization": "QQBot " + token}) as r:
            return r.status, await r.json()

    async def connect(self):
        ws = await self.http.ws_connect(self.fake.gateway_url, ssl=self.ssl)
        hello = json.loads((await ws.receive()).data)
        assert hello["op"] == 10 and hello["d"]["heartbeat_interval"] == 1000
        return ws

    @staticmethod
    async def recv(ws, timeout=10):
        """The next payload other than a heartbeat ACK; a close raises EOFError(code)."""
        while True:
            msg = await asyncio.wait_for(ws.receive(), timeout)
            if msg.type != WSMsgType.TEXT:
                raise EOFError(msg.data)
            p = json.loads(msg.data)
            if p["op"] != 11:
                return p

    async def identify(self, token, intents=INTENTS):
        ws = await self.connect()
        await ws.send_json({"op": 2, "d": {"token": "QQBot " + token, "intents": intents,
                                           "shard": [0, 1], "properties": {}}})
        return ws, await self.recv(ws)


def client_run(fake, fn):
    async def main():
        async with aiohttp.ClientSession() as http:
            return await fn(Client(fake, http))
    return run(main())


def test_token_issued_renewed_and_refused(fake):
    fake.configure(token_lifetime=65, renew_window=60, token_grace=1)

    async def go(c):
        st, a = await c.token()
        assert st == 200 and a["expires_in"] == "65"           # a string, as QQ sends it
        st, b = await c.token()
        assert b["access_token"] == a["access_token"]           # not yet in the last 60 s
        await asyncio.sleep(5.5)
        st, n = await c.token()
        assert n["access_token"] != a["access_token"]           # now a new one
        assert (await c.call("GET", "/gateway", a["access_token"]))[0] == 200   # grace
        await asyncio.sleep(1.2)
        st, body = await c.call("GET", "/gateway", a["access_token"])
        assert st == 401 and body["code"] == 11241
        st, body = await c.call("GET", "/gateway", n["access_token"])
        assert st == 200 and body["url"] == fake.gateway_url
        st, bad = await c.token(secret="wrong")
        assert st == 200 and bad["code"] == 100016 and "access_token" not in bad
    client_run(fake, go)


def test_identify_dispatch_resume_replay(fake):
    async def go(c):
        tok = (await c.token())[1]["access_token"]
        ws, ready = await c.identify(tok)
        assert ready["t"] == "READY" and ready["s"] == 1
        sid = ready["d"]["session_id"]
        await ws.send_json({"op": 1, "d": 1})
        assert (await asyncio.wait_for(ws.receive(), 5)).json()["op"] == 11
        m = fake.message(kind="c2c", user=USER, content="one")
        ev = await c.recv(ws)
        assert (ev["op"], ev["t"], ev["s"], ev["d"]["id"]) == (0, "C2C_MESSAGE_CREATE", 2,
                                                               m["id"])
        assert ev["d"]["author"]["user_openid"] == USER
        await ws.close(code=4000)
        fake.message(kind="group", user=USER, group="G1", content="two")
        fake.message(kind="guild", user="300", content="three")
        ws = await c.connect()
        await ws.send_json({"op": 6, "d": {"token": "QQBot " + tok, "session_id": sid,
                                           "seq": 2}})
        got = [await c.recv(ws) for _ in range(3)]
        assert [(p["t"], p["s"]) for p in got] == [("GROUP_AT_MESSAGE_CREATE", 3),
                                                    ("AT_MESSAGE_CREATE", 4), ("RESUMED", 5)]
        assert got[1]["d"]["content"].startswith("<@!%s> " % fake.bot_id)
        await ws.close(code=1000)                               # ends the session
        ws = await c.connect()
        await ws.send_json({"op": 6, "d": {"token": "QQBot " + tok, "session_id": sid,
                                           "seq": 5}})
        p = await c.recv(ws)
        assert (p["op"], p["d"]) == (9, False)
        await ws.close()
    client_run(fake, go)


def test_close_codes(fake):
    fake.configure(permitted_intents=GROUP_AND_C2C)

    async def go(c):
        tok = (await c.token())[1]["access_token"]
        for token, intents, code in (("nope", INTENTS, 4004), (tok, 1 << 2, 4013),
                                     (tok, INTENTS, 4014)):
            ws = await c.connect()
            await ws.send_json({"op": 2, "d": {"token": "QQBot " + token, "intents": intents,
                                               "shard": [0, 1], "properties": {}}})
            with pytest.raises(EOFError) as e:
                await c.recv(ws)
            assert e.value.args[0] == code
        ws, ready = await c.identify(tok, GROUP_AND_C2C)
        with pytest.raises(EOFError) as e:                      # no heartbeats: 4009
            await c.recv(ws, timeout=5)
        assert e.value.args[0] == 4009
    client_run(fake, go)


def test_passive_reply_rules(fake):
    fake.configure(reply_cap=2, heartbeat_grace=100.0)

    async def go(c):
        tok = (await c.token())[1]["access_token"]
        m = fake.message(kind="c2c", user=USER, content="hi")
        path = "/v2/users/%s/messages" % USER
        body = {"content": "x", "msg_type": 0, "msg_id": m["id"], "msg_seq": 7}
        st, r = await c.call("POST", path, tok, body)
        assert (st, r["code"]) == (400, 304018)                # no gateway connection
        ws, _ = await c.identify(tok)
        st, r = await c.call("POST", path, tok, body)
        assert st == 200 and r["id"] and r["timestamp"]
        st, r = await c.call("POST", path, tok, body)
        assert (st, r["code"]) == (400, 40054005)              # the same msg_seq again
        st, r = await c.call("POST", path, tok, dict(body, msg_seq=8))
        assert st == 200
        st, r = await c.call("POST", path, tok, dict(body, msg_seq=9))
        assert (st, r["code"]) == (400, 22009)                 # over the cap
        st, r = await c.call("POST", path, tok, dict(body, msg_id=None))
        assert (st, r["code"]) == (400, 304026)                # no proactive messages
        old = fake.message(kind="group", user=USER, group="G2", content="old", age=301)
        st, r = await c.call("POST", "/v2/groups/G2/messages", tok,
                             dict(body, msg_id=old["id"]))
        assert (st, r["code"]) == (400, 304027)
        st, r = await c.call("POST", "/v2/groups/G3/messages", tok,
                             dict(body, msg_id=old["id"]))
        assert (st, r["code"]) == (400, 304026)                # not that chat's message
        dm = fake.message(kind="dm", user="301", guild="14000000000000000005", content="q")
        assert (await c.recv(ws))["t"] == "GROUP_AT_MESSAGE_CREATE"  # (hi came before)
        assert (await c.recv(ws))["t"] == "DIRECT_MESSAGE_CREATE"
        st, r = await c.call("POST", "/dms/14000000000000000005/messages", tok,
                             {"content": "answer", "msg_id": dm["id"]})
        assert st == 200
        echo = await c.recv(ws)                                # our own DM comes back
        assert echo["t"] == "DIRECT_MESSAGE_CREATE" and echo["d"]["author"]["bot"] is True
        await ws.close(code=4000)
    client_run(fake, go)
    sent = fake.all_sent()
    assert [(s["chat"], s["content"]) for s in sent] == [
        ("c2c:" + USER, "x"), ("c2c:" + USER, "x"), ("dm:14000000000000000005", "answer")]
    assert fake.stats()["dedup"] == 1 and fake.stats()["limit"] == 1


def test_duplicate_and_faults(fake):
    async def go(c):
        tok = (await c.token())[1]["access_token"]
        ws, _ = await c.identify(tok)
        fake.gateway_fault("duplicate", count=1)
        m = fake.message(kind="c2c", user=USER, content="twice")
        a, b = await c.recv(ws), await c.recv(ws)
        assert a["d"]["id"] == b["d"]["id"] == m["id"] and b["s"] == a["s"] + 1
        fake.rest_fault("500", route="GET /gateway", count=1)
        assert (await c.call("GET", "/gateway", tok))[0] == 500
        assert (await c.call("GET", "/gateway", tok))[0] == 200
        fake.gateway_fault("close", code=4914)
        with pytest.raises(EOFError) as e:
            await c.recv(ws)
        assert e.value.args[0] == 4914
    client_run(fake, go)
    with pytest.raises(Exception):
        fake.gateway_fault("nonsense")
    with pytest.raises(Exception):
        fake.configure(reply_cap="five")
