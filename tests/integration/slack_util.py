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
import pathlib
import subprocess
import time

from discord_util import FakeDiscord

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_slack.py"


def unescape(text):
    """What Slack shows for a text field: &lt; &gt; &amp; decoded."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def texts(sent, channel=None):
    """The posted texts as Slack shows them, optionally of one channel."""
    return [unescape(s["text"]) for s in sent if channel is None or s["channel"] == channel]


class FakeSlack(FakeDiscord):
    """The fake Slack server, run as a child process; its control API as methods
    (the process handling and /sent long poll are the fake Discord's)."""

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
            raise RuntimeError("fake Slack did not start: " + self.log())
        self.info = json.loads(line)
        for key in ("api_url", "ca", "ctl_port", "bot_token", "app_token", "bot_user",
                    "bot_id", "channels", "user", "port"):
            setattr(self, key, self.info[key])
        return self

    def message(self, **spec):
        """Injects a user's message (channel | dm, user, text, thread_ts, mention_bot,
        is_bot, subtype); returns {"ts", "channel", "event_ids"}."""
        return self._ctl("POST", "/message", spec)

    def sent(self, after=0, wait=0, channel_id=None):
        assert channel_id is None, "the fake Slack's /sent has no channel filter"
        return self._ctl("GET", f"/sent?after={after}&wait={wait}", timeout=wait + 30)

    def wait_text(self, text, timeout=30.0):
        """Waits for a post showing text; returns it."""
        got = self.wait_sent(lambda ss: text in texts(ss), timeout=timeout)
        return next(s for s in got if unescape(s["text"]) == text)

    def fault(self, kind, **kw):
        """disconnect(reason, close_after, which) | drop | silent | close(code) |
        ignore_acks(count) | dup(count); returns the links reached."""
        return self._ctl("POST", "/fault", dict(kw, kind=kind))["links"]

    def web_fault(self, kind, method="*", count=1, **kw):
        """429(retry_after) | 500 | 502 | 503 | error(error) | drop | drop_after for the
        next count calls of method."""
        return self._ctl("POST", "/web_fault", dict(kw, kind=kind, method=method, count=count))

    def revoke(self, which="bot"):
        return self._ctl("POST", "/revoke", {"which": which})
