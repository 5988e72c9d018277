"""Helpers for the Feishu scenarios: the fake Feishu (open API + long connection) as a
child process, its control API as methods.

    with FakeFeishu(tmp_path, ping_interval=2) as fs:
        ...point the gateway at fs.domain with fs.ca...
        fs.message(text="hi")
        fs.wait_sent(lambda sent: any(s["text"] == "hi" for s in sent))
        fs.fault("drop")
"""
import json
import pathlib
import subprocess
import time

from discord_util import FakeDiscord

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_feishu.py"


class FakeFeishu(FakeDiscord):
    """The fake Feishu server; stop, log, sent, wait_sent and state as for FakeDiscord."""

    def __init__(self, directory, ping_interval=120, ack_timeout=3.0):
        self.dir = pathlib.Path(directory) / f"fake-feishu-{time.monotonic_ns()}"
        self.dir.mkdir(parents=True)
        self.args = ["--ping-interval", str(ping_interval), "--ack-timeout", str(ack_timeout)]
        self.proc = None

    def start(self):
        self._err = open(self.dir / "fake.log", "wb")
        self.proc = subprocess.Popen(
            ["/usr/bin/python3", str(FAKE), "--dir", str(self.dir)] + self.args,
            stdout=subprocess.PIPE, stderr=self._err, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=str(FAKE.parent))
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("fake Feishu did not start: " +
                               (self.dir / "fake.log").read_text(errors="replace"))
        self.info = json.loads(line)
        for key in ("domain", "ws_url", "ca", "ctl_port", "app_id", "app_secret",
                    "bot_open_id", "groups", "user_id"):
            setattr(self, key, self.info[key])
        return self

    def message(self, **spec):
        """Injects a user's message (chat_id | user_id for p2p, text, mention_bot, mention,
        thread, sender_type, message_type, drop_acks); returns {event_id, message_id, chat_id}."""
        return self._ctl("POST", "/message", spec)

    def messages(self, specs):
        return self._ctl("POST", "/messages", {"messages": specs})["messages"]

    def sent(self, after=0, wait=0, chat_id=None):
        q = f"/sent?after={after}&wait={wait}"
        if chat_id is not None:
            q += f"&chat_id={chat_id}"
        return self._ctl("GET", q, timeout=wait + 30)

    def all_sent(self, chat_id=None):
        return self.sent(chat_id=chat_id)["sent"]

    def fault(self, kind, **kw):
        """drop | close(code) | mute | dup_push(count) |
        missing_fragment(count) | endpoint(code, http, count) | handshake(status,
        autherrcode, count) | rest(route, code, http, headers, count, drop_after) |
        revoke_tokens."""
        return self._ctl("POST", "/fault", dict(kw, kind=kind))

    def recall(self, message_id):
        return self._ctl("POST", "/recall", {"message_id": message_id})

    def events(self):
        return self.state()["events"]
