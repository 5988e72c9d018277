#!/usr/bin/python3
"""Feishu benchmark: fake Feishu (long connection + open API) -> hermes-worker (echo agent)
-> reply.

    /usr/bin/python3 tests/bench/feishu_bench.py build [-n 2000] [--chats 50] [--restarts 20]

Runs the real hermes-supervisor and hermes-worker against tests/fakes/fake_feishu.py
(TLS with a test CA) and measures:
  1. throughput: N messages pushed over C p2p chats; messages/s from the first push to
     the last reply recorded by the fake, and the CPU seconds of the worker and of the
     fake over that interval.  The worker sends at most 50 messages/s per app and 5/s
     per chat (Feishu's documented limits), so with enough chats that is the ceiling;
  2. restart: /restart, followed at once by a message from another chat; time from the
     /restart to that message's answer (from the next worker) and to "Gateway online".
"""
import argparse
import pathlib
import statistics
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from feishu_util import FakeFeishu                           # noqa: E402
from plat_util import start_supervised, wait_platform_state  # noqa: E402
from tg_bench import collect, cpu_seconds, pct               # noqa: E402
from test_feishu import ADMIN, fs_config                      # noqa: E402

import time                                                    # noqa: E402


def user(i):
    return "ou_bench%027d" % i


def throughput(fake, con, n, chats):
    worker = con.status()["worker_pid"]
    base = fake.sent()["last"]
    w0, f0 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    t0 = time.time()
    for start in range(0, n, 100):
        fake.messages([{"user_id": user(i % chats), "text": f"bench {i}"}
                       for i in range(start, min(n, start + 100))])
    got = collect(fake, base, lambda ss: len(ss) >= n)
    t1 = max(s["time"] for s in got)
    w1, f1 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    assert sorted(s["text"] for s in got) == sorted(f"bench {i}" for i in range(n)), \
        "lost or repeated"
    return {"messages": n, "chats": chats, "seconds": t1 - t0, "per_s": n / (t1 - t0),
            "worker_cpu": w1 - w0, "fake_cpu": f1 - f0}


def restarts(fake, con, k):
    to_answer, to_online = [], []
    for r in range(k):
        base = fake.sent()["last"]
        t0 = time.time()
        fake.message(user_id=ADMIN, text="/restart")
        fake.message(user_id=user(900 + r), text=f"probe {r}")
        new = collect(fake, base, lambda ss: any(s["text"] == f"probe {r}" for s in ss) and
                      any(s["text"].startswith("Gateway online") for s in ss), timeout=60)
        probe = next(s for s in new if s["text"] == f"probe {r}")
        online = next(s for s in new if s["text"].startswith("Gateway online"))
        to_answer.append((probe["time"] - t0) * 1000)
        to_online.append((online["time"] - t0) * 1000)
        wait_platform_state(con, "feishu", "up")
    return to_answer, to_online


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--restarts", type=int, default=20)
    a = ap.parse_args()
    build = pathlib.Path(a.build).resolve()
    with tempfile.TemporaryDirectory() as tmp, FakeFeishu(tmp) as fake:
        fake.configure(echo_own=False)
        tmp = pathlib.Path(tmp)
        sup, con = start_supervised(build, tmp, "feishu",
                                    lambda port: fs_config(tmp, port, fake))
        try:
            r = throughput(fake, con, a.n, a.chats)
            print(f"throughput: {r['messages']} messages over {r['chats']} chats in "
                  f"{r['seconds']:.2f} s = {r['per_s']:.0f}/s; CPU worker "
                  f"{r['worker_cpu']:.2f} s, fake {r['fake_cpu']:.2f} s")
            ans, onl = restarts(fake, con, a.restarts)
            print(f"/restart -> next message answered: p50 {statistics.median(ans):.1f} ms, "
                  f"p99 {pct(ans, 99):.1f} ms ({len(ans)} restarts)")
            print(f"/restart -> 'Gateway online' sent: p50 {statistics.median(onl):.1f} ms, "
                  f"p99 {pct(onl, 99):.1f} ms")
        finally:
            sup.stop()


if __name__ == "__main__":
    sys.exit(main())
