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
import pathlib

from discord_util import FakeDiscord
from plat_util import FakeProcess

FAKE = pathlib.Path(__file__).resolve().parents[1] / "fakes" / "fake_qqbot.py"

# Intents (botpy flags.py).
DIRECT_MESSAGE, GROUP_AND_C2C, PUBLIC_GUILD_MESSAGES = 1 << 12, 1 << 25, 1 << 30


class FakeQQ(FakeProcess, FakeDiscord):
    """The fake QQ Bot platform as a child process.  Its control API is the fake
    Discord's (messages, sent, wait_sent, state, stats, gateway_fault, rest_fault,
    configure, reset...) with QQ's specs: message(kind c2c | group | guild | dm, user,
    group, channel, guild, content, age, is_bot, username) -> {"id", "chat"};
    gateway_fault also duplicate(count); rest_fault 429 | 500 | 502 | 503 | 304018 |
    slow(delay) | drop | drop_after on routes "POST /token", "GET /gateway",
    "POST /v2/users/{id}/messages", ..."""

    def __init__(self, directory, heartbeat_interval=45000, resume_timeout=180):
        super().__init__(directory, FAKE, ["--heartbeat-interval", str(heartbeat_interval),
                                           "--resume-timeout", str(resume_timeout)],
                         prefix="fake-qqbot")

    def start(self):
        super().start()
        for key in ("api_url", "token_url", "gateway_url", "ca", "ctl_port", "app_id",
                    "client_secret", "bot_id", "guild_id", "channel_id"):
            setattr(self, key, self.info[key])
        return self
