#!/usr/bin/python3
"""Telegram benchmark: fake Bot API -> hermes-worker (echo agent) -> sendMessage.

    /usr/bin/python3 tests/bench/tg_bench.py build [-n 2000] [--chats 50] [--restarts 20]
    /usr/bin/python3 tests/bench/tg_bench.py build --c-fake [-n 20000] [--chats 50]

Runs the real hermes-supervisor and hermes-worker against
tests/fakes/fake_telegram.py (HTTPS with a test CA) and measures:
  1. throughput: N messages injected in batches of 100 over C private chats;
     messages/s from the first injection to the last echo recorded by the fake;
     CPU seconds used by the worker and by the fake over that interval (which
     one is the bottleneck);
  2. restart: /restart sent from Telegram, followed at once by a message from
     another chat; time from the /restart to that message's answer (sent by
     the next worker), and to the "Gateway online" notice; p50/p99.
Timestamps are the fake's own clock (time.time() when each request arrived).

With --c-fake, throughput is measured against build/bench/tg_fakebench, a
minimal Bot API server in C (libevent + OpenSSL), so that the Python fake's
own cost is out of the way; it generates the N updates itself and times from
their release to the last answer.
"""
import json
import select
import shutil
import signal
import subprocess
import types
import argparse
import os
import pathlib
import statistics
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from conftest import free_port                      # noqa: E402
from console_util import Console                    # noqa: E402
from tg_util import (FakeTelegram, SupervisorProc,  # noqa: E402
                     tg_config, wait_tg_state)

ADMIN = 1001
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def collect(fake, after, pred, timeout=600):
    """Fetches sent messages incrementally from index after until pred(new ones)."""
    new = []
    end = time.monotonic() + timeout
    while not pred(new):
        if time.monotonic() > end:
            raise TimeoutError(f"only {len(new)} answers")
        new.extend(fake.sent(after=after + len(new), wait=2)["sent"])
    return new


def throughput(fake, con, n, chats):
    worker = con.status()["worker_pid"]
    base = fake.sent()["last"]
    w0, f0 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    t0 = time.time()
    for start in range(0, n, 100):
        fake.messages([{"chat_id": 5000 + (i % chats), "user_id": 5000 + (i % chats),
                        "text": f"bench {i}"} for i in range(start, min(n, start + 100))])
    got = collect(fake, base, lambda ss: len(ss) >= n)
    t1 = max(s["time"] for s in got)
    w1, f1 = cpu_seconds(worker), cpu_seconds(fake.proc.pid)
    texts = [s["text"] for s in got]
    assert sorted(texts) == sorted(f"bench {i}" for i in range(n)), "lost or repeated"
    el = t1 - t0
    return {"messages": n, "chats": chats, "seconds": el, "per_s": n / el,
            "worker_cpu": w1 - w0, "fake_cpu": f1 - f0}


def restarts(fake, con, k):
    to_answer, to_online = [], []
    for r in range(k):
        base = fake.sent()["last"]
        t0 = time.time()
        fake.message(chat_id=ADMIN, user_id=ADMIN, text="/restart")
        fake.message(chat_id=7000 + r, user_id=7000 + r, text=f"probe {r}")
        new = collect(fake, base, lambda ss: any(s["text"] == f"probe {r}" for s in ss) and
                      any(s["text"].startswith("Gateway online") for s in ss), timeout=60)
        probe = next(s for s in new if s["text"] == f"probe {r}")
        online = next(s for s in new if s["text"].startswith("Gateway online"))
        to_answer.append((probe["time"] - t0) * 1000)
        to_online.append((online["time"] - t0) * 1000)
        wait_tg_state(con, "up")
    return to_answer, to_online


def c_fake_throughput(build, tmp, n, chats):
    """Throughput against the C fake: returns its result line and the worker's CPU."""
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    token = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz"
    fake = subprocess.Popen([str(build / "bench" / "tg_fakebench"), "--cert",
                             str(tmp / "server.pem"), "--key", str(tmp / "server.pem"),
                             "--token", token, "-n", str(n), "--chats", str(chats)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(fake.stdout.readline().split()[1])
        info = types.SimpleNamespace(token=token, api_url=f"https://127.0.0.1:{port}",
                                     ca=str(tmp / "ca.pem"))
        cport = free_port()
        cfg = tg_config(tmp, cport, info, telegram={"poll_timeout": 30})
        with SupervisorProc(build, cfg, tmp) as sup:
            con = Console(cport)
            con.wait_ready()
            worker = con.status()["worker_pid"]
            w0, f0 = cpu_seconds(worker), cpu_seconds(fake.pid)
            f_cpu = None
            ready, _, _ = select.select([fake.stdout], [], [], 600)
            if not ready:
                raise TimeoutError("the C fake saw no end; worker log:\n" + sup.log()[-3000:])
            line = fake.stdout.readline().strip()
            w1 = cpu_seconds(worker)
            fake.wait(timeout=60)
            assert sup.alive()
        return line, w1 - w0, f_cpu
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.wait()


def main():
    # A SIGTERM (e.g. from timeout(1)) unwinds, so every process started is stopped.
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--restarts", type=int, default=20)
    ap.add_argument("--c-fake", action="store_true")
    a = ap.parse_args()
    build = pathlib.Path(a.build).resolve()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tg-bench-"))
    try:
        run(a, build, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(a, build, tmp):
    if a.c_fake:
        line, wcpu, _ = c_fake_throughput(build, tmp, a.n, a.chats)
        f = line.split()
        print(f"C fake: {f[1]} messages over {a.chats} chats in {f[3]} s = {f[5]} msgs/s "
              f"(duplicates {f[7]}, typing actions {f[9]}); worker CPU {wcpu:.2f} s = "
              f"{wcpu / int(f[1]) * 1000:.2f} ms per message")
        return
    with FakeTelegram(tmp) as fake:
        port = free_port()
        cfg = tg_config(tmp, port, fake, telegram={"poll_timeout": 30})
        with SupervisorProc(build, cfg, tmp) as sup:
            con = Console(port)
            con.wait_ready()
            wait_tg_state(con, "up")
            throughput(fake, con, 200, 10)                 # warm-up
            t = throughput(fake, con, a.n, a.chats)
            print(f"throughput: {t['messages']} messages over {t['chats']} chats in "
                  f"{t['seconds']:.2f} s = {t['per_s']:.0f} msgs/s; CPU over that time: "
                  f"worker {t['worker_cpu']:.2f} s, fake {t['fake_cpu']:.2f} s")
            if a.restarts:
                ans, onl = restarts(fake, con, a.restarts)
                print(f"/restart -> next message answered by the new worker "
                      f"({a.restarts} restarts): p50 {statistics.median(ans):.1f} ms, "
                      f"p99 {pct(ans, 99):.1f} ms, max {max(ans):.1f} ms")
                print(f"/restart -> 'Gateway online' sent: p50 {statistics.median(onl):.1f} ms,"
                      f" p99 {pct(onl, 99):.1f} ms, max {max(onl):.1f} ms")
            st = con.status()
            print(f"worker RSS after: {st.get('memory_kb')} KiB, generation "
                  f"{st['generation']}")
            assert sup.alive()


if __name__ == "__main__":
    main()
