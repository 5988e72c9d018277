"""Helpers for the Telegram scenarios: the fake Bot API, configs, a supervisor.

    from tg_util import FakeTelegram, tg_config, SupervisorProc
    from tg_util import fake_server, fake, gw   # the fixtures, for a test module

    with FakeTelegram(tmp_path) as tg:
        cfg = tg_config(tmp_path, console_port, tg)
        ...
        tg.message(chat_id=5, user_id=5, text="hi")
        tg.wait_sent(lambda s: ...)

Only the Python standard library is used on this side; the fake itself
(tests/fakes/fake_telegram.py) runs under /usr/bin/python3 with aiohttp.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from conftest import free_port
from console_util import Console, WorkerProc, write_config, _SCRUB

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_telegram.py"
TOKEN = "123456:TEST-token_abcdefghijklmnopqrstuvwxyz"
BOT_ID = 7000001
BOT_USERNAME = "hermes_test_bot"


class FakeTelegram:
    """The fake Bot API server, run as a child process."""

    def __init__(self, directory, token=TOKEN):
        self.dir = pathlib.Path(directory) / f"fake-tg-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.token = token
        self.proc = None

    def start(self):
        self._err = open(self.dir / "fake.log", "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(FAKE), "--dir", str(self.dir), "--token", self.token],
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
            start_new_session=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fake Telegram did not start: " +
                               (self.dir / "fake.log").read_text(errors="replace"))
        info = json.loads(line)
        self.port = info["port"]
        self.ctl_port = info["ctl_port"]
        self.ca = info["ca"]
        self.api_url = f"https://127.0.0.1:{self.port}"
        return self

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc is not None:
            self.proc.stdout.close()
            self._err.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- control API -------------------------------------------------------
    def _ctl(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.ctl_port}{path}", data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def message(self, **spec):
        """Injects one message (see the fake's build_message); returns its ids."""
        return self._ctl("POST", "/message", spec)

    def messages(self, specs):
        return self._ctl("POST", "/messages", {"messages": specs})["updates"]

    def update(self, raw):
        return self._ctl("POST", "/update", raw)["update_id"]

    def sent(self, after=0, wait=0, chat_id=None):
        q = f"/sent?after={after}&wait={wait}"
        if chat_id is not None:
            q += f"&chat_id={chat_id}"
        return self._ctl("GET", q, timeout=wait + 30)

    def all_sent(self):
        return self.sent()["sent"]

    def wait_sent(self, pred, timeout=30.0):
        """Waits until pred(all messages sent so far) is true; returns them."""
        end = time.monotonic() + timeout
        while True:
            got = self.all_sent()
            if pred(got):
                return got
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; sent so far: {got[-20:]!r}")
            self.sent(after=len(got), wait=min(2.0, left))

    def wait_text(self, text, chat_id=None, timeout=30.0):
        """Waits for a sent message with exactly this text; returns it."""
        def match(s):
            return s["text"] == text and (chat_id is None or s["chat_id"] == chat_id)
        got = self.wait_sent(lambda ss: any(match(s) for s in ss), timeout=timeout)
        return next(s for s in got if match(s))

    def fault(self, kind, method="getUpdates", count=1, **kw):
        body = {"kind": kind, "method": method, "count": count}
        body.update(kw)
        return self._ctl("POST", "/fault", body)

    def clear_faults(self):
        return self._ctl("POST", "/clear_faults", {})

    def configure(self, **kw):
        return self._ctl("POST", "/config", kw)

    def reset(self):
        return self._ctl("POST", "/reset", {})

    def state(self):
        return self._ctl("GET", "/state")

    def wait_confirmed(self, timeout=30.0):
        """Waits until Telegram holds no unconfirmed update."""
        end = time.monotonic() + timeout
        while self.state()["unconfirmed"]:
            if time.monotonic() > end:
                raise TimeoutError(f"still unconfirmed: {self.state()['unconfirmed']}")
            time.sleep(0.05)


def tg_config(directory, console_port, fake, telegram=None, console=None, agent=None,
              extra=None):
    """A config with the console (for /v1/status) and Telegram against the fake."""
    tg = {"enabled": True, "token": fake.token, "api_url": fake.api_url,
          "poll_timeout": 1, "allowed_users": ["*"], "admins": ["1001"],
          "rate_chat": 1000, "rate_global": 10000, "retry_max": 1}
    tg.update(telegram or {})
    for k in [k for k, v in tg.items() if v is None]:
        del tg[k]
    more = {"tls": {"ca_file": fake.ca}, "drain_timeout": 5}
    more.update(extra or {})
    path = write_config(directory, console_port, console=console, agent=agent, extra=more)
    conf = json.loads(path.read_text())
    conf["platforms"]["telegram"] = tg
    path.write_text(json.dumps(conf, indent=2))
    return path


def tg_platform(status):
    """The telegram entry of a /v1/status answer."""
    return next(p for p in status["platforms"] if p["name"] == "telegram")


def wait_tg_state(con, state, detail=None, timeout=30.0):
    """Polls /v1/status until telegram is in state (and detail contains detail)."""
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        try:
            p = tg_platform(con.status())
        except (OSError, StopIteration, Exception):
            time.sleep(0.05)
            continue
        if not seen or seen[-1] != (p["state"], p.get("detail")):
            seen.append((p["state"], p.get("detail")))
        if p["state"] == state and (detail is None or detail in (p.get("detail") or "")):
            return p
        time.sleep(0.03)
    raise TimeoutError(f"telegram never reached {state!r} ({detail!r}); states seen: {seen}")


class SupervisorProc:
    """hermes-supervisor in the foreground with its own runtime dir, logging to a file."""

    def __init__(self, build, config, home, extra_args=None):
        self.build = pathlib.Path(build)
        self.config = config
        self.home = pathlib.Path(home)
        self.runtime = self.home / f"run-{time.monotonic_ns()}"
        self.runtime.mkdir()
        self.args = extra_args or []
        self.log_path = self.home / f"supervisor-{time.monotonic_ns()}.log"
        self.proc = None

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env["HERMES_HOME"] = str(self.home)
        self._log = open(self.log_path, "wb")
        cmd = [str(self.build / "hermes-supervisor"), "--foreground",
               "--runtime-dir", str(self.runtime), "--config", str(self.config)] + self.args
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def status(self):
        r = subprocess.run([str(self.build / "hermes-supervisor"), "status",
                            "--runtime-dir", str(self.runtime)],
                           capture_output=True, text=True, timeout=10)
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition(":")
            out[k.strip()] = v.strip()
        return out

    def log(self):
        return self.log_path.read_text(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc is None:
            return
        worker = None
        try:
            worker = int(self.status().get("worker_pid", "0") or 0)
        except (ValueError, OSError, subprocess.SubprocessError):
            pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        for pid in (self.proc.pid, worker):
            if pid:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def dump_logs(*procs):
    """Prints the logs of processes (for a failing test's output)."""
    for p in procs:
        try:
            sys.stdout.write(f"---- {p.log_path}\n{p.log()[-6000:]}\n")
        except Exception:
            pass


# ---- fixtures a test module imports ----------------------------------------------

@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    """One fake Bot API per test module."""
    with FakeTelegram(tmp_path_factory.mktemp("fake")) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    """The module's fake, reset to its initial state for each test."""
    fake_server.reset()
    yield fake_server


@pytest.fixture
def gw(build, tmp_path, fake):
    """start(telegram={...}, env=..., wait_up=True, agent=...) -> (worker, console);
    every worker started shares tmp_path (and so its state dir) and is stopped at the end."""
    procs = []

    def start(telegram=None, env=None, wait_up=True, **kw):
        port = free_port()
        cfg = tg_config(tmp_path, port, fake, telegram=telegram, **kw)
        w = WorkerProc(build, cfg, home=tmp_path, env=env).start()
        procs.append(w)
        con = Console(port)
        con.wait_ready(alive=w.alive)
        if wait_up:
            wait_tg_state(con, "up")
        return w, con
    yield start
    dump_logs(*procs)
    for p in procs:
        p.stop()
