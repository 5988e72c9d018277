"""The agent backends end to end: the real hermes-worker, its console API,
and tests/fakes/fake_openai.py or small exec commands.

openai: streaming, non-streaming, TLS with a test CA, history sent and
extended, 4xx/5xx, timeouts, garbage, truncation, unreachable endpoint;
exec: reply, JSON input, timeout, non-zero exit, huge output, a scrubbed
environment, a process group killed with the call and the worker; a slow agent
never blocks /status or /ping; agent config errors exit 78 naming the key.
"""
import json
import os
import pathlib
import signal
import sys
import time

import pytest

from console_util import Console, WorkerProc, write_config
from worker_util import Gateway, pid_alive, run_worker, wait_for

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "fakes"))
from fake_openai import FakeOpenAI  # noqa: E402

KEY = "sk-integration-4b1d5e0c9a"
KEY_ENV = {"HERMES_TEST_AGENT_KEY": KEY}
UNREACHABLE = "the agent is unreachable: "


@pytest.fixture
def fake():
    f = FakeOpenAI(api_key=KEY).start()
    yield f
    f.stop()


@pytest.fixture
def tls_fake(tmp_path):
    d = tmp_path / "tls"
    d.mkdir()
    f = FakeOpenAI(tls_dir=d, api_key=KEY).start()
    yield f
    f.stop()


def openai_conf(url, **kw):
    conf = {"backend": "openai", "base_url": url, "model": "fake-model",
            "api_key_env": "HERMES_TEST_AGENT_KEY", "timeout": 20}
    conf.update(kw)
    return conf


def start(build, tmp_path, port, agent, env=None, extra=None):
    cfg = write_config(tmp_path, port, agent=agent, extra=extra)
    w = WorkerProc(build, cfg, tmp_path, env=dict(KEY_ENV, **(env or {}))).start()
    con = Console(port)
    con.wait_ready(alive=w.alive)
    return w, con


def user_texts(req):
    return [(m["role"], m["content"]) for m in json.loads(req["body"])["messages"]]


def assert_unreachable(replies, frag):
    assert len(replies) == 1, replies
    assert replies[0].startswith(UNREACHABLE), replies
    assert frag in replies[0], replies
    assert KEY not in replies[0]


# --- openai ----------------------------------------------------------------

@pytest.mark.parametrize("stream", [True, False])
def test_openai_reply_and_history(build, tmp_path, port, fake, stream):
    w, con = start(build, tmp_path, port,
                   openai_conf(fake.url, stream=stream, system_prompt="Be terse."))
    try:
        assert con.ask("hello there", chat_id="h") == ["echo: hello there"]
        assert con.ask("and again", chat_id="h") == ["echo: and again"]
        reqs = fake.requests()
        assert len(reqs) == 2
        assert reqs[-1]["authorization"] == "Bearer " + KEY
        body = json.loads(reqs[-1]["body"])
        assert body["model"] == "fake-model"
        assert bool(body["stream"]) == stream
        # The session's history is sent and extended.
        assert user_texts(reqs[-1]) == [("system", "Be terse."),
                                        ("user", "hello there"),
                                        ("assistant", "echo: hello there"),
                                        ("user", "and again")]
        # Another chat is another session.
        assert con.ask("elsewhere", chat_id="other") == ["echo: elsewhere"]
        assert user_texts(fake.requests()[-1])[1:] == [("user", "elsewhere")]
        assert con.status()["agent"] == "openai"
        assert KEY not in w.log()
    finally:
        w.stop()


def test_openai_over_tls_with_test_ca(build, tmp_path, port, tls_fake):
    url = "https://localhost:%d/v1" % tls_fake.port
    w, con = start(build, tmp_path, port, openai_conf(url),
                   extra={"tls": {"ca_file": tls_fake.ca}})
    try:
        assert con.ask("secure hello") == ["echo: secure hello"]
    finally:
        w.stop()


def test_openai_tls_unknown_ca_is_an_error(build, tmp_path, port, tls_fake):
    w, con = start(build, tmp_path, port, openai_conf(tls_fake.url))
    try:
        assert_unreachable(con.ask("hello"), "certificate verification failed")
        assert w.alive()
    finally:
        w.stop()


FAULTS = [
    ("fault:status:500", {}, "HTTP 500: The server had an error"),
    ("fault:status:503", {"stream": False}, "HTTP 503: The engine is currently overloaded"),
    ("fault:status:429", {}, "HTTP 429: Rate limit reached"),
    ("fault:hang", {"timeout": 1}, "timed out after 1 s"),
    ("fault:slow:5", {"timeout": 1, "stream": False}, "timed out after 1 s"),
    ("fault:garbage", {}, "not JSON"),
    ("fault:garbage", {"stream": False}, "did not answer with JSON"),
    ("fault:truncated", {}, "closed before a complete response"),
    ("fault:truncated", {"stream": False}, "closed before a complete response"),
    ("fault:cut", {}, "the stream ended before the reply was complete"),
    ("fault:stream_error", {}, "error in the stream"),
    ("fault:empty", {}, "empty reply"),
    ("fault:huge:6000000", {"stream": False}, "larger than"),
]


@pytest.mark.parametrize("text,conf,frag", FAULTS)
def test_openai_faults(build, tmp_path, port, fake, text, conf, frag):
    w, con = start(build, tmp_path, port, openai_conf(fake.url, **conf))
    try:
        assert_unreachable(con.ask(text, chat_id="f"), frag)
        # The worker stays up and the next message is answered.
        assert con.ask("after the fault", chat_id="f") == ["echo: after the fault"]
        assert w.alive()
    finally:
        w.stop()


def test_openai_wrong_key_401_never_shows_key(build, tmp_path, port, fake):
    wrong = "sk-wrong-0123456789"
    w, con = start(build, tmp_path, port, openai_conf(fake.url),
                   env={"HERMES_TEST_AGENT_KEY": wrong})
    try:
        r = con.ask("hi")
        assert_unreachable(r, "HTTP 401: Incorrect API key provided: ***")
        assert wrong not in r[0]
        assert wrong not in w.log()
    finally:
        w.stop()


def test_openai_unreachable_endpoint(build, tmp_path, port):
    from conftest import free_port
    w, con = start(build, tmp_path, port,
                   openai_conf("http://127.0.0.1:%d/v1" % free_port()))
    try:
        assert_unreachable(con.ask("anyone?"), "cannot connect to 127.0.0.1:")
        assert w.alive()
    finally:
        w.stop()


def test_openai_key_from_dotenv(build, tmp_path, port, fake):
    (tmp_path / ".env").write_text("HERMES_TEST_DOTENV_KEY=%s\n" % KEY)
    (tmp_path / ".env").chmod(0o600)
    w, con = start(build, tmp_path, port,
                   openai_conf(fake.url, api_key_env="HERMES_TEST_DOTENV_KEY"))
    try:
        assert con.ask("via dotenv") == ["echo: via dotenv"]
        assert fake.requests()[-1]["authorization"] == "Bearer " + KEY
    finally:
        w.stop()


# --- exec ------------------------------------------------------------------

PY_AGENT = ("import json, sys\n"
            "d = json.load(sys.stdin)\n"
            "print('exec says %s to %s in %s via %s (history %d)' % (d['text'], d['user'],"
            " d['chat'], d['platform'], len(d['history'])))\n")


def test_exec_reply_with_json_input(build, tmp_path, port):
    w, con = start(build, tmp_path, port,
                   {"backend": "exec", "command": ["/usr/bin/python3", "-c", PY_AGENT]})
    try:
        assert con.ask("hi", chat_id="x", user_id="local") == [
            "exec says hi to local in x via console (history 0)"]
        assert con.ask("again", chat_id="x") == [
            "exec says again to local in x via console (history 2)"]
        assert con.status()["agent"] == "exec"
    finally:
        w.stop()


EXEC_FAULTS = [
    ({"command": ["/bin/sleep", "30"], "timeout": 1}, "the command timed out after 1 s"),
    ({"command": ["/bin/sh", "-c", "echo 'it broke' >&2; exit 2"]},
     "the command exited with status 2: it broke"),
    ({"command": ["/usr/bin/yes"], "max_output": 100000},
     "the command's output exceeded 100000 bytes"),
    ({"command": ["/bin/true"]}, "the command gave no output"),
    ({"command": ["/nonexistent/agent"]}, "cannot run /nonexistent/agent"),
]


@pytest.mark.parametrize("conf,frag", EXEC_FAULTS)
def test_exec_faults(build, tmp_path, port, conf, frag):
    w, con = start(build, tmp_path, port, dict({"backend": "exec"}, **conf))
    try:
        assert_unreachable(con.ask("go"), frag)
        assert w.alive()
        assert con.ask("/ping") == ["pong"]
    finally:
        w.stop()


def test_exec_timeout_leaves_no_child(build, tmp_path, port):
    pidfile = tmp_path / "child.pid"
    script = "echo $$ > %s; exec sleep 30" % pidfile
    w, con = start(build, tmp_path, port,
                   {"backend": "exec", "command": ["/bin/sh", "-c", script], "timeout": 1})
    try:
        assert_unreachable(con.ask("go"), "timed out")
        pid = int(pidfile.read_text())
        # Killed and reaped: no process, not even a zombie.
        assert wait_for(lambda: not pathlib.Path("/proc/%d" % pid).exists(), timeout=10,
                        what="child reaped")
    finally:
        w.stop()


def test_exec_env_is_scrubbed(build, tmp_path, port):
    # The worker's secrets stay with the worker; the allowlist and what
    # the config names get through.
    secrets = {"TELEGRAM_BOT_TOKEN": "123:tg-integration-secret",
               "DISCORD_BOT_TOKEN": "discord-integration-secret",
               "SOME_SERVICE_PASSWORD": "pw-integration-secret"}
    w, con = start(build, tmp_path, port,
                   {"backend": "exec", "command": ["/usr/bin/env"],
                    "pass_env": ["HERMES_TEST_PASSED"], "env": {"AGENT_MODE": "test"}},
                   env=dict(secrets, HERMES_TEST_PASSED="passed", LC_ALL="C"))
    try:
        (out,) = con.ask("env?", chat_id="env", user_id="local")
        env = dict(l.split("=", 1) for l in out.splitlines() if "=" in l)
        for name, value in dict(secrets, **KEY_ENV).items():
            assert value not in out and name not in env, name
        assert "HERMES_HOME" not in env and "NOTIFY_SOCKET" not in env
        assert env["HERMES_TEST_PASSED"] == "passed"
        assert env["AGENT_MODE"] == "test"
        assert env["LC_ALL"] == "C" and "PATH" in env
    finally:
        w.stop()


def test_exec_group_dies_with_the_call_and_the_worker(build, tmp_path, port):
    # The command runs in a group of its own, killed when it is done: what it
    # leaves behind does not pile up.  A worker killed mid-call (a hung one,
    # replaced by the supervisor) takes its running command along too: the
    # supervisor, a subreaper, sweeps what its worker left.
    left, cmdpid = tmp_path / "left.pid", tmp_path / "cmd.pid"
    script = ("sleep 1000 >/dev/null 2>&1 & echo $! > %s; "
              "if [ -e %s ]; then echo $$ > %s.tmp && mv %s.tmp %s; exec sleep 1000; fi; "
              "cut -d' ' -f5 /proc/$$/stat; echo $$"
              % (left, tmp_path / "hang", cmdpid, cmdpid, cmdpid))
    cfg = write_config(tmp_path, port,
                       agent={"backend": "exec", "command": ["/bin/sh", "-c", script]})
    g = Gateway(build, tmp_path, cfg)
    try:
        g.wait_ready(generation=0)
        con = Console(port)
        wpid = con.wait_ready()["worker_pid"]
        (out,) = con.ask("which group?")
        pgid, pid = (int(x) for x in out.split())
        assert pgid == pid and pgid != os.getpgid(wpid)
        bg = int(left.read_text())
        assert wait_for(lambda: not pid_alive(bg), timeout=10, what="leftover killed")

        (tmp_path / "hang").write_text("")
        con.post("hang", chat_id="h")
        wait_for(cmdpid.exists, timeout=20, what="command running")
        cmd, bg = int(cmdpid.read_text()), int(left.read_text())
        assert pid_alive(cmd) and pid_alive(bg)
        os.kill(wpid, signal.SIGKILL)
        g.wait_ready(generation=1, timeout=30)
        for p in (cmd, bg):
            assert wait_for(lambda: not pid_alive(p), timeout=10, what="pid %d gone" % p)
    finally:
        g.cleanup()
        for f in (left, cmdpid):
            try:
                os.kill(int(f.read_text()), signal.SIGKILL)
            except (OSError, ValueError):
                pass


# --- a slow agent blocks nothing else ----------------------------------------

def _not_blocked(con, chats):
    """/v1/status and /ping answer while every chat's agent call is still running."""
    for c in chats:
        con.post("think slowly", chat_id=c)
    wait_for(lambda: con.status()["running"] >= len(chats), what="agent calls running")
    assert con.ask("/ping", chat_id="ops") == ["pong"]
    st = con.status()
    assert st["running"] >= len(chats)
    # None of the slow calls has answered yet: the answers above did not wait for them.
    for c in chats:
        assert con.messages(c)["messages"] == []


def test_slow_exec_does_not_block_status(build, tmp_path, port):
    w, con = start(build, tmp_path, port,
                   {"backend": "exec", "timeout": 60,
                    "command": ["/bin/sh", "-c", "cat >/dev/null; sleep 8; echo late"]})
    try:
        _not_blocked(con, ["a", "b", "c"])
        # And the slow answers do arrive.
        for c in ("a", "b", "c"):
            assert con.wait_text(c, "late", timeout=60)["text"] == "late"
    finally:
        w.stop()


def test_slow_openai_does_not_block_status(build, tmp_path, port, fake):
    fake.fault("slow", "8", count=3)
    w, con = start(build, tmp_path, port, openai_conf(fake.url, timeout=60))
    try:
        _not_blocked(con, ["a", "b", "c"])
        for c in ("a", "b", "c"):
            assert con.wait_text(c, "echo: think slowly", timeout=60)
    finally:
        w.stop()


def test_stop_cancels_running_exec(build, tmp_path, port):
    w, con = start(build, tmp_path, port,
                   {"backend": "exec", "timeout": 60,
                    "command": ["/bin/sh", "-c", "exec sleep 30"]})
    try:
        con.post("long job", chat_id="s")
        wait_for(lambda: con.status()["running"] == 1, what="call running")
        con.ask("/stop", chat_id="s")
        wait_for(lambda: con.status()["running"] == 0, what="call cancelled")
        assert con.ask("/ping", chat_id="s") == ["pong"]
        assert w.alive()
    finally:
        w.stop()


# --- config ------------------------------------------------------------------

AGENT_BAD = [
    ({"backend": "exec"}, "agent.command"),
    ({"backend": "exec", "command": "echo hi"}, "agent.command"),
    ({"backend": "exec", "command": ["x"], "timeout": -1}, "agent.timeout"),
    ({"backend": "openai", "base_url": "http://127.0.0.1:1/v1"}, "agent.model"),
    ({"backend": "openai", "model": "m", "base_url": "gopher://x"}, "agent.base_url"),
    ({"backend": "openai", "model": "m", "api_key_env": "HERMES_TEST_NOT_SET"},
     "agent.api_key_env"),
    ({"backend": "openai", "model": "m", "stream": "yes"}, "agent.stream"),
    ({"backend": "openai", "model": "m", "temperature": 1}, "agent.temperature"),
]


@pytest.mark.parametrize("agent,frag", AGENT_BAD)
def test_agent_config_errors_exit_78(build, tmp_path, port, agent, frag):
    cfg = write_config(tmp_path, port, agent=agent)
    r = run_worker(build, ["--check-config", "-c", str(cfg)], tmp_path)
    assert r.returncode == 78, r.stderr
    assert frag in r.stderr and str(cfg) in r.stderr, r.stderr
