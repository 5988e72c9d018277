"""Helpers for the Home Assistant scenarios: the fake Home Assistant as a child process.

    from homeassistant_util import FakeHA, ha_config

    with FakeHA(tmp_path) as ha:
        ...point the gateway at ha.https_url with ha.ca (or ha.http_url)...
        ha.set_state("light.kitchen", "on")
        ha.wait_calls(lambda calls: ...)
        ha.fault("drop")

Only the Python standard library is used on this side; the fake itself
(tests/fakes/fake_homeassistant.py) runs under /usr/bin/python3 with aiohttp.
"""
import json
import pathlib
import time

from console_util import write_config
from plat_util import FakeProcess

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_homeassistant.py"
TOKEN = "fake-ha-long-lived-token.hermes-test-0123456789"


class FakeHA(FakeProcess):
    """The fake Home Assistant, run as a child process; its control API as methods."""

    def __init__(self, directory, token=TOKEN):
        super().__init__(directory, FAKE, ["--token", token], prefix="fake-ha")
        self.token = token

    def start(self):
        super().start()
        for key in ("http_url", "https_url", "ca", "ctl_port"):
            setattr(self, key, self.info[key])
        return self

    # -- control API -------------------------------------------------------
    def seed(self, states):
        """Sets states without firing events: [(entity_id, state[, attributes])]."""
        return self._ctl("POST", "/seed", {"states": [self._spec(*s) for s in states]})

    @staticmethod
    def _spec(entity_id, state, attributes=None):
        spec = {"entity_id": entity_id, "state": state}
        if attributes is not None:
            spec["attributes"] = attributes
        return spec

    def set_state(self, entity_id, state, attributes=None):
        """Sets a state as an integration would; fires state_changed when it changed."""
        return self._ctl("POST", "/set_state", self._spec(entity_id, state, attributes))

    def set_states(self, states):
        return self._ctl("POST", "/set_states",
                         {"states": [self._spec(*s) for s in states]})["results"]

    def remove(self, entity_id):
        return self._ctl("POST", "/remove", {"entity_id": entity_id})

    def event(self, data):
        return self._ctl("POST", "/event", {"data": data})

    def calls(self, after=0, wait=0):
        return self._ctl("GET", f"/calls?after={after}&wait={wait}", timeout=wait + 30)

    def all_calls(self):
        return self.calls()["calls"]

    def wait_calls(self, pred, timeout=30.0):
        """Waits until pred(every REST service call so far) is true; returns them."""
        end = time.monotonic() + timeout
        while True:
            got = self.all_calls()
            if pred(got):
                return got
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; calls so far: {got[-10:]!r}")
            self.calls(after=len(got), wait=min(2.0, left))

    def visible(self):
        return self._ctl("GET", "/visible")

    def state(self):
        return self._ctl("GET", "/state")

    def stats(self):
        return self.state()["stats"]

    def wait_stat(self, key, at_least, timeout=30.0):
        end = time.monotonic() + timeout
        while self.stats().get(key, 0) < at_least:
            if time.monotonic() > end:
                raise TimeoutError(f"{key} never reached {at_least}: {self.stats()}")
            time.sleep(0.05)

    def wait_subscribed(self, n=1, timeout=30.0):
        end = time.monotonic() + timeout
        while self.state()["subscribed"] != n:
            if time.monotonic() > end:
                raise TimeoutError(f"subscribed never {n}: {self.state()}")
            time.sleep(0.02)

    def fault(self, kind, **kw):
        """auth_invalid | close_after_auth (count) | drop | close (code) | slow_consumer |
        no_pong (on) | rest (status, count, service)."""
        return self._ctl("POST", "/fault", dict(kw, kind=kind))["connections"]

    def configure(self, **kw):
        return self._ctl("POST", "/config", kw)

    def release(self):
        return self._ctl("POST", "/release", {})

    def reset(self):
        return self._ctl("POST", "/reset", {})


def messages(calls, service="persistent_notification.create"):
    """The message of every call of service."""
    return [c["body"]["message"] for c in calls if c["service"] == service]


def ha_config(directory, port, fake, ha=None, tls=True, extra=None):
    """A config with the console (for /v1/status and /restart) and Home Assistant
    against the fake, watching everything with no cooldown unless ha says otherwise."""
    sec = {"enabled": True, "token": fake.token,
           "url": fake.https_url if tls else fake.http_url,
           "watch_all": True, "cooldown": 0}
    sec.update(ha or {})
    more = {"tls": {"ca_file": fake.ca}, "drain_timeout": 5}
    more.update(extra or {})
    path = write_config(directory, port, extra=more)
    conf = json.loads(path.read_text())
    conf["platforms"]["homeassistant"] = {k: v for k, v in sec.items() if v is not None}
    path.write_text(json.dumps(conf, indent=2))
    return path
