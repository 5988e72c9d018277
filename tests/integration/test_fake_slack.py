"""Tests that pin the fake Slack itself: what the gateway's scenarios rely on
it doing as Slack does (tokens, single-use URLs, hello, envelopes, the ack
deadline and retries, disconnect, rate limits, warnings)."""
import asyncio
import json
import ssl
import time
import urllib.request

import pytest
import websockets

from slack_util import FakeSlack


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with FakeSlack(tmp_path_factory.mktemp("fake")) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    fake_server.reset()
    yield fake_server


def call(fake, method, token, body=b"{}", ctype="application/json; charset=utf-8"):
    req = urllib.request.Request(f"{fake.api_url}/{method}", data=body, method="POST",
                                 headers={"Content-Type": ctype})
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    ctx = ssl.create_default_context(cafile=fake.ca)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def ws_ctx(fake):
    return ssl.create_default_context(cafile=fake.ca)


async def recv_json(ws, timeout=10):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_tokens_and_errors(fake):
    assert call(fake, "auth.test", fake.bot_token)[2]["user_id"] == fake.bot_user
    assert call(fake, "auth.test", None)[2] == {"ok": False, "error": "not_authed"}
    assert call(fake, "auth.test", "xoxb-nope")[2]["error"] == "invalid_auth"
    assert call(fake, "auth.test", fake.app_token)[2]["error"] == "not_allowed_token_type"
    assert call(fake, "apps.connections.open", fake.bot_token)[2]["error"] == \
        "not_allowed_token_type"
    assert call(fake, "nope.method", fake.bot_token)[2]["error"] == "unknown_method"
    st, _, body = call(fake, "chat.postMessage", fake.bot_token,
                       json.dumps({"channel": "C0NOPE", "text": "x"}).encode())
    assert (st, body["error"]) == (200, "channel_not_found")       # errors are HTTP 200
    _, _, body = call(fake, "chat.postMessage", fake.bot_token,
                      json.dumps({"channel": fake.channels["general"], "text": "x"}).encode(),
                      ctype="application/json")
    assert body["ok"] and body["response_metadata"]["warnings"] == ["missing_charset"]


def test_post_rate_limit_and_truncation(fake):
    general = fake.channels["general"]
    answers = [call(fake, "chat.postMessage", fake.bot_token,
                    json.dumps({"channel": general, "text": f"p{i}"}).encode())
               for i in range(6)]
    assert [a[0] for a in answers] == [200] * 5 + [429]
    assert answers[5][2]["error"] == "ratelimited"
    assert 1 <= int(answers[5][1]["Retry-After"]) <= 5
    fake.configure(post_rate=[100, 1.0])
    _, _, body = call(fake, "chat.postMessage", fake.bot_token,
                      json.dumps({"channel": general, "text": "y" * 40001}).encode())
    assert body["warning"] == "message_truncated"
    assert len(fake.all_sent()[-1]["text"]) == 40000


def test_hello_envelope_ack_and_retry(fake):
    fake.configure(ack_timeout=0.5, retry_delays=[0.0, 0.2])

    async def run():
        url = call(fake, "apps.connections.open", fake.app_token)[2]["url"]
        assert url.startswith("wss://127.0.0.1:")
        async with websockets.connect(url, ssl=ws_ctx(fake)) as ws:
            hello = await recv_json(ws)
            assert hello["type"] == "hello" and hello["num_connections"] == 1
            m = fake.message(dm=True, text="a <b> & c")
            first = await recv_json(ws)
            assert first["type"] == "events_api" and first["retry_attempt"] == 0
            ev = first["payload"]["event"]
            assert first["payload"]["event_id"] == m["event_ids"][0]
            assert ev["text"] == "a &lt;b&gt; &amp; c" and ev["channel_type"] == "im"
            again = await recv_json(ws)                 # not acked: delivered again
            assert again["retry_attempt"] == 1 and again["retry_reason"] == "timeout"
            assert again["envelope_id"] != first["envelope_id"]
            assert again["payload"]["event_id"] == first["payload"]["event_id"]
            await ws.send(json.dumps({"envelope_id": again["envelope_id"]}))
            await asyncio.sleep(1.0)
        st = fake.state()
        assert st["deliveries"] == {"acked": 1} and st["stats"]["retries"] == 1
    asyncio.run(run())


def test_retries_run_out_then_dropped(fake):
    fake.configure(ack_timeout=0.2, retry_delays=[0.0, 0.0])
    fake.message(dm=True, text="nobody listens")
    end = time.monotonic() + 10
    while fake.state()["deliveries"].get("dropped") != 1:
        assert time.monotonic() < end, fake.state()
        time.sleep(0.05)
    assert fake.state()["gaps"] == 3                    # three attempts, no link open


def test_mention_gives_message_and_app_mention(fake):
    m = fake.message(channel=fake.channels["general"], text="hi", mention_bot=True)
    assert len(m["event_ids"]) == 2
    d = fake.message(dm=True, text="hi", mention_bot=True)
    assert len(d["event_ids"]) == 1


def test_single_use_url_and_disconnect(fake):
    async def run():
        url = call(fake, "apps.connections.open", fake.app_token)[2]["url"]
        async with websockets.connect(url, ssl=ws_ctx(fake)) as ws:
            await recv_json(ws)
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                await websockets.connect(url, ssl=ws_ctx(fake))
            assert e.value.status_code == 401
            fake.fault("disconnect", reason="refresh_requested", close_after=0.3)
            d = await recv_json(ws)
            assert d["type"] == "disconnect" and d["reason"] == "refresh_requested"
            t0 = time.monotonic()
            with pytest.raises(websockets.exceptions.ConnectionClosed):
                await asyncio.wait_for(ws.recv(), 5)
            assert time.monotonic() - t0 < 3
        assert fake.stats()["link_refused_reused"] == 1
    asyncio.run(run())
