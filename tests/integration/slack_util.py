"""Helpers for the Slack scenarios: the fake Slack (Web API + Socket Mode) as a child process.

    from slack_util import FakeSlack

    with FakeSlack(tmp_path) as sl:
        ...point the gateway at sl.api_url with sl.ca...
        sl.message(dm=True, text="hi")
        sl.wait_sent(lambda sent: any(s["text"] == "hi" for s in sent))
        sl.fault("disconnect", reason="refresh_requested")

Only the Python standard library is used on this side; the fake itself
(tests/fakes/fake_slack.py) runs under /usr/bin/python3 with aiohttp.
"""
import json
import os
import pathlib
import signal
import subprocess
import time
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_slack.py"


def unescape(text):
    """What Slack shows for a text field: &lt; &gt; &amp; decoded."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def texts(sent, channel=None):
    """The posted texts as Slack shows them, optionally of one channel."""
    return [unescape(s["text"]) for s in sent if channel is None or s["channel"] == channel]


class FakeSlack:
    """The fake Slack server, run as a child process; its control API as methods."""

    def __init__(self, directory):
        self.dir = pathlib.Path(directory) / f"fake-slack-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.proc = None

    def start(self):
        self._err = open(self.dir / "fake.log", "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(FAKE), "--dir", str(self.dir)],
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
            start_new_session=True)
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fake Slack did not start: " +
                               (self.dir / "fake.log").read_text(errors="replace"))
        self.info = json.loads(line)
        for key in ("api_url", "ca", "ctl_port", "bot_token", "app_token", "bot_user",
                    "bot_id", "channels", "user", "port"):
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
        """Injects a user's message (channel | dm, user, text, thread_ts, mention_bot,
        is_bot, subtype); returns {"ts", "channel", "event_ids"}."""
        return self._ctl("POST", "/message", spec)

    def messages(self, specs):
        return self._ctl("POST", "/messages", {"messages": specs})["messages"]

    def sent(self, after=0, wait=0):
        return self._ctl("GET", f"/sent?after={after}&wait={wait}", timeout=wait + 30)

    def all_sent(self):
        return self.sent()["sent"]

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

    def wait_text(self, text, timeout=30.0):
        """Waits for a post showing text; returns it."""
        got = self.wait_sent(lambda ss: text in texts(ss), timeout=timeout)
        return next(s for s in got if unescape(s["text"]) == text)

    def state(self):
        return self._ctl("GET", "/state")

    def stats(self):
        return self.state()["stats"]

    def fault(self, kind, **kw):
        """disconnect(reason, close_after, which) | drop | silent | close(code) |
        ignore_acks(count) | dup(count); returns the links reached."""
        return self._ctl("POST", "/fault", dict(kw, kind=kind))["links"]

    def web_fault(self, kind, method="*", count=1, **kw):
        """429(retry_after) | 500 | 502 | 503 | error(error) | drop | drop_after for the
        next count calls of method."""
        return self._ctl("POST", "/web_fault", dict(kw, kind=kind, method=method, count=count))

    def clear_faults(self):
        return self._ctl("POST", "/clear_faults", {})

    def revoke(self, which="bot"):
        return self._ctl("POST", "/revoke", {"which": which})

    def configure(self, **kw):
        return self._ctl("POST", "/config", kw)

    def reset(self):
        return self._ctl("POST", "/reset", {})
