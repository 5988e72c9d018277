"""Helpers for the QQ Bot scenarios: the fake QQ (token, OpenAPI, gateway) as a child process.

    from qqbot_util import FakeQQ

    with FakeQQ(tmp_path, heartbeat_interval=2000) as qq:
        ...point the gateway at qq.api_url and qq.token_url with qq.ca...
        qq.message(kind="c2c", user="ABC", content="hi")
        qq.wait_sent(lambda sent: any(s["content"] == "hi" for s in sent))
        qq.gateway_fault("drop")

Only the Python standard library is used on this side; the fake itself
(tests/fakes/fake_qqbot.py) runs under /usr/bin/python3 with aiohttp.
"""
import json
import os
import pathlib
import signal
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_qqbot.py"

# Intents (botpy flags.py).
DIRECT_MESSAGE, GROUP_AND_C2C, PUBLIC_GUILD_MESSAGES = 1 << 12, 1 << 25, 1 << 30


class FakeQQ:
    """The fake QQ Bot platform, run as a child process; its control API as methods."""

    def __init__(self, directory, heartbeat_interval=45000, resume_timeout=180):
        self.dir = pathlib.Path(directory) / f"fake-qqbot-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.args = ["--heartbeat-interval", str(heartbeat_interval),
                     "--resume-timeout", str(resume_timeout)]
        self.proc = None

    def start(self):
        self._err = open(self.dir / "fake.log", "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(FAKE), "--dir", str(self.dir)] + self.args,
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
            start_new_session=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fake QQ did not start: " +
                               (self.dir / "fake.log").read_text(errors="replace"))
        self.info = json.loads(line)
        for key in ("api_url", "token_url", "gateway_url", "ca", "ctl_port", "app_id",
                    "client_secret", "bot_id", "guild_id", "channel_id"):
            setattr(self, key, self.info[key])
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

    # -- control API -------------------------------------------------------
    def _ctl(self, method, path, body=None, timeout=30):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"http://127.0.0.1:{self.ctl_port}{path}", data=data,
                                     method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.loads(r.read())

    def message(self, **spec):
        """Injects a user's message (kind c2c | group | guild | dm, user, group, channel,
        guild, content, age, is_bot, username); returns {"id", "chat"}."""
        return self._ctl("POST", "/message", spec)

    def messages(self, specs):
        return self._ctl("POST", "/messages", {"messages": specs})["messages"]

    def sent(self, after=0, wait=0, chat=None):
        q = f"/sent?after={after}&wait={wait}"
        if chat is not None:
            q += "&chat=" + urllib.request.quote(chat)
        return self._ctl("GET", q, timeout=wait + 30)

    def all_sent(self, chat=None):
        return self.sent(chat=chat)["sent"]

    def wait_sent(self, pred, timeout=30.0):
        """Waits until pred(every message the bot posted) is true; returns them."""
        end = time.monotonic() + timeout
        while True:
            got = self.all_sent()
            if pred(got):
                return got
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"condition not met; posted so far: {got[-20:]!r}")
            self.sent(after=len(got), wait=min(2.0, left))

    def state(self):
        return self._ctl("GET", "/state")

    def stats(self):
        return self.state()["stats"]

    def gateway_fault(self, kind, **kw):
        """reconnect | invalid_session(resumable) | close(code, invalidate) | drop |
        stop_acks | resume_acks | duplicate(count); returns connections reached."""
        return self._ctl("POST", "/gateway_fault", dict(kw, kind=kind))["connections"]

    def rest_fault(self, kind, route="*", count=1, **kw):
        """429 | 500 | 502 | 503 | 304018 | slow(delay) | drop | drop_after, for the next
        count calls of route ("POST /token", "GET /gateway", "POST /v2/users/{id}/messages")."""
        return self._ctl("POST", "/rest_fault", dict(kw, kind=kind, route=route, count=count))

    def clear_faults(self):
        return self._ctl("POST", "/clear_faults", {})

    def revoke_token(self):
        return self._ctl("POST", "/revoke_token", {})

    def configure(self, **kw):
        return self._ctl("POST", "/config", kw)

    def reset(self):
        return self._ctl("POST", "/reset", {})
