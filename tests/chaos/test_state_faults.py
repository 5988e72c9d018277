"""The state directory stops taking writes, then takes them again:

- disk-full: state_dir is a 1 MiB tmpfs, filled to the last block, either
  while the worker runs or before it starts;
- read-only: state_dir is a bind mount, remounted read-only between two
  runs of the gateway, then rw.  (Remounting it read-only under a running
  worker is refused by the kernel while the worker holds its journal open;
  read-only-while-running mounts a read-only bind over it instead.)

While it is broken the console answers each POST with 202 (taken: it will
be answered) or 503 (refused: the client sends it again later), nothing
else, and the worker does not crash.  The agent is slow (an exec agent
that answers after 0.4 s), so taken messages are still waiting when the
worker goes: every message taken is answered exactly once, in its chat.

Two endings for each fault:
- restart: the directory is repaired, then /restart (the planned path);
- kill: the directory is repaired, more messages are posted, then the
  worker is SIGKILLed: the journal must be written again once it can be
  (within 5 s here), so a crash after the repair loses nothing either.
"""
import os
import pathlib
import sys
import time

import pytest

from chaos_util import Ledger, Load, post, post_once, report

HERE = pathlib.Path(__file__).resolve().parent
DELAY = 0.4
NOTICES = ("Restarting the gateway...", "Gateway online",
           "The gateway is restarting and the agent did not finish in time")
CHATS = ["f%d" % i for i in range(4)]


class DiskFull:
    """A small tmpfs as state_dir; on() fills it, off() frees it."""

    def __init__(self, mounts, tmp):
        self.dir = tmp / "statefs"
        self.dir.mkdir()
        mounts.mount("-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", target=self.dir)
        self.filler = self.dir / "filler"

    def on(self):
        with open(self.filler, "wb", buffering=0) as f:
            for chunk in (1 << 16, 4096, 512, 1):
                try:
                    while True:
                        f.write(b"\0" * chunk)
                except OSError:
                    pass
        st = os.statvfs(self.dir)
        assert st.f_bavail == 0, "tmpfs not full: %d blocks left" % st.f_bavail

    def off(self):
        self.filler.unlink()


class ReadOnly:
    """A bind mount as state_dir; on() remounts it read-only, off() rw.
    The kernel refuses that while a file on it is open for writing, so it
    is used before the worker starts."""

    def __init__(self, mounts, tmp):
        self.mounts = mounts
        src = tmp / "state-src"
        self.dir = tmp / "state"
        src.mkdir()
        self.dir.mkdir()
        mounts.mount("--bind", str(src), target=self.dir)

    def on(self):
        self.mounts.remount(self.dir, "bind,ro")
        assert _ro(self.dir)

    def off(self):
        self.mounts.remount(self.dir, "bind,rw")


class ReadOnlyOver:
    """Under a running worker: on() mounts a read-only bind of state_dir
    over itself, off() unmounts it.  Every path-based write fails (new
    files, atomic replacements); a descriptor opened before (the journal)
    keeps writing to the file beneath, as the kernel does."""

    def __init__(self, mounts, tmp):
        self.mounts = mounts
        self.dir = tmp / "state"
        self.dir.mkdir()

    def on(self):
        self.mounts.mount("--bind", str(self.dir), target=self.dir)
        self.mounts.remount(self.dir, "bind,ro")
        assert _ro(self.dir)

    def off(self):
        self.mounts.umount(self.dir)
        assert not _ro(self.dir)


def _ro(path):
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _journal_size(d):
    try:
        return os.stat(d / "console.journal").st_size
    except OSError:
        return -1


CASES = [
    pytest.param(DiskFull, "running", "restart", id="disk-full-while-running-restart"),
    pytest.param(DiskFull, "running", "kill", id="disk-full-while-running-kill"),
    pytest.param(DiskFull, "start", "kill", id="disk-full-from-start-kill"),
    pytest.param(ReadOnlyOver, "running", "kill", id="read-only-while-running-kill"),
]


def test_read_only_from_start_is_a_config_error(tmp_path, mounts, gateway):
    """A state dir that cannot be written at start is a configuration error: the
    supervisor stops with 78 and one line naming the path, without a respawn loop;
    once writable, the next start answers what the earlier run left pending."""
    fs = ReadOnly(mounts, tmp_path)
    seed = gateway(state_dir=fs.dir, name="seed")
    seed.wait_generation(0)
    assert seed.console.ask("seed", chat_id="seed") == ["seed"]
    seed.stop()
    fs.on()
    g = gateway(state_dir=fs.dir, name="ro")
    assert g.proc.wait(timeout=30) == 78
    log = g.log()
    assert str(fs.dir) in log and "not respawning" in log, log[-2000:]
    assert log.count("started worker") == 1                # one worker, no loop
    fs.off()
    g2 = gateway(state_dir=fs.dir, name="rw")
    g2.wait_generation(0)
    assert g2.console.ask("again", chat_id="seed") == ["again"]


@pytest.mark.parametrize("fault,when,ending", CASES)
def test_state_dir_fault(build, tmp_path, mounts, gateway, fault, when, ending):
    fs = fault(mounts, tmp_path)
    agent = {"backend": "exec", "timeout": 60,
             "command": [sys.executable, str(HERE / "slow_echo.py"), str(DELAY)]}
    if when == "start":
        # A gateway ran here before (the state dir holds its files).
        seed = gateway(state_dir=fs.dir, name="seed")
        seed.wait_generation(0)
        seed.console.wait_ready()
        assert seed.console.ask("seed", chat_id="seed") == ["seed"]
        seed.stop()
        fs.on()
    g = gateway(state_dir=fs.dir, extra={"agent": agent, "drain_timeout": 1})
    g.wait_generation(0)
    con = g.console
    pid0 = con.wait_ready()["worker_pid"]
    ledger = Ledger()
    load = Load(con, ledger, 0, extra_chats=CHATS + ["ops"])
    load.start()
    if when == "running":
        before = [ledger.new(c, "before " + c) for c in CHATS]
        for m in before:
            assert post(con, ledger, m, time.monotonic() + 20), (m.bad, g.log(20))
        assert not ledger.wait_answered(30)
        fs.on()
    # Long texts: more journal than the last page of the file can still take.
    during = [ledger.new(CHATS[i % 4], "during %d %s" % (i, "x" * 400)) for i in range(24)]
    statuses = [post_once(con, ledger, m) for m in during]
    time.sleep(1.5)                     # the hub's delayed saves fail too
    st_fault = g.state()
    fs.off()
    for m in during:                    # the refused ones, sent again
        if not m.ids:
            post(con, ledger, m, time.monotonic() + 30)

    after, resumed = [], False
    if ending == "kill":
        j0, end = _journal_size(fs.dir), time.monotonic() + 5
        while time.monotonic() < end and len(after) < (8 if resumed else 16):
            m = ledger.new(CHATS[len(after) % 4], "after %d" % len(after))
            after.append(m)
            post(con, ledger, m, time.monotonic() + 20)
            resumed = resumed or _journal_size(fs.dir) > j0
            time.sleep(0.05)
        waiting = ledger.outstanding(during + after)
        g.kill_worker()
        g.wait_generation(1)
    else:
        waiting = ledger.outstanding(during)
    gen = g.generation()
    restart_id = g.restart()
    try:
        g.wait_generation(gen + 1, timeout=10)
        restarted = True
    except AssertionError:              # reported with the figures below
        restarted = False
    unanswered = ledger.wait_answered(60 if restarted else 5, stall=5)
    time.sleep(1.5)
    load.stop_collecting()
    f, details = ledger.audit(notices=NOTICES)
    f.update(fault=fs.__class__.__name__, when=when, ending=ending,
             during_202=statuses.count(202), during_503=statuses.count(503),
             during_other=[s for s in statuses if s not in (202, 503)],
             waiting_at_end=waiting, journal_resumed=resumed, restarted=restarted)
    report("state_fault", **f)

    assert restarted, ("/restart (id %d) taken but no restart followed" % restart_id,
                       f, g.log(20))
    assert (st_fault.get("generation"), st_fault.get("worker_pid")) == ("0", str(pid0)), \
        ("the worker crashed while the state dir was broken", st_fault, g.log(30))
    assert set(statuses) <= {202, 503}, statuses
    assert waiting > 0, "nothing was waiting when the worker went: the test proves nothing"
    assert (f["lost"], f["doubled"], f["misrouted"], f["unexplained"], f["bad_status"],
            f["never_taken"]) == (0, 0, 0, 0, 0, 0), (f, details[:20], unanswered[:5])
