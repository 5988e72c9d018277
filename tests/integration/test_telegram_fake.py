"""The fake Bot API behaves as Telegram does where the gateway relies on it.

These pin down the fake itself (offsets, long polls, conflicts, errors), so
that the scenarios in test_telegram.py test the worker against real semantics.
"""
import json
import ssl
import threading
import time
import urllib.error
import urllib.request

import pytest

from tg_util import FakeTelegram


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    with FakeTelegram(tmp_path_factory.mktemp("fake")) as f:
        yield f


@pytest.fixture
def api(fake):
    fake.reset()
    ctx = ssl.create_default_context(cafile=fake.ca)

    def call(method, token=None, http_timeout=30, **params):
        url = f"{fake.api_url}/bot{token or fake.token}/{method}"
        req = urllib.request.Request(url, data=json.dumps(params).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=http_timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())
    return call


def ids(reply):
    return [u["update_id"] for u in reply[1]["result"]]


def test_offsets_confirm_and_redeliver(fake, api):
    a = fake.message(chat_id=1, user_id=1, text="a")["update_id"]
    b = fake.message(chat_id=1, user_id=1, text="b")["update_id"]
    assert ids(api("getUpdates")) == [a, b]
    assert ids(api("getUpdates")) == [a, b]            # unconfirmed: delivered again
    assert ids(api("getUpdates", offset=b)) == [b]     # confirms a
    assert ids(api("getUpdates")) == [b]
    assert ids(api("getUpdates", offset=b + 1)) == []
    c = fake.message(chat_id=1, user_id=1, text="c")["update_id"]
    assert ids(api("getUpdates", limit=1)) == [c]
    d = fake.message(chat_id=1, user_id=1, text="d")["update_id"]
    assert ids(api("getUpdates", offset=-1)) == [d]    # negative: the last ones only
    assert ids(api("getUpdates")) == [d]


def test_long_poll_held_until_an_update(fake, api):
    t0 = time.monotonic()
    assert ids(api("getUpdates", timeout=1)) == []
    assert time.monotonic() - t0 >= 0.9
    out = {}

    def poll():
        out["r"] = api("getUpdates", timeout=20)
    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    u = fake.message(chat_id=1, user_id=1, text="wake")["update_id"]
    th.join(timeout=10)
    assert ids(out["r"]) == [u]


def test_new_poll_terminates_the_old_one_with_409(fake, api):
    out = {}

    def poll():
        out["r"] = api("getUpdates", timeout=20)
    th = threading.Thread(target=poll)
    th.start()
    time.sleep(0.3)
    assert api("getUpdates", timeout=0)[0] == 200
    th.join(timeout=10)
    status, body = out["r"]
    assert status == 409 and body["error_code"] == 409
    assert "terminated by other getUpdates request" in body["description"]


def test_errors_look_like_telegram(fake, api):
    st, body = api("getMe", token="1:wrong")
    assert st == 401 and body == {"ok": False, "error_code": 401, "description": "Unauthorized"}
    assert api("noSuchMethod")[0] == 404
    st, body = api("sendMessage", chat_id=1, text="*open", parse_mode="Markdown")
    assert st == 400 and "can't parse entities" in body["description"]
    st, body = api("sendMessage", chat_id=1, text="x" * 4097)
    assert st == 400 and body["description"] == "Bad Request: message is too long"
    fake.fault("429", method="sendMessage", retry_after=3)
    st, body = api("sendMessage", chat_id=1, text="hi")
    assert st == 429 and body["parameters"] == {"retry_after": 3}
    st, body = api("sendMessage", chat_id=1, text="hi", message_thread_id=4,
                   reply_parameters={"message_id": 2})
    assert st == 200 and body["result"]["message_thread_id"] == 4
    rec = fake.all_sent()[-1]
    assert (rec["text"], rec["message_thread_id"], rec["reply_to"]) == ("hi", 4, 2)


def test_allowed_updates_remembered(fake, api):
    fake.message(chat_id=1, user_id=1, text="edited", edited=True)
    m = fake.message(chat_id=1, user_id=1, text="new")["update_id"]
    assert ids(api("getUpdates", allowed_updates=["message"])) == [m]
    assert ids(api("getUpdates")) == [m]
