"""Descriptor exhaustion: a worker limited to 128 open files (the supervisor
runs under `prlimit --nofile=128:128`, the worker inherits it) meets a flood
of 1,000 connections, half of them posting a message and half idle.  It
must not crash (same pid, same generation), must answer normal traffic
once the flood is gone, and must answer once every message it took."""
import json
import resource
import selectors
import socket
import time

from chaos_util import Ledger, Load, nofile_limit, post, report, wait_for

FLOOD = 1000
LIMIT = 128


def flood_open(port, n):
    """n non-blocking connections to port (connects in progress)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
    return socks


def request_bytes(port, chat, text):
    body = ('{"chat_id": "%s", "user_id": "local", "text": "%s"}' % (chat, text)).encode()
    return (b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Content-Type: application/json\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % (port, len(body))) + body


def flood_run(socks, payloads, seconds):
    """Sends each socket's payload (None: stays idle) as soon as it can and
    reads what comes back for `seconds`; returns {index: bytes received}."""
    sel = selectors.DefaultSelector()
    got = {}
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_WRITE if payloads[i] else selectors.EVENT_READ, i)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for key, ev in sel.select(timeout=0.1):
            i, s = key.data, key.fileobj
            try:
                if ev & selectors.EVENT_WRITE:
                    s.send(payloads[i])
                    sel.modify(s, selectors.EVENT_READ, i)
                    continue
                data = s.recv(65536)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            got[i] = got.get(i, b"") + data
            if not data:
                sel.unregister(s)
    sel.close()
    return got


def parse_taken(raw):
    """The message id of a 2xx answer, else None; also the status line."""
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode(errors="replace")
    if status.split(" ")[1:2] in (["200"], ["202"]):
        return json.loads(body)["message_id"], status
    return None, status


def test_fd_exhaustion_flood(build, gateway):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < FLOOD + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4 * FLOOD), hard))
    g = gateway(wrap=["prlimit", "--nofile=%d:%d" % (LIMIT, LIMIT), "--"])
    g.wait_generation(0)
    con = g.console
    pid0 = con.wait_ready()["worker_pid"]
    assert nofile_limit(pid0) == (LIMIT, LIMIT)
    ledger = Ledger()
    before = ledger.new("normal", "before the flood")
    assert post(con, ledger, before, time.monotonic() + 20)

    socks = flood_open(g.port, FLOOD)
    flood = [ledger.new("flood%d" % (i % 20), "flood %d" % i) if i % 2 == 0 else None
             for i in range(FLOOD)]
    payloads = [request_bytes(g.port, m.chat, m.text) if m else None for m in flood]
    got = flood_run(socks, payloads, 5.0)
    statuses = {}
    for i, raw in got.items():
        mid, status = parse_taken(raw) if raw else (None, "closed")
        statuses[status] = statuses.get(status, 0) + 1
        if mid is not None:
            ledger.taken(flood[i], mid)
    during = g.state()
    for s in socks:
        s.close()

    # The flood is gone: normal traffic, collected by long-polls as usual.
    load = Load(con, ledger, 0, extra_chats=["normal"] + ["flood%d" % i for i in range(20)])
    load.start()
    normal = [ledger.new("normal", "after the flood %d" % i) for i in range(20)]
    t0 = time.monotonic()
    for m in normal:
        post(con, ledger, m, time.monotonic() + 60)
    wait_for(lambda: all(ledger.answered(m) for m in normal), 60, "normal traffic answered")
    recovery = time.monotonic() - t0
    ledger.wait_answered(30, stall=5)
    time.sleep(1.0)
    load.stop_collecting()
    after = g.state()
    f, details = ledger.audit()
    flood_taken = sum(1 for m in flood if m and m.ids)
    f.update(flood=FLOOD, nofile=LIMIT, flood_taken=flood_taken, flood_statuses=statuses,
             recovery_seconds=round(recovery, 2), worker_pid_before=pid0,
             worker_pid_after=int(after.get("worker_pid", 0)),
             generation_after=after.get("generation"))
    # Flood messages the console never answered with an id are not taken
    # (never_taken in the figures): refusing them is allowed.
    report("fd_exhaustion", **f)

    assert (during.get("generation"), during.get("worker_pid")) == ("0", str(pid0)), \
        (during, g.log(30))
    assert (after.get("generation"), after.get("worker_pid")) == ("0", str(pid0)), \
        (after, g.log(30))
    assert all(m.ids and ledger.answered(m) for m in normal)
    assert (f["lost"], f["doubled"], f["misrouted"], f["unexplained"], f["bad_status"]) \
        == (0, 0, 0, 0, 0), (f, details[:20])
