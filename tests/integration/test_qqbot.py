"""QQ Bot platform scenarios: the real worker against the fake QQ.

The console is enabled next to QQ only to read /v1/status.  The restart
scenarios run the real supervisor and count the fake's RESUMEs and
IDENTIFYs: a restart must resume the gateway session, so that QQ replays
what arrived while the worker was away; the replies must carry the id of a
message of their chat (passive replies), also after a restart.
"""
import contextlib
import os
import signal
import time

import pytest

from conftest import free_port
from console_util import Console, WorkerProc
from plat_util import Workers, platform, platform_config
from plat_util import start_supervised as plat_start_supervised
from plat_util import wait_generation as plat_wait_generation, wait_platform_state
from qqbot_util import FakeQQ, DIRECT_MESSAGE, GROUP_AND_C2C, PUBLIC_GUILD_MESSAGES
from tg_util import dump_logs

ADMIN = "A0000000000000000000000000000001"
USER = "B0000000000000000000000000000002"
GROUP = "C0000000000000000000000000000003"


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with FakeQQ(tmp_path_factory.mktemp("fake"), heartbeat_interval=1500) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    fake_server.reset()
    yield fake_server


def qq_config(directory, port, fake, qq=None, extra=None):
    sec = {"enabled": True, "app_id": fake.app_id, "client_secret": fake.client_secret,
           "api_url": fake.api_url, "token_url": fake.token_url,
           "allowed_users": ["*"], "admins": [ADMIN]}
    sec.update(qq or {})
    return platform_config(directory, port, "qqbot", sec, fake.ca, extra)


def wait_state(con, state, detail=None, timeout=30.0):
    return wait_platform_state(con, "qqbot", state, detail, timeout)


@pytest.fixture
def gw(build, tmp_path, fake):
    workers = Workers(build, tmp_path, "qqbot",
                      lambda port, qq: qq_config(tmp_path, port, fake, qq))
    yield lambda qq=None, wait_up=True, env=None: workers.start(qq, wait_up, env)
    workers.close()


def contents(sent):
    return [s["content"] for s in sent]


def wait_content(fake, text, timeout=30.0):
    got = fake.wait_sent(lambda ss: text in contents(ss), timeout=timeout)
    return next(s for s in got if s["content"] == text)


def wait_until(pred, timeout):
    """Polls pred until it holds or timeout seconds pass (the caller asserts after)."""
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.1)


# ---- round trips and addressing -------------------------------------------------

def test_every_chat_kind_round_trip(gw, fake):
    w, con = gw()
    for spec, chat in ((dict(kind="c2c", user=USER), "c2c:" + USER),
                       (dict(kind="group", user=USER, group=GROUP), "group:" + GROUP),
                       (dict(kind="guild", user="200001"), "guild:" + fake.channel_id),
                       (dict(kind="dm", user="200002", guild="14000000000000000009"),
                        "dm:14000000000000000009")):
        text = "hello from " + spec["kind"]
        m = fake.message(content=text, **spec)
        assert m["chat"] == chat
        s = wait_content(fake, text)            # mentions and blanks stripped
        assert s["chat"] == chat
        assert s["msg_id"] == m["id"]           # a passive reply to that message
        if spec["kind"] in ("c2c", "group"):
            assert s["msg_type"] == 0 and isinstance(s["msg_seq"], int)
    ident = fake.stats()["identifies"][-1]
    assert ident["intents"] == GROUP_AND_C2C | PUBLIC_GUILD_MESSAGES | DIRECT_MESSAGE
    assert ident["shard"] == [0, 1]
    assert platform(con.status(), "qqbot")["state"] == "up"


def test_own_messages_and_bots_ignored(gw, fake):
    """QQ pushes the bot's own guild DM back (author.bot): never answered again."""
    w, con = gw()
    fake.message(kind="guild", user="200003", content="a bot says", is_bot=True)
    dm = fake.message(kind="dm", user="200002", guild="14000000000000000007", content="marker")
    wait_content(fake, "marker")
    time.sleep(1.0)
    sent = contents(fake.all_sent())
    assert sent.count("marker") == 1, sent
    assert "a bot says" not in sent
    assert dm["chat"] == "dm:14000000000000000007"


def test_allowlist_and_admin(gw, fake):
    w, con = gw(qq={"allowed_users": [ADMIN], "admins": None})
    fake.message(kind="c2c", user=USER, content="let me in")
    fake.message(kind="group", user=USER, group=GROUP, content="group stranger")
    fake.message(kind="c2c", user=ADMIN, content="the admin may")
    wait_content(fake, "the admin may")
    refusal = fake.wait_sent(lambda ss: any("not authorized" in c for c in contents(ss)))
    assert [s["chat"] for s in refusal if "not authorized" in s["content"]] == ["c2c:" + USER]
    time.sleep(0.5)
    sent = contents(fake.all_sent())
    assert "let me in" not in sent and "group stranger" not in sent
    fake.message(kind="c2c", user=USER, content="/restart")
    time.sleep(1.0)
    assert "Restarting the gateway..." not in contents(fake.all_sent())


def test_long_reply_split_at_4000(gw, fake):
    w, con = gw()
    text = " ".join("word%04d" % i for i in range(1000))          # about 9,000 bytes
    m = fake.message(kind="c2c", user=USER, content=text)
    got = fake.wait_sent(lambda ss: len(ss) >= 3)
    assert all(len(s["content"].encode()) <= 4000 for s in got)
    assert " ".join(s["content"] for s in got).split() == text.split()
    assert {s["msg_id"] for s in got} == {m["id"]}              # all replies to it
    assert len({s["msg_seq"] for s in got}) == len(got)


def test_more_pieces_than_replies_allowed_logged(gw, fake):
    """QQ takes 5 replies per message: a sixth piece is refused with a log line."""
    w, con = gw()
    text = " ".join("word%04d" % i for i in range(2600))          # about 23,400 bytes
    fake.message(kind="c2c", user=USER, content=text)
    fake.wait_sent(lambda ss: len(ss) >= 5)
    wait_until(lambda: "has had its 5 replies" in w.log(), 20)
    assert "has had its 5 replies" in w.log()
    assert len(fake.all_sent()) == 5 and fake.stats()["limit"] == 0
    fake.configure(reply_cap=2)                     # the server's own count refuses first
    fake.message(kind="c2c", user=USER, content=" ".join("more%04d" % i for i in range(1000)))
    wait_until(lambda: fake.stats()["limit"] > 0, 20)
    time.sleep(1.0)
    assert fake.stats()["limit"] == 1               # 22009 once, not retried
    assert "no more replies to that message" in w.log()
    fake.configure(reply_cap=5)
    fake.message(kind="c2c", user=USER, content="still up")
    wait_content(fake, "still up")


def test_reply_outside_its_window_logged(gw, fake):
    w, con = gw()
    fake.message(kind="group", user=USER, group=GROUP, content="six minutes ago", age=360)
    wait_until(lambda: "past its reply window" in w.log(), 20)
    assert "past its reply window" in w.log()
    assert fake.stats()["expired"] == 0             # known before sending
    # the window closes while the reply is on its way: QQ says 304027
    fake.configure(group_window=2)
    fake.rest_fault("slow", route="POST /v2/groups/{id}/messages", delay=3)
    fake.message(kind="group", user=USER, group=GROUP, content="just in time?")
    wait_until(lambda: fake.stats()["expired"] > 0, 20)
    time.sleep(1.0)
    assert fake.stats()["expired"] == 1
    assert "unknown or past its reply window" in w.log()
    assert "six minutes ago" not in contents(fake.all_sent())
    fake.message(kind="c2c", user=USER, content="c2c still answered")
    wait_content(fake, "c2c still answered")


# ---- the token ------------------------------------------------------------------

def secrets_absent(w, fake):
    log = w.log()
    assert fake.client_secret not in log
    for tok in fake.state()["tokens"]:
        assert tok not in log


def test_token_renewed_before_it_expires(gw, fake):
    """Tokens of 8 s: renewed on a timer (also while idle), never used once expired."""
    fake.configure(token_lifetime=8, token_grace=2)
    w, con = gw()
    time.sleep(13)
    st = fake.stats()
    assert st["tokens_issued"] >= 3 and st["tokens_late"] == 0
    for i in range(3):
        fake.message(kind="c2c", user=USER, content=f"tick {i}")
        wait_content(fake, f"tick {i}")
        time.sleep(2)
    fake.configure(expires_as_string=False)         # a number works as well
    time.sleep(5)
    fake.message(kind="c2c", user=USER, content="numbers too")
    wait_content(fake, "numbers too")
    st2 = fake.stats()
    assert st2["tokens_issued"] > st["tokens_issued"]
    assert st2["rest_401"] == 0 and st2["tokens_late"] == 0
    secrets_absent(w, fake)


def test_bad_secret_unauthorized_no_hot_loop(gw, fake):
    w, con = gw(qq={"client_secret": "not-the-secret-123"}, wait_up=False)
    p = wait_state(con, "unauthorized")
    assert "client_secret" in p["detail"]
    n = fake.stats()["token_requests"]
    time.sleep(2)
    assert fake.stats()["token_requests"] - n <= 1
    assert "not-the-secret-123" not in w.log()


def test_revoked_token_4004_refreshed_then_identify(gw, fake):
    w, con = gw()
    before = fake.stats()
    fake.revoke_token()                             # every token dies, the gateway closes 4004
    wait_until(lambda: fake.stats()["identify"] > before["identify"], 30)
    wait_state(con, "up")
    fake.message(kind="c2c", user=USER, content="after 4004")
    wait_content(fake, "after 4004")
    after = fake.stats()
    assert after["tokens_issued"] == before["tokens_issued"] + 1
    assert after["identify"] == before["identify"] + 1
    assert after["resume"] == before["resume"]
    secrets_absent(w, fake)


# ---- gateway faults ---------------------------------------------------------------

def test_4009_and_op7_resume(gw, fake):
    w, con = gw()
    before = fake.stats()
    fake.gateway_fault("close", code=4009)
    fake.message(kind="c2c", user=USER, content="after 4009")
    wait_content(fake, "after 4009")
    fake.gateway_fault("reconnect")
    fake.message(kind="c2c", user=USER, content="after op 7")
    wait_content(fake, "after op 7")
    after = fake.stats()
    assert after["resume"] >= before["resume"] + 2
    assert after["identify"] == before["identify"]


def test_dropped_connection_replays_missed(gw, fake):
    w, con = gw()
    fake.gateway_fault("drop")
    for i in range(5):
        fake.message(kind="c2c", user=USER, content=f"missed {i}")
    got = fake.wait_sent(lambda ss: all(f"missed {i}" in contents(ss) for i in range(5)))
    assert [c for c in contents(got) if c.startswith("missed")] == [f"missed {i}"
                                                                      for i in range(5)]
    assert fake.stats()["replayed"] >= 1


@pytest.mark.parametrize("how", ["op9", "4006", "4007"])
def test_lost_session_identifies_anew(gw, fake, how):
    w, con = gw()
    before = fake.stats()
    if how == "op9":
        fake.gateway_fault("invalid_session", resumable=False)
    else:
        fake.gateway_fault("close", code=int(how))
    wait_until(lambda: fake.stats()["identify"] > before["identify"], 30)
    wait_state(con, "up")
    fake.message(kind="c2c", user=USER, content="fresh session")
    wait_content(fake, "fresh session")
    assert fake.stats()["identify"] == before["identify"] + 1


def test_invalid_session_resumable_resumes(gw, fake):
    w, con = gw()
    before = fake.stats()
    fake.gateway_fault("invalid_session", resumable=True)
    fake.message(kind="c2c", user=USER, content="still the same session")
    wait_content(fake, "still the same session")
    assert fake.stats()["resume"] == before["resume"] + 1
    assert fake.stats()["identify"] == before["identify"]


def test_4008_backs_off_then_resumes(gw, fake):
    w, con = gw()
    before = fake.stats()
    fake.gateway_fault("close", code=4008)
    p = wait_state(con, "backoff", detail="4008")
    assert "too fast" in p["detail"]
    time.sleep(6)
    assert fake.stats()["connections"] == before["connections"]    # still pausing
    wait_state(con, "up", timeout=30)
    fake.message(kind="c2c", user=USER, content="after the pause")
    wait_content(fake, "after the pause")
    assert fake.stats()["resume"] == before["resume"] + 1


@pytest.mark.parametrize("code,why", [(4914, "delisted"), (4915, "banned")])
def test_delisted_or_banned_stops_with_reason(gw, fake, code, why):
    w, con = gw()
    fake.gateway_fault("close", code=code)
    p = wait_state(con, "stopped", detail=str(code))
    assert why in p["detail"]
    n = fake.stats()["connections"]
    time.sleep(3)
    assert fake.stats()["connections"] == n         # never reconnects
    assert w.alive() and con.status()["platforms"]


def test_intents_not_permitted_unauthorized(gw, fake):
    fake.configure(permitted_intents=GROUP_AND_C2C)
    w, con = gw(wait_up=False)
    p = wait_state(con, "unauthorized", detail="4014")
    assert "intent" in p["detail"]


def test_missed_heartbeat_acks_reconnect(gw, fake):
    w, con = gw()
    before = fake.stats()
    fake.gateway_fault("stop_acks")
    wait_until(lambda: fake.stats()["resume"] > before["resume"], 20)
    fake.gateway_fault("resume_acks")
    fake.message(kind="c2c", user=USER, content="alive again")
    wait_content(fake, "alive again")
    assert fake.stats()["resume"] > before["resume"]


def test_same_event_pushed_twice_answered_once(gw, fake):
    w, con = gw()
    fake.gateway_fault("duplicate", count=3)
    for i in range(3):
        fake.message(kind="c2c", user=USER, content=f"twice {i}")
    fake.message(kind="c2c", user=USER, content="then once")
    wait_content(fake, "then once")
    time.sleep(1.0)
    sent = contents(fake.all_sent())
    assert fake.stats()["duplicated"] == 3
    assert [sent.count(f"twice {i}") for i in range(3)] == [1, 1, 1]


def test_gateway_url_fetch_failure_recovers(gw, fake):
    w, con = gw()
    fake.rest_fault("500", route="GET /gateway", count=2)
    fake.gateway_fault("close", code=4009)
    wait_state(con, "backoff", detail="GET /gateway: HTTP 500")
    wait_state(con, "up", timeout=30)
    fake.message(kind="c2c", user=USER, content="gateway found")
    wait_content(fake, "gateway found")


def test_send_faults_retried_posted_once(gw, fake):
    w, con = gw()
    faults = (("304018", 2, "after 304018"), ("429", 1, "after a 429"),
              ("502", 2, "after two 502s"), ("drop_after", 1, "response lost"))
    for kind, count, text in faults:
        fake.rest_fault(kind, route="POST /v2/users/{id}/messages", count=count)
        fake.message(kind="c2c", user=USER, content=text)
        wait_content(fake, text)
    wait_until(lambda: fake.stats()["dedup"] > 0, 15)
    assert fake.stats()["dedup"] == 1               # the retry was recognized by msg_seq
    sent = contents(fake.all_sent())
    for _, _, text in faults:
        assert sent.count(text) == 1, (text, sent)
    assert platform(con.status(), "qqbot")["state"] == "up"


def test_resume_past_the_window_identifies(build, tmp_path, fake):
    """A session QQ no longer keeps gets op 9: the next worker identifies anew."""
    fake.configure(resume_timeout=1.0)
    port = free_port()
    cfg = qq_config(tmp_path, port, fake)
    w = WorkerProc(build, cfg, home=tmp_path).start()
    try:
        con = Console(port)
        con.wait_ready()
        wait_state(con, "up")
        w.stop()
        time.sleep(2.5)
        before = fake.stats()
        w = WorkerProc(build, cfg, home=tmp_path).start()
        con.wait_ready()
        wait_state(con, "up")
        after = fake.stats()
        assert after["resume"] == before["resume"] + 1
        assert after["invalid_sessions"] == before["invalid_sessions"] + 1
        assert after["identify"] == before["identify"] + 1
        assert "cannot be resumed" in w.log()
    finally:
        dump_logs(w)
        w.stop()


def test_config_from_environment_and_errors(build, tmp_path, fake):
    port = free_port()
    cfg = qq_config(tmp_path, port, fake, qq={"app_id": None, "client_secret": None})
    w = WorkerProc(build, cfg, home=tmp_path, args=["--check-config"]).start()
    assert w.wait_exit() == 78
    assert "platforms.qqbot.app_id" in w.log() and "QQ_APP_ID" in w.log()
    w = WorkerProc(build, cfg, home=tmp_path, env={"QQ_APP_ID": fake.app_id,
                                                    "QQ_CLIENT_SECRET": fake.client_secret})
    w.start()
    try:
        con = Console(port)
        con.wait_ready()
        wait_state(con, "up")
        assert fake.client_secret not in w.log()
    finally:
        w.stop()
    bad = qq_config(tmp_path, port, fake, qq={"sandbox": "yes"})
    w = WorkerProc(build, bad, home=tmp_path, args=["--check-config"]).start()
    assert w.wait_exit() == 78 and "platforms.qqbot.sandbox" in w.log()


# ---- restarts -------------------------------------------------------------------------

@contextlib.contextmanager
def supervised(build, tmp_path, fake, qq=None):
    """The real supervisor on the fake; its log is printed when the test fails."""
    sup, con = plat_start_supervised(build, tmp_path, "qqbot",
                                     lambda port: qq_config(tmp_path, port, fake, qq))
    try:
        yield sup, con
    except BaseException:
        dump_logs(sup)
        raise
    finally:
        sup.stop()


def wait_generation(con, gen, timeout=30.0):
    return plat_wait_generation(con, "qqbot", gen, timeout)


def test_restart_online_notice_same_chat(build, tmp_path, fake, monkeypatch):
    """/restart in a group: the notice goes to that group as a reply to the /restart
    message (kept across the restart), and to the home channel (QQBOT_HOME_CHANNEL)."""
    monkeypatch.setenv("QQBOT_HOME_CHANNEL", "c2c:" + USER)
    with supervised(build, tmp_path, fake) as (sup, con):
        home = fake.message(kind="c2c", user=USER, content="I live here")
        wait_content(fake, "I live here")
        m = fake.message(kind="group", user=ADMIN, group=GROUP, content="/restart")
        ack = wait_content(fake, "Restarting the gateway...")
        assert ack["chat"] == "group:" + GROUP and ack["msg_id"] == m["id"]
        got = fake.wait_sent(lambda ss: len([s for s in ss if s["content"].startswith(
            "Gateway online")]) >= 2)
        notices = [s for s in got if s["content"].startswith("Gateway online")]
        by_chat = {s["chat"]: s for s in notices}
        assert set(by_chat) == {"group:" + GROUP, "c2c:" + USER}
        assert by_chat["group:" + GROUP]["msg_id"] == m["id"]
        assert by_chat["group:" + GROUP]["msg_seq"] != ack["msg_seq"]
        assert by_chat["c2c:" + USER]["msg_id"] == home["id"]
        wait_generation(con, 1)
        fake.message(kind="c2c", user=USER, content="still up")
        wait_content(fake, "still up")
        assert fake.client_secret not in sup.log()


def test_100_messages_across_10_restarts_resumed(build, tmp_path, fake):
    """Every message sent while /restart is issued 10 times is answered exactly once,
    in its chat, and every restart resumes the gateway session instead of identifying."""
    with supervised(build, tmp_path, fake) as (sup, con):
        s0 = fake.stats()
        n = 0
        specs = {}
        for r in range(10):
            fake.message(kind="c2c", user=ADMIN, content="/restart")
            batch = []
            for i in range(10):
                user = "D%031d" % ((n + i) % 7)
                if i % 3 == 0:
                    spec = dict(kind="group", user=user, group="E%031d" % (i % 2))
                else:
                    spec = dict(kind="c2c", user=user)
                batch.append(dict(spec, content=f"m{n + i}"))
            for spec, got in zip(batch, fake.messages(batch)):
                specs[spec["content"]] = got["chat"]
            n += 10
            fake.wait_sent(lambda ss, r=r: len([s for s in ss if s["content"].startswith(
                "Gateway online")]) >= r + 1, timeout=60)
        want = [f"m{i}" for i in range(n)]
        fake.wait_sent(lambda ss: set(want) <= set(contents(ss)), timeout=90)
        time.sleep(1.0)
        sent = fake.all_sent()
        got = contents(sent)
        assert [t for t in want if got.count(t) != 1] == []
        assert all(s["chat"] == specs[s["content"]] for s in sent if s["content"] in specs)
        assert got.count("Restarting the gateway...") == 10
        s1 = fake.stats()
        print("identifies", s1["identify"] - s0["identify"],
              "resumes", s1["resume"] - s0["resume"])
        assert s1["identify"] == s0["identify"]
        assert s1["resume"] - s0["resume"] >= 10


def test_sigkill_next_worker_resumes_loses_nothing(build, tmp_path, fake):
    with supervised(build, tmp_path, fake) as (sup, con):
        s0 = fake.stats()
        fake.messages([dict(kind="c2c", user=USER, content=f"k{i}") for i in range(20)])
        os.kill(con.status()["worker_pid"], signal.SIGKILL)
        fake.messages([dict(kind="c2c", user=USER, content=f"k{i}") for i in range(20, 40)])
        want = [f"k{i}" for i in range(40)]
        fake.wait_sent(lambda ss: set(want) <= set(contents(ss)), timeout=90)
        time.sleep(1.0)
        got = contents(fake.all_sent())
        assert [t for t in want if got.count(t) != 1] == []
        assert fake.stats()["identify"] == s0["identify"]
