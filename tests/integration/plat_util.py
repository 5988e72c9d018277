"""Helpers every platform's scenarios share: a platform's entry in /v1/status,
waiting for its state, for a worker generation, a supervised gateway, a config
pointing at a fake, workers started directly."""
import json
import time

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
