"""Helpers for the Weixin scenarios: the fake iLink server as a child process.

    from weixin_util import FakeWeixin

    with FakeWeixin(tmp_path, hold=5) as wx:
        ...point the gateway at wx.api_url with wx.ca, account wx.account...
        wx.message(frm=USER, text="hi")
        wx.wait_sent(lambda sent: any(s["text"] == "hi" for s in sent))
        wx.fault("ret", ret=-14, errcode=-14, count=-1)

Only the Python standard library is used on this side; the fake itself
(tests/fakes/fake_weixin.py) runs under /usr/bin/python3 with aiohttp.
"""
import pathlib
import time
import urllib.parse

from plat_util import FakeProcess

ROOT = pathlib.Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "fakes" / "fake_weixin.py"
TOKEN = "f3a9c2e1b0d4:hermes-test-bot-token"


class FakeWeixin(FakeProcess):
    """The fake iLink server, run as a child process; its control API as methods."""

    def __init__(self, directory, token=TOKEN, hold=35.0):
        super().__init__(directory, FAKE, ["--token", token, "--hold", str(hold)],
                         prefix="fake-weixin")
        self.token = token

    def start(self):
        super().start()
        for key in ("api_url", "redirect_host", "ca", "ctl_port", "account", "owner",
                    "verify_code"):
            setattr(self, key, self.info[key])
        return self

    def message(self, frm=None, text="", **spec):
        """A user's message (group_id, voice, items, message_type, message_state,
        message_id); returns {"message_id", "context_token"}."""
        spec.update({"from": frm, "text": text} if frm is not None else {"text": text})
        return self._ctl("POST", "/message", spec)

    def messages(self, specs):
        return self._ctl("POST", "/messages", {"messages": specs})["messages"]

    def sent(self, after=0, wait=0, to=None):
        q = f"/sent?after={after}&wait={wait}"
        if to is not None:
            q += f"&to={urllib.parse.quote(to)}"
        return self._ctl("GET", q, timeout=wait + 30)

    def all_sent(self, to=None):
        return self.sent(to=to)["sent"]

    def state(self):
        return self._ctl("GET", "/state")

    def stats(self):
        return self.state()["stats"]

    def wait_stat(self, name, at_least, timeout=30.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.stats()[name] >= at_least:
                return
            time.sleep(0.02)
        raise TimeoutError(f"stat {name} never reached {at_least}: {self.stats()}")

    def fault(self, kind, route="getupdates", count=1, **kw):
        """ret(ret, errcode, errmsg) | empty_now | slow(delay) | not_json | http(status) |
        stall_batch | hold_next_poll, for the next count calls of route (-1: until cleared)."""
        return self._ctl("POST", "/fault", dict(kw, kind=kind, route=route, count=count))

    def clear_faults(self):
        return self._ctl("POST", "/clear_faults", {})

    def release(self):
        return self._ctl("POST", "/release", {})

    def expire_session(self):
        return self._ctl("POST", "/expire_session", {})

    def revive(self):
        return self._ctl("POST", "/revive", {})

    def rotate_token(self, chat):
        return self._ctl("POST", "/rotate_token", {"chat": chat})["context_token"]

    def cursor(self, pos):
        return self._ctl("POST", "/cursor", {"pos": pos})["cursor"]

    def configure(self, **kw):
        return self._ctl("POST", "/config", kw)

    def qr_script(self, steps):
        return self._ctl("POST", "/qr_script", {"steps": steps})

    def reset(self):
        return self._ctl("POST", "/reset", {})
