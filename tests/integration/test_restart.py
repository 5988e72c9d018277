"""/restart end to end: the real supervisor, the real worker, the console."""
import json
import os
import signal
import time

import pytest

from console_util import Console, write_config
from worker_util import Gateway, HangingAgent, pid_alive, wait_for


@pytest.fixture
def gateways():
    made = []
    yield made.append
    for g in made:
        g.cleanup()


def _texts(msgs):
    return [m["text"] for m in msgs]


def test_restart_end_to_end(build, tmp_path, port, gateways):
    cfg = write_config(tmp_path, port)
    g = Gateway(build, tmp_path, cfg)
    gateways(g)
    st0 = g.wait_ready(generation=0)
    con = Console(port)
    s0 = con.wait_ready()
    assert s0["supervisor_pid"] == g.pid == int(st0["supervisor_pid"])
    assert s0["worker_pid"] == int(st0["worker_pid"])
    assert s0["generation"] == 0

    r = con.post("/restart", chat_id="ops", user_id="local", wait=20)
    assert _texts(r["replies"]) == ["Restarting the gateway..."]
    restart_id = r["message_id"]

    notice = con.wait_text("ops", "Gateway online (generation 1, restarted in ")
    st1 = g.wait_ready(generation=1)
    s1 = con.status()
    assert s1["supervisor_pid"] == g.pid and int(st1["supervisor_pid"]) == g.pid
    assert s1["worker_pid"] != s0["worker_pid"]
    assert s1["worker_pid"] == int(st1["worker_pid"])
    assert s1["generation"] == 1
    assert not pid_alive(s0["worker_pid"])
    assert notice["reply_to"] is None

    # One /restart, one restart, one notice.
    time.sleep(1.0)
    assert g.status()["generation"] == "1"
    msgs = con.messages("ops")["messages"]
    assert _texts(msgs).count("Restarting the gateway...") == 1
    assert len([t for t in _texts(msgs) if t.startswith("Gateway online")]) == 1
    assert not (tmp_path / "state" / "restart.json").exists()
    assert con.ask("still here", chat_id="ops") == ["still here"]
    status = con.ask("/status", chat_id="ops")[0]
    assert "supervisor pid: %d\n" % g.pid in status
    assert "worker pid: %d\n" % s1["worker_pid"] in status
    assert "generation: 1\n" in status and "console: up" in status

    # The same /restart redelivered (replayed with its id by the console)
    # to a later worker is recognized and not run again.
    g.stop()
    assert not pid_alive(s1["worker_pid"])
    inbox = {"version": 1, "messages": [{"id": restart_id, "chat_id": "ops",
                                          "user_id": "local", "text": "/restart",
                                          "time": int(time.time())}]}
    (tmp_path / "state" / "console.inbox.json").write_text(json.dumps(inbox))
    g2 = Gateway(build, tmp_path, cfg, name="gw2")
    gateways(g2)
    g2.wait_ready(generation=0)
    con.wait_ready()
    wait_for(lambda: "replayed 1 saved message" in g2.log(), what="replay")
    time.sleep(1.0)
    assert g2.status()["generation"] == "0"
    assert g2.status()["restarts"] == "0"
    assert _texts(con.messages("ops")["messages"]).count("Restarting the gateway...") == 1


def test_restart_without_marker_says_so_and_tells_home(build, tmp_path, port, gateways):
    """A marker that cannot be written: the requesting chat is told no
    notice will follow, and the home channel still hears the gateway is back."""
    (tmp_path / "state" / "restart.json").mkdir(parents=True)
    cfg = write_config(tmp_path, port, console={"home_channel": "home"})
    g = Gateway(build, tmp_path, cfg)
    gateways(g)
    g.wait_ready(generation=0)
    con = Console(port)
    con.wait_ready()
    r = con.post("/restart", chat_id="ops", user_id="local", wait=20)
    (reply,) = _texts(r["replies"])
    assert reply.startswith("Restarting the gateway...")
    assert "marker could not be saved" in reply and "no \"Gateway online\"" in reply
    g.wait_ready(generation=1)
    home = con.wait_text("home", "Gateway online (generation 1)")
    assert home["text"] == "Gateway online (generation 1)"
    time.sleep(0.5)
    assert not [t for t in _texts(con.messages("ops")["messages"])
                if t.startswith("Gateway online")]
    assert _texts(con.messages("home")["messages"]).count("Gateway online (generation 1)") == 1
    assert "writing the restart marker" in g.log()


def test_restart_by_non_admin_refused(build, tmp_path, port, gateways):
    cfg = write_config(tmp_path, port, console={"admins": ["boss"]})
    g = Gateway(build, tmp_path, cfg)
    gateways(g)
    g.wait_ready(generation=0)
    con = Console(port)
    pid = con.wait_ready()["worker_pid"]
    assert con.ask("/restart", chat_id="c", user_id="local") == [
        "Only an admin can restart the gateway."]
    time.sleep(0.5)
    assert g.status()["generation"] == "0"
    assert con.status()["worker_pid"] == pid
    assert con.ask("/restart", chat_id="c", user_id="boss") == ["Restarting the gateway..."]
    g.wait_ready(generation=1)


def test_drain_timeout_honoured(build, tmp_path, port, gateways):
    slow = HangingAgent()
    try:
        cfg = write_config(tmp_path, port, agent=slow.config(), extra={"drain_timeout": 1.5})
        g = Gateway(build, tmp_path, cfg)
        gateways(g)
        g.wait_ready(generation=0)
        con = Console(port)
        con.wait_ready()
        con.post("a long question", chat_id="busy", user_id="local")
        wait_for(lambda: slow.requests >= 1, what="agent call")
        t0 = time.monotonic()
        con.post("/restart", chat_id="ops", user_id="local", wait=20)
        # The running call is cancelled after drain_timeout with a reply saying so.
        m = con.wait_text("busy", "did not finish in time")
        assert "answered again after the restart" in m["text"]
        g.wait_ready(generation=1)
        elapsed = time.monotonic() - t0
        assert elapsed >= 1.4, elapsed
        con.wait_text("ops", "Gateway online (generation 1")
        # The interrupted message was not acknowledged: the next worker takes it again.
        wait_for(lambda: slow.requests >= 2, what="the message retried by the next worker")
    finally:
        slow.close()


def test_drain_timeout_with_exec_agent(build, tmp_path, port, gateways):
    """The same with an exec agent that sleeps: cancelled at drain_timeout,
    its process gone, the message run again by the next worker."""
    runs = tmp_path / "runs"
    agent = {"backend": "exec", "timeout": 120,
             "command": ["/bin/sh", "-c", "echo run >> %s; exec sleep 30" % runs]}
    cfg = write_config(tmp_path, port, agent=agent, extra={"drain_timeout": 1})
    g = Gateway(build, tmp_path, cfg)
    gateways(g)
    g.wait_ready(generation=0)
    con = Console(port)
    con.wait_ready()
    con.post("sleepy", chat_id="busy", user_id="local")
    wait_for(lambda: runs.exists() and runs.read_text().count("run") == 1, what="exec run")
    t0 = time.monotonic()
    con.post("/restart", chat_id="ops", user_id="local", wait=20)
    con.wait_text("busy", "did not finish in time")
    g.wait_ready(generation=1)
    assert time.monotonic() - t0 >= 0.9
    wait_for(lambda: runs.read_text().count("run") == 2, what="the message run again")


def test_drain_waits_for_running_call_to_finish(build, tmp_path, port, gateways):
    """A call that ends within drain_timeout is answered before the restart."""
    cfg = write_config(tmp_path, port, extra={"drain_timeout": 30})
    g = Gateway(build, tmp_path, cfg)
    gateways(g)
    g.wait_ready(generation=0)
    con = Console(port)
    con.wait_ready()
    for i in range(20):
        con.post("msg %d" % i, chat_id="burst", user_id="local")
    con.post("/restart", chat_id="ops", user_id="local", wait=20)
    g.wait_ready(generation=1)
    # Every message is answered exactly once, by one worker or the next.
    msgs = con.wait_messages("burst", lambda ms: len(ms) >= 20, timeout=30)
    time.sleep(0.5)
    texts = _texts(con.messages("burst")["messages"])
    assert sorted(texts) == sorted("msg %d" % i for i in range(20)), texts
    assert len(msgs) >= 20


def test_messages_across_repeated_restarts_answered_once(build, tmp_path, port, gateways):
    """100 messages in 5 chats while /restart is issued 5 times: every message
    is answered exactly once, by whichever worker took it."""
    cfg = write_config(tmp_path, port)
    g = Gateway(build, tmp_path, cfg)
    gateways(g)
    g.wait_ready(generation=0)
    con = Console(port)
    con.wait_ready()
    sent = []
    for r in range(5):
        for i in range(20):
            text = "r%d m%d" % (r, i)
            con.post(text, chat_id="chat%d" % (i % 5), user_id="local", retry=True)
            sent.append(text)
        con.post("/restart", chat_id="ops", user_id="local", retry=True)
        g.wait_ready(generation=r + 1, timeout=30)
    for c in range(5):
        want = [t for t in sent if int(t.split("m")[1]) % 5 == c]
        con.wait_messages("chat%d" % c, lambda ms, n=len(want): len(ms) >= n, timeout=30)
    time.sleep(0.5)
    got = []
    for c in range(5):
        got += _texts(con.messages("chat%d" % c)["messages"])
    assert sorted(got) == sorted(sent)
    notices = [t for t in _texts(con.messages("ops")["messages"])
               if t.startswith("Gateway online")]
    assert len(notices) == 5


def test_hung_teardown_replaced_by_supervisor(build, tmp_path, port, gateways):
    """A worker stuck in teardown (here: a long drain) is killed at the
    supervisor's stop deadline and replaced."""
    slow = HangingAgent()
    try:
        cfg = write_config(tmp_path, port, agent=slow.config(), extra={"drain_timeout": 600})
        g = Gateway(build, tmp_path, cfg, sup_args=["--stop-timeout", "1"])
        gateways(g)
        g.wait_ready(generation=0)
        con = Console(port)
        old = con.wait_ready()["worker_pid"]
        con.post("never answered", chat_id="busy", user_id="local")
        wait_for(lambda: slow.requests >= 1, what="agent call")
        t0 = time.monotonic()
        con.post("/restart", chat_id="ops", user_id="local", wait=20)
        g.wait_ready(generation=1, timeout=30)
        assert time.monotonic() - t0 < 20
        assert not pid_alive(old)
        assert con.wait_ready()["worker_pid"] != old
        # The marker was written before the drain: the notice still comes.
        con.wait_text("ops", "Gateway online (generation 1")
    finally:
        slow.close()


def test_usr1_and_supervisor_restart_and_watchdog(build, tmp_path, port, gateways):
    """SIGUSR1 restarts the worker like /restart (no chat, no notice); the
    supervisor's own `restart` recycles it; with --watchdog the worker's
    heartbeats keep it alive."""
    cfg = write_config(tmp_path, port)
    g = Gateway(build, tmp_path, cfg, sup_args=["--watchdog", "0.6"])
    gateways(g)
    g.wait_ready(generation=0)
    con = Console(port)
    pid0 = con.wait_ready()["worker_pid"]
    os.kill(pid0, signal.SIGUSR1)
    g.wait_ready(generation=1)
    assert "restart requested by signal" in g.log()
    assert not (tmp_path / "state" / "restart.json").exists()
    pid1 = con.wait_ready()["worker_pid"]
    assert pid1 != pid0
    # Several watchdog periods pass without the worker being declared hung.
    time.sleep(2.0)
    st = g.status()
    assert st["generation"] == "1" and int(st["worker_pid"]) == pid1
    r = g.ctl("restart")
    assert r.returncode == 0, r.stderr
    g.wait_ready(generation=2)
    assert con.ask("after", chat_id="x") == ["after"]


def test_sigterm_to_supervisor_stops_cleanly(build, tmp_path, port, gateways):
    cfg = write_config(tmp_path, port)
    g = Gateway(build, tmp_path, cfg)
    gateways(g)
    g.wait_ready(generation=0)
    con = Console(port)
    pid = con.wait_ready()["worker_pid"]
    g.proc.send_signal(signal.SIGTERM)
    assert g.proc.wait(30) == 0
    assert not pid_alive(pid)
    assert "exit 0" in g.log()


def test_bad_config_stops_supervisor_78(build, tmp_path, port, gateways):
    cfg = tmp_path / "gateway.json"
    cfg.write_text('{"platforms": {"console": {"listen": "127.0.0.1:%d", "oops": 1}}}' % port)
    g = Gateway(build, tmp_path, cfg)
    gateways(g)
    assert g.proc.wait(30) == 78
    assert 'key "platforms.console.oops": unknown key' in g.log()
