"""hermes-supervisor: control commands, single instance, daemon mode, the
upstream sd_notify protocol, listen sockets, the worker's environment, PID 1."""
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import fs_util
from conftest import free_port
from sup_util import SupFactory, alive, read_pid, wait_for


@pytest.fixture
def sup(build, tmp_path):
    f = SupFactory(build, tmp_path)
    yield f
    f.cleanup()


def fixture_path(build):
    return str(build / "fixtures" / "sup_worker")


# --- command line -------------------------------------------------------------

def test_help_and_version(build):
    r = subprocess.run([str(build / "hermes-supervisor"), "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and "--crash-limit N/SEC" in r.stdout
    r = subprocess.run([str(build / "hermes-supervisor"), "--version"], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.startswith("hermes-supervisor ")


def test_install_service_is_dispatched(build, tmp_path):
    r = subprocess.run([str(build / "hermes-supervisor"), "install-service", "--user",
                        "--dry-run"], capture_output=True, text=True, timeout=10,
                       env=dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=""))
    assert r.returncode == 0, r.stderr
    assert "ExecStart=" in r.stdout and "hermes-supervisor --foreground" in r.stdout


@pytest.mark.parametrize("args,msg", [
    (["--stop-timeout", "x"], "bad value for --stop-timeout"),
    (["--crash-limit", "5"], "bad value for --crash-limit"),
    (["--bogus"], "unknown option: --bogus"),
    (["--watchdog"], "needs a value"),
    (["--"], "must be followed by a worker"),
    (["extra"], "unexpected argument"),
])
def test_bad_command_line_exits_2_with_message(build, args, msg):
    r = subprocess.run([str(build / "hermes-supervisor")] + args, capture_output=True,
                       text=True)
    assert r.returncode == 2 and msg in r.stderr


def test_bad_listen_spec_is_refused(build, tmp_path):
    r = subprocess.run([str(build / "hermes-supervisor"), "--foreground", "--runtime-dir",
                        str(tmp_path / "run"), "--listen", "web=nohost:80", "--", "true"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "not a numeric address" in r.stderr


# --- the runtime directory ------------------------------------------------------

def _sup_with_rundir(build, rundir, prefix=()):
    return subprocess.run(list(prefix) + [str(build / "hermes-supervisor"), "--foreground",
                                          "--runtime-dir", str(rundir), "--", "true"],
                          capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)


def _expect_rundir_error(r, path, frag):
    """A configuration error (78, so systemd does not restart it): one line, path and reason."""
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 78, r.stderr
    assert len(lines) == 1, r.stderr
    assert "runtime directory %s: " % path in lines[0] and frag in lines[0], r.stderr


def test_runtime_dir_with_a_file_in_the_way_exits_78(build, tmp_path):
    (tmp_path / "run").write_text("")
    r = _sup_with_rundir(build, tmp_path / "run")
    _expect_rundir_error(r, tmp_path / "run", "not a directory (a file is in the way)")
    r = _sup_with_rundir(build, tmp_path / "run" / "sub")
    _expect_rundir_error(r, tmp_path / "run" / "sub", "cannot create it: Not a directory")


def test_runtime_dir_on_a_read_only_mount_exits_78(build, tmp_path):
    why = fs_util.mount_ns_unavailable()
    if why:
        pytest.skip(why)
    run = tmp_path / "run"
    run.mkdir()
    ns = fs_util.in_mount_ns([fs_util.ro_tmpfs(run)], [])
    r = _sup_with_rundir(build, run, ns)
    _expect_rundir_error(r, run, "cannot write in it: Read-only file system")
    r = _sup_with_rundir(build, run / "hermes", ns)
    _expect_rundir_error(r, run / "hermes", "cannot create it: Read-only file system")


def test_runtime_dir_without_write_permission_exits_78(build):
    why = fs_util.unprivileged_unavailable()
    if why:
        pytest.skip(why)
    top = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        run = top / "run"
        run.mkdir(mode=0o500)
        fs_util.give_to_unprivileged(top, run)
        r = _sup_with_rundir(build, run, fs_util.as_unprivileged([]))
        _expect_rundir_error(r, run, "cannot write in it: Permission denied")
        r = _sup_with_rundir(build, run / "sub", fs_util.as_unprivileged([]))
        _expect_rundir_error(r, run / "sub", "cannot create it: Permission denied")
    finally:
        shutil.rmtree(top, ignore_errors=True)


# --- status / restart / stop ----------------------------------------------------------

def test_status_restart_stop(sup):
    s = sup("--ready", "--status", "all good")
    s.wait_state("ready")
    r = s.ctl("status")
    assert r.returncode == 0
    lines = dict(l.split(": ", 1) for l in r.stdout.splitlines())
    assert set(lines) >= {"supervisor_pid", "worker_pid", "state", "generation", "uptime",
                          "restarts", "last_exit", "worker_status"}
    assert lines["supervisor_pid"] == str(s.pid)
    assert lines["worker_pid"] == str(s.worker_pid())
    assert lines["state"] == "ready" and lines["generation"] == "0"
    assert lines["worker_status"] == "all good"
    old = s.worker_pid()
    r = s.ctl("restart")
    assert r.returncode == 0, r.stderr
    st = s.state()
    assert st["state"] == "ready" and st["generation"] == "1" and int(st["worker_pid"]) != old
    assert not alive(old)
    r = s.ctl("stop")
    assert r.returncode == 0, r.stderr
    # stop returns when the supervisor's lock is released, which the kernel
    # does as the process exits: it is exiting now, and reaped at once.
    assert s.proc.wait(timeout=2) == 0
    r = s.ctl("status")
    assert r.returncode == 3 and "state: stopped" in r.stdout


def test_control_commands_when_nothing_runs(build, tmp_path):
    for cmd, code in (("status", 3), ("restart", 3), ("stop", 3)):
        r = subprocess.run([str(build / "hermes-supervisor"), cmd, "--runtime-dir",
                            str(tmp_path)], capture_output=True, text=True, timeout=10)
        assert r.returncode == code, (cmd, r.stdout, r.stderr)


# --- single instance ------------------------------------------------------------------

def test_second_supervisor_refuses(sup):
    a = sup("--ready")
    a.wait_state("ready")
    b = sup("--ready", name="sup")              # same runtime dir
    assert b.wait_exit() == 1
    assert "another hermes-supervisor (pid %d) is running" % a.pid in b.logtext()
    assert a.proc.poll() is None and a.state()["state"] == "ready"


def test_replace_takes_over(sup):
    a = sup("--ready")
    a.wait_state("ready")
    old_worker = a.worker_pid()
    b = sup("--ready", sup_args=["--replace"])
    assert a.wait_exit() == 0
    wait_for(lambda: b.state().get("supervisor_pid") == str(b.pid) and
             b.state().get("state") == "ready", what="new supervisor ready")
    assert not alive(old_worker)
    assert b.ctl("status").returncode == 0


def test_replace_takes_over_the_listen_port(sup):
    port = free_port()
    listen = ["--listen", "web=127.0.0.1:%d" % port]
    a = sup("--ready", "--serve", sup_args=listen)
    a.wait_state("ready")
    b = sup("--ready", "--serve", sup_args=listen + ["--replace"])
    assert a.wait_exit() == 0
    wait_for(lambda: b.state().get("supervisor_pid") == str(b.pid) and
             b.state().get("state") == "ready", what="new supervisor ready")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.settimeout(10)
        assert c.recv(100).decode().startswith("gen 0 pid %d " % b.worker_pid())


# --- daemon mode ---------------------------------------------------------------------------

def test_daemon_mode_detaches_with_pidfile_and_log(build, tmp_path):
    run = str(tmp_path / "run")
    pidfile = str(tmp_path / "sup.pid")
    r = subprocess.run([str(build / "hermes-supervisor"), "--runtime-dir", run, "--pidfile",
                        pidfile, "--", fixture_path(build), "--ready"],
                       capture_output=True, text=True, timeout=10)
    pid = read_pid(pidfile)
    try:
        assert r.returncode == 0 and pid > 0 and alive(pid)
        assert os.getsid(pid) == pid                        # its own session
        wait_for(lambda: subprocess.run([str(build / "hermes-supervisor"), "status",
                                         "--runtime-dir", run], capture_output=True,
                                        text=True).stdout.find("state: ready") >= 0)
        log = open(os.path.join(run, "supervisor.log")).read()
        assert "is ready" in log
        assert subprocess.run([str(build / "hermes-supervisor"), "stop", "--runtime-dir",
                               run], timeout=20).returncode == 0
        assert not alive(pid) and not os.path.exists(pidfile)
    finally:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


# --- the worker's environment ----------------------------------------------------------------

def test_worker_gets_clean_fds_signals_and_protocol_env(sup, tmp_path):
    leak = os.open(str(tmp_path / "leak"), os.O_CREAT | os.O_RDWR)   # inheritable

    def pre():
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGWINCH])
    s = sup("--ready", "--env", str(tmp_path / "env"), pass_fds=(leak,), preexec_fn=pre,
            env={"NOTIFY_SOCKET": "", "LISTEN_FDS": "3", "HERMES_GENERATION": "99"})
    os.close(leak)
    s.wait_state("ready")
    env = open(str(tmp_path / "env.0")).read().splitlines()
    fds = sorted(int(l.split()[1]) for l in env if l.startswith("fd "))
    assert fds == [0, 1, 2]
    assert not [l for l in env if l.startswith(("blocked", "ignored"))]
    assert "env HERMES_SUPERVISOR_PID=%d" % s.pid in env
    assert "env HERMES_GENERATION=0" in env
    assert "env NOTIFY_SOCKET=%s" % os.path.join(s.run, "notify") in env
    assert not [l for l in env if l.startswith(("env LISTEN_", "env WATCHDOG_"))]
    pid = s.worker_pid()
    assert "pgid %d" % pid in env               # its own process group


def test_supervisor_started_with_stdin_closed(sup, tmp_path):
    s = sup("--ready", "--env", str(tmp_path / "env"), preexec_fn=lambda: os.close(0))
    s.wait_state("ready")
    env = open(str(tmp_path / "env.0")).read().splitlines()
    assert sorted(int(l.split()[1]) for l in env if l.startswith("fd ")) == [0, 1, 2]
    s.signal(signal.SIGHUP)                 # its own sockets still work
    s.wait_state("ready", generation=1)


def test_default_worker_is_hermes_worker_beside_the_supervisor(build, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(str(build / "hermes-supervisor"), str(bindir))
    shutil.copy(fixture_path(build), str(bindir / "hermes-worker"))
    envf = str(tmp_path / "env")
    cmd = [str(bindir / "hermes-supervisor"), "--foreground", "--runtime-dir",
           str(tmp_path / "run"), "-c", "/etc/gw.json"]
    env = dict(os.environ, SUP_WORKER_OPTS="--ready --env %s" % envf)
    p = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: os.path.exists(envf + ".0"))
        assert "config /etc/gw.json" in open(envf + ".0").read()
        p.terminate()
        assert p.wait(10) == 0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


# --- logging ---------------------------------------------------------------------------------

def test_journal_stream_gives_priority_prefixes(sup):
    """Under journald the supervisor's lines carry a priority and no tag of
    their own (journald tags the stream with the main process); the
    worker's lines on the same stream keep theirs."""
    s = sup("--ready", env={"JOURNAL_STREAM": "8:12345"})
    s.wait_state("ready")
    s.wait_log(r"(?m)^<6>worker \d+ \(generation 0\) is ready$")
    assert "<6>hermes-supervisor[" not in s.logtext()


def test_usr1_reopens_the_log_file_in_daemon_mode(build, tmp_path):
    run = str(tmp_path / "run")
    log = os.path.join(run, "supervisor.log")
    r = subprocess.run([str(build / "hermes-supervisor"), "--runtime-dir", run, "--",
                        fixture_path(build), "--ready"], timeout=10)
    pid = read_pid(os.path.join(run, "supervisor.pid"))
    try:
        assert r.returncode == 0 and alive(pid)
        wait_for(lambda: os.path.exists(log) and "is ready" in open(log).read())
        os.rename(log, log + ".1")                     # what logrotate does
        os.kill(pid, signal.SIGUSR1)
        wait_for(lambda: os.path.exists(log))           # reopened (created) by USR1
        os.kill(pid, signal.SIGHUP)                     # something new to log
        wait_for(lambda: os.path.exists(log) and "generation 1" in open(log).read())
        assert "generation 1" not in open(log + ".1").read()
    finally:
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not alive(pid))
