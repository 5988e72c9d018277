#!/usr/bin/python3
"""Weixin benchmark: fake iLink -> hermes-worker (echo agent) -> sendmessage.

    /usr/bin/python3 tests/bench/weixin_bench.py build [-n 2000] [--chats 50] [--restarts 30]

Runs the real hermes-supervisor and hermes-worker against
tests/fakes/fake_weixin.py (long-poll getupdates and sendmessage over TLS,
test CA):
  1. throughput: N messages injected in batches of 100 over C users; messages/s
     from the first injection to the last reply the fake recorded; the CPU
     seconds of the worker and of the fake over that time;
  2. restart: /restart from a user, then at once a message from another; the
     time from the /restart to that message's answer (given by the next
     worker, which resends the committed cursor), p50/p99.
Timestamps are the fake's own clock (time.time() when each send arrived).
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

from weixin_util import FakeWeixin                   # noqa: E402
from plat_util import start_supervised, wait_platform_state  # noqa: E402
from tg_bench import cpu_seconds, pct                # noqa: E402
from discord_bench import collect                    # noqa: E402
from test_weixin import ADMIN, wx_config             # noqa: E402


def throughput(fake, con, n, chats):
    worker = con.status()["worker_pid"]
    base = fake.sent()["last"]
    w0, f0 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    t0 = time.time()
    for start in range(0, n, 100):
        fake.messages([{"from": "o9cq800bench%013d@im.wechat" % (i % chats),
                        "text": f"bench {i}"} for i in range(start, min(n, start + 100))])
    got = collect(fake, base, lambda ss: len(ss) >= n)
    t1 = max(s["time"] for s in got)
    w1, f1 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    assert sorted(s["text"] for s in got) == sorted(f"bench {i}" for i in range(n)), \
        "lost or repeated"
    el = t1 - t0
    return {"messages": n, "chats": chats, "seconds": el, "per_s": n / el,
            "worker_cpu": w1 - w0, "fake_cpu": f1 - f0}


def restarts(fake, con, k):
    to_answer = []
    for r in range(k):
        base = fake.sent()["last"]
        t0 = time.time()
        fake.message(frm=ADMIN, text="/restart")
        fake.message(frm="o9cq800probe%013d@im.wechat" % r, text=f"probe {r}")
        new = collect(fake, base, lambda ss: any(s["text"] == f"probe {r}" for s in ss),
                      timeout=60)
        probe = next(s for s in new if s["text"] == f"probe {r}")
        to_answer.append((probe["time"] - t0) * 1000)
        wait_platform_state(con, "weixin", "up")
    return to_answer


def main():
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--restarts", type=int, default=30)
    a = ap.parse_args()
    build = pathlib.Path(a.build).resolve()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="wx-bench-"))
    try:
        with FakeWeixin(tmp, hold=20) as fake:
            # the fake's batches are those of a busy bot; our own sends are not fed back
            fake.configure(batch_max=100, echo_own=False)
            lim = {"chat_rate": 100000, "chat_burst": 100000, "global_rate": 100000,
                   "global_burst": 100000, "inflight": 16}
            sup, con = start_supervised(
                build, tmp, "weixin",
                lambda port: wx_config(tmp, port, fake, {"limits": lim}))
            try:
                throughput(fake, con, 200, 10)          # warm-up
                t = throughput(fake, con, a.n, a.chats)
                print(f"throughput: {t['messages']} messages over {t['chats']} chats in "
                      f"{t['seconds']:.2f} s = {t['per_s']:.0f} msgs/s; CPU over that time: "
                      f"worker {t['worker_cpu']:.2f} s, fake {t['fake_cpu']:.2f} s")
                if a.restarts:
                    ans = restarts(fake, con, a.restarts)
                    st = fake.stats()
                    print(f"/restart -> next message answered by the new worker "
                          f"({a.restarts} restarts): p50 {statistics.median(ans):.1f} ms, "
                          f"p99 {pct(ans, 99):.1f} ms, max {max(ans):.1f} ms; "
                          f"cursor regressions {st['cursor_regressions']}")
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
