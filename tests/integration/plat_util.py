"""Helpers every platform's scenarios share: a platform's entry in /v1/status,
waiting for its state, for a worker generation, a supervised gateway."""
import time

from conftest import free_port
from console_util import Console
from tg_util import SupervisorProc


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
