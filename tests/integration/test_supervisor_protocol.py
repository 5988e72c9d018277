"""hermes-supervisor towards systemd (a fake NOTIFY_SOCKET listener), listen
sockets passed to the worker across generations, and PID 1 duties."""
import os
import re
import select
import signal
import socket
import subprocess
import time

import pytest

from conftest import free_port
from sup_util import SupFactory, alive, read_pid, wait_for


@pytest.fixture
def sup(build, tmp_path):
    f = SupFactory(build, tmp_path)
    yield f
    f.cleanup()


class FakeSystemd:
    """A NOTIFY_SOCKET listener like systemd's: a datagram socket with SO_PASSCRED."""

    def __init__(self, tmp_path, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        if abstract:
            name = "hermes-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.spec = "@" + name
        else:
            self.spec = str(tmp_path / "systemd-notify")
            self.sock.bind(self.spec)
        self.msgs = []          # (sender pid, text)

    def _pump(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        while r:
            data, anc, _, _ = self.sock.recvmsg(8192, socket.CMSG_SPACE(12))
            pid = 0
            for level, typ, d in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS:
                    pid = int.from_bytes(d[0:4], "little")
            self.msgs.append((pid, data.decode()))
            r, _, _ = select.select([self.sock], [], [], 0)

    def wait(self, pattern, timeout=10.0, start=0):
        """Waits for a message matching pattern at index >= start; returns its index."""
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        while True:
            for i in range(start, len(self.msgs)):
                if rx.search(self.msgs[i][1]):
                    return i
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no upstream message %r in %r" % (pattern, self.msgs))
            self._pump(min(left, 0.05))

    def close(self):
        self.sock.close()


# --- upstream sd_notify -----------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True])
def test_upstream_ready_reloading_status_stopping(sup, tmp_path, abstract):
    up = FakeSystemd(tmp_path, abstract)
    try:
        s = sup("--ready", "--status", "console up", "--env", str(tmp_path / "env"),
                env={"NOTIFY_SOCKET": up.spec})
        i = up.wait(r"^READY=1$")
        s.wait_state("ready")
        pid = s.worker_pid()
        assert all(p == s.pid for p, _ in up.msgs)          # sent by the main pid
        up.wait(r"^STATUS=ready: worker %d, generation 0: console up$" % pid)
        env = open(str(tmp_path / "env.0")).read()
        assert "env NOTIFY_SOCKET=%s\n" % os.path.join(s.run, "notify") in env
        s.signal(signal.SIGHUP)
        j = up.wait(r"^RELOADING=1\nMONOTONIC_USEC=\d+$", start=i + 1)
        k = up.wait(r"^READY=1$", start=j + 1)
        s.wait_state("ready", generation=1)
        up.wait(r"^STATUS=ready: worker %d, generation 1: console up$" % s.worker_pid(),
                start=k)
        s.signal(signal.SIGTERM)
        assert s.wait_exit() == 0
        up.wait(r"^STOPPING=1$", start=k + 1)
    finally:
        up.close()


def test_upstream_watchdog_pings_and_is_passed_to_the_worker(sup, tmp_path):
    up = FakeSystemd(tmp_path)
    try:
        s = sup("--ready", "--watchdog", "--env", str(tmp_path / "env"),
                env={"NOTIFY_SOCKET": up.spec, "WATCHDOG_USEC": "200000"})
        i = up.wait(r"^WATCHDOG=1$")
        i = up.wait(r"^WATCHDOG=1$", start=i + 1)
        up.wait(r"^WATCHDOG=1$", start=i + 1)
        s.wait_state("ready")
        env = open(str(tmp_path / "env.0")).read()
        assert "env WATCHDOG_USEC=200000\n" in env
        assert "env WATCHDOG_PID=%d\n" % s.worker_pid() in env
    finally:
        up.close()


def test_upstream_watchdog_for_another_pid_is_ignored(sup, tmp_path):
    up = FakeSystemd(tmp_path)
    try:
        s = sup("--ready", env={"NOTIFY_SOCKET": up.spec, "WATCHDOG_USEC": "100000",
                                "WATCHDOG_PID": "1"})
        up.wait(r"^READY=1$")
        time.sleep(0.4)
        up._pump(0.05)
        assert not [m for _, m in up.msgs if "WATCHDOG" in m]
    finally:
        up.close()


def test_upstream_sees_no_worker_watchdog_when_worker_hangs(sup, tmp_path):
    # The hung worker is killed and replaced; systemd meanwhile never hears from it.
    up = FakeSystemd(tmp_path)
    try:
        s = sup("--ready", "--watchdog", "--stop-pinging-after", "300",
                sup_args=["--watchdog", "0.2"], env={"NOTIFY_SOCKET": up.spec})
        s.wait_starts(2, timeout=15)
        assert all(p == s.pid for p, _ in up.msgs)
        up.wait(r"^RELOADING=1")
    finally:
        up.close()


# --- listen sockets ------------------------------------------------------------------------

def _ask(port, timeout=10.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.settimeout(timeout)
        data = b""
        while not data.endswith(b"\n"):
            chunk = c.recv(100)
            if not chunk:
                break
            data += chunk
        return data.decode()


def test_listen_socket_passed_with_listen_pid_rewritten(sup, tmp_path):
    port = free_port()
    s = sup("--ready", "--serve", "--env", str(tmp_path / "env"),
            sup_args=["--listen", "console=127.0.0.1:%d" % port])
    s.wait_state("ready")
    pid = s.worker_pid()
    assert _ask(port) == "gen 0 pid %d listen_pid %d\n" % (pid, pid)
    env = open(str(tmp_path / "env.0")).read().splitlines()
    assert "env LISTEN_FDS=1" in env and "env LISTEN_FDNAMES=console" in env
    assert sorted(int(l.split()[1]) for l in env if l.startswith("fd ")) == [0, 1, 2, 3]


def test_connection_during_respawn_is_served_by_next_worker(sup):
    port = free_port()
    # Generation 0 never accepts and exits 75 after 400 ms; generation 1 serves.
    s = sup("--ready", "--serve-from-gen", "1", "--exit", "75", "--exit-after", "400",
            "--until-gen", "1", sup_args=["--listen", "web=127.0.0.1:%d" % port])
    s.wait_state("ready", generation=0)
    reply = _ask(port)          # queued in the backlog across the respawn
    assert reply.startswith("gen 1 pid ")
    pid = int(reply.split()[3])
    assert reply == "gen 1 pid %d listen_pid %d\n" % (pid, pid)
    assert [r[2] for r in s.starts()] == [0, 1]


def test_socket_activation_fds_are_passed_through(sup):
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    port = ls.getsockname()[1]

    def pre():
        os.dup2(ls.fileno(), 3)
    wrap = ["sh", "-c", 'export LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=web; exec "$@"', "sh"]
    try:
        s = sup("--ready", "--serve", wrap=wrap, preexec_fn=pre, pass_fds=(3,))
        s.wait_state("ready")
        pid = s.worker_pid()
        assert _ask(port) == "gen 0 pid %d listen_pid %d\n" % (pid, pid)
        assert "took 1 socket(s) from socket activation" in s.logtext()
    finally:
        ls.close()


def test_stale_listen_pid_is_not_taken(sup):
    s = sup("--ready", env={"LISTEN_PID": "1", "LISTEN_FDS": "1"})
    s.wait_state("ready")
    assert "socket activation" not in s.logtext()


# --- PID 1 ------------------------------------------------------------------------------------

def _ns_pids(pid):
    """Host pids of the processes in pid's pid namespace."""
    ns = os.readlink("/proc/%d/ns/pid" % pid)
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink("/proc/%s/ns/pid" % d) == ns:
                    out.append(int(d))
            except OSError:
                pass
    return out


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def test_pid1_reaps_orphans_and_stops_on_term(sup, tmp_path):
    if subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "true"]).returncode:
        pytest.skip("cannot create a pid namespace here")
    g = str(tmp_path / "g")
    s = sup("--ready", "--setsid-grandchild", g, "--exit", "75", "--exit-after", "300",
            "--until-gen", "1", wrap=["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
            own_pids=False)
    s.wait_state("ready", generation=1)
    assert s.state()["supervisor_pid"] == "1"
    sup_host = wait_for(lambda: _children(s.pid) and _children(s.pid)[0])
    # The supervisor, the current worker and its own setsid'd child remain: the
    # orphan of generation 0 was killed and reaped (no zombie either).
    wait_for(lambda: len(_ns_pids(sup_host)) == 3,
             what="namespace down to 3 processes, now %r" % _ns_pids(sup_host))
    os.kill(sup_host, signal.SIGHUP)            # signals still reach PID 1's handlers
    s.wait_state("ready", generation=2)
    os.kill(sup_host, signal.SIGTERM)
    assert s.wait_exit() == 0
    assert "Terminated: stopping" in s.logtext()
