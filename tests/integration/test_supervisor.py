"""hermes-supervisor lifecycle: the policy table, watchdog, teardown, cleanup."""
import os
import signal
import socket
import time

import pytest

from sup_util import SupFactory, alive, read_pid, wait_for


@pytest.fixture
def sup(build, tmp_path):
    f = SupFactory(build, tmp_path)
    yield f
    f.cleanup()


# --- exit-code matrix -------------------------------------------------------

def test_exit_0_stops_supervisor_with_0(sup):
    s = sup("--ready", "--exit", "0", "--exit-after", "50")
    assert s.wait_exit() == 0
    assert len(s.starts()) == 1
    assert "ended: exit 0" in s.logtext()


def test_exit_78_stops_without_respawn(sup):
    s = sup("--exit", "78")
    assert s.wait_exit() == 78
    assert len(s.starts()) == 1
    assert "configuration error" in s.logtext()


def test_exit_75_after_ready_respawns_at_once_with_next_generation(sup):
    s = sup("--ready", "--exit", "75", "--until-gen", "3")
    s.wait_state("ready", generation=3)
    gens = [r[2] for r in s.starts()]
    assert gens == [0, 1, 2, 3]
    assert "respawning in" not in s.logtext()      # no backoff on the way
    assert s.state()["restarts"] == "3"
    assert s.state()["last_exit"] == "exit 75 (restart requested)"


def test_exit_75_without_ready_is_a_failure(sup):
    s = sup("--exit", "75", "--until-gen", "2")
    s.wait_starts(3)
    assert s.logtext().count("respawning in") == 2


@pytest.mark.parametrize("code", [1, 2, 127, 255])
def test_other_exit_codes_back_off(sup, code):
    s = sup("--ready", "--exit", str(code), "--until-gen", "1")
    s.wait_state("ready", generation=1)
    assert "ended: exit %d" % code in s.logtext()
    assert "respawning in 100 ms (failure 1)" in s.logtext()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT,
                                 signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_death_by_signal_backs_off(sup, sig):
    s = sup("--ready", "--signal", str(int(sig)), "--until-gen", "1")
    s.wait_state("ready", generation=1)
    assert "ended: signal %d" % sig in s.logtext()
    assert "respawning in 100 ms" in s.logtext()


def test_exec_failure_is_logged_and_a_failure(sup, tmp_path):
    s = sup(worker=[str(tmp_path / "no-such-worker")], sup_args=["--crash-limit", "2/60"])
    assert s.wait_exit() == 1
    assert "exec failed: No such file or directory" in s.logtext()
    assert "giving up" in s.logtext()


# --- backoff and crash limit ---------------------------------------------------

def test_backoff_grows_to_the_cap(sup):
    s = sup("--exit", "1", sup_args=["--backoff-max", "0.4", "--crash-limit", "100/60"])
    s.wait_log("failure 5")
    log = s.logtext()
    for ms, n in ((100, 1), (200, 2), (400, 3), (400, 4), (400, 5)):
        assert "respawning in %d ms (failure %d)" % (ms, n) in log
    st = s.starts()
    gaps = [(b[3] - a[3]) / 1000 for a, b in zip(st, st[1:])]
    assert gaps[0] >= 100 and gaps[1] >= 200 and gaps[2] >= 400


def test_backoff_resets_after_ready_period(sup):
    # Each worker is READY longer than the (shortened) reset period, then fails:
    # every failure is a first failure again.
    s = sup("--ready", "--exit", "1", "--exit-after", "700",
            sup_args=["--crash-limit", "100/60"],
            env={"HERMES_SUPERVISOR_BACKOFF_RESET": "0.2"})
    s.wait_log("respawning in", count=3)
    assert s.logtext().count("respawning in 100 ms (failure 1)") >= 3
    assert "failure 2" not in s.logtext()


def test_crash_limit_gives_up_with_1(sup):
    s = sup("--exit", "3", sup_args=["--crash-limit", "3/60", "--backoff-max", "0.1"])
    assert s.wait_exit() == 1
    assert len(s.starts()) == 3
    assert "3 failures within 60.0 s: giving up" in s.logtext()


def test_restart_loop_without_ready_hits_crash_limit(sup):
    s = sup("--exit", "75", sup_args=["--crash-limit", "4/60", "--backoff-max", "0.1"])
    assert s.wait_exit() == 1
    assert len(s.starts()) == 4


# --- watchdog ---------------------------------------------------------------

def test_worker_that_stops_pinging_is_killed_and_respawned(sup):
    s = sup("--ready", "--watchdog", "--stop-pinging-after", "400",
            sup_args=["--watchdog", "0.2"])
    s.wait_starts(2, timeout=15)
    first = s.starts()[0][1]
    assert not alive(first)
    assert "watchdog timeout" in s.logtext()
    assert "signal 9 (Killed) after watchdog timeout" in s.logtext()


def test_pinging_worker_is_left_alone(sup):
    s = sup("--ready", "--watchdog", sup_args=["--watchdog", "0.2"])
    s.wait_state("ready")
    time.sleep(1.0)     # five watchdog periods: it must survive them
    assert len(s.starts()) == 1 and s.state()["state"] == "ready"


def test_sigstopped_worker_is_declared_hung(sup):
    s = sup("--ready", "--watchdog", sup_args=["--watchdog", "0.3"])
    s.wait_state("ready")
    pid = s.worker_pid()
    os.kill(pid, signal.SIGSTOP)
    s.wait_starts(2, timeout=15)
    wait_for(lambda: not alive(pid), what="stopped worker gone")
    s.wait_state("ready", generation=1)


def test_watchdog_env_given_to_worker(sup, tmp_path):
    s = sup("--ready", "--watchdog", "--env", str(tmp_path / "env"),
            sup_args=["--watchdog", "0.25"])
    s.wait_state("ready")
    env = open(str(tmp_path / "env.0")).read()
    assert "env WATCHDOG_USEC=250000\n" in env
    assert "env WATCHDOG_PID=%d\n" % s.worker_pid() in env


# --- teardown -----------------------------------------------------------------

def test_stuck_teardown_is_killed_after_stop_timeout(sup):
    # STOPPING=1 on TERM, then the main thread ends while another thread lives on.
    s = sup("--ready", "--on-term", "stuck", sup_args=["--stop-timeout", "0.5"])
    s.wait_state("ready")
    pid = s.worker_pid()
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
    assert not alive(pid)
    assert "stop timeout" in s.logtext()


def test_worker_that_ignores_term_is_killed(sup):
    s = sup("--ready", "--on-term", "ignore", sup_args=["--stop-timeout", "0.3"])
    s.wait_state("ready")
    pid = s.worker_pid()
    s.signal(signal.SIGINT)
    assert s.wait_exit() == 0
    assert not alive(pid)


def test_self_reported_stopping_that_hangs_is_killed_and_respawned(sup):
    # The worker says STOPPING=1 by itself, then never exits.
    s = sup("--ready", "--stopping-after", "100", sup_args=["--stop-timeout", "0.3"])
    s.wait_starts(2, timeout=15)
    assert "worker %d is stopping" % s.starts()[0][1] in s.logtext()
    assert "after stop timeout" in s.logtext()


def test_extend_timeout_usec_extends_the_stop_timeout(sup):
    s = sup("--ready", "--on-term", "extend", "--extend", "3000000", "--extend-exit", "800",
            sup_args=["--stop-timeout", "0.3"])
    s.wait_state("ready")
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
    assert "stop timeout" not in s.logtext()
    assert "ended: exit 0" in s.logtext()


# --- process group, orphans, supervisor death ---------------------------------

def test_grandchildren_are_killed_when_the_worker_ends(sup, tmp_path):
    g, ss = str(tmp_path / "g"), str(tmp_path / "s")
    s = sup("--ready", "--grandchild", g, "--setsid-grandchild", ss,
            "--exit", "75", "--exit-after", "300", "--until-gen", "1")
    wait_for(lambda: read_pid(g) and read_pid(ss))
    gp, sp = read_pid(g), read_pid(ss)
    s.extra_pids += [gp, sp]
    assert alive(gp) and alive(sp)
    s.wait_state("ready", generation=1)
    wait_for(lambda: not alive(gp) and not alive(sp), what="grandchildren killed")
    wait_for(lambda: read_pid(g) != gp and read_pid(ss) != sp)
    s.extra_pids += [read_pid(g), read_pid(ss)]     # generation 1's, for the cleanup


def test_grandchildren_are_killed_on_stop(sup, tmp_path):
    g, ss = str(tmp_path / "g"), str(tmp_path / "s")
    s = sup("--ready", "--grandchild", g, "--setsid-grandchild", ss)
    wait_for(lambda: read_pid(g) and read_pid(ss))
    gp, sp = read_pid(g), read_pid(ss)
    s.extra_pids += [gp, sp]
    s.wait_state("ready")
    s.signal(signal.SIGTERM)
    assert s.wait_exit() == 0
    wait_for(lambda: not alive(gp) and not alive(sp), what="grandchildren killed")


def test_live_workers_daemons_are_left_alone_until_it_ends(sup, tmp_path):
    # Two daemons double-forked by the worker are orphans of the subreaper from
    # the start.  One dying must not get the other killed while the worker lives.
    f = str(tmp_path / "d")
    s = sup("--ready", "--daemons", f)
    s.wait_state("ready")
    d1, d2 = wait_for(lambda: [int(x) for x in open(f).read().split()]
                      if os.path.exists(f) else None)
    s.extra_pids += [d1, d2]
    ppid = lambda p: int(open("/proc/%d/stat" % p).read().rsplit(")", 1)[1].split()[1])
    wait_for(lambda: ppid(d1) == s.pid and ppid(d2) == s.pid)   # the subreaper's now
    os.kill(d1, signal.SIGKILL)
    wait_for(lambda: not alive(d1))
    time.sleep(0.3)
    assert alive(d2)
    s.signal(signal.SIGHUP)         # the worker ends: now its leftovers go
    s.wait_state("ready", generation=1)
    wait_for(lambda: not alive(d2), what="daemon killed after its worker ended")
    s.extra_pids += [int(x) for x in open(f).read().split()]


def test_worker_dies_when_supervisor_is_sigkilled(sup):
    s = sup("--ready")
    s.wait_state("ready")
    pid = s.worker_pid()
    s.signal(signal.SIGKILL)
    s.proc.wait()
    wait_for(lambda: not alive(pid), what="worker gone with its supervisor")


# --- signals --------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_term_and_int_stop_the_worker_and_exit_0(sup, sig):
    s = sup("--ready")
    s.wait_state("ready")
    pid = s.worker_pid()
    s.signal(sig)
    assert s.wait_exit() == 0
    assert not alive(pid)
    assert s.ctl("status").returncode == 3


def test_hup_recycles_the_worker(sup):
    s = sup("--ready")
    s.wait_state("ready")
    pid = s.worker_pid()
    s.signal(signal.SIGHUP)
    s.wait_state("ready", generation=1)
    assert not alive(pid)
    assert s.proc.poll() is None
    recs = s.records()
    assert ("exit", pid, 0) in [(r[0], r[1], r[2]) for r in recs]
    assert "respawning in" not in s.logtext()


def test_usr1_keeps_running(sup):
    s = sup("--ready")
    s.wait_state("ready")
    s.signal(signal.SIGUSR1)
    time.sleep(0.2)
    assert s.proc.poll() is None and s.state()["state"] == "ready"


# --- the notify channel ------------------------------------------------------------

def _send_as_other_process(path, msg):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
        c.sendto(msg, path)


def test_notify_from_another_process_is_ignored(sup):
    s = sup("--ready-after", "100000")        # never READY by itself
    s.wait_state("starting")
    _send_as_other_process(os.path.join(s.run, "notify"), b"READY=1\nSTATUS=forged")
    s.wait_log("dropped a datagram from pid %d" % os.getpid())
    time.sleep(0.1)
    assert s.state()["state"] == "starting"
    assert "forged" not in s.state()["worker_status"]


def test_notify_flood_neither_starves_the_loop_nor_the_log(sup):
    s = sup("--ready")
    s.wait_state("ready")
    path = os.path.join(s.run, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as c:
        c.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            try:
                c.sendto(b"READY=1", path)
                sent += 1
            except BlockingIOError:
                time.sleep(0.001)
    assert sent > 1000
    s.signal(signal.SIGHUP)
    s.wait_state("ready", generation=1)
    assert s.logtext().count("dropped a datagram") <= 5
    assert "more dropped before" in s.logtext()


@pytest.mark.parametrize("msg,why", [
    ("garbage", "line is not KEY=VALUE"),
    ("READY=2", "flag key with a value other than 1"),
    ("WATCHDOG=often", "bad WATCHDOG value"),
    ("EXTEND_TIMEOUT_USEC=-5", "bad EXTEND_TIMEOUT_USEC value"),
    ("ERRNO=abc", "bad ERRNO value"),
    ("lower=case", "line is not KEY=VALUE"),
    ("STATUS=" + "x" * 5000, "oversized"),
])
def test_malformed_notify_from_worker_is_dropped(sup, msg, why):
    s = sup("--notify", msg, "--ready-after", "300")
    s.wait_log("dropped a")
    assert why in s.logtext()
    s.wait_state("ready")       # the worker is still served normally
    assert s.proc.poll() is None


def test_status_text_is_sanitized_and_recorded(sup):
    s = sup("--ready", "--status", "platforms: console up")
    s.wait_state("ready")
    assert s.state()["worker_status"] == "platforms: console up"
