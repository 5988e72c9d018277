"""Weixin (iLink) platform scenarios: the real worker against the fake iLink server.

The console is enabled next to Weixin only to read /v1/status.  The restart
scenarios run the real supervisor and read the fake's cursor log: a worker
must never send a cursor past a batch its journal does not hold, and a
killed worker's successor must get that batch again.
"""
import json
import os
import signal
import stat
import subprocess
import time

import pytest

from conftest import free_port
from console_util import Console, WorkerProc
from plat_util import Workers, platform, platform_config
from plat_util import start_supervised as plat_start_supervised
from plat_util import wait_generation as plat_wait_generation, wait_platform_state
from tg_util import dump_logs
from weixin_util import FakeWeixin

ADMIN = "o9cq800admin000000000000@im.wechat"
USER = "o9cq800user00000000000001@im.wechat"
GROUP = "4820991376@chatroom"
FAST = {"chat_rate": 50, "chat_burst": 50, "global_rate": 200, "global_burst": 200}


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with FakeWeixin(tmp_path_factory.mktemp("fake"), hold=5) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    fake_server.reset()
    yield fake_server


def wx_config(directory, port, fake, weixin=None, extra=None):
    wx = {"enabled": True, "token": fake.token, "account_id": fake.account,
          "base_url": fake.api_url, "allowed_users": ["*"], "admins": [ADMIN], "limits": FAST}
    wx.update(weixin or {})
    return platform_config(directory, port, "weixin", wx, fake.ca, extra)


def wait_state(con, state, detail=None, timeout=30.0):
    return wait_platform_state(con, "weixin", state, detail, timeout)


@pytest.fixture
def gw(build, tmp_path, fake):
    ws = Workers(build, tmp_path, "weixin", lambda port, sec: wx_config(tmp_path, port, fake,
                                                                        sec))
    yield ws.start
    ws.close()


def texts(sent, to=None):
    return [s["text"] for s in sent if to is None or s["to"] == to]


def wait_text(fake, text, timeout=30.0):
    got = fake.wait_sent(lambda ss: text in texts(ss), timeout=timeout)
    return next(s for s in got if s["text"] == text)


# ---- round trips and addressing -------------------------------------------------

def test_dm_round_trip_headers_token_typing(gw, fake):
    w, con = gw()
    m = fake.message(frm=USER, text="hello from weixin")
    s = wait_text(fake, "hello from weixin")
    assert s["to"] == USER
    assert s["context_token"] == m["context_token"]
    assert s["client_id"].startswith("hermes-") and len(s["client_id"]) == 39
    deadline = time.monotonic() + 10
    while [t["status"] for t in fake.state()["typing"]] != [1, 2] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [(t["user"], t["status"]) for t in fake.state()["typing"]] == [(USER, 1), (USER, 2)]
    st = fake.stats()
    assert st["bad_headers"] == 0 and st["bad_token"] == 0 and st["uin_repeats"] == 0
    assert st["polls"] >= 2
    assert platform(con.status(), "weixin")["state"] == "up"
    assert fake.token not in w.log() and fake.token.split(":")[1] not in w.log()


def test_no_reply_to_ourselves_nor_other_bots(gw, fake):
    """The fake feeds each of our sends back through getupdates (message_type 2)."""
    w, con = gw()
    fake.message(frm="o9cq800otherbot0000000000@im.wechat", text="a bot streams",
                 message_type=2, message_state=1)
    fake.message(frm=USER, text="only once")
    wait_text(fake, "only once")
    fake.message(frm=USER, text="marker")
    wait_text(fake, "marker")
    time.sleep(1.0)
    sent = texts(fake.all_sent())
    assert sent.count("only once") == 1 and sent.count("marker") == 1
    assert "a bot streams" not in sent
    assert fake.state()["log_size"] >= 5            # our two sends came back


def test_voice_transcript_and_duplicate_message_id(gw, fake):
    w, con = gw()
    fake.message(frm=USER, voice="what is the weather")
    wait_text(fake, "[voice, transcribed by Weixin] what is the weather")
    fake.message(frm=USER, text="twice", message_id=4242)
    fake.message(frm=USER, text="twice", message_id=4242)
    fake.message(frm=USER, text="after the duplicate")
    wait_text(fake, "after the duplicate")
    time.sleep(0.5)
    assert texts(fake.all_sent()).count("twice") == 1


def test_groups_commands_only(gw, fake):
    w, con = gw({"group_policy": "commands"})
    fake.message(frm=USER, group_id=GROUP, text="just chatting in the group")
    fake.message(frm=USER, group_id=GROUP, text="/ping")
    s = wait_text(fake, "pong")
    assert s["to"] == GROUP
    fake.message(frm=USER, text="dm marker")
    wait_text(fake, "dm marker")
    assert "just chatting in the group" not in texts(fake.all_sent())


def test_groups_disabled_by_default(gw, fake):
    w, con = gw()
    fake.message(frm=USER, group_id=GROUP, text="/ping")
    fake.message(frm=USER, text="dm marker")
    wait_text(fake, "dm marker")
    time.sleep(0.5)
    assert texts(fake.all_sent()) == ["dm marker"]


def test_allowlist_and_admin(gw, fake):
    w, con = gw({"allowed_users": [ADMIN]})
    fake.message(frm=USER, text="let me in")
    fake.message(frm=ADMIN, text="the admin may")
    wait_text(fake, "the admin may")
    time.sleep(0.5)
    assert "let me in" not in texts(fake.all_sent())


def test_long_reply_split_at_2000_bytes(gw, fake):
    w, con = gw()
    text = " ".join("词%04d" % i for i in range(900))     # about 7,200 bytes
    fake.message(frm=USER, text=text)
    got = fake.wait_sent(lambda ss: len(" ".join(texts(ss)).split()) >= 900, timeout=30)
    pieces = texts(got)
    assert len(pieces) >= 4
    assert all(len(p.encode()) <= 2000 for p in pieces)
    assert " ".join(pieces).split() == text.split()
    assert len({s["client_id"] for s in got}) == len(got)


def test_secrets_never_in_log_or_status(gw, fake):
    w, con = gw({"token": None}, env={"WEIXIN_TOKEN": fake.token})
    fake.message(frm=USER, text="secret check")
    wait_text(fake, "secret check")
    fake.expire_session()
    fake.message(frm=USER, text="after expiry")
    wait_state(con, "unauthorized")
    dump = json.dumps(con.status())
    for t in (fake.token, fake.token.split(":")[1]):
        assert t not in w.log() and t not in dump


# ---- faults ---------------------------------------------------------------------

def polls_during(fake, seconds):
    before = fake.stats()["polls"]
    time.sleep(seconds)
    return fake.stats()["polls"] - before


def test_empty_answer_at_once_no_hot_loop(gw, fake):
    w, con = gw()
    # the platform is up (its first poll answered) before every poll comes back
    # at once with nothing
    fake.message(frm=USER, text="ends the poll held now")
    wait_text(fake, "ends the poll held now")
    fake.fault("empty_now", count=-1)
    n = polls_during(fake, 4.0)
    assert 1 <= n <= 7                      # the 1 s floor between empty answers
    assert platform(con.status(), "weixin")["state"] == "up"
    fake.clear_faults()
    fake.message(frm=USER, text="after the empty answers")
    wait_text(fake, "after the empty answers")


def test_session_expired_unauthorized_slow_retries_then_recovers(gw, fake):
    w, con = gw({"session_retry": 2})
    fake.expire_session()
    p = wait_state(con, "unauthorized", detail="session expired", timeout=20)
    assert "hermes-worker login weixin" in p["detail"]
    n = polls_during(fake, 5.0)
    assert fake.stats()["expired_answers"] >= 1
    assert n <= 4                           # one try every 2 s, no spin
    fake.revive()
    wait_state(con, "up", timeout=20)
    fake.message(frm=USER, text="back after the session")
    wait_text(fake, "back after the session")
    assert w.alive()


def test_rate_limited_poll_backs_off_then_recovers(gw, fake):
    w, con = gw()
    fake.fault("ret", ret=-2, errcode=-2, errmsg="rate limited", count=3)
    wait_state(con, "backoff", detail="rate limited", timeout=20)
    wait_state(con, "up", timeout=30)
    fake.message(frm=USER, text="after the rate limit")
    wait_text(fake, "after the rate limit")


def test_send_rate_limited_retried_not_dropped(gw, fake):
    w, con = gw()
    fake.fault("ret", route="sendmessage", ret=-2, errcode=-2, count=2)
    fake.message(frm=USER, text="limited reply")
    s = wait_text(fake, "limited reply", timeout=40)
    assert s["context_token"] is not None
    assert fake.stats()["limited_answers"] == 2
    time.sleep(0.5)
    assert texts(fake.all_sent()).count("limited reply") == 1


def test_stale_context_token_retried_without_it(gw, fake):
    """The peer's token changes while the reply is on its way: -2 "unknown error" until
    the reply goes without the token."""
    w, con = gw()
    fake.fault("slow", route="sendmessage", delay=1.0, count=1)
    fake.message(frm=USER, text="stale token reply")
    time.sleep(0.5)
    fake.rotate_token(USER)
    s = wait_text(fake, "stale token reply", timeout=60)
    assert s["context_token"] is None
    assert fake.stats()["send_stale"] >= 3
    assert "stale context_token" in w.log()


def test_not_json_and_5xx_back_off_then_recover(gw, fake):
    w, con = gw()
    fake.fault("not_json", count=2)
    wait_state(con, "backoff", detail="not a JSON object", timeout=20)
    fake.fault("http", status=502, count=2)
    wait_state(con, "backoff", detail="HTTP 502", timeout=20)
    wait_state(con, "up", timeout=30)
    fake.message(frm=USER, text="after the 502s")
    wait_text(fake, "after the 502s")


@pytest.fixture
def quick_fake(tmp_path):
    with FakeWeixin(tmp_path / "quick", hold=1) as f:
        yield f


def test_poll_held_past_client_timeout(build, tmp_path, quick_fake):
    """A getupdates held far longer than the server said (1 s hold + 10 s margin)."""
    port = free_port()
    w = WorkerProc(build, wx_config(tmp_path, port, quick_fake), home=tmp_path).start()
    try:
        con = Console(port)
        con.wait_ready()
        wait_state(con, "up")
        quick_fake.fault("slow", delay=40, count=1)
        wait_state(con, "backoff", detail="timed out", timeout=40)
        quick_fake.message(frm=USER, text="after the stuck poll")
        wait_text(quick_fake, "after the stuck poll", timeout=30)
        assert w.alive()
    except Exception:
        dump_logs(w)
        raise
    finally:
        w.stop()


# ---- restarts -------------------------------------------------------------------

def start_supervised(build, tmp_path, fake, weixin=None, extra=None):
    return plat_start_supervised(build, tmp_path, "weixin",
                                 lambda port: wx_config(tmp_path, port, fake, weixin, extra))


# An agent that takes a second per answer: a killed worker leaves answers owed.
SLOW_AGENT = {"backend": "exec", "command": [
    "/usr/bin/python3", "-c",
    "import json, sys, time; m = json.load(sys.stdin); time.sleep(1); print(m['text'])"]}


def test_restart_online_notice_same_chat(build, tmp_path, fake):
    sup, con = start_supervised(build, tmp_path, fake)
    try:
        fake.message(frm=ADMIN, text="/restart")
        ack = wait_text(fake, "Restarting the gateway...")
        assert ack["to"] == ADMIN
        got = fake.wait_sent(lambda ss: any(t.startswith("Gateway online") for t in texts(ss)))
        notice = next(s for s in got if s["text"].startswith("Gateway online"))
        assert notice["to"] == ADMIN and notice["context_token"] is not None
        plat_wait_generation(con, "weixin", 1)
        fake.message(frm=USER, text="still up")
        wait_text(fake, "still up")
    except Exception:
        dump_logs(sup)
        raise
    finally:
        sup.stop()


def test_100_messages_across_10_restarts(build, tmp_path, fake):
    """Every message sent while /restart is issued 10 times is answered exactly once,
    in its own chat, and no worker ever sent a cursor older than one already sent."""
    sup, con = start_supervised(build, tmp_path, fake)
    users = ["o9cq800user%014d@im.wechat" % i for i in range(7)]
    try:
        n = 0
        for r in range(10):
            fake.message(frm=ADMIN, text="/restart")
            fake.messages([{"from": users[i % 7], "text": f"m{n + i}"} for i in range(10)])
            n += 10
            fake.wait_sent(lambda ss, r=r: len([t for t in texts(ss) if t.startswith(
                "Gateway online")]) >= r + 1, timeout=60)
        want = {f"m{i}": users[(i % 10) % 7] for i in range(n)}
        fake.wait_sent(lambda ss: set(want) <= set(texts(ss)), timeout=90)
        time.sleep(1.0)
        got = fake.all_sent()
        dup = [t for t in want if texts(got).count(t) != 1]
        assert not dup, dup
        assert all(s["to"] == want[s["text"]] for s in got if s["text"] in want)
        assert texts(got).count("Restarting the gateway...") == 10
        st = fake.stats()
        print("polls", st["polls"], "replayed", st["replayed"], "dedup", st["send_dedup"])
        assert st["cursor_regressions"] == 0 and st["bad_cursor"] == 0
    except Exception:
        dump_logs(sup)
        raise
    finally:
        sup.stop()


def all_answered_once(fake, want, timeout=90):
    fake.wait_sent(lambda ss: set(want) <= set(texts(ss)), timeout=timeout)
    time.sleep(1.0)
    got = texts(fake.all_sent())
    assert [t for t in want if got.count(t) != 1] == []


def test_sigkill_after_batch_sent_before_journal(build, tmp_path, fake):
    """The fake sends a batch but its last byte and waits; the worker is killed
    right then.  Its successor sends the old cursor and gets the batch again."""
    sup, con = start_supervised(build, tmp_path, fake)
    try:
        cursor_before = fake.state()["max_acked"]
        fake.fault("stall_batch")
        fake.messages([{"from": USER, "text": f"k{i}"} for i in range(10)])
        fake.wait_stat("stalled", 1)
        os.kill(con.status()["worker_pid"], signal.SIGKILL)
        fake.release()
        all_answered_once(fake, [f"k{i}" for i in range(10)])
        st = fake.stats()
        assert st["replayed"] >= 10                 # the batch came again
        assert st["cursor_regressions"] == 0
        assert fake.state()["max_acked"] > cursor_before
    except Exception:
        dump_logs(sup)
        raise
    finally:
        sup.stop()


def test_sigkill_after_batch_journaled(build, tmp_path, fake):
    """The fake holds the poll that follows a batch (the worker has journaled it and
    moved its cursor on, so the server will not send it again); the worker is
    killed there, its answers still owed, and its successor answers them from
    the journal."""
    sup, con = start_supervised(build, tmp_path, fake, extra={"agent": SLOW_AGENT})
    try:
        fake.fault("hold_next_poll")
        fake.messages([{"from": USER, "text": f"j{i}"} for i in range(10)])
        fake.wait_stat("held", 1)
        os.kill(con.status()["worker_pid"], signal.SIGKILL)
        owed = 10 - len(fake.all_sent())
        fake.release()
        all_answered_once(fake, [f"j{i}" for i in range(10)], timeout=120)
        st = fake.stats()
        print("owed at the kill", owed, "replayed by the server", st["replayed"])
        assert owed > 0
        assert st["cursor_regressions"] == 0 and st["replayed"] == 0
    except Exception:
        dump_logs(sup)
        raise
    finally:
        sup.stop()


# ---- the login and the Python gateway's files ------------------------------------------

def run_login(build, home, cfg, stdin=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WEIXIN_")}
    env["HERMES_HOME"] = str(home)
    return subprocess.run([str(build / "hermes-worker"), "login", "weixin", "-c", str(cfg)],
                          input=stdin, capture_output=True, text=True, env=env, timeout=timeout)


def account_file(home, fake):
    return home / "weixin" / "accounts" / f"{fake.account}.json"


def test_qr_login_redirect_then_worker_uses_account(build, tmp_path, fake):
    fake.qr_script(["wait", "scaned", "redirect", "wait", "confirmed"])
    cfg = wx_config(tmp_path, free_port(), fake, weixin={"token": None})
    r = run_login(build, tmp_path, cfg)
    assert r.returncode == 0, r.stderr
    assert "\u2588" in r.stdout and "https://liteapp.weixin.qq.com/q/" in r.stdout
    assert fake.account in r.stdout and fake.owner in r.stdout
    st = fake.stats()
    assert st["qr_polls_redirect"] >= 2 and st["qr_wrong_host"] == 0
    path = account_file(tmp_path, fake)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    acct = json.loads(path.read_text())
    assert acct["token"] != fake.token and acct["base_url"] == fake.api_url
    assert acct["user_id"] == fake.owner and acct["saved_at"].endswith("Z")
    assert acct["token"] not in r.stdout + r.stderr
    port = free_port()
    w = WorkerProc(build, wx_config(tmp_path, port, fake, weixin={"token": None}),
                   home=tmp_path).start()
    try:
        con = Console(port)
        con.wait_ready()
        wait_state(con, "up")
        fake.message(frm=USER, text="logged in by QR")
        wait_text(fake, "logged in by QR")
        assert fake.stats()["bad_token"] == 0
        assert acct["token"] not in w.log()
    finally:
        w.stop()


def test_qr_login_expired_code_and_verification(build, tmp_path, fake):
    fake.qr_script(["expired", "verify", "confirmed"])
    cfg = wx_config(tmp_path, free_port(), fake, weixin={"token": None})
    r = run_login(build, tmp_path, cfg, stdin="000000\n" + fake.verify_code + "\n")
    assert r.returncode == 0, r.stdout + r.stderr
    st = fake.stats()
    assert st["qr_codes"] == 2 and st["qr_wrong_verify"] == 1
    assert r.stdout.count("verification code") == 2
    assert account_file(tmp_path, fake).exists()


def test_qr_login_fails_cleanly(build, tmp_path, fake):
    fake.qr_script(["expired"])
    cfg = wx_config(tmp_path, free_port(), fake, weixin={"token": None})
    r = run_login(build, tmp_path, cfg)
    assert r.returncode == 1 and "expired again" in r.stderr
    assert not account_file(tmp_path, fake).exists()


def test_new_login_picked_up_after_session_expired(build, tmp_path, fake):
    fake.qr_script(["confirmed"])
    cfg = wx_config(tmp_path, free_port(), fake, weixin={"token": None})
    assert run_login(build, tmp_path, cfg).returncode == 0
    port = free_port()
    w = WorkerProc(build, wx_config(tmp_path, port, fake, weixin={"token": None,
                                                                 "session_retry": 2}),
                   home=tmp_path).start()
    try:
        con = Console(port)
        con.wait_ready()
        wait_state(con, "up")
        fake.expire_session()
        wait_state(con, "unauthorized", detail="session expired", timeout=20)
        fake.qr_script(["confirmed"])
        assert run_login(build, tmp_path, cfg).returncode == 0
        wait_state(con, "up", timeout=20)
        assert "a new login" in w.log()
        fake.message(frm=USER, text="after the new login")
        wait_text(fake, "after the new login")
    finally:
        dump_logs(w)
        w.stop()


def test_python_gateway_account_files_read_as_they_are(build, tmp_path, fake):
    """The Python gateway's account, cursor and context tokens, written its way."""
    accounts = tmp_path / "weixin" / "accounts"
    accounts.mkdir(parents=True)
    acct = {"token": fake.token, "base_url": fake.api_url, "user_id": fake.owner,
            "saved_at": "2025-11-02T08:15:00Z"}
    (accounts / f"{fake.account}.json").write_text(
        "\ufeff" + json.dumps(acct, indent=2, ensure_ascii=False), encoding="utf-8")
    os.chmod(accounts / f"{fake.account}.json", 0o600)
    m = fake.message(frm=USER, text="handled by the Python gateway")
    cursor = fake.cursor(1)
    (accounts / f"{fake.account}.sync.json").write_text(json.dumps({"get_updates_buf": cursor}))
    (accounts / f"{fake.account}.context-tokens.json").write_text(json.dumps(
        {USER: m["context_token"]}))
    port = free_port()
    cfg = wx_config(tmp_path, port, fake, weixin={"token": None, "base_url": None})
    w = WorkerProc(build, cfg, home=tmp_path).start()
    try:
        con = Console(port)
        con.wait_ready()
        wait_state(con, "up")
        assert fake.state()["polls"][0]["cursor"] == cursor     # the Python gateway's cursor
        fake.message(frm=USER, text="after the move")
        wait_text(fake, "after the move")
        assert "handled by the Python gateway" not in texts(fake.all_sent())
        kept = json.loads((tmp_path / "state" / "weixin.context-tokens.json").read_text())
        assert kept[USER] == m["context_token"]
    finally:
        dump_logs(w)
        w.stop()
