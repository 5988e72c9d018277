"""Discord platform scenarios: the real worker against the fake Discord.

The console is enabled next to Discord only to read /v1/status.  The restart
scenarios run the real supervisor and count the fake's RESUMEs and
IDENTIFYs: a restart must resume the gateway session, so that Discord
replays what arrived while the worker was away.
"""
import json
import os
import signal
import time

import pytest

from conftest import free_port
from console_util import Console, WorkerProc, write_config
from discord_util import FakeDiscord
from plat_util import platform, start_supervised as plat_start_supervised
from plat_util import wait_generation as plat_wait_generation, wait_platform_state
from tg_util import dump_logs

ADMIN = "1500000000000000001"
USER = "1500000000000000002"


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with FakeDiscord(tmp_path_factory.mktemp("fake"), heartbeat_interval=1500) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    fake_server.reset()
    yield fake_server


def dc_config(directory, port, fake, discord=None, extra=None):
    dc = {"enabled": True, "token": fake.token, "api_url": fake.api_url,
          "allowed_users": ["*"], "admins": [ADMIN]}
    dc.update(discord or {})
    more = {"tls": {"ca_file": fake.ca}, "drain_timeout": 5}
    more.update(extra or {})
    path = write_config(directory, port, extra=more)
    conf = json.loads(path.read_text())
    conf["platforms"]["discord"] = {k: v for k, v in dc.items() if v is not None}
    path.write_text(json.dumps(conf, indent=2))
    return path


def dc_platform(status):
    return platform(status, "discord")


def wait_state(con, state, detail=None, timeout=30.0):
    return wait_platform_state(con, "discord", state, detail, timeout)


@pytest.fixture
def gw(build, tmp_path, fake):
    procs = []

    def start(discord=None, wait_up=True, env=None):
        port = free_port()
        cfg = dc_config(tmp_path, port, fake, discord)
        w = WorkerProc(build, cfg, home=tmp_path, env=env).start()
        procs.append(w)
        con = Console(port)
        con.wait_ready()
        if wait_up:
            wait_state(con, "up")
        return w, con
    yield start
    dump_logs(*procs)
    for p in procs:
        p.stop()


def contents(sent, channel=None):
    return [s["content"] for s in sent if channel is None or s["channel_id"] == channel]


def wait_content(fake, text, timeout=30.0):
    got = fake.wait_sent(lambda ss: text in contents(ss), timeout=timeout)
    return next(s for s in got if s["content"] == text)


# ---- round trips and addressing -------------------------------------------------

def test_dm_and_guild_round_trip(gw, fake):
    w, con = gw()
    dm = fake.message(dm=True, user_id=USER, content="hello in a dm")
    s = wait_content(fake, "hello in a dm")
    assert s["channel_id"] == dm["channel_id"]
    assert s["message_reference"]["message_id"] == dm["id"]
    assert s["nonce"] and s["enforce_nonce"] is True
    g = fake.message(channel_id=fake.channels["general"], user_id=USER,
                     content="what now", mention_bot=True)
    s = wait_content(fake, "what now")          # our mention stripped
    assert s["channel_id"] == fake.channels["general"]
    assert s["message_reference"]["message_id"] == g["id"]
    st = dc_platform(con.status())
    assert st["state"] == "up"
    assert fake.token not in w.log()


def test_unaddressed_chatter_and_own_messages_ignored(gw, fake):
    w, con = gw()
    fake.message(channel_id=fake.channels["general"], user_id=USER, content="just chatting")
    fake.message(channel_id=fake.channels["general"], user_id="1600000000000000009",
                 content="a bot says", is_bot=True, mention_bot=True)
    fake.message(channel_id=fake.channels["general"], user_id=USER, content="marker",
                 mention_bot=True)
    wait_content(fake, "marker")
    time.sleep(0.5)
    sent = contents(fake.all_sent())
    assert "just chatting" not in sent and "a bot says" not in sent
    # our own replies came back as MESSAGE_CREATE and were not answered again
    assert sent.count("marker") == 1


def test_require_mention_off_and_reply_to_us(gw, fake):
    w, con = gw(discord={"require_mention": False})
    fake.message(channel_id=fake.channels["general"], user_id=USER, content="no mention here")
    wait_content(fake, "no mention here")


def test_allowlist_and_admin(gw, fake):
    w, con = gw(discord={"allowed_users": [ADMIN]})
    fake.message(dm=True, user_id=USER, content="let me in")
    fake.message(dm=True, user_id=ADMIN, content="the admin may")
    wait_content(fake, "the admin may")
    time.sleep(0.3)
    assert "let me in" not in contents(fake.all_sent())


def test_long_reply_split_at_2000(gw, fake):
    w, con = gw()
    text = " ".join(["word%04d" % i for i in range(600)])      # about 5,400 bytes
    fake.message(dm=True, user_id=USER, content=text)
    got = fake.wait_sent(lambda ss: len(ss) >= 3, timeout=30)
    pieces = [s for s in got if s["content"].startswith("word") or "word" in s["content"]]
    assert all(len(s["content"]) <= 2000 for s in pieces)
    assert " ".join(s["content"] for s in pieces).split() == text.split()
    refs = [s for s in pieces if s.get("message_reference")]
    assert len(refs) == 1 and refs[0] is pieces[0]


# ---- faults ---------------------------------------------------------------------

def test_bad_token_unauthorized_no_hot_loop(gw, fake):
    w, con = gw(discord={"token": "not-the-token"}, wait_up=False)
    wait_state(con, "unauthorized")
    n = sum(fake.stats()["rest"].values())
    time.sleep(2)
    assert sum(fake.stats()["rest"].values()) - n <= 1      # slow retries, no hot loop
    assert "not-the-token" not in w.log()


def test_message_content_intent_missing(gw, fake):
    fake.configure(portal_intents=(1 << 0) | (1 << 9) | (1 << 12))
    w, con = gw(wait_up=False)
    p = wait_state(con, "unauthorized", detail="Message Content intent")
    assert "intent" in p["detail"]


def test_op7_reconnect_resumes(gw, fake):
    w, con = gw()
    before = fake.stats()
    fake.gateway_fault("reconnect")
    fake.message(dm=True, user_id=USER, content="after op 7")
    wait_content(fake, "after op 7")
    after = fake.stats()
    assert after["resume"] >= before["resume"] + 1
    assert after["identify"] == before["identify"]


def test_dropped_connection_replays_missed(gw, fake):
    w, con = gw()
    fake.gateway_fault("drop")
    for i in range(5):
        fake.message(dm=True, user_id=USER, content=f"missed {i}")
    got = fake.wait_sent(lambda ss: all(f"missed {i}" in contents(ss) for i in range(5)))
    assert [c for c in contents(got) if c.startswith("missed")] == [f"missed {i}"
                                                                      for i in range(5)]


def test_invalid_session_identifies_anew(gw, fake):
    w, con = gw()
    before = fake.stats()
    fake.gateway_fault("invalid_session", resumable=False)
    # a message sent before the new session exists is, as on Discord, never seen:
    # wait for the IDENTIFY, not for a state that may not have changed yet
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and fake.stats()["identify"] == before["identify"]:
        time.sleep(0.05)
    wait_state(con, "up", timeout=30)
    fake.message(dm=True, user_id=USER, content="fresh session")
    wait_content(fake, "fresh session")
    assert fake.stats()["identify"] >= before["identify"] + 1


def test_missed_heartbeat_acks_reconnect(gw, fake):
    w, con = gw()
    before = fake.stats()
    fake.gateway_fault("stop_acks")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and fake.stats()["resume"] == before["resume"]:
        time.sleep(0.2)
    fake.gateway_fault("resume_acks")
    fake.message(dm=True, user_id=USER, content="alive again")
    wait_content(fake, "alive again")
    assert fake.stats()["resume"] > before["resume"]


def test_rest_429_and_5xx_retried_once_posted(gw, fake):
    w, con = gw()
    fake.rest_fault("429", route="POST /channels/{id}/messages", retry_after=0.5, count=1)
    fake.message(dm=True, user_id=USER, content="after a 429")
    wait_content(fake, "after a 429")
    fake.rest_fault("502", route="POST /channels/{id}/messages", count=2)
    fake.message(dm=True, user_id=USER, content="after two 502s")
    wait_content(fake, "after two 502s")
    fake.rest_fault("drop_after", route="POST /channels/{id}/messages", count=1)
    fake.message(dm=True, user_id=USER, content="response lost")
    wait_content(fake, "response lost")
    time.sleep(1.5)
    sent = contents(fake.all_sent())
    for t in ("after a 429", "after two 502s", "response lost"):
        assert sent.count(t) == 1, (t, sent)


# ---- restarts -------------------------------------------------------------------------

def start_supervised(build, tmp_path, fake, discord=None):
    return plat_start_supervised(build, tmp_path, "discord",
                                 lambda port: dc_config(tmp_path, port, fake, discord))


def wait_generation(con, gen, timeout=30.0):
    return plat_wait_generation(con, "discord", gen, timeout)


def test_restart_online_notice_same_channel(build, tmp_path, fake):
    """The notice reaches the asking channel; the home channel is one the bot may not
    post in: refused (403), logged once, not retried, the worker up."""
    sup, con = start_supervised(build, tmp_path, fake,
                                discord={"home_channel": fake.channels["forbidden"]})
    try:
        m = fake.message(dm=True, user_id=ADMIN, content="/restart")
        ack = wait_content(fake, "Restarting the gateway...")
        assert ack["channel_id"] == m["channel_id"]
        got = fake.wait_sent(lambda ss: any(s["content"].startswith("Gateway online")
                                            for s in ss))
        notice = next(s for s in got if s["content"].startswith("Gateway online"))
        assert notice["channel_id"] == m["channel_id"]
        st = wait_generation(con, 1)
        assert st["generation"] == 1
        time.sleep(1.0)
        assert "refused" in sup.log()
        assert fake.stats().get("rest_403", 0) == 1         # refused once, not retried
        fake.message(dm=True, user_id=USER, content="still up")
        wait_content(fake, "still up")
    except Exception:
        dump_logs(sup)
        raise
    finally:
        sup.stop()


def test_200_messages_across_20_restarts_resumed(build, tmp_path, fake):
    """Every message sent while /restart is issued 20 times is answered exactly once,
    and every restart resumes the gateway session instead of identifying anew."""
    sup, con = start_supervised(build, tmp_path, fake)
    try:
        s0 = fake.stats()
        n = 0
        for r in range(20):
            fake.message(dm=True, user_id=ADMIN, content="/restart")
            fake.messages([dict(dm=True, user_id=str(int(USER) + (i % 7)),
                                content=f"m{n + i}") for i in range(10)])
            n += 10
            fake.wait_sent(lambda ss, r=r: len([s for s in ss if s["content"].startswith(
                "Gateway online")]) >= r + 1, timeout=60)
        want = [f"m{i}" for i in range(n)]
        fake.wait_sent(lambda ss: set(want) <= set(contents(ss)), timeout=90)
        time.sleep(1.0)
        got = contents(fake.all_sent())
        dup = [t for t in want if got.count(t) != 1]
        assert not dup, dup
        assert got.count("Restarting the gateway...") == 20
        s1 = fake.stats()
        print("identifies", s1["identify"] - s0["identify"],
              "resumes", s1["resume"] - s0["resume"])
        assert s1["identify"] == s0["identify"]
        assert s1["resume"] - s0["resume"] >= 20
    except Exception:
        dump_logs(sup)
        raise
    finally:
        sup.stop()


def test_sigkill_next_worker_resumes_loses_nothing(build, tmp_path, fake):
    sup, con = start_supervised(build, tmp_path, fake)
    try:
        s0 = fake.stats()
        fake.messages([dict(dm=True, user_id=USER, content=f"k{i}") for i in range(20)])
        st = con.status()
        os.kill(st["worker_pid"], signal.SIGKILL)
        fake.messages([dict(dm=True, user_id=USER, content=f"k{i}") for i in range(20, 40)])
        want = [f"k{i}" for i in range(40)]
        fake.wait_sent(lambda ss: set(want) <= set(contents(ss)), timeout=90)
        time.sleep(1.0)
        got = contents(fake.all_sent())
        assert [t for t in want if got.count(t) != 1] == []
        assert fake.stats()["identify"] == s0["identify"]
    except Exception:
        dump_logs(sup)
        raise
    finally:
        sup.stop()
