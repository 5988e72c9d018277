#!/usr/bin/python3
"""How often a SIGKILL of the worker doubles a Telegram reply, under load.

    /usr/bin/python3 tests/bench/tg_kill_doubles.py build [-k 50] [--rate 200] [--chats 50]

Runs hermes-worker (echo agent) against tests/fakes/fake_telegram.py while
messages with unique texts arrive at --rate per second over --chats private
chats, kills the worker with SIGKILL at a random moment 0.3-1.5 s after it
is up, starts the next one at once, -k times; then waits until every
message is answered and counts the texts answered more than once.

sendMessage has no idempotency key, so a reply Telegram accepted whose
record the worker had not written yet is sent again by the next worker;
an update handled whose "done" line was not written yet is answered again
unless the hub's own record of handled ids was saved.  Nothing may be lost:
a text never answered fails the run.
"""
import argparse
import os
import pathlib
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from conftest import free_port                      # noqa: E402
from console_util import Console, WorkerProc        # noqa: E402
from tg_util import FakeTelegram, tg_config, wait_tg_state  # noqa: E402


class Feeder(threading.Thread):
    """Injects messages with unique texts at a steady rate until stopped."""

    def __init__(self, fake, rate, chats):
        super().__init__(daemon=True)
        self.fake, self.rate, self.chats = fake, rate, chats
        self.sent = []
        self.stop = threading.Event()

    def run(self):
        batch = max(1, self.rate // 20)
        while not self.stop.is_set():
            t0 = time.monotonic()
            specs = []
            for _ in range(batch):
                i = len(self.sent) + len(specs)
                c = 5000 + i % self.chats
                specs.append({"chat_id": c, "user_id": c, "text": f"d{i}"})
            self.fake.messages(specs)
            self.sent.extend(s["text"] for s in specs)
            time.sleep(max(0.0, batch / self.rate - (time.monotonic() - t0)))


def start_worker(build, cfg, home, port):
    w = WorkerProc(build, cfg, home=home).start()
    con = Console(port)
    con.wait_ready(alive=w.alive)
    wait_tg_state(con, "up")
    return w


def wait_all(fake, want, timeout=300):
    """Waits until every text in want was sent at least once; returns every text sent."""
    end = time.monotonic() + timeout
    got = []
    while True:
        got.extend(s["text"] for s in fake.sent(after=len(got), wait=2)["sent"])
        missing = want - set(got)
        if not missing:
            return got
        if time.monotonic() > end:
            raise SystemExit(f"LOST: {len(missing)} message(s) never answered, e.g. "
                             f"{sorted(missing)[:10]}")


def run(a, build, tmp):
    with FakeTelegram(tmp) as fake:
        port = free_port()
        cfg = tg_config(tmp, port, fake, telegram={"poll_timeout": 30})
        w = start_worker(build, cfg, tmp, port)
        feeder = Feeder(fake, a.rate, a.chats)
        feeder.start()
        ups = []
        try:
            for _ in range(a.kills):
                time.sleep(random.uniform(0.3, 1.5))
                w.kill()                # SIGKILL to the worker's process group
                t0 = time.monotonic()
                w = start_worker(build, cfg, tmp, port)
                ups.append(time.monotonic() - t0)
            time.sleep(1.0)
        finally:
            feeder.stop.set()
            feeder.join()
        got = wait_all(fake, set(feeder.sent))
        w.stop()
    counts = {}
    for t in got:
        counts[t] = counts.get(t, 0) + 1
    doubled = sum(1 for n in counts.values() if n > 1)
    extra = sum(n - 1 for n in counts.values())
    n = len(feeder.sent)
    print(f"{a.kills} SIGKILLs while {n} messages arrived ({a.rate}/s over {a.chats} chats): "
          f"{doubled} answered more than once ({extra} extra replies), "
          f"{doubled / a.kills:.2f} per kill, {doubled / n * 100:.3f} % of messages; "
          f"none lost; kill -> next worker up: median {statistics.median(ups) * 1000:.0f} ms")


def main():
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("-k", "--kills", type=int, default=50)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--chats", type=int, default=50)
    ap.add_argument("--seed", type=int, default=None)
    a = ap.parse_args()
    random.seed(a.seed)
    build = pathlib.Path(a.build).resolve()
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="tg-kill-"))
    try:
        run(a, build, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
