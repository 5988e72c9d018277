#!/usr/bin/python3
"""Home Assistant benchmark: fake Home Assistant -> hermes-worker (echo agent) ->
persistent notification.

    /usr/bin/python3 tests/bench/homeassistant_bench.py build [-n 2000] [--restarts 30]

Runs the real hermes-supervisor and hermes-worker against
tests/fakes/fake_homeassistant.py (WebSocket API and REST over TLS, test CA):
  1. throughput: N state changes of N distinct entities, fired in batches of 100;
     changes/s from the first change to the last notification the fake recorded;
     the CPU seconds of the worker and of the fake over that time;
  2. restart: /restart from the console, then at once a change of a probe entity;
     the time from the /restart to that change's notification (the old worker
     may still report it live, else the next one finds it by comparing
     get_states), p50/p99; and the subscription gaps the fake measured.
Timestamps of notifications are the fake's own clock.
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

from homeassistant_util import FakeHA, ha_config, messages   # noqa: E402
from plat_util import start_supervised, wait_platform_state  # noqa: E402
from tg_bench import cpu_seconds, pct                        # noqa: E402


def collect(fake, after, pred, timeout=600):
    new = []
    end = time.monotonic() + timeout
    while not pred(new):
        if time.monotonic() > end:
            raise TimeoutError(f"only {len(new)} notifications")
        new.extend(fake.calls(after=after + len(new), wait=2)["calls"])
    return new


def throughput(fake, con, ents, tag):
    worker = con.status()["worker_pid"]
    base = fake.calls()["last"]
    w0, f0 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    t0 = time.time()
    for start in range(0, len(ents), 100):
        fake.set_states([(e, tag) for e in ents[start:start + 100]])
    got = collect(fake, base, lambda cs: len(cs) >= len(ents))
    t1 = max(c["time"] for c in got)
    w1, f1 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    assert len(set(messages(got))) == len(ents), "lost or repeated"
    el = t1 - t0
    return {"n": len(ents), "seconds": el, "per_s": len(ents) / el,
            "worker_cpu": w1 - w0, "fake_cpu": f1 - f0}


def restarts(fake, con, k):
    to_answer = []
    for r in range(k):
        base = fake.calls()["last"]
        t0 = time.time()
        con.post("/restart", chat_id="ops", user_id="local", retry=True)
        fake.set_state(f"input_boolean.probe{r}", "on")
        want = f"input_boolean.probe{r}"
        new = collect(fake, base, lambda cs: any(want in m for m in messages(cs)),
                      timeout=60)
        hit = next(c for c in new if want in c["body"]["message"])
        to_answer.append((hit["time"] - t0) * 1000)
        wait_platform_state(con, "homeassistant", "up")
    return to_answer


def main():
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--restarts", type=int, default=30)
    a = ap.parse_args()
    build = pathlib.Path(a.build).resolve()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="ha-bench-"))
    try:
        with FakeHA(tmp) as fake:
            ents = [f"input_boolean.e{i:05d}" for i in range(a.n)]
            warm = [f"input_boolean.w{i:03d}" for i in range(200)]
            probes = [f"input_boolean.probe{r}" for r in range(a.restarts)]
            fake.seed([(e, "off") for e in ents + warm + probes])
            lim = {"chat_rate": 100000, "chat_burst": 100000, "global_rate": 100000,
                   "global_burst": 100000, "inflight": 16}
            sup, con = start_supervised(
                build, tmp, "homeassistant",
                lambda port: ha_config(tmp, port, fake, {"limits": lim}))
            try:
                fake.wait_subscribed()
                time.sleep(0.5)
                throughput(fake, con, warm, "on")       # warm-up
                t = throughput(fake, con, ents, "on")
                print(f"throughput: {t['n']} state changes in {t['seconds']:.2f} s = "
                      f"{t['per_s']:.0f} changes/s answered; CPU over that time: "
                      f"worker {t['worker_cpu']:.2f} s, fake {t['fake_cpu']:.2f} s")
                if a.restarts:
                    g0 = len(fake.state()["gaps"])
                    ans = restarts(fake, con, a.restarts)
                    gaps = [g * 1000 for g in fake.state()["gaps"][g0:]]
                    print(f"/restart -> a change made at once answered ({a.restarts} "
                          f"restarts): p50 {statistics.median(ans):.0f} ms, "
                          f"p99 {pct(ans, 99):.0f} ms, max {max(ans):.0f} ms; "
                          f"no subscriber for p50 {statistics.median(gaps):.0f} ms, "
                          f"max {max(gaps):.0f} ms")
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
