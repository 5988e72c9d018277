#!/usr/bin/python3
"""QQ Bot benchmark: fake QQ -> hermes-worker (echo agent) -> passive reply.

    /usr/bin/python3 tests/bench/qqbot_bench.py build [-n 2000] [--chats 50] [--restarts 50]

Runs the real hermes-supervisor and hermes-worker against
tests/fakes/fake_qqbot.py (token endpoint, gateway WebSocket and OpenAPI over TLS,
test CA):
  1. throughput: N C2C messages injected in batches of 100 over C users; messages/s from
     the first injection to the last reply the fake recorded; the CPU seconds of
     the worker and of the fake over that time (which one is the bottleneck);
  2. restart: /restart from a C2C chat, then at once a message from another
     user; the time from the /restart to that message's answer (given by the
     next worker, after it resumed the gateway session), p50/p99; and the count
     of Resumes and Identifies over the run.
Timestamps are the fake's own clock (time.time() when each request arrived).
"""
import argparse
import pathlib
import shutil
import signal
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(ROOT / "tests" / "bench"))

from discord_bench import collect                    # noqa: E402
from qqbot_util import FakeQQ                        # noqa: E402
from plat_util import start_supervised, wait_platform_state  # noqa: E402
from tg_bench import cpu_seconds, pct                # noqa: E402
from test_qqbot import ADMIN, qq_config              # noqa: E402


def throughput(fake, con, n, chats):
    worker = con.status()["worker_pid"]
    base = fake.sent()["last"]
    w0, f0 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    t0 = time.time()
    for start in range(0, n, 100):
        fake.messages([{"kind": "c2c", "user": "U%031d" % (i % chats),
                        "content": f"bench {i}"} for i in range(start, min(n, start + 100))])
    got = collect(fake, base, lambda ss: len(ss) >= n)
    t1 = max(s["time"] for s in got)
    w1, f1 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    assert sorted(s["content"] for s in got) == sorted(f"bench {i}" for i in range(n)), \
        "lost or repeated"
    el = t1 - t0
    return {"messages": n, "chats": chats, "seconds": el, "per_s": n / el,
            "worker_cpu": w1 - w0, "fake_cpu": f1 - f0}


def restarts(fake, con, k):
    to_answer = []
    for r in range(k):
        base = fake.sent()["last"]
        t0 = time.time()
        fake.message(kind="c2c", user=ADMIN, content="/restart")
        fake.message(kind="c2c", user="P%031d" % r, content=f"probe {r}")
        new = collect(fake, base, lambda ss: any(s["content"] == f"probe {r}" for s in ss),
                      timeout=60)
        probe = next(s for s in new if s["content"] == f"probe {r}")
        to_answer.append((probe["time"] - t0) * 1000)
        wait_platform_state(con, "qqbot", "up")
    return to_answer


def main():
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--restarts", type=int, default=50)
    a = ap.parse_args()
    build = pathlib.Path(a.build).resolve()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="qq-bench-"))
    try:
        with FakeQQ(tmp, heartbeat_interval=45000) as fake:
            # the fake has no rate limits; the gateway's own are lifted
            lim = {"chat_rate": 100000, "chat_burst": 100000, "global_rate": 100000,
                   "global_burst": 100000, "inflight": 16}
            sup, con = start_supervised(
                build, tmp, "qqbot",
                lambda port: qq_config(tmp, port, fake, {"limits": lim}))
            try:
                throughput(fake, con, 200, 10)          # warm-up
                t = throughput(fake, con, a.n, a.chats)
                print(f"throughput: {t['messages']} messages over {t['chats']} chats in "
                      f"{t['seconds']:.2f} s = {t['per_s']:.0f} msgs/s; CPU over that time: "
                      f"worker {t['worker_cpu']:.2f} s, fake {t['fake_cpu']:.2f} s")
                s0 = fake.stats()
                if a.restarts:
                    ans = restarts(fake, con, a.restarts)
                    s1 = fake.stats()
                    print(f"/restart -> next message answered by the new worker "
                          f"({a.restarts} restarts): p50 {statistics.median(ans):.1f} ms, "
                          f"p99 {pct(ans, 99):.1f} ms, max {max(ans):.1f} ms; "
                          f"RESUMEs {s1['resume'] - s0['resume']}, "
                          f"IDENTIFYs {s1['identify'] - s0['identify']}")
                st = con.status()
                print(f"worker RSS after: {st.get('memory_kb')} KiB, generation "
                      f"{st['generation']}")
                assert sup.alive()
            finally:
                sup.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
