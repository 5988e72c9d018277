#!/usr/bin/python3
"""Slack benchmark: fake Slack -> hermes-worker (echo agent) -> chat.postMessage.

    /usr/bin/python3 tests/bench/slack_bench.py build [-n 2000] [--chats 50] [--restarts 30]

Runs the real hermes-supervisor and hermes-worker against
tests/fakes/fake_slack.py (Socket Mode and the Web API over TLS, test CA):
  1. throughput: N DMs injected in batches of 100 over C users; messages/s from
     the first injection to the last reply the fake recorded; the CPU seconds of
     the worker and of the fake over that time; the ack latency (event sent to
     envelope acknowledged, fsync included) p50/p99 as the fake measured it;
  2. restart: /restart from a DM, then at once a message from another user;
     the time from the /restart to that message's answer, p50/p99.  A message
     that reaches Slack while no link is open waits for Slack's retry after its
     3 s ack deadline, so this is the restart gap as a Slack user sees it.
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

from slack_util import FakeSlack, unescape           # noqa: E402
from plat_util import start_supervised, wait_platform_state  # noqa: E402
from tg_bench import cpu_seconds, pct                # noqa: E402
from test_slack import ADMIN, sl_config              # noqa: E402
from discord_bench import collect                    # noqa: E402


def throughput(fake, con, n, chats):
    worker = con.status()["worker_pid"]
    base = fake.sent()["last"]
    w0, f0 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    t0 = time.time()
    for start in range(0, n, 100):
        fake.messages([{"dm": True, "user": f"U0B{i % chats}", "text": f"bench {i}"}
                       for i in range(start, min(n, start + 100))])
    got = collect(fake, base, lambda ss: len(ss) >= n)
    t1 = max(s["time"] for s in got)
    w1, f1 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    assert sorted(unescape(s["text"]) for s in got) == sorted(f"bench {i}" for i in range(n)), \
        "lost or repeated"
    el = t1 - t0
    return {"messages": n, "chats": chats, "seconds": el, "per_s": n / el,
            "worker_cpu": w1 - w0, "fake_cpu": f1 - f0}


def restarts(fake, con, k):
    to_answer = []
    for r in range(k):
        base = fake.sent()["last"]
        t0 = time.time()
        fake.message(dm=True, user=ADMIN, text="!restart")
        fake.message(dm=True, user=f"U0P{r}", text=f"probe {r}")
        new = collect(fake, base, lambda ss: any(s["text"] == f"probe {r}" for s in ss),
                      timeout=60)
        probe = next(s for s in new if s["text"] == f"probe {r}")
        to_answer.append((probe["time"] - t0) * 1000)
        wait_platform_state(con, "slack", "up")
        time.sleep(0.5)                                 # the online notice's answer
    return to_answer


def gap_probes(fake, con, k):
    """/restart, then a message only once the old worker's link has closed: it
    reaches no link, so it waits for Slack's retry."""
    to_answer = []
    for r in range(k):
        base = fake.sent()["last"]
        fake.message(dm=True, user=ADMIN, text="!restart")
        end = time.monotonic() + 30
        while fake.state()["open_links"] > 0 and time.monotonic() < end:
            time.sleep(0.005)
        t0 = time.time()
        fake.message(dm=True, user=f"U0G{r}", text=f"gap {r}")
        new = collect(fake, base, lambda ss: any(s["text"] == f"gap {r}" for s in ss),
                      timeout=60)
        to_answer.append((next(s for s in new if s["text"] == f"gap {r}")["time"] - t0)
                         * 1000)
        wait_platform_state(con, "slack", "up")
        time.sleep(0.5)
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
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="sl-bench-"))
    try:
        with FakeSlack(tmp) as fake:
            # Slack's ~1 post per second per channel would measure the rate limiter.
            fake.configure(post_rate=[1000000, 1.0], echo_own=False, retry_delays=[0.0, 60.0])
            lim = {"chat_rate": 100000, "chat_burst": 100000, "global_rate": 100000,
                   "global_burst": 100000, "inflight": 16}
            sup, con = start_supervised(
                build, tmp, "slack", lambda port: sl_config(tmp, port, fake, {"limits": lim}))
            try:
                throughput(fake, con, 200, 10)          # warm-up
                t = throughput(fake, con, a.n, a.chats)
                lat = fake.state()["ack_ms"]
                print(f"throughput: {t['messages']} messages over {t['chats']} chats in "
                      f"{t['seconds']:.2f} s = {t['per_s']:.0f} msgs/s; CPU over that time: "
                      f"worker {t['worker_cpu']:.2f} s, fake {t['fake_cpu']:.2f} s; "
                      f"envelope acked after p50 {statistics.median(lat):.1f} ms, "
                      f"p99 {pct(lat, 99):.1f} ms")
                if a.restarts:
                    s0 = fake.stats()
                    ans = restarts(fake, con, a.restarts)
                    s1 = fake.stats()
                    print(f"/restart -> next message answered by the new worker "
                          f"({a.restarts} restarts): p50 {statistics.median(ans):.1f} ms, "
                          f"p99 {pct(ans, 99):.1f} ms, max {max(ans):.1f} ms; "
                          f"Slack retries {s1['retries'] - s0['retries']}, "
                          f"dropped {s1['dropped'] - s0['dropped']}")
                    gap = gap_probes(fake, con, max(5, a.restarts // 4))
                    s2 = fake.stats()
                    print(f"a message sent while no link is open ({len(gap)} restarts): "
                          f"answered after p50 {statistics.median(gap):.0f} ms, max "
                          f"{max(gap):.0f} ms; Slack retries {s2['retries'] - s1['retries']}")
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
