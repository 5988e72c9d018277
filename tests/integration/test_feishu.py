"""Feishu platform scenarios: the real worker against the fake Feishu.

The console is enabled next to Feishu only to read /v1/status.  The restart
scenarios run the real supervisor: Feishu pushes an event again until it is
acknowledged, the worker acknowledges only what its journal holds, so each
message must be answered exactly once however the restarts fall.
"""
import contextlib
import json
import os
import signal
import time

import pytest

from conftest import free_port
from console_util import Console, WorkerProc
from feishu_util import FakeFeishu
from plat_util import Workers, platform, platform_config
from plat_util import start_supervised as plat_start_supervised
from plat_util import wait_generation as plat_wait_generation, wait_platform_state
from tg_util import dump_logs

ADMIN = "ou_admin000000000000000000000000001"
USER = "ou_user0000000000000000000000000002"


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory):
    with FakeFeishu(tmp_path_factory.mktemp("fake"), ping_interval=2) as f:
        yield f


@pytest.fixture
def fake(fake_server):
    fake_server.reset()
    yield fake_server


def fs_config(directory, port, fake, feishu=None, extra=None):
    fs = {"enabled": True, "app_id": fake.app_id, "app_secret": fake.app_secret,
          "domain": fake.domain, "allowed_users": ["*"], "admins": [ADMIN]}
    fs.update(feishu or {})
    return platform_config(directory, port, "feishu", fs, fake.ca, extra)


def wait_state(con, state, detail=None, timeout=30.0):
    return wait_platform_state(con, "feishu", state, detail, timeout)


def workers(build, home, fake):
    return Workers(build, home, "feishu", lambda port, sec: fs_config(home, port, fake, sec))


@pytest.fixture
def gw(build, tmp_path, fake):
    ws = workers(build, tmp_path, fake)
    yield ws.start
    ws.close()


def texts(sent, chat=None):
    return [s["text"] for s in sent if chat is None or s["chat_id"] == chat]


def wait_text(fake, text, timeout=30.0):
    got = fake.wait_sent(lambda ss: text in texts(ss), timeout=timeout)
    return next(s for s in got if s["text"] == text)


def no_bad_acks(fake):
    st = fake.stats()
    assert st["bad_acks"] == [] and st["bad_frames"] == [] and st["bad_service"] == 0, st


# ---- round trips and addressing -------------------------------------------------

def test_p2p_and_group_round_trip(gw, fake):
    w, con = gw()
    dm = fake.message(user_id=USER, text="hello in a p2p chat")
    s = wait_text(fake, "hello in a p2p chat")
    assert s["chat_id"] == dm["chat_id"] and s["via"] == "reply"
    assert s["reply_to"] == dm["message_id"] and not s["reply_in_thread"]
    assert s["uuid"] and len(s["uuid"]) <= 50
    g = fake.message(chat_id=fake.groups["general"], user_id=USER, text="what now",
                     mention_bot=True)
    s = wait_text(fake, "what now")             # our mention stripped
    assert s["chat_id"] == fake.groups["general"] and s["reply_to"] == g["message_id"]
    ev = fake.events()
    assert ev[dm["event_id"]]["acked"] and ev[g["event_id"]]["acked"]
    no_bad_acks(fake)
    assert platform(con.status(), "feishu")["state"] == "up"
    assert fake.app_secret not in w.log()


def test_thread_replies_stay_in_thread(gw, fake):
    w, con = gw()
    root = fake.message(chat_id=fake.groups["topic"], user_id=USER, text="start",
                        mention_bot=True)
    wait_text(fake, "start")
    text = " ".join("t%05d" % i for i in range(2700))     # about 18,900 bytes: 3 pieces
    m = fake.message(chat_id=fake.groups["topic"], user_id=USER, text=text,
                     mention_bot=True, thread=root["message_id"])
    assert m["thread_id"]
    got = fake.wait_sent(lambda ss: len([s for s in ss if s["text"] != "start"]) >= 3)
    pieces = [s for s in got if s["text"] != "start"]
    assert " ".join(s["text"] for s in pieces).split() == text.split()
    assert pieces[0]["reply_to"] == m["message_id"]
    # the rest of the answer goes to the thread (a reply to its root), never to the chat
    assert all(s["via"] == "reply" and s["reply_in_thread"] for s in pieces)
    assert all(s["reply_to"] == root["message_id"] for s in pieces[1:])
    assert {s["thread_id"] for s in pieces} == {m["thread_id"]}


def test_unaddressed_chatter_and_own_messages_ignored(gw, fake):
    w, con = gw()
    g = fake.groups["general"]
    fake.message(chat_id=g, user_id=USER, text="just chatting")
    fake.message(chat_id=g, user_id="ou_otherbot00000000000000000000001", text="a bot says",
                 mention_bot=True, sender_type="app")
    fake.message(chat_id=g, user_id=USER, text="a picture", mention_bot=True,
                 message_type="image")
    fake.message(chat_id=g, user_id=USER, text="marker", mention_bot=True)
    wait_text(fake, "marker")
    time.sleep(1.0)
    sent = texts(fake.all_sent())
    assert "just chatting" not in sent and "a bot says" not in sent
    # our own replies came back as events (echo_own) and were not answered again
    assert sent == ["marker"], sent
    assert all(e["acked"] for e in fake.events().values())
    no_bad_acks(fake)


def test_mentions_resolved_and_require_mention_off(gw, fake):
    w, con = gw(section={"require_mention": False})
    g = fake.groups["general"]
    fake.message(chat_id=g, user_id=USER, text="no mention here")
    wait_text(fake, "no mention here")
    fake.message(chat_id=g, user_id=USER, text="hi there", mention_bot=True,
                 mention=["alice"])
    wait_text(fake, "@alice hi there")


def test_allowlist_and_admin(gw, fake):
    w, con = gw(section={"allowed_users": [ADMIN]})
    fake.message(user_id=USER, text="let me in")
    fake.message(user_id=ADMIN, text="the admin may")
    wait_text(fake, "the admin may")
    got = fake.wait_sent(lambda ss: any("not authorized" in s["text"] for s in ss))
    assert "let me in" not in texts(got)
    assert any(USER in s["text"] for s in got if "not authorized" in s["text"])


def test_long_reply_split_at_8000(gw, fake):
    w, con = gw()
    text = " ".join("word%04d" % i for i in range(2200))     # about 19,800 bytes
    m = fake.message(user_id=USER, text=text)
    got = fake.wait_sent(lambda ss: len(ss) >= 3, timeout=30)
    assert len(got) == 3
    assert all(len(s["text"].encode()) <= 8000 for s in got)
    assert " ".join(s["text"] for s in got).split() == text.split()
    assert got[0]["via"] == "reply" and got[0]["reply_to"] == m["message_id"]
    assert [s["via"] for s in got[1:]] == ["create", "create"]
    assert all(s["chat_id"] == m["chat_id"] for s in got)
    assert len({s["uuid"] for s in got}) == 3


# ---- the long connection's faults ---------------------------------------------------

def test_fragmented_events_reassembled(gw, fake):
    w, con = gw()
    fake.configure(fragments=3, shuffle_fragments=True)
    for i in range(5):
        fake.message(user_id=USER, text=f"in pieces {i} " + "x" * 300)
    fake.wait_sent(lambda ss: len(ss) >= 5)
    # a fragment lost: nothing is acknowledged until Feishu pushes the event again whole
    fake.fault("missing_fragment", count=1)
    m = fake.message(user_id=USER, text="one piece missing")
    wait_text(fake, "one piece missing", timeout=30)
    assert fake.events()[m["event_id"]]["pushes"] >= 2
    assert texts(fake.all_sent()).count("one piece missing") == 1
    no_bad_acks(fake)


def test_duplicate_push_and_lost_ack_answered_once(gw, fake):
    w, con = gw()
    fake.fault("dup_push", count=1)
    fake.message(user_id=USER, text="pushed twice")
    wait_text(fake, "pushed twice")
    lost = fake.message(user_id=USER, text="ack lost", drop_acks=1)
    wait_text(fake, "ack lost")
    end = time.monotonic() + 20
    while time.monotonic() < end and not fake.events()[lost["event_id"]]["acked"]:
        time.sleep(0.2)
    ev = fake.events()[lost["event_id"]]
    assert ev["acked"] and ev["pushes"] >= 2
    st = fake.stats()
    assert st["acks_dropped"] == 1 and st["dup_acks"] >= 1
    sent = texts(fake.all_sent())
    assert sent.count("pushed twice") == 1 and sent.count("ack lost") == 1
    no_bad_acks(fake)


def test_endpoint_busy_retried_refusal_unauthorized(gw, fake):
    fake.fault("endpoint", code=1, msg="system busy", count=2)
    w, con = gw(wait_up=False)
    wait_state(con, "backoff", detail="busy")
    wait_state(con, "up", timeout=30)
    fake.fault("endpoint", code=1000040345, msg="app not allowed", count=100)
    fake.fault("drop")
    p = wait_state(con, "unauthorized", detail="refuses the app", timeout=30)
    assert "1000040345" in p["detail"]
    n = fake.stats()["endpoint_calls"]
    time.sleep(3)
    assert fake.stats()["endpoint_calls"] - n <= 1          # slow retries, no hot loop


def test_handshake_refused(gw, fake):
    fake.fault("handshake", status=514, autherrcode=1000040343, count=2)
    w, con = gw(wait_up=False)
    wait_state(con, "backoff", detail="HTTP 514")
    wait_state(con, "up", timeout=30)
    fake.fault("handshake", status=403, count=100)
    fake.fault("drop")
    wait_state(con, "unauthorized", detail="forbidden", timeout=30)


def test_drop_without_close_frame_and_close_reconnect(gw, fake):
    w, con = gw()
    n = fake.stats()["connections"]
    fake.fault("drop")
    fake.message(user_id=USER, text="after a drop")
    wait_text(fake, "after a drop")
    fake.fault("close", code=1001)
    fake.message(user_id=USER, text="after a close")
    wait_text(fake, "after a close")
    assert fake.stats()["connections"] >= n + 2
    assert w.alive()


def test_silent_server_detected_by_missing_pong(gw, fake):
    w, con = gw()
    n = fake.stats()["connections"]
    fake.fault("mute")              # pings unanswered, events not delivered
    fake.message(user_id=USER, text="while muted")
    wait_text(fake, "while muted", timeout=30)      # pushed again on the new connection
    assert fake.stats()["connections"] >= n + 1
    assert texts(fake.all_sent()).count("while muted") == 1


def test_pong_client_config_changes_ping_interval(gw, fake):
    fake.configure(ping_interval=4)
    w, con = gw()
    time.sleep(4.5)
    gaps = fake.state()["connections"][0]["ping_gaps"]
    assert gaps and min(gaps) >= 3.0, gaps
    fake.configure(pong_ping_interval=1)
    time.sleep(6)
    gaps = fake.state()["connections"][0]["ping_gaps"]
    assert sorted(gaps[-3:])[1] < 2.0, gaps                  # obeyed: about 1 s now
    assert "ping interval to 1 s" in w.log()


def test_two_workers_cluster_mode_each_event_once(build, tmp_path, fake):
    """Two gateways on one app (separate state): Feishu hands each event to one of them."""
    both = [workers(build, tmp_path / name, fake) for name in ("a", "b")]
    try:
        for ws in both:
            ws.home.mkdir()
            ws.start()
        assert len(fake.state()["connections"]) == 2
        fake.messages([dict(user_id=USER, text=f"c{i}") for i in range(30)])
        want = [f"c{i}" for i in range(30)]
        fake.wait_sent(lambda ss: set(want) <= set(texts(ss)))
        time.sleep(1.0)
        got = texts(fake.all_sent())
        assert [t for t in want if got.count(t) != 1] == []
        assert all(c["pushed"] > 0 for c in fake.state()["connections"])
        no_bad_acks(fake)
    finally:
        for ws in both:
            ws.close()


# ---- REST faults ------------------------------------------------------------------------

def test_token_refreshed_on_expiry_and_on_99991663(gw, fake):
    fake.configure(token_expire=6)
    w, con = gw()
    n = fake.stats()["tokens_issued"]
    time.sleep(4)                   # refreshed at half its life
    assert fake.stats()["tokens_issued"] > n
    fake.message(user_id=USER, text="fresh token")
    wait_text(fake, "fresh token")
    fake.configure(token_expire=7200)
    fake.fault("revoke_tokens")     # the token in hand is refused: 99991663 with HTTP 200
    fake.message(user_id=USER, text="after revocation")
    wait_text(fake, "after revocation")
    assert texts(fake.all_sent()).count("after revocation") == 1
    assert fake.app_secret not in w.log() and "t-g1" not in w.log()     # nor a token
    assert "t-g1" not in json.dumps(con.status())


def test_rate_limits_and_recalled_reply(gw, fake):
    w, con = gw()
    fake.fault("rest", route="reply", code=230020, msg="message frequency limit",
               headers={"x-ogw-ratelimit-reset": "1"}, count=1)
    fake.message(user_id=USER, text="after 230020")
    wait_text(fake, "after 230020")
    fake.fault("rest", route="reply", code=99991400, http=429, msg="request trigger "
               "frequency limit", headers={"x-ogw-ratelimit-limit": "50",
                                           "x-ogw-ratelimit-reset": "1"}, count=1)
    fake.message(user_id=USER, text="after 429")
    wait_text(fake, "after 429")
    fake.fault("rest", route="reply", code=230011, msg="The message was recalled.", count=1)
    m = fake.message(user_id=USER, text="reply target gone")
    s = wait_text(fake, "reply target gone")
    assert s["via"] == "create" and s["chat_id"] == m["chat_id"]
    fake.fault("rest", route="reply", code=230002, msg="Bot is not in the chat.", count=1)
    fake.message(user_id=USER, text="refused for good")
    fake.message(user_id=USER, text="next one")
    wait_text(fake, "next one")
    time.sleep(1)
    sent = texts(fake.all_sent())
    assert "refused for good" not in sent
    for t in ("after 230020", "after 429", "reply target gone", "next one"):
        assert sent.count(t) == 1, (t, sent)
    assert "230002" in w.log()


def test_5xx_and_lost_response_posted_once(gw, fake):
    w, con = gw()
    fake.fault("rest", route="reply", http=502, code=0, count=2)
    fake.message(user_id=USER, text="after two 502s")
    wait_text(fake, "after two 502s")
    fake.fault("rest", route="reply", drop_after=True, count=1)
    fake.message(user_id=USER, text="response lost")
    wait_text(fake, "response lost")
    time.sleep(2.0)
    sent = texts(fake.all_sent())
    assert sent.count("after two 502s") == 1 and sent.count("response lost") == 1
    assert fake.stats()["uuid_dedup"] >= 1          # the retry carried the same uuid


def test_bad_secret_unauthorized_no_hot_loop(gw, fake):
    w, con = gw(section={"app_secret": "not-the-secret-at-all"}, wait_up=False)
    p = wait_state(con, "unauthorized", detail="app secret invalid")
    assert "10014" in p["detail"]
    n = fake.stats()["rest"]["token"]
    time.sleep(3)
    assert fake.stats()["rest"]["token"] - n <= 1
    assert "not-the-secret-at-all" not in w.log()
    assert "not-the-secret-at-all" not in json.dumps(con.status())


def test_config_from_environment_and_bad_domain(build, tmp_path, fake):
    port = free_port()
    cfg = fs_config(tmp_path, port, fake, {"app_id": None, "app_secret": None})
    w = WorkerProc(build, cfg, home=tmp_path, env={
        "FEISHU_APP_ID": fake.app_id, "FEISHU_APP_SECRET": fake.app_secret}).start()
    try:
        con = Console(port)
        con.wait_ready()
        wait_state(con, "up")
    finally:
        w.stop()
    cfg = fs_config(tmp_path, free_port(), fake, {"domain": "open.feishu.cn"})
    w = WorkerProc(build, cfg, home=tmp_path, args=["--check-config"]).start()
    assert w.wait_exit() != 0
    assert "platforms.feishu.domain" in w.log()


# ---- restarts -------------------------------------------------------------------------

@contextlib.contextmanager
def supervised(build, tmp_path, fake, feishu=None):
    """The real supervisor with Feishu up; its log printed if the block fails."""
    sup, con = plat_start_supervised(build, tmp_path, "feishu",
                                     lambda port: fs_config(tmp_path, port, fake, feishu))
    try:
        yield sup, con
    except Exception:
        dump_logs(sup)
        raise
    finally:
        sup.stop()


def wait_generation(con, gen, timeout=30.0):
    return plat_wait_generation(con, "feishu", gen, timeout)


def online_count(sent):
    return len([s for s in sent if s["text"].startswith("Gateway online")])


def test_restart_online_notice_same_chat(build, tmp_path, fake):
    """The notice reaches the asking chat (a group thread here); the home channel is a
    group the bot is not in: refused (230002 with HTTP 200), logged, not retried."""
    with supervised(build, tmp_path, fake,
                    feishu={"home_channel": fake.groups["forbidden"]}) as (sup, con):
        root = fake.message(chat_id=fake.groups["topic"], user_id=ADMIN, text="hello",
                            mention_bot=True)
        wait_text(fake, "hello")
        m = fake.message(chat_id=fake.groups["topic"], user_id=ADMIN, text="/restart",
                         mention_bot=True, thread=root["message_id"])
        ack = wait_text(fake, "Restarting the gateway...")
        assert ack["chat_id"] == m["chat_id"] and ack["thread_id"] == m["thread_id"]
        got = fake.wait_sent(lambda ss: online_count(ss) >= 1)
        notice = next(s for s in got if s["text"].startswith("Gateway online"))
        assert notice["chat_id"] == m["chat_id"] and notice["thread_id"] == m["thread_id"]
        wait_generation(con, 1)
        time.sleep(1.0)
        assert "refused" in sup.log() and "230002" in sup.log()
        assert fake.stats()["rest"]["send"] == 1            # refused once, not retried
        fake.message(user_id=USER, text="still up")
        wait_text(fake, "still up")
        assert fake.app_secret not in sup.log()


def test_100_messages_across_10_restarts_with_a_lost_ack(build, tmp_path, fake):
    """Every message sent while /restart is issued 10 times is answered exactly once;
    one event's ack is lost, so Feishu pushes it again and the journal drops the copy."""
    with supervised(build, tmp_path, fake) as (sup, con):
        n, lost = 0, None
        for r in range(10):
            fake.message(user_id=ADMIN, text="/restart")
            if r == 4:
                lost = fake.message(user_id=USER, text="lost ack", drop_acks=1)
            fake.messages([dict(user_id="ou_user%032d" % (i % 7), text=f"m{n + i}")
                           for i in range(10)])
            n += 10
            fake.wait_sent(lambda ss, r=r: online_count(ss) >= r + 1, timeout=60)
        want = [f"m{i}" for i in range(n)] + ["lost ack"]
        fake.wait_sent(lambda ss: set(want) <= set(texts(ss)), timeout=90)
        time.sleep(1.5)
        got = texts(fake.all_sent())
        dup = [t for t in want if got.count(t) != 1]
        assert not dup, dup
        assert got.count("Restarting the gateway...") == 10
        ev = fake.events()
        assert ev[lost["event_id"]]["pushes"] >= 2 and fake.stats()["acks_dropped"] == 1
        end = time.monotonic() + 20
        while time.monotonic() < end and not all(e["acked"] for e in fake.events().values()):
            time.sleep(0.2)
        assert all(e["acked"] for e in fake.events().values())
        st = fake.stats()
        print("pushes", st["pushes"], "repushes", st["repushes"], "dup_acks", st["dup_acks"],
              "uuid_dedup", st["uuid_dedup"])
        no_bad_acks(fake)


def test_sigkill_next_worker_loses_nothing(build, tmp_path, fake):
    with supervised(build, tmp_path, fake) as (sup, con):
        fake.messages([dict(user_id=USER, text=f"k{i}") for i in range(20)])
        st = con.status()
        os.kill(st["worker_pid"], signal.SIGKILL)
        fake.messages([dict(user_id=USER, text=f"k{i}") for i in range(20, 40)])
        want = [f"k{i}" for i in range(40)]
        fake.wait_sent(lambda ss: set(want) <= set(texts(ss)), timeout=90)
        time.sleep(1.5)
        got = texts(fake.all_sent())
        assert [t for t in want if got.count(t) != 1] == []
        no_bad_acks(fake)


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MiB tmpfs for the state directory, to fill up (needs root)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or os.system(f"mount -t tmpfs -o size=2m tmpfs {mnt} 2>/dev/null"):
        pytest.skip("mounting a tmpfs needs root")
    yield mnt
    os.system(f"umount -l {mnt}")


def test_full_disk_events_left_unacknowledged_then_answered(build, tmp_path, fake, small_disk):
    """An event the journal cannot hold is not acknowledged: Feishu pushes it again and it
    is answered once the disk has room."""
    port = free_port()
    cfg = fs_config(tmp_path, port, fake, extra={"state_dir": str(small_disk / "state")})
    w = WorkerProc(build, cfg, home=tmp_path).start()
    try:
        con = Console(port)
        con.wait_ready()
        wait_state(con, "up")
        fake.message(user_id=USER, text="before")
        wait_text(fake, "before")
        filler = small_disk / "filler"
        with open(filler, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
            except OSError:
                pass
        big = "disk full " + "y" * 5000     # more than a page: the journal must grow
        m = fake.message(user_id=USER, text=big)
        wait_state(con, "backoff", detail="No space left", timeout=30)
        time.sleep(4)                   # one more push at least, still no room
        assert not fake.events()[m["event_id"]]["acked"]
        assert big not in texts(fake.all_sent())
        filler.unlink()
        wait_text(fake, big, timeout=60)
        assert texts(fake.all_sent()).count(big) == 1
        assert fake.events()[m["event_id"]]["pushes"] >= 2
        assert w.alive()
    finally:
        dump_logs(w)
        w.stop()
