"""The console under the real hermes-supervisor: the supervisor binds the
console's socket (--listen console=...) and passes it in LISTEN_FDS, so a
/restart loses no connection and no message; also the same without
--listen (the worker binds itself)."""
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from conftest import free_port
from console_util import Console, ConsoleError, write_config


class Supervisor:
    def __init__(self, build, tmp, port, listen=True, console=None):
        self.cfg = write_config(tmp, port, console=console)
        self.runtime = tmp / "run"
        self.log_path = tmp / f"sup-{time.monotonic_ns()}.log"
        cmd = [str(build / "hermes-supervisor"), "--foreground", "-c", str(self.cfg),
               "--runtime-dir", str(self.runtime), "--stop-timeout", "20"]
        if listen:
            cmd += ["--listen", f"console=127.0.0.1:{port}"]
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NOTIFY_SOCKET", "LISTEN_", "WATCHDOG_", "HERMES_"))}
        env["HERMES_HOME"] = str(tmp)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self._log.close()


@pytest.fixture
def supervisor(build, tmp_path):
    started = []

    def start(**kw):
        port = free_port()
        s = Supervisor(build, tmp_path, port, **kw)
        started.append(s)
        c = Console(port)
        try:
            st = c.wait_ready(timeout=30)
        except TimeoutError:
            raise AssertionError("not ready; log:\n" + s.log())
        return s, c, st

    yield start
    for s in started:
        s.stop()


def wait_new_worker(c, old_pid, timeout=60):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            st = c.status()
            if st["worker_pid"] != old_pid and any(
                    p["name"] == "console" and p["state"] == "up" for p in st["platforms"]):
                return st
        except (OSError, ConsoleError):
            pass
        time.sleep(0.05)
    raise TimeoutError("no new worker")


@pytest.mark.parametrize("listen", [True, False], ids=["passed-socket", "worker-binds"])
def test_restart_through_console(supervisor, listen):
    s, c, st0 = supervisor(listen=listen)
    assert st0["supervisor_pid"] == s.proc.pid
    before = c.post("before restart", chat_id="r", wait=20)
    r = c.post("/restart", chat_id="r", wait=30)
    assert r["done"] is True
    assert [m["text"] for m in r["replies"]] == ["Restarting the gateway..."]
    st1 = wait_new_worker(c, st0["worker_pid"])
    assert st1["supervisor_pid"] == s.proc.pid
    assert st1["generation"] == st0["generation"] + 1
    notice = c.wait_text("r", "Gateway online", after=r["replies"][0]["id"])
    assert notice["id"] > r["replies"][0]["id"]
    # the log of the previous worker survived, ids keep increasing
    texts = [m["text"] for m in c.messages("r")["messages"]]
    assert texts[:2] == ["before restart", "Restarting the gateway..."]
    assert sum("Gateway online" in t for t in texts) == 1
    after = c.post("after restart", chat_id="r", wait=20)
    assert after["message_id"] > notice["id"] > before["message_id"]
    assert [m["text"] for m in after["replies"]] == ["after restart"]
    time.sleep(1)
    assert sum("Gateway online" in m["text"] for m in c.messages("r")["messages"]) == 1


def test_messages_during_restart_answered_once(supervisor):
    """Messages sent while the worker restarts are answered exactly once:
    queued in the passed socket's backlog, refused with 503 while stopping
    (and retried), or kept unhandled and replayed by the next worker."""
    s, c, st0 = supervisor(listen=True)
    c.post("/restart", chat_id="ops", wait=None)
    sent = []
    errors = []

    def sender(i):
        try:
            r = c.post(f"during {i}", chat_id=f"during-{i}", wait=20, retry=True)
            sent.append((i, r["message_id"]))
        except Exception as e:          # recorded, asserted below
            errors.append(e)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
        time.sleep(0.01)
    for t in threads:
        t.join(60)
    assert not errors, errors
    wait_new_worker(c, st0["worker_pid"])
    for i, mid in sent:
        got = c.wait_messages(f"during-{i}",
                              lambda ms: any(m["reply_to"] == mid for m in ms), timeout=30)
        time.sleep(0.05)
        echoes = [m for m in c.messages(f"during-{i}")["messages"] if m["reply_to"] == mid]
        assert [m["text"] for m in echoes] == [f"during {i}"], got


def test_passed_socket_never_refuses(supervisor):
    """With the socket held by the supervisor, a connect during the restart
    is never refused."""
    s, c, st0 = supervisor(listen=True)
    c.post("/restart", chat_id="ops")
    end = time.monotonic() + 5
    refused = 0
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", c.port), timeout=5).close()
        except ConnectionRefusedError:
            refused += 1
        try:
            if c.status()["worker_pid"] != st0["worker_pid"]:
                break
        except (OSError, ConsoleError):
            pass
    assert refused == 0
    wait_new_worker(c, st0["worker_pid"])
