"""Damaged state files: each file a worker keeps (the console journal,
inbox, outbox and id counter, the handled ids, a session history, the
restart marker) truncated at random points, with flipped bytes, with
garbage lines, emptied or replaced by random bytes; and all of them
damaged at once.  The worker must start, say in its log what it could not
read, answer new messages exactly once, replay what an undamaged inbox
holds, and stop cleanly.

The pristine state comes from two real runs with messages in three chats,
one stopped cleanly (the JSON files) and one SIGKILLed (the journal left
unfolded), plus a saved inbox with two pending messages and a restart
marker in the documented formats.
"""
import json
import os
import re
import shutil
import signal
import time
import urllib.parse

import pytest

from chaos_util import BUILD, free_port, report, rng, wait_for
from console_util import Console, WorkerProc, write_config

FILES = ["console.journal", "console.inbox.json", "console.outbox.json", "console.seq",
         "console.handled", "restart.json", "sessions/console:c0.json"]
KINDS = ["truncate", "truncate-again", "flip", "garbage", "empty", "random"]
PENDING = ["pending one", "pending two"]
ALL_ROUNDS = 4


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A state dir left by a worker that was killed, plus a saved inbox."""
    home = tmp_path_factory.mktemp("pristine")
    port = free_port()
    cfg = write_config(home, port)
    for run in ("stopped", "killed"):
        w = WorkerProc(BUILD, cfg, home=home).start()
        try:
            con = Console(port)
            con.wait_ready(alive=w.alive)
            for i in range(9):
                t = "%s %d" % (run, i)
                assert con.ask(t, chat_id="c%d" % (i % 3)) == [t]
            time.sleep(1.5)             # handled ids and histories are saved
            if run == "killed":         # journal lines left unfolded
                for i in range(3):
                    con.post("last %d" % i, chat_id="c%d" % i, wait=10)
                w.kill()
        finally:
            assert w.stop() in (0, -signal.SIGKILL), w.log()
    state = home / "state"
    assert (state / "console.journal").stat().st_size > 0
    seq = int((state / "console.seq").read_text())
    inbox = {"version": 1, "messages": [
        {"id": seq + 10 + i, "chat_id": "pend", "user_id": "local", "text": t,
         "time": int(time.time())} for i, t in enumerate(PENDING)]}
    (state / "console.inbox.json").write_text(json.dumps(inbox))
    marker = {"platform": "console", "chat_id": "ops", "thread_id": None,
              "message_id": str(seq + 9), "wall_ms": int(time.time() * 1000),
              "mono_us": 1, "generation": 0, "boot_id": "x"}
    (state / "restart.json").write_text(json.dumps(marker))
    for f in FILES:
        assert (state / f).is_file(), f
    return state


def corrupt(data, kind, r):
    """data damaged as kind says, with random choices from r."""
    if kind.startswith("truncate"):
        return data[:r.randrange(len(data))] if data else data
    if kind == "flip":
        b = bytearray(data)
        for _ in range(r.randint(1, 8)):
            b[r.randrange(len(b))] ^= r.randint(1, 255)
        return bytes(b)
    if kind == "garbage":
        lines = data.split(b"\n")
        junk = [b"\x00\xff\xfe garbage \x01", b'{"in": {"id": ', b"}" * 40,
                b"9" * 400, b'{"done": "x"}', b"[]", bytes(r.randrange(256) for _ in range(64))]
        for j in r.sample(junk, 4):
            lines.insert(r.randrange(len(lines) + 1), j)
        return b"\n".join(lines)
    if kind == "empty":
        return b""
    if kind == "random":
        return bytes(r.randrange(256) for _ in range(512))
    raise ValueError(kind)


def _json_prefix(data):
    """The JSON value data starts with (trailing bytes allowed), or None."""
    try:
        return json.JSONDecoder().raw_decode(data.decode("latin-1").lstrip())[0]
    except ValueError:
        return None


def must_report(name, data):
    """A regex fragment the log must hold when the worker cannot read data
    as its file name, or None when it can (or may use it silently)."""
    base = os.path.basename(name)
    if name.startswith("sessions/"):
        return None if isinstance(_json_prefix(data), list) else "damaged history"
    if name.endswith(".json"):
        return None if isinstance(_json_prefix(data), dict) else base
    if name == "console.seq":
        first = data.split(b"\n", 1)[0].split(b"\0", 1)[0]
        return None if first.isdigit() else base
    if name == "console.journal":
        lines = [l for l in data.split(b"\n") if l.strip()]
        bad = any(not isinstance(_json_prefix(l), dict) for l in lines)
        return r"\([1-9]\d* unreadable line" if bad else None
    return None                         # console.handled: any line may be an id


def cases():
    """One file and one kind of damage each, then every file at once."""
    out = []
    for f in FILES:
        for k in KINDS:
            case = "%s-%s" % (f.replace("/", "_"), k)
            out.append(pytest.param(case, [(f, k)], id=case))
    for n in range(ALL_ROUNDS):
        r = rng("all-%d" % n)
        case = "all-%d" % n
        out.append(pytest.param(case, [(f, r.choice(KINDS)) for f in FILES], id=case))
    return out


@pytest.mark.parametrize("case,damage", cases())
def test_damaged_state(pristine, tmp_path, case, damage):
    state = tmp_path / "state"
    shutil.copytree(pristine, state)
    expect, inbox_intact = [], True
    for name, kind in damage:
        p = state / name
        data = corrupt(p.read_bytes(), kind, rng("%s:%s" % (case, name)))
        p.write_bytes(data)
        pat = must_report(name, data)
        if pat:
            expect.append((name, kind, pat))
        inbox_intact = inbox_intact and name != "console.inbox.json"
    port = free_port()
    w = WorkerProc(BUILD, write_config(tmp_path, port), home=tmp_path).start()
    try:
        con = Console(port, timeout=20)
        con.wait_ready(alive=w.alive)
        replies = {}
        for chat in ("c0", "c1", "fresh"):   # c0's history is one of the damaged files
            text = "new in %s" % chat
            r = con.post(text, chat_id=chat, wait=10)
            replies[text] = (chat, r["message_id"], [m["text"] for m in r["replies"]])
        time.sleep(0.2)
        doubled = {}
        for text, (chat, mid, got) in replies.items():
            seen = [m for m in con.messages(chat)["messages"]
                    if m["reply_to"] is not None and int(m["reply_to"]) == mid]
            doubled[text] = len(seen)
        pend = []
        if inbox_intact:
            wait_for(lambda: len(con.messages("pend")["messages"]) >= 2, 15,
                     "the saved inbox replayed")
            time.sleep(0.2)
            pend = [m["text"] for m in con.messages("pend")["messages"]]
        alive = w.alive()
    finally:
        code = w.stop()
    log = w.log()
    unreported = [(n, k) for n, k, pat in expect if not re.search(pat, log)]
    report("damaged_state", case=case, damage=damage, unreported=unreported,
           answers={t: v[2] for t, v in replies.items()}, replayed=pend, exit=code)

    assert alive, log[-2000:]
    assert {t: v[2] for t, v in replies.items()} == {t: [t] for t in replies}, log[-2000:]
    assert set(doubled.values()) == {1}, doubled
    if inbox_intact:
        assert sorted(pend) == sorted(PENDING), pend
    assert not unreported, ("damage not reported in the log", unreported, log[-2000:])
    assert code == 0, log[-2000:]


BAD_ENTRIES = [
    {"id": "x", "chat_id": "bad", "user_id": "local", "text": "id is a string"},
    {"chat_id": "bad", "user_id": "local", "text": "no id"},
    {"id": 0, "chat_id": "bad", "user_id": "local", "text": "id zero"},
    {"id": 2 ** 53, "chat_id": "bad", "user_id": "local", "text": "id too large"},
    {"id": 1e300, "chat_id": "bad", "user_id": "local", "text": "id far too large"},
    {"id": 900001, "chat_id": "bad\u0001chat", "user_id": "local", "text": "control char"},
    {"id": 900002, "chat_id": "bad", "user_id": "local", "text": ""},
    {"id": 900003, "chat_id": "bad", "user_id": "local", "text": 42},
    {"id": 900004, "chat_id": "bad", "text": "no user"},
    {"id": 900005, "chat_id": "bad", "user_id": "local", "text": "\udcff invalid utf-8"},
    "not an object",
    None,
]


def test_damaged_inbox_entries(pristine, tmp_path):
    """A saved inbox holding malformed entries next to good ones: the good
    ones are answered once, the bad ones are skipped and reported, and
    nothing they hold leaks into the API (which keeps answering valid
    UTF-8 JSON with ids a JSON number holds exactly)."""
    state = tmp_path / "state"
    shutil.copytree(pristine, state)
    inbox = json.loads((state / "console.inbox.json").read_text())
    good = inbox["messages"]
    text = json.dumps({"version": 1, "messages": BAD_ENTRIES[:6] + good + BAD_ENTRIES[6:]},
                      ensure_ascii=False)
    # "\udcff" stands for the byte 0xff: invalid UTF-8 in the file.
    (state / "console.inbox.json").write_bytes(text.encode("utf-8", "surrogateescape"))
    port = free_port()
    w = WorkerProc(BUILD, write_config(tmp_path, port), home=tmp_path).start()
    try:
        con = Console(port, timeout=20)
        con.wait_ready(alive=w.alive)
        wait_for(lambda: len(con.messages("pend")["messages"]) >= 2, 15, "good entries replayed")
        time.sleep(0.3)
        bodies = {}
        for chat in ("pend", "bad", "bad\u0001chat"):
            r = con.request("GET", "/v1/chats/%s/messages" % urllib.parse.quote(chat, safe=""))
            bodies[chat] = (r.status, r.body)
        fresh = con.post("new after a damaged inbox", chat_id="fresh", wait=10)
        alive = w.alive()
    finally:
        code = w.stop()
    log = w.log()
    decoded = {}
    for chat, (status, body) in bodies.items():
        try:
            decoded[chat] = (status, json.loads(body.decode("utf-8")))
        except (UnicodeDecodeError, ValueError) as e:
            decoded[chat] = (status, "not UTF-8 JSON: %s: %r" % (e, body[:200]))
    pend = [m["text"] for m in decoded["pend"][1]["messages"]] \
        if isinstance(decoded["pend"][1], dict) else decoded["pend"]
    leaked = {c: v for c, v in decoded.items() if c != "pend" and
              not (v[0] in (200, 400) and isinstance(v[1], dict) and not v[1].get("messages"))}
    report("damaged_inbox_entries", replayed=pend, leaked=str(leaked)[:500],
           fresh_id=fresh["message_id"], exit=code)

    assert alive and code == 0, log[-2000:]
    assert sorted(pend) == sorted(PENDING), pend
    assert not leaked, leaked
    assert re.search(r"malformed|console\.inbox\.json", log), log[-2000:]
    assert [m["text"] for m in fresh["replies"]] == ["new after a damaged inbox"]
    assert fresh["message_id"] < 2 ** 53, fresh["message_id"]
