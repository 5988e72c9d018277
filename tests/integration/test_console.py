"""The console platform's HTTP API, run against the real hermes-worker
(echo agent), started directly with a config pointing the console at a
free port and the state at a temp dir."""
import json
import signal
import socket
import sys
import threading
import time

import pytest

from conftest import ROOT, free_port
from console_util import Console, ConsoleError, Launcher, WorkerProc, write_config

sys.path.insert(0, str(ROOT / "tests" / "fakes"))


@pytest.fixture
def launch(build, tmp_path):
    """launch(port=None, console=None, env=None, ready=True, ...) -> (worker, client)."""
    with Launcher(build, tmp_path) as start:
        yield start


def echo_ok(c, chat="health"):
    """The worker still answers: one echo round trip."""
    assert c.ask("still there?", chat_id=chat) == ["still there?"]


def test_post_wait_round_trip(launch):
    w, c = launch()
    r = c.post("hello world", chat_id="c1", wait=20)
    assert r["done"] is True
    assert [m["text"] for m in r["replies"]] == ["hello world"]
    rep = r["replies"][0]
    assert rep["reply_to"] == r["message_id"]
    assert rep["id"] > r["message_id"]
    assert isinstance(rep["time"], (int, float)) and rep["time"] > 1e9
    # The same reply is in the chat's log.
    log = c.messages("c1")
    assert [m["id"] for m in log["messages"]] == [rep["id"]]
    assert log["last"] == rep["id"]


def test_post_202_and_long_poll(launch):
    w, c = launch()
    first = c.messages("lp")
    after = first["last"]
    result = {}

    def poll():
        result["r"] = c.messages("lp", after=after, wait=30)

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.3)                     # the poll is parked (not required for correctness)
    r = c.post("ping over long-poll", chat_id="lp")
    assert set(r) == {"message_id"}
    t.join(40)
    assert not t.is_alive()
    msgs = result["r"]["messages"]
    assert [m["text"] for m in msgs] == ["ping over long-poll"]
    assert msgs[0]["reply_to"] == r["message_id"]
    assert result["r"]["last"] == msgs[0]["id"]
    # Nothing newer: a short wait returns empty, with last unchanged.
    t0 = time.monotonic()
    again = c.messages("lp", after=result["r"]["last"], wait=1)
    assert again["messages"] == [] and again["last"] >= result["r"]["last"]
    assert time.monotonic() - t0 >= 0.9


def test_ids_increase_and_chats_are_separate(launch):
    w, c = launch()
    ids = []
    for i in range(5):
        for chat in ("a", "b"):
            r = c.post(f"{chat}{i}", chat_id=chat, wait=20)
            ids += [r["message_id"]] + [m["id"] for m in r["replies"]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    a = c.messages("a")["messages"]
    b = c.messages("b")["messages"]
    assert [m["text"] for m in a] == [f"a{i}" for i in range(5)]
    assert [m["text"] for m in b] == [f"b{i}" for i in range(5)]
    # after=N returns only newer ones.
    tail = c.messages("a", after=a[2]["id"])["messages"]
    assert [m["text"] for m in tail] == ["a3", "a4"]
    # chat ids with odd characters are addressed percent-encoded.
    odd = "chat/with spaces?&ü"
    c.post("odd", chat_id=odd, wait=20)
    assert [m["text"] for m in c.messages(odd)["messages"]] == ["odd"]


def test_token_in_config(launch):
    w, c = launch(console={"token": "s3cret-token"}, token="s3cret-token")
    bare = Console(c.port)
    for method, path, body in (("GET", "/v1/status", None),
                               ("POST", "/v1/messages", {"chat_id": "x", "user_id": "u", "text": "t"}),
                               ("GET", "/v1/chats/x/messages", None)):
        assert bare.request(method, path, body).status == 401
        bad = Console(c.port, token="s3cret-tokeX").request(method, path, body)
        assert bad.status == 401 and "error" in bad.json()
        assert Console(c.port, token="s3cret-token-longer").request(method, path, body).status == 401
    r = bare.request("GET", "/v1/status", headers={"Authorization": "Basic czNjcmV0LXRva2Vu"})
    assert r.status == 401
    assert c.status()["platforms"]
    echo_ok(c)
    # The page itself is static and loads without the token (it asks for it).
    assert bare.request("GET", "/").status == 200


def test_token_from_environment(launch):
    w, c = launch(env={"HERMES_CONSOLE_TOKEN": "from-env"}, token="from-env")
    assert Console(c.port).request("GET", "/v1/status").status == 401
    echo_ok(c)


def test_token_from_dotenv(launch, tmp_path):
    (tmp_path / ".env").write_text("HERMES_CONSOLE_TOKEN=from-dotenv\n")
    (tmp_path / ".env").chmod(0o600)
    w, c = launch(token="from-dotenv")
    assert Console(c.port).request("GET", "/v1/status").status == 401
    echo_ok(c)


@pytest.mark.parametrize("console,key", [
    ({"listen": "0.0.0.0:{port}"}, "platforms.console.listen"),
    ({"listen": "[::]:{port}"}, "platforms.console.listen"),
    ({"listen": "not-an-address"}, "platforms.console.listen"),
    ({"listen": "127.0.0.1:99999"}, "platforms.console.listen"),
    ({"listen": 8642}, "platforms.console.listen"),
    ({"token": 12345}, "platforms.console.token"),
    ({"token": ""}, "platforms.console.token"),
])
def test_config_errors_exit_78(launch, console, key):
    port = free_port()
    console = {k: (v.format(port=port) if isinstance(v, str) else v)
               for k, v in console.items()}
    w, c = launch(port=port, console=console, ready=False)
    assert w.wait_exit(20) == 78, w.log()
    assert key in w.log()


def test_non_loopback_with_token_listens(launch):
    port = free_port()
    w, c = launch(port=port, console={"listen": f"0.0.0.0:{port}", "token": "tok"},
                  token="tok")
    assert Console(port).request("GET", "/v1/status").status == 401
    echo_ok(c)


def test_body_too_large_413(launch):
    w, c = launch()
    big = json.dumps({"chat_id": "big", "user_id": "u", "text": "x" * 70000})
    assert c.request("POST", "/v1/messages", big).status == 413
    # exactly at the limit is accepted and echoed whole
    text = "y" * (65536 - len(json.dumps({"chat_id": "big", "user_id": "u", "text": ""})))
    body = json.dumps({"chat_id": "big", "user_id": "u", "text": text})
    assert len(body) == 65536
    r = c.request("POST", "/v1/messages?wait=20", body)
    assert r.status == 200, r
    assert "".join(m["text"] for m in r.json()["replies"]) == text
    echo_ok(c)


BAD_BODIES = [
    ("{not json", "JSON"),
    ("", "body"),
    ("[1,2]", "object"),
    ('"text"', "object"),
    ('{"user_id":"u","text":"t"}', "chat_id"),
    ('{"chat_id":"c","text":"t"}', "user_id"),
    ('{"chat_id":"c","user_id":"u"}', "text"),
    ('{"chat_id":5,"user_id":"u","text":"t"}', "chat_id"),
    ('{"chat_id":"c","user_id":["u"],"text":"t"}', "user_id"),
    ('{"chat_id":"c","user_id":"u","text":{"a":1}}', "text"),
    ('{"chat_id":"c","user_id":"u","text":""}', "text"),
    ('{"chat_id":"c","user_id":"u","text":"  \\n\\t "}', "text"),
    ('{"chat_id":"","user_id":"u","text":"t"}', "chat_id"),
    ('{"chat_id":"' + "c" * 129 + '","user_id":"u","text":"t"}', "chat_id"),
    ('{"chat_id":"c","user_id":"' + "u" * 129 + '","text":"t"}', "user_id"),
    ('{"chat_id":"c\\u0001","user_id":"u","text":"t"}', "chat_id"),
    ('{"chat_id":"c","user_id":"u","text":"t","user_name":7}', "user_name"),
    ('{"chat_id":"c","user_id":"u","text":"a\\u0000b"}', "NUL"),
]


def test_bad_requests_400(launch):
    w, c = launch()
    for body, word in BAD_BODIES:
        r = c.request("POST", "/v1/messages", body,
                      headers={"Content-Type": "application/json"})
        assert r.status == 400, (body, r)
        assert word in r.json()["error"], (body, r.json())
    # invalid UTF-8 in text
    r = c.request("POST", "/v1/messages",
                  b'{"chat_id":"c","user_id":"u","text":"\xff\xfe"}')
    assert r.status == 400 and "UTF-8" in r.json()["error"]
    for path in ("/v1/messages?wait=abc", "/v1/messages?wait=-1"):
        r = c.request("POST", path, {"chat_id": "c", "user_id": "u", "text": "t"})
        assert r.status == 400 and "wait" in r.json()["error"]
    for path in ("/v1/chats/c/messages?after=x", "/v1/chats/c/messages?after=-1",
                 "/v1/chats/c/messages?wait=soon", "/v1/chats/%00/messages",
                 "/v1/chats/" + "c" * 129 + "/messages", "/v1/chats/a%01b/messages"):
        r = c.request("GET", path)
        assert r.status == 400 and "error" in r.json(), (path, r)
    # nothing of the above reached the hub: no message ids were used up
    r = c.post("after bad input", chat_id="c", wait=20)
    assert [m["text"] for m in r["replies"]] == ["after bad input"]
    assert w.alive()


def test_not_found_and_wrong_method(launch):
    w, c = launch()
    for path in ("/nope", "/v1/nope", "/v1", "/v1/chats/x", "/v1/chats/x/y/messages",
                 "/v1/chats//messages", "/index.htm"):
        r = c.request("GET", path)
        assert r.status == 404, (path, r)
        assert r.json()["error"]
    for method, path, allow in (("GET", "/v1/messages", "POST"),
                                ("PUT", "/v1/messages", "POST"),
                                ("POST", "/v1/status", "GET, HEAD"),
                                ("DELETE", "/v1/chats/x/messages", "GET, HEAD"),
                                ("POST", "/", "GET, HEAD")):
        r = c.request(method, path, "{}")
        assert r.status == 405, (method, path, r)
        assert r.headers.get("allow") == allow
    echo_ok(c)


def test_cross_site_requests_refused(launch):
    w, c = launch()
    body = {"chat_id": "x", "user_id": "local", "text": "/restart"}
    r = c.request("POST", "/v1/messages", body, headers={"Origin": "http://evil.example"})
    assert r.status == 403
    for host in ("rebind.example:8642", "127.0.0.1.evil.example", "127.evil.example:1",
                 "localhost.evil.example", "[::1].evil", "127.0.0.1:80x"):
        r = c.request("GET", "/v1/status", headers={"Host": host})
        assert r.status == 403, host
    for host in (f"127.0.0.1:{c.port}", f"localhost:{c.port}", f"[::1]:{c.port}",
                 "127.0.0.2", "LOCALHOST"):
        assert c.request("GET", "/v1/status", headers={"Host": host}).status == 200, host
    # same-origin browser requests are fine
    r = c.request("POST", "/v1/messages?wait=20", body | {"text": "hi"},
                  headers={"Origin": f"http://127.0.0.1:{c.port}"})
    assert r.status == 200 and r.json()["replies"][0]["text"] == "hi"
    assert c.messages("x")["messages"][-1]["text"] == "hi"


def raw_exchange(port, data, timeout=10.0):
    """Sends raw bytes; returns what the server answered before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError):
            pass
        return out


def test_garbage_and_oversized_headers(launch):
    w, c = launch()
    out = raw_exchange(c.port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
    assert not out.startswith(b"HTTP/1.1 2")
    out = raw_exchange(c.port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " +
                       b"a" * 40000 + b"\r\n\r\n")
    assert not out.startswith(b"HTTP/1.1 200")
    out = raw_exchange(c.port, b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Content-Length: 999999999\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 413")
    out = raw_exchange(c.port, b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert not out.startswith(b"HTTP/1.1 2")
    # a client that connects and says nothing, and one that stops mid-body
    idle = socket.create_connection(("127.0.0.1", c.port))
    half = socket.create_connection(("127.0.0.1", c.port))
    half.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    try:
        echo_ok(c)
        assert w.alive()
    finally:
        idle.close()
        half.close()
    echo_ok(c)


def test_many_concurrent_long_polls(launch):
    w, c = launch()
    n = 150
    base = c.messages("none")["last"]
    results = [None] * n
    ready = threading.Barrier(n + 1)

    def poll(i):
        ready.wait()
        try:
            results[i] = c.messages(f"many-{i}", after=base, wait=40)
        except Exception as e:          # recorded, asserted below
            results[i] = e

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    ready.wait()
    time.sleep(0.5)
    for i in range(n):
        assert c.post(f"to {i}", chat_id=f"many-{i}")["message_id"] > base
    for t in threads:
        t.join(60)
    for i, r in enumerate(results):
        assert not isinstance(r, Exception), r
        assert [m["text"] for m in r["messages"]] == [f"to {i}"], (i, r)
    echo_ok(c)


def test_persistence_across_restart(launch, tmp_path):
    port = free_port()
    w, c = launch(port=port)
    sent = [c.post(f"before {i}", chat_id="keep", wait=20) for i in range(3)]
    last_id = max(m["id"] for r in sent for m in r["replies"])
    assert w.stop() == 0, w.log()
    state = tmp_path / "state"
    assert (state / "console.outbox.json").exists()

    w2, c2 = launch(port=port)
    old = c2.messages("keep")
    assert [m["text"] for m in old["messages"]] == [f"before {i}" for i in range(3)]
    assert old["last"] == last_id
    r = c2.post("after restart", chat_id="keep", wait=20)
    assert r["message_id"] > last_id
    assert r["replies"][0]["id"] > r["message_id"]
    tail = c2.messages("keep", after=last_id)["messages"]
    assert [m["text"] for m in tail] == ["after restart"]


def test_ids_never_reused_after_a_crash(launch):
    port = free_port()
    w, c = launch(port=port)
    r = c.post("before crash", chat_id="crash", wait=20)
    top = r["replies"][-1]["id"]
    w.stop(sig=signal.SIGKILL)
    w2, c2 = launch(port=port)
    r2 = c2.post("after crash", chat_id="crash", wait=20)
    # a new id, so the hub does not take the new message for a duplicate
    assert r2["message_id"] > top
    assert [m["text"] for m in r2["replies"]] == ["after crash"]


def test_saved_inbox_replayed_once(launch, tmp_path):
    """A message the previous worker had not handled is answered once,
    with its own id, by the next worker."""
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "console.inbox.json").write_text(json.dumps({"version": 1, "messages": [
        {"id": 41, "chat_id": "replay", "user_id": "local", "text": "left over",
         "time": 1700000000}]}))
    (state / "console.seq").write_text("50\n")
    port = free_port()
    w, c = launch(port=port)
    got = c.wait_text("replay", "left over")
    assert got["reply_to"] == 41 and got["id"] >= 50
    assert w.stop() == 0, w.log()
    saved = json.loads((state / "console.inbox.json").read_text())
    assert saved["messages"] == []
    # the next worker does not answer it again
    w2, c2 = launch(port=port)
    c2.post("marker", chat_id="replay", wait=20)
    texts = [m["text"] for m in c2.messages("replay")["messages"]]
    assert texts == ["left over", "marker"]


def test_corrupt_state_files_are_ignored(launch, tmp_path):
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "console.inbox.json").write_text("{ not json")
    (state / "console.outbox.json").write_text("[1,2,3]")
    (state / "console.seq").write_text("garbage")
    w, c = launch()
    echo_ok(c)
    assert "console" in w.log()


def test_port_in_use_backs_off_then_listens(launch):
    port = free_port()
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    blocker.bind(("127.0.0.1", port))
    blocker.listen(1)
    try:
        w, c = launch(port=port, ready=False)
        deadline = time.monotonic() + 20
        while "cannot listen" not in w.log() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "cannot listen" in w.log() and "in use" in w.log(), w.log()
        time.sleep(0.5)
        assert w.alive()
    finally:
        blocker.close()
    st = c.wait_ready(timeout=45)
    con = [p for p in st["platforms"] if p["name"] == "console"]
    assert con and con[0]["state"] == "up"
    assert str(port) in (con[0]["detail"] or "")
    echo_ok(c)


def test_unhandled_messages_kept_across_restart(launch, tmp_path):
    """Messages the hub has not handled when a /restart stops the worker (one
    whose agent call is cancelled by the drain timeout, one queued behind
    it, one arriving during the drain) are kept in console.inbox.json and
    answered exactly once, under their own ids, by the next worker."""
    from fake_openai import FakeOpenAI
    fake = FakeOpenAI().start()
    try:
        agent = {"backend": "openai", "base_url": fake.url, "model": "m",
                 "stream": False, "timeout": 30}
        w, c = launch(agent=agent, extra={"drain_timeout": 1})
        gen0 = c.status()["generation"]
        slow = c.post("fault:slow:3 first", chat_id="busy")["message_id"]
        queued = c.post("second", chat_id="busy")["message_id"]
        deadline = time.monotonic() + 20
        while not fake.requests() and time.monotonic() < deadline:
            time.sleep(0.02)                # the slow call is running
        restart = c.post("/restart", chat_id="ops", wait=30)
        assert [m["text"] for m in restart["replies"]] == ["Restarting the gateway..."]
        # during the drain: not taken; the wait ends at stop with done false
        late = c.post("third", chat_id="late", wait=30, retry=True)
        st = c.wait_ready(timeout=60)
        deadline = time.monotonic() + 60
        while st["generation"] == gen0 and time.monotonic() < deadline:
            time.sleep(0.05)
            st = c.wait_ready(timeout=60)
        assert st["generation"] == gen0 + 1, w.log()
        c.wait_text("ops", "Gateway online")
        expect = {slow: ("busy", "echo: fault:slow:3 first"),
                  queued: ("busy", "echo: second"),
                  late["message_id"]: ("late", "echo: third")}
        for mid, (chat, text) in expect.items():
            c.wait_messages(chat, lambda ms, mid=mid, text=text: any(
                m["reply_to"] == mid and m["text"] == text for m in ms), timeout=60)
        time.sleep(0.5)
        for mid, (chat, text) in expect.items():
            answers = [m["text"] for m in c.messages(chat)["messages"]
                       if m["reply_to"] == mid and m["text"].startswith("echo:")]
            assert answers == [text], (mid, answers)
        if not late["done"]:
            assert late["replies"] == []
        assert "kept for the next start" in w.log()
        assert "replayed" in w.log()
    finally:
        fake.stop()


def test_mutated_bodies_never_hurt(launch):
    """Seeded random mutations of a valid body: every answer is 202, 400 or
    413 (never a crash or a hang), and the worker keeps answering."""
    import random
    w, c = launch()
    rng = random.Random(1234)
    valid = json.dumps({"chat_id": "fz", "user_id": "local", "text": "fuzz ü ok"}).encode()
    seen = set()
    for i in range(300):
        b = bytearray(valid)
        for _ in range(rng.randint(1, 6)):
            op = rng.randrange(4)
            pos = rng.randrange(len(b) + 1)
            if op == 0 and b:
                b[min(pos, len(b) - 1)] = rng.randrange(256)
            elif op == 1:
                b[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            elif op == 2:
                del b[pos:pos + rng.randint(1, 8)]
            else:
                b[pos:pos] = rng.choice([b'"', b"\\", b"{", b"]", b"\\u0000",
                                         b"\\ud800", b"\x00", b"\xc0\x80"])
        r = c.request("POST", "/v1/messages", bytes(b))
        assert r.status in (202, 400), (bytes(b), r)
        if r.status == 400:
            assert r.json()["error"]
        seen.add(r.status)
    assert seen == {202, 400}
    for body in (b"[" * 100000, b'{"a":' * 20000, b"\xef\xbb\xbf{}", b"\x00" * 100):
        r = c.request("POST", "/v1/messages", body)
        assert r.status in (400, 413), (body[:20], r)
    assert w.alive()
    echo_ok(c)


def test_many_idle_connections(launch):
    w, c = launch()
    socks = [socket.create_connection(("127.0.0.1", c.port)) for _ in range(300)]
    try:
        echo_ok(c)
        assert c.status()["worker_pid"] == w.pid
    finally:
        for s in socks:
            s.close()
    echo_ok(c)


def test_clients_that_leave_while_waiting(launch):
    """Long-polls and POST ?wait whose clients hang up before the answer:
    their answers go nowhere, the messages are still handled."""
    w, c = launch()
    top = c.messages("gone")["last"]
    body = json.dumps({"chat_id": "gone", "user_id": "u", "text": "bye!!"})
    for raw in (f"GET /v1/chats/gone/messages?after={top + 10**6}&wait=1 HTTP/1.1\r\n"
                "Host: 127.0.0.1\r\n\r\n",
                "POST /v1/messages?wait=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Content-Length: {len(body)}\r\n\r\n{body}"):
        s = socket.create_connection(("127.0.0.1", c.port))
        s.sendall(raw.encode())
        time.sleep(0.1)
        s.close()
    time.sleep(1.5)                     # both waits have ended by now
    assert w.alive()
    assert "bye!!" in [m["text"] for m in c.messages("gone")["messages"]]
    echo_ok(c)


def test_killed_worker_loses_nothing(launch, tmp_path):
    """SIGKILL (as the supervisor does to a hung worker): the next worker
    still has the chat log, and answers once what was accepted but not
    handled (from console.journal)."""
    from fake_openai import FakeOpenAI
    fake = FakeOpenAI().start()
    try:
        agent = {"backend": "openai", "base_url": fake.url, "model": "m",
                 "stream": False, "timeout": 30}
        port = free_port()
        w, c = launch(port=port, agent=agent)
        done = c.post("answered", chat_id="k", wait=20)
        assert [m["text"] for m in done["replies"]] == ["echo: answered"]
        slow = c.post("fault:slow:2 pending", chat_id="k")["message_id"]
        queued = c.post("queued", chat_id="k")["message_id"]
        deadline = time.monotonic() + 20
        while len(fake.requests()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)                # the slow call is running
        w.stop(sig=signal.SIGKILL)
        assert (tmp_path / "state" / "console.journal").stat().st_size > 0

        w2, c2 = launch(port=port, agent=agent)
        for mid, text in ((slow, "echo: fault:slow:2 pending"), (queued, "echo: queued")):
            c2.wait_messages("k", lambda ms, mid=mid, text=text: any(
                m["reply_to"] == mid and m["text"] == text for m in ms), timeout=60)
        time.sleep(0.5)
        texts = [m["text"] for m in c2.messages("k")["messages"]]
        assert texts == ["echo: answered", "echo: fault:slow:2 pending", "echo: queued"]
        assert "journal" in w2.log()
        nxt = c2.post("next", chat_id="k", wait=20)
        assert nxt["message_id"] > max(m["id"] for m in c2.messages("k")["messages"][:-1])
    finally:
        fake.stop()


def test_journal_is_folded_and_bounded(launch, tmp_path):
    port = free_port()
    w, c = launch(port=port)
    state = tmp_path / "state"
    big = "z" * 60000
    for i in range(90):                 # ~10 MiB of journal lines
        r = c.post(f"{i:03d}{big}", chat_id="fold", wait=20)
        assert r["replies"][0]["text"].startswith(f"{i:03d}")
    journal = state / "console.journal"
    assert journal.stat().st_size < 9 << 20
    outbox = json.loads((state / "console.outbox.json").read_text())
    assert len(outbox["messages"]) > 10   # written by a fold, not by a stop
    assert w.alive()
    w.stop(sig=signal.SIGKILL)
    w2, c2 = launch(port=port)
    msgs = c2.messages("fold")["messages"]
    assert msgs[-1]["text"].startswith("089")
    nums = [int(m["text"][:3]) for m in msgs]
    assert nums == list(range(nums[0], 90))       # the newest, in order, no gap
    assert sum(len(m["text"]) for m in msgs) <= 4 << 20


def test_check_config_applies_console_rules(build, tmp_path):
    port = free_port()
    bad = write_config(tmp_path, port, console={"listen": f"0.0.0.0:{port}"}, name="bad.json")
    w = WorkerProc(build, bad, home=tmp_path, args=["--check-config"]).start()
    try:
        assert w.wait_exit(20) == 78
        assert "platforms.console.listen" in w.log() and "token" in w.log()
    finally:
        w.stop()
    good = write_config(tmp_path, port, console={"listen": f"0.0.0.0:{port}", "token": "t"},
                        name="good.json")
    w = WorkerProc(build, good, home=tmp_path, args=["--check-config"]).start()
    try:
        assert w.wait_exit(20) == 0, w.log()
    finally:
        w.stop()
    # nothing was bound or written by a check
    assert not (tmp_path / "state").exists()
