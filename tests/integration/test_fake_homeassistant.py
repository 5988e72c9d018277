"""Tests that pin the fake Home Assistant's behaviour: what the gateway's tests rely on
is what Home Assistant does (auth phase, increasing ids, results, events, REST)."""
import asyncio
import ssl
import time

import aiohttp
import pytest

from homeassistant_util import FakeHA


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with FakeHA(tmp_path_factory.mktemp("fakeha")) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    fake_server.reset()
    yield fake_server


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


async def connect(fake, session, token=None, tls=False):
    url = (fake.https_url if tls else fake.http_url).replace("http", "ws", 1)
    ctx = ssl.create_default_context(cafile=fake.ca) if tls else None
    ws = await session.ws_connect(url + "/api/websocket", ssl=ctx)
    first = await ws.receive_json()
    assert first["type"] == "auth_required" and first["ha_version"]
    await ws.send_json({"type": "auth", "access_token": token or fake.token})
    return ws, await ws.receive_json()


def test_auth_ok_over_tls_and_bad_token_closed(fake):
    async def go():
        async with aiohttp.ClientSession() as s:
            ws, r = await connect(fake, s, tls=True)
            assert r["type"] == "auth_ok"
            await ws.close()
            ws, r = await connect(fake, s, token="wrong")
            assert r == {"type": "auth_invalid", "message": "Invalid access token or password"}
            assert (await ws.receive()).type in (aiohttp.WSMsgType.CLOSE,
                                                 aiohttp.WSMsgType.CLOSED)
            ws = await s.ws_connect(fake.http_url.replace("http", "ws") + "/api/websocket")
            await ws.receive_json()
            await ws.send_json({"type": "subscribe_events", "id": 1})
            r = await ws.receive_json()
            assert r["type"] == "auth_invalid" and "incorrectly formatted" in r["message"]
    run(go())
    assert fake.stats()["auth_invalid"] == 2


def test_ids_must_increase_ping_and_unknown(fake):
    async def go():
        async with aiohttp.ClientSession() as s:
            ws, _ = await connect(fake, s)
            await ws.send_json({"id": 5, "type": "ping"})
            assert await ws.receive_json() == {"id": 5, "type": "pong"}
            await ws.send_json({"id": 5, "type": "ping"})
            r = await ws.receive_json()
            assert r["success"] is False and r["error"]["code"] == "id_reuse"
            await ws.send_json({"id": 6, "type": "frobnicate"})
            r = await ws.receive_json()
            assert r["id"] == 6 and r["error"]["code"] == "unknown_command"
            fake.fault("no_pong", on=True)
            await ws.send_json({"id": 7, "type": "ping"})
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.receive_json(), 0.5)
    run(go())


def test_states_and_events(fake):
    fake.seed([("light.a", "off", {"friendly_name": "A"})])

    async def go():
        async with aiohttp.ClientSession() as s:
            ws, _ = await connect(fake, s)
            await ws.send_json({"id": 1, "type": "subscribe_events",
                                "event_type": "state_changed"})
            assert await ws.receive_json() == {"id": 1, "type": "result", "success": True,
                                               "result": None}
            await ws.send_json({"id": 2, "type": "get_states"})
            r = await ws.receive_json()
            assert [x["state"] for x in r["result"]] == ["off"]
            first = r["result"][0]
            assert fake.set_state("light.a", "on")["receivers"] == 1
            ev = await ws.receive_json()
            assert ev["id"] == 1 and ev["type"] == "event"
            d = ev["event"]["data"]
            assert d["old_state"]["state"] == "off" and d["new_state"]["state"] == "on"
            assert d["new_state"]["last_changed"] != first["last_changed"]
            assert not fake.set_state("light.a", "on")["fired"]    # nothing changed
            fake.set_state("light.a", "on", {"friendly_name": "A", "brightness": 3})
            ev = await ws.receive_json()
            ns = ev["event"]["data"]["new_state"]
            assert ns["last_changed"] == d["new_state"]["last_changed"]
            assert ns["last_updated"] != d["new_state"]["last_updated"]
            fake.remove("light.a")
            ev = await ws.receive_json()
            assert ev["event"]["data"]["new_state"] is None
    run(go())


def test_hold_delays_auth_required_and_counts_gaps(fake):
    fake.configure(hold=True)

    async def go():
        async with aiohttp.ClientSession() as s:
            ws = await s.ws_connect(fake.http_url.replace("http", "ws") + "/api/websocket")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(ws.receive_json(), 0.5)
            fake.release()
            assert (await ws.receive_json())["type"] == "auth_required"
            await ws.send_json({"type": "auth", "access_token": fake.token})
            await ws.receive_json()
            await ws.send_json({"id": 1, "type": "subscribe_events"})
            await ws.receive_json()
            assert fake.state()["subscribed"] == 1
            await ws.close()
            time.sleep(0.2)
            ws, _ = await connect(fake, s)
            await ws.send_json({"id": 1, "type": "subscribe_events"})
            await ws.receive_json()
    run(go())
    gaps = fake.state()["gaps"]
    assert len(gaps) == 1 and 0.15 < gaps[0] < 10


def test_rest_services(fake):
    async def go():
        async with aiohttp.ClientSession() as s:
            url = fake.https_url + "/api/services/"
            ctx = ssl.create_default_context(cafile=fake.ca)
            auth = {"Authorization": "Bearer " + fake.token}
            r = await s.post(url + "persistent_notification/create", json={"message": "x"},
                             ssl=ctx)
            assert r.status == 401
            for text in ("one", "two"):
                r = await s.post(url + "persistent_notification/create", ssl=ctx,
                                 headers=auth, json={"message": text, "title": "T",
                                                     "notification_id": "n1"})
                assert r.status == 200 and await r.json() == []
            r = await s.post(url + "notify/mobile_app_phone", json={"message": "m"},
                             headers=auth, ssl=ctx)
            assert r.status == 200
            r = await s.post(url + "notify/nosuch", json={"message": "m"}, headers=auth,
                             ssl=ctx)
            assert r.status == 400 and "not found" in (await r.json())["message"]
            fake.fault("rest", status=500, count=1)
            r = await s.post(url + "notify/mobile_app_phone", json={"message": "m"},
                             headers=auth, ssl=ctx)
            assert r.status == 500
    run(go())
    assert fake.visible() == {"n1": {"title": "T", "message": "two"}}   # replaced
    assert [c["service"] for c in fake.all_calls()] == [
        "persistent_notification.create", "persistent_notification.create",
        "notify.mobile_app_phone"]


def test_bad_control_input_is_a_400(fake):
    import urllib.error
    with pytest.raises(urllib.error.HTTPError) as e:
        fake.set_state("nodot", "on")
    assert e.value.code == 400
    with pytest.raises(urllib.error.HTTPError):
        fake.configure(hold="yes")
    assert fake.state()["entities"] == 0
