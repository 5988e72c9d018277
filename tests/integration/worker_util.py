"""Helpers for the worker core's integration tests.

`Gateway` runs the real hermes-supervisor with the real hermes-worker (the
supervisor finds the worker beside itself and passes it `--config`), in a
temp HERMES_HOME with its own runtime dir, and kills everything it started
on cleanup.  `NotifyListener` is a datagram socket standing in for
$NOTIFY_SOCKET.  `HangingAgent` is an OpenAI-compatible endpoint that
accepts requests and never answers: an agent call that blocks.
"""
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time

from console_util import Console, write_config  # noqa: F401  (re-exported)

SCRUB = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
         "LISTEN_FDNAMES", "LISTEN_PID", "HERMES_SUPERVISOR_PID",
         "HERMES_GENERATION", "HERMES_CONSOLE_TOKEN", "CREDENTIALS_DIRECTORY",
         "GATEWAY_ALLOWED_USERS", "GATEWAY_ALLOW_ALL_USERS", "JOURNAL_STREAM",
         "CONSOLE_ALLOWED_USERS", "CONSOLE_HOME_CHANNEL", "TELEGRAM_BOT_TOKEN")


def clean_env(home, extra=None):
    env = {k: v for k, v in os.environ.items() if k not in SCRUB}
    env["HERMES_HOME"] = str(home)
    env.update(extra or {})
    return env


def wait_for(cond, timeout=20.0, interval=0.02, what="condition"):
    """Polls cond() until it returns a true value; returns it or fails."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def run_worker(build, args, home, env=None, timeout=20):
    """Runs hermes-worker to completion; returns CompletedProcess (text)."""
    return subprocess.run([str(pathlib.Path(build) / "hermes-worker")] + list(args),
                          env=clean_env(home, env), capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


class Gateway:
    """The supervisor and its worker, as a user runs them."""

    def __init__(self, build, home, config, sup_args=(), env=None, name="gw"):
        self.build = pathlib.Path(build)
        self.home = pathlib.Path(home)
        self.run = self.home / (name + "-run")
        self.log_path = self.home / (name + ".log")
        self.workers = set()
        args = [str(self.build / "hermes-supervisor"), "--foreground",
                "--runtime-dir", str(self.run), "-c", str(config)] + list(sup_args)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=clean_env(home, env), stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid

    def log(self):
        return self.log_path.read_text(errors="replace")

    def status(self):
        """`hermes-supervisor status` as a dict (empty when not running)."""
        r = subprocess.run([str(self.build / "hermes-supervisor"), "status",
                            "--runtime-dir", str(self.run)],
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return {}
        st = dict(l.split(": ", 1) for l in r.stdout.splitlines() if ": " in l)
        if st.get("worker_pid", "").isdigit() and int(st["worker_pid"]) > 0:
            self.workers.add(int(st["worker_pid"]))
        return st

    def ctl(self, *cmd, timeout=60):
        """`hermes-supervisor CMD --runtime-dir ...` (restart, stop, status)."""
        return subprocess.run([str(self.build / "hermes-supervisor")] + list(cmd) +
                              ["--runtime-dir", str(self.run)], capture_output=True,
                              text=True, timeout=timeout)

    def wait_ready(self, generation=None, timeout=20.0):
        """Waits until the supervisor reports a ready worker (of that generation)."""
        def ok():
            st = self.status()
            if st.get("state") != "ready":
                return None
            if generation is not None and st.get("generation") != str(generation):
                return None
            return st
        return wait_for(ok, timeout, what="gateway ready (gen %r); log:\n%s" % (
            generation, self.log()))

    def stop(self, timeout=30.0):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.cleanup()

    def cleanup(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for pid in self.workers:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


class NotifyListener:
    """A datagram socket standing in for $NOTIFY_SOCKET."""

    def __init__(self, directory):
        self.path = str(pathlib.Path(directory) / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.msgs = []

    def drain(self, timeout=0.0):
        self.sock.settimeout(timeout if timeout > 0 else 0.0001)
        try:
            while True:
                self.msgs.append(self.sock.recv(65536).decode())
                self.sock.settimeout(0.0001)
        except (BlockingIOError, socket.timeout):
            pass
        return self.msgs

    def wait(self, pred, timeout=20.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.drain(0.05)
            if any(pred(m) for m in self.msgs):
                return self.msgs
        raise AssertionError("notify message not seen; got %r" % self.msgs)

    def close(self):
        self.sock.close()


class HangingAgent:
    """An HTTP endpoint that reads requests and never answers them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.requests = 0
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.closed:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)
            self.requests += 1

    def config(self):
        return {"backend": "openai", "base_url": "http://127.0.0.1:%d/v1" % self.port,
                "model": "slow", "timeout": 300, "stream": False}

    def close(self):
        self.closed = True
        self.sock.close()
        for c in self.conns:
            c.close()
