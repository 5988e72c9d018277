"""Helpers every platform's scenarios share: a platform's entry in /v1/status,
waiting for its state, for a worker generation, a supervised gateway, a fake
server run as a child process, a config pointing at a fake, workers started
directly."""
import json
import os
import pathlib
import signal
import subprocess
import time
import urllib.request

from conftest import free_port
from console_util import Console, WorkerProc, write_config
from tg_util import SupervisorProc, dump_logs


def platform(status, name):
    """The entry of platform name in a /v1/status answer."""
    return next(p for p in status["platforms"] if p["name"] == name)


def wait_platform_state(con, name, state, detail=None, timeout=30.0):
    """Polls /v1/status until platform name is in state (its detail containing detail)."""
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        try:
            p = platform(con.status(), name)
        except Exception:
            time.sleep(0.05)
            continue
        if not seen or seen[-1] != (p["state"], p.get("detail")):
            seen.append((p["state"], p.get("detail")))
        if p["state"] == state and (detail is None or detail in (p.get("detail") or "")):
            return p
        time.sleep(0.03)
    raise TimeoutError(f"{name} never reached {state!r} ({detail!r}); states seen: {seen}")


def wait_generation(con, name, gen, timeout=30.0):
    """Waits until worker generation gen runs with platform name up."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            st = con.status()
            if st["generation"] == gen and platform(st, name)["state"] == "up":
                return st
        except Exception:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"generation {gen} never came up")


def start_supervised(build, home, name, make_config):
    """The supervisor on make_config(console_port); returns (supervisor, console)
    once platform name is up."""
    port = free_port()
    sup = SupervisorProc(build, make_config(port), home).start()
    con = Console(port)
    con.wait_ready()
    wait_platform_state(con, name, "up")
    return sup, con


class FakeProcess:
    """A fake server run as a child process under /usr/bin/python3.  It prints one
    JSON line (ports, urls, ca, ctl_port) once ready; that line is self.info.
    Subclasses add their control API on top of _ctl()."""

    def __init__(self, directory, script, args, prefix="fake"):
        self.dir = pathlib.Path(directory) / f"{prefix}-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.script, self.args, self.proc = script, list(args), None

    def start(self):
        self._err = open(self.dir / "fake.log", "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(self.script), "--dir", str(self.dir)] + self.args,
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
            start_new_session=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.script.name} did not start: " + self.log())
        self.info = json.loads(line)
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self._err.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        return (self.dir / "fake.log").read_text(errors="replace")

    def _ctl(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.info['ctl_port']}{path}",
                                     data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def wait_sent(self, pred, timeout=30.0):
        """Waits until pred(all the bot sent) is true and returns it, for a subclass
        whose sent(after=N, wait=S) answers {"sent": [...]} (a long poll)."""
        end = time.monotonic() + timeout
        while True:
            got = self.sent()["sent"]
            if pred(got):
                return got
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; sent so far: {got[-20:]!r}")
            self.sent(after=len(got), wait=min(2.0, left))
def platform_config(directory, port, name, section, ca, extra=None):
    """A config with the console on port (to read /v1/status), platforms[name] = section
    (keys holding None left out) and the fake's CA trusted; extra: more top-level keys."""
    more = {"tls": {"ca_file": ca}, "drain_timeout": 5}
    more.update(extra or {})
    path = write_config(directory, port, extra=more)
    conf = json.loads(path.read_text())
    conf["platforms"][name] = {k: v for k, v in section.items() if v is not None}
    path.write_text(json.dumps(conf, indent=2))
    return path


class Workers:
    """Workers started directly (no supervisor) on make_config(port, section); close()
    prints their logs and stops them."""

    def __init__(self, build, home, name, make_config):
        self.build, self.home, self.name, self.make_config = build, home, name, make_config
        self.procs = []

    def start(self, section=None, wait_up=True, env=None):
        """A worker with the platform's section changed by section; returns (worker,
        console), once the platform is up unless wait_up is false."""
        port = free_port()
        w = WorkerProc(self.build, self.make_config(port, section), home=self.home,
                       env=env).start()
        self.procs.append(w)
        con = Console(port)
        con.wait_ready()
        if wait_up:
            wait_platform_state(con, self.name, "up")
        return w, con

    def close(self):
        dump_logs(*self.procs)
        for p in self.procs:
            p.stop()
