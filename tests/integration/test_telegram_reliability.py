"""Telegram reliability scenarios: crashes inside a journal write, a state
directory that cannot be written, a send outage, a server that answers
getUpdates at once.  The real worker against the fake Bot API."""
import errno
import json
import subprocess
import time

import pytest

from tg_util import tg_platform, wait_tg_state
from tg_util import fake_server, fake, gw   # noqa: F401 (fixtures)

USER = 1002
SLOW = {"backend": "exec", "timeout": 120, "command": ["/bin/sh", "-c", "sleep 100"]}


@pytest.fixture
def small_state_dir(tmp_path):
    """tmp_path/state on a 512 KiB tmpfs (needs root); skipped when it cannot be mounted."""
    state = tmp_path / "state"
    state.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k,mode=0700", "tmpfs",
                        str(state)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the state dir: {r.stderr.strip()}")
    yield state
    subprocess.run(["umount", "-l", str(state)], capture_output=True)


def fill(directory):
    """Fills the file system of directory; returns the filler's path."""
    path = directory / "filler"
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError as e:
            assert e.errno == errno.ENOSPC, e
    return path


def texts(sent, chat_id=None):
    return [s["text"] for s in sent if chat_id is None or s["chat_id"] == chat_id]


def msg_update(text, message_id=5, user=USER):
    return {"message": {"message_id": message_id,
                        "from": {"id": user, "is_bot": False, "first_name": "U"},
                        "chat": {"id": user, "type": "private"}, "date": int(time.time()),
                        "text": text}}


# ---- a crash between a batch's update lines and its offset line ---------------

def test_torn_batch_taken_once_across_two_crashes(gw, fake, tmp_path):
    """The journal holds an update but not the offset line after it, and
    Telegram still has the update: it must be taken once, so that no "done"
    of a second copy can drop the first one before it is answered."""
    upd = msg_update("torn batch")
    uid = fake.update(upd)
    state = tmp_path / "state"
    state.mkdir()
    (state / "telegram.journal").write_text(
        json.dumps({"offset": uid, "time": int(time.time()), "pending": []}) + "\n" +
        json.dumps({"update": dict(upd, update_id=uid)}) + "\n")
    w1, _ = gw(agent=SLOW)
    end = time.monotonic() + 30
    while uid + 1 not in fake.state()["stats"]["offsets"]:
        assert time.monotonic() < end, fake.state()["stats"]
        time.sleep(0.05)
    time.sleep(1.0)                         # any "done" line is written by now
    w1.kill()                               # the first crash: the agent never answered
    gw()
    fake.wait_text("torn batch", timeout=30)
    time.sleep(0.5)
    assert texts(fake.all_sent()).count("torn batch") == 1


# ---- a journal that cannot be written -------------------------------------------

BIG = "x" * 3500        # every update line needs a new page of the tmpfs


def test_unwritable_journal_stops_confirming_then_resumes(gw, fake, small_state_dir):
    w, con = gw()
    fake.message(chat_id=USER, user_id=USER, text="before")
    fake.wait_text("before")
    fake.wait_confirmed()
    filler = fill(small_state_dir)
    ids = [fake.message(chat_id=USER + i, user_id=USER + i, text=f"{BIG} {i}")["update_id"]
           for i in range(4)]
    p = wait_tg_state(con, "backoff", "journal")
    assert "No space left" in p["detail"], p
    polls = fake.state()["stats"]["getUpdates"]
    time.sleep(3)
    st = fake.state()
    # Not confirmed to Telegram (so a crash now loses nothing), and no hot loop.
    assert set(ids) <= set(st["unconfirmed"]), st["unconfirmed"]
    assert st["stats"]["getUpdates"] - polls <= 1
    assert tg_platform(con.status())["state"] == "backoff"
    filler.unlink()
    wait_tg_state(con, "up", timeout=30)
    fake.wait_confirmed(timeout=30)
    for i in range(4):
        fake.wait_text(f"{BIG} {i}", timeout=30)
    fake.message(chat_id=USER, user_id=USER, text="after")
    fake.wait_text("after")
    assert w.alive()


def test_restart_while_the_journal_fails_loses_nothing(gw, fake, small_state_dir):
    """The updates a worker could not journal are answered by the next worker,
    also those whose chats were told "answered again after the restart"."""
    w1, con = gw(agent=SLOW)
    filler = fill(small_state_dir)
    for i in range(4):
        fake.message(chat_id=USER + i, user_id=USER + i, text=f"{BIG} {i}")
    wait_tg_state(con, "backoff", "journal")
    assert w1.stop() == 0                   # drain times out: "answered again after"
    filler.unlink()
    gw()
    for i in range(4):
        fake.wait_text(f"{BIG} {i}", chat_id=USER + i, timeout=30)


# ---- a send outage --------------------------------------------------------------

OUTAGE = 12.0           # longer than the old 5 attempts (at most ~7.5 s of backoff)


def test_send_outage_replies_kept_across_a_restart(gw, fake):
    w1, con = gw()
    fake.fault("reset", method="sendMessage", count=10 ** 6)
    t0 = time.monotonic()
    chats = [USER + 10 + i for i in range(3)]
    for c in chats:
        fake.message(chat_id=c, user_id=c, text=f"kept {c}")
    p = wait_tg_state(con, "backoff", "sending fails")
    assert fake.token not in p["detail"]
    fake.wait_confirmed()
    time.sleep(max(0.0, OUTAGE / 2 - (time.monotonic() - t0)))
    assert w1.stop() == 0                   # a restart in the middle of the outage
    w2, con2 = gw(wait_up=False)
    time.sleep(max(0.0, OUTAGE - (time.monotonic() - t0)))
    assert not fake.all_sent()
    fake.clear_faults()
    for c in chats:
        fake.wait_text(f"kept {c}", chat_id=c, timeout=60)
    wait_tg_state(con2, "up", timeout=30)
    time.sleep(1)
    for c in chats:
        assert texts(fake.all_sent()).count(f"kept {c}") == 1


def test_send_given_up_after_send_retry_for(gw, fake):
    w, con = gw(telegram={"send_retry_for": 2})
    fake.fault("500", method="sendMessage", count=10 ** 6)
    fake.message(chat_id=USER, user_id=USER, text="too late")
    end = time.monotonic() + 30
    while "given up" not in w.log():
        assert time.monotonic() < end, w.log()[-3000:]
        time.sleep(0.1)
    line = next(ln for ln in w.log().splitlines() if "given up" in ln)
    assert f"chat {USER}" in line, line
    fake.clear_faults()
    wait_tg_state(con, "up", timeout=30)
    fake.message(chat_id=USER, user_id=USER, text="in time")
    fake.wait_text("in time")
    assert "too late" not in texts(fake.all_sent())


# ---- a getUpdates that answers at once -----------------------------------------------

def test_empty_answers_at_once_do_not_make_a_hot_loop(gw, fake):
    fake.fault("empty", count=10 ** 6)
    w, con = gw(telegram={"poll_timeout": 30})
    time.sleep(0.5)
    n0 = fake.state()["stats"]["getUpdates"]
    time.sleep(4)
    n = fake.state()["stats"]["getUpdates"] - n0
    assert n <= 8, f"{n} polls in 4 s"
    fake.clear_faults()
    fake.message(chat_id=USER, user_id=USER, text="still polling")
    fake.wait_text("still polling", timeout=30)
    assert w.alive()
