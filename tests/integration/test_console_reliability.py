"""The console under hostile conditions: descriptor exhaustion, slow
clients, a full or read-only state directory, SIGKILL between a reply and
its bookkeeping, damaged or huge state files, and requests at the edges of
the protocol.  Each test runs the real hermes-worker."""
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, free_port
from console_util import Console, Launcher

sys.path.insert(0, str(ROOT / "tests" / "fakes"))

MSG = {"chat_id": "c", "user_id": "local", "text": "t"}


@pytest.fixture
def launch(build, tmp_path):
    with Launcher(build, tmp_path) as start:
        yield start


@pytest.fixture
def fake_agent():
    """An OpenAI-compatible fake: "fault:slow:N ..." answers after N seconds."""
    from fake_openai import FakeOpenAI
    fake = FakeOpenAI().start()
    try:
        yield fake, {"backend": "openai", "base_url": fake.url, "model": "m",
                     "stream": False, "timeout": 60}
    finally:
        fake.stop()


class Tmpfs:
    """A small tmpfs mounted on the state dir (needs root; skips otherwise)."""

    def __init__(self, path, size="4m"):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700",
                            "tmpfs", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for the state dir: {r.stderr.strip()}")
        self.filler = path / "filler"

    def fill(self):
        """Writes until the file system is full."""
        with open(self.filler, "ab", buffering=0) as f:
            for size in (1 << 16, 4096, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError:
                    pass

    def free(self):
        self.filler.unlink(missing_ok=True)

    def umount(self):
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


class ReadOnlyFile:
    """A file bind-mounted read-only over itself (needs root; skips otherwise)."""

    def __init__(self, path):
        self.path = path
        r = subprocess.run(["mount", "--bind", str(path), str(path)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot bind-mount {path.name}: {r.stderr.strip()}")
        subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], check=True)

    def writable(self):
        subprocess.run(["mount", "-o", "remount,bind,rw", str(self.path)], check=True)

    def umount(self):
        subprocess.run(["umount", "-l", str(self.path)], capture_output=True)


@pytest.fixture
def tmpfs(tmp_path):
    made = []

    def mount(size="4m"):
        t = Tmpfs(tmp_path / "state", size)
        made.append(t)
        return t

    yield mount
    for t in made:
        t.umount()


def echo_ok(c, chat="health"):
    assert c.ask("still there?", chat_id=chat) == ["still there?"]


def post_raw(c, body, path="/v1/messages"):
    return c.request("POST", path, body, headers={"Content-Type": "application/json"})


def replies_to(c, chat):
    """{message id: [reply texts]} from the chat's log."""
    out = {}
    for m in c.messages(chat)["messages"]:
        if m["reply_to"] is not None:
            out.setdefault(m["reply_to"], []).append(m["text"])
    return out


def wait_accepted(c, text, chat, timeout=30):
    """Posts until the console takes the message (it answers 503 meanwhile)."""
    end = time.monotonic() + timeout
    while True:
        r = c.request("POST", "/v1/messages?wait=20",
                      {"chat_id": chat, "user_id": "local", "text": text})
        if r.status != 503 or time.monotonic() > end:
            assert r.status == 200, r
            return r.json()
        time.sleep(0.2)


def wait_agent_requests(fake, n, timeout=20):
    end = time.monotonic() + timeout
    while len(fake.requests()) < n and time.monotonic() < end:
        time.sleep(0.02)
    assert len(fake.requests()) >= n


def agent_calls_with(fake, text):
    """Agent calls made for a message with text (its last user message)."""
    n = 0
    for r in fake.requests():
        body = r.get("body")
        if isinstance(body, str):
            body = json.loads(body)
        if text in body["messages"][-1]["content"]:
            n += 1
    return n


# ---------------------------------------------------------------- fds


def test_fd_exhaustion_pauses_the_listener_then_serves(launch):
    """At EMFILE the listener pauses (logged at a bounded rate) instead of
    crashing the worker; once descriptors are free it serves again."""
    w, c = launch(nofile=64)
    socks = []
    try:
        for _ in range(200):
            socks.append(socket.create_connection(("127.0.0.1", c.port), timeout=5))
        time.sleep(3)
        assert w.alive(), w.log()
        log = w.log()
        assert "Too many open files" in log, log
        assert log.count("Too many open files") <= 3, log
    finally:
        for s in socks:
            s.close()
    echo_ok(c)
    assert w.alive()


# ---------------------------------------------------------------- slow clients


def test_slow_request_closed_at_the_request_deadline(launch):
    """One header byte per second: closed once 30 s have passed since the
    request began, although every byte arrives within the idle timeout.
    A request that takes a few seconds but ends in time is answered."""
    w, c = launch()
    slow_ok = {}

    def slow_but_complete():
        body = json.dumps(MSG | {"chat_id": "slowok"}).encode()
        req = (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
               b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        with socket.create_connection(("127.0.0.1", c.port), timeout=30) as s:
            for i in range(0, len(req), 16):
                s.sendall(req[i:i + 16])
                time.sleep(0.1)
            slow_ok["answer"] = s.recv(4096)

    helper = threading.Thread(target=slow_but_complete)
    helper.start()
    s = socket.create_connection(("127.0.0.1", c.port))
    t0 = time.monotonic()
    s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    closed = None
    try:
        while time.monotonic() - t0 < 55:
            readable, _, _ = select.select([s], [], [], 1.0)
            if readable:
                try:
                    if s.recv(4096) == b"":
                        closed = time.monotonic() - t0
                        break
                except ConnectionResetError:
                    closed = time.monotonic() - t0
                    break
            try:
                s.send(b"X")
            except OSError:
                closed = time.monotonic() - t0
                break
    finally:
        s.close()
    helper.join(30)
    assert closed is not None, "a request taking 55 s was never cut off"
    assert 25 <= closed <= 45, closed
    assert slow_ok.get("answer", b"").startswith(b"HTTP/1.1 202"), slow_ok
    echo_ok(c)


# ---------------------------------------------------------------- protocol edges


def test_head_answers_have_a_length_and_no_body(launch):
    w, c = launch()
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", c.port, timeout=10)
    try:
        for path in ("/v1/status", "/", "/v1/chats/h/messages", "/nope"):
            conn.request("HEAD", path)
            r = conn.getresponse()
            assert r.read() == b""
            assert int(r.getheader("Content-Length")) > 0, (path, r.getheaders())
            # the same connection is still in step: the next answer parses
            conn.request("GET", path)
            r2 = conn.getresponse()
            body = r2.read()
            assert r2.status == r.status, path
            assert len(body) == int(r.getheader("Content-Length")) or path == "/v1/status"
    finally:
        conn.close()


def test_trailing_garbage_and_raw_nul_refused(launch):
    w, c = launch()
    base = json.dumps(MSG).encode()
    for body in (base + b"garbage", base + b" {}", base + b"]",
                 b'{"chat_id":"c","user_id":"local","text":"a\x00b"}',
                 b'{"chat_id":"c\x00d","user_id":"local","text":"t"}'):
        r = post_raw(c, body)
        assert r.status == 400, (body, r)
        assert r.json()["error"], body
    for body in (base + b" \r\n\t", b" \n" + base):
        assert post_raw(c, body).status == 202, body
    echo_ok(c)


def test_ids_round_trip_exactly(launch, tmp_path):
    state = tmp_path / "state"
    state.mkdir(parents=True, exist_ok=True)
    (state / "console.seq").write_text(f"{1 << 60}\n")
    w, c = launch()
    r = c.post("id check", chat_id="ids", wait=20)
    mid = r["message_id"]
    assert isinstance(mid, int) and 0 < mid < 1 << 53, r
    rep = r["replies"][0]["id"]
    assert isinstance(rep, int) and rep > mid
    got = c.messages("ids", after=mid)
    assert [m["id"] for m in got["messages"]] == [rep] and got["last"] == rep
    top = (1 << 53) - 1
    raw = c.request("GET", f"/v1/chats/ids/messages?after={top}")
    assert raw.status == 200 and b'"last":%d' % top in raw.body, raw
    for after in ("9223372036854775807", str(1 << 53), "18446744073709551616"):
        r = c.request("GET", f"/v1/chats/ids/messages?after={after}")
        assert r.status == 400 and "after" in r.json()["error"], (after, r)
    assert "console.seq does not hold an id mark" in w.log()


# ---------------------------------------------------------------- state files


def write_inbox(state, messages, cut=None):
    state.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": 1, "messages": messages})
    if cut is not None:
        text = text[:cut]
    (state / "console.inbox.json").write_text(text)
    (state / "console.seq").write_text("100\n")
    return text


def saved(mid, text, chat="rp", user="local"):
    return {"id": mid, "chat_id": chat, "user_id": user, "text": text,
            "time": 1700000000}


def test_replayed_messages_are_validated_like_posts(launch, tmp_path):
    write_inbox(tmp_path / "state", [
        saved(41, "left over"), saved(42, ""), saved(43, "  \n\t"),
        saved(44, "x" * 70000), saved(45, "ok", user="bad\u0001user"),
        {"id": 46, "chat_id": "rp", "user_id": "local", "text": 7}])
    w, c = launch()
    c.wait_text("rp", "left over")
    time.sleep(1)
    assert set(replies_to(c, "rp")) == {41}, c.messages("rp")
    assert "5 malformed" in w.log(), w.log()


def test_damaged_inbox_recovered_and_kept(launch, tmp_path):
    state = tmp_path / "state"
    full = json.dumps({"version": 1, "messages": [saved(41, "first"), saved(42, "second")]})
    text = write_inbox(state, [saved(41, "first"), saved(42, "second"), saved(43, "third")],
                       cut=len(full) + 20)
    w, c = launch()
    c.wait_messages("rp", lambda ms: {m["reply_to"] for m in ms} >= {41, 42})
    time.sleep(0.5)
    assert set(replies_to(c, "rp")) == {41, 42}
    log = w.log()
    assert "damaged" in log and "recovered 2" in log, log
    kept = [p for p in state.iterdir() if p.name.startswith("console.inbox.json.")]
    assert len(kept) == 1 and kept[0].read_text() == text, kept


def test_oversized_journal_kept_aside(launch, tmp_path):
    state = tmp_path / "state"
    state.mkdir(parents=True)
    line = json.dumps({"done": 1}) + "\n"
    journal = state / "console.journal"
    with open(journal, "w") as f:
        f.write(json.dumps({"in": saved(41, "in a huge journal")}) + "\n")
        f.write(line * ((65 << 20) // len(line)))
    size = journal.stat().st_size
    w, c = launch()
    kept = [p for p in state.iterdir() if p.name.startswith("console.journal.")]
    assert len(kept) == 1 and kept[0].stat().st_size == size, list(state.iterdir())
    assert kept[0].name in w.log()
    echo_ok(c)


def test_journal_line_with_a_nul_hides_nothing_after_it(launch, tmp_path):
    state = tmp_path / "state"
    state.mkdir(parents=True)
    (state / "console.journal").write_bytes(
        (json.dumps({"in": saved(41, "before the NUL")}) + "\n").encode() +
        b'{"in": {"id": 4\x002, "chat_id": "rp"}}\n' +
        (json.dumps({"in": saved(43, "after the NUL")}) + "\n").encode())
    w, c = launch()
    c.wait_messages("rp", lambda ms: {m["reply_to"] for m in ms} >= {41, 43})
    assert "(1 unreadable line(s))" in w.log(), w.log()


def test_damaged_id_counter_never_reuses_ids(launch, tmp_path):
    """console.seq and the outbox both damaged: the ids left on disk are
    behind those the hub has handled, so new ids come from the clock
    instead of being taken for messages already handled."""
    port = free_port()
    w, c = launch(port=port)
    old = [c.post(f"first {i}", chat_id="ctr", wait=20) for i in range(3)]
    time.sleep(1.5)                     # the hub has saved the handled ids
    assert w.stop() == 0, w.log()
    state = tmp_path / "state"
    (state / "console.seq").write_text("1")     # cut short: no newline
    (state / "console.outbox.json").write_text("{ cut")
    w2, c2 = launch(port=port)
    r = c2.post("after the damage", chat_id="ctr", wait=20)
    assert [m["text"] for m in r["replies"]] == ["after the damage"], (r, w2.log())
    assert r["message_id"] > max(m["id"] for o in old for m in o["replies"])
    assert r["message_id"] < 1 << 53
    assert "id counter is damaged" in w2.log()


# ---------------------------------------------------------------- durability


def test_reply_recorded_means_not_run_again(launch, tmp_path, fake_agent):
    """A worker killed after a reply was recorded but before the message was
    marked handled: the next worker does not run the message again."""
    fake, agent = fake_agent
    state = tmp_path / "state"
    state.mkdir(parents=True)
    lines = [{"in": saved(100, "answered already", chat="k5")},
             {"out": {"id": 101, "chat_id": "k5", "text": "echo: answered already",
                      "reply_to": "100", "time": 1700000001}},
             {"in": saved(102, "not answered yet", chat="k5")}]
    (state / "console.journal").write_text("".join(json.dumps(x) + "\n" for x in lines))
    w, c = launch(agent=agent)
    c.wait_messages("k5", lambda ms: any(m["reply_to"] == 102 for m in ms))
    time.sleep(1)
    assert replies_to(c, "k5") == {100: ["echo: answered already"],
                                   102: ["echo: not answered yet"]}
    assert agent_calls_with(fake, "answered already") == 0


def test_sigkill_under_load_answers_once(launch, tmp_path):
    """Workers killed with SIGKILL while clients post: every acknowledged
    message is answered exactly once in the end."""
    port = free_port()
    acked = {}
    for rnd in range(3):
        w, c = launch(port=port)
        stop = threading.Event()

        def client(k, c=c, rnd=rnd):
            i = 0
            while not stop.is_set() and i < 50:
                text = f"r{rnd} c{k} m{i}"
                try:
                    r = c.request("POST", "/v1/messages?wait=5",
                                  {"chat_id": f"load{k}", "user_id": "local", "text": text},
                                  timeout=10)
                    if r.status in (200, 202):
                        acked[r.json()["message_id"]] = (f"load{k}", text)
                except OSError:
                    pass
                i += 1
                time.sleep(0.02)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        w.stop(sig=signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(15)
    w, c = launch(port=port)
    assert len(acked) > 20
    for k in range(4):
        chat = f"load{k}"
        want = {mid for mid, (ch, _) in acked.items() if ch == chat}
        c.wait_messages(chat, lambda ms, want=want: want <= {m["reply_to"] for m in ms},
                        timeout=60)
    time.sleep(0.5)
    for k in range(4):
        for mid, texts in replies_to(c, f"load{k}").items():
            assert len(texts) == 1, (mid, texts)


def test_full_disk_refuses_and_loses_nothing(launch, tmpfs, fake_agent):
    """State dir full: new messages get 503 with Retry-After instead of an
    id that is then lost (a few may still fit in the journal's last page:
    those are kept); replies that cannot be recorded wait; once there is
    room again everything acknowledged is answered exactly once, also
    across a stop that could not save its state."""
    fake, agent = fake_agent
    fs = tmpfs("4m")
    port = free_port()
    w, c = launch(port=port, agent=agent)
    acked = {c.post("before", chat_id="df", wait=20)["message_id"]}
    acked.add(c.post("fault:slow:3 while full", chat_id="df")["message_id"])
    wait_agent_requests(fake, 2)
    fs.fill()
    refused = post_until_refused(c, "df", acked)
    assert int(refused.headers["retry-after"]) >= 1
    assert "cannot be saved" in refused.json()["error"]
    time.sleep(4)                           # the slow reply came while full
    assert w.alive()
    fs.free()
    acked.add(wait_accepted(c, "room again", "df")["message_id"])
    c.wait_messages("df", lambda ms: acked <= {m["reply_to"] for m in ms})
    # a stop that cannot save: the journal keeps what was acknowledged
    acked.add(c.post("fault:slow:2 across the stop", chat_id="df")["message_id"])
    wait_agent_requests(fake, len(acked))
    fs.fill()
    post_until_refused(c, "df", acked)
    w.stop()
    assert "journal is kept" in w.log(), w.log()
    fs.free()
    w2, c2 = launch(port=port, agent=agent)
    c2.wait_messages("df", lambda ms: acked <= {m["reply_to"] for m in ms}, timeout=60)
    time.sleep(1)
    got = replies_to(c2, "df")
    assert set(got) == acked, got
    assert all(len(t) == 1 for t in got.values()), got


def post_until_refused(c, chat, acked):
    """Posts until the console refuses (503); the ones it still took are added to acked."""
    for i in range(200):
        r = post_raw(c, json.dumps(MSG | {"chat_id": chat, "text": f"full {i}"}))
        if r.status == 503:
            return r
        assert r.status == 202, r
        acked.add(r.json()["message_id"])
    raise AssertionError("never refused on a full disk")


def test_journal_not_writable_at_start_then_writable(launch, tmp_path, fake_agent):
    """A worker whose journal cannot be opened for writing (here the file
    is a read-only bind mount; the state dir itself must be writable for
    the worker to start) refuses messages (503) and holds the previous
    worker's unanswered ones; once the journal is writable it takes
    messages again and answers those once; a SIGKILL after that replays
    nothing that was answered."""
    fake, agent = fake_agent
    port = free_port()
    w0, c0 = launch(port=port, agent=agent)
    stale = c0.post("fault:slow:3 left by a killed worker", chat_id="ro")["message_id"]
    wait_agent_requests(fake, 1)
    w0.stop(sig=signal.SIGKILL)
    journal = tmp_path / "state" / "console.journal"
    ro = ReadOnlyFile(journal)
    try:
        w1, c1 = launch(port=port, agent=agent)
        r = post_raw(c1, json.dumps(MSG | {"chat_id": "ro"}))
        assert r.status == 503 and "retry-after" in r.headers, r
        time.sleep(4)
        assert agent_calls_with(fake, "left by a killed worker") == 1   # held, not run
        ro.writable()
        fresh = wait_accepted(c1, "after it is writable", "ro")
        assert fresh["replies"][0]["text"] == "echo: after it is writable"
        c1.wait_messages("ro", lambda ms: any(m["reply_to"] == stale for m in ms))
        assert "after it is writable" in journal.read_text()
        w1.stop(sig=signal.SIGKILL)
        w2, c2 = launch(port=port, agent=agent)
        assert c2.ask("still there?", chat_id="ro2") == ["echo: still there?"]
        time.sleep(4)
    finally:
        ro.umount()
    assert agent_calls_with(fake, "left by a killed worker") == 2
    got = replies_to(c2, "ro")
    assert got[stale] == ["echo: fault:slow:3 left by a killed worker"], got
    assert got[fresh["message_id"]] == ["echo: after it is writable"], got


def test_big_journal_loads_in_linear_time(launch, tmp_path):
    """60,000 journal entries with 500 still unanswered: the worker is
    ready within seconds (a tenth of one here; it took 19 s when every line
    scanned the pending list) and answers the 500 once."""
    state = tmp_path / "state"
    state.mkdir(parents=True)
    n, pending = 60000, 500
    with open(state / "console.journal", "w") as f:
        for i in range(1, n + 1):
            f.write(json.dumps({"in": saved(i, f"m{i}", chat=f"big{i % 10}")}) + "\n")
        for i in range(1, n + 1 - pending):
            f.write(json.dumps({"done": i}) + "\n")
    t0 = time.monotonic()
    w, c = launch(ready=False)
    c.wait_ready(timeout=60, alive=w.alive)
    took = time.monotonic() - t0
    assert took < 3, took
    want = set(range(n + 1 - pending, n + 1))
    got = {}
    for k in range(10):
        chat = f"big{k}"
        mine = {i for i in want if i % 10 == k}
        c.wait_messages(chat, lambda ms, mine=mine: mine <= {m["reply_to"] for m in ms})
        got.update(replies_to(c, chat))
    assert set(got) == want
    assert all(len(t) == 1 for t in got.values())


# ---------------------------------------------------------------- trust


def test_trust_model_is_stated(launch, tmp_path):
    (tmp_path / "tok").mkdir()
    w, c = launch()
    assert "every local process" in w.log(), w.log()
    w2, c2 = launch(console={"token": "tok"}, token="tok", home=tmp_path / "tok")
    assert "every local process" not in w2.log()
    r = Console(c2.port).request("POST", "/v1/messages",
                                 MSG | {"text": "/restart"})
    assert r.status == 401
