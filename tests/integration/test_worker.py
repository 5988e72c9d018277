"""hermes-worker on its own: command line, config errors, embedded default,
sd_notify, signals, re-exec without a supervisor, a blocking agent, the
state directory's checks, session retention and memory."""
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

import fs_util
from console_util import Console, WorkerProc, write_config
from worker_util import (Gateway, HangingAgent, NotifyListener, clean_env, run_worker,
                         wait_for)


def test_help_and_version(build, tmp_path):
    r = run_worker(build, ["--help"], tmp_path)
    assert r.returncode == 0
    assert "--check-config" in r.stdout
    r = run_worker(build, ["--version"], tmp_path)
    assert r.returncode == 0
    assert r.stdout.startswith("hermes-worker ")
    r = run_worker(build, ["--bogus"], tmp_path)
    assert r.returncode == 78
    assert "usage" in r.stderr


def test_check_config_ok(build, tmp_path, port):
    cfg = write_config(tmp_path, port)
    r = run_worker(build, ["--check-config", "-c", str(cfg)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "configuration OK: " + str(cfg) in r.stdout
    # Nothing was started or created.
    assert not (tmp_path / "state").exists()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_check_config_embedded_default(build, tmp_path):
    r = run_worker(build, ["--check-config"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "embedded default" in r.stdout
    assert "no configuration at %s/gateway.json" % tmp_path in r.stderr


BAD_CONFIGS = [
    ('{"platforms": {"console": {"enabled": true,}}}', "not valid JSON"),
    ('{"state_dri": "/tmp"}', 'key "state_dri": unknown key'),
    ('{"drain_timeout": "ten"}', 'key "drain_timeout"'),
    ('{"platforms": {"console": {"listen": "127.0.0.1:1", "colour": 1}}}',
     'key "platforms.console.colour": unknown key'),
    ('{"platforms": {"consol": {}}}', 'key "platforms.consol": unknown platform'),
    ('{"platforms": {"console": {"admins": "local"}}}',
     'key "platforms.console.admins": expected an array of strings'),
    ('{"agent": {"backend": "nope"}}', "agent.backend"),
    ('{"agent": {"backend": "echo", "model": "x"}}', "agent"),
    # A platform's own validation (ops->create): non-loopback without a token.
    ('{"platforms": {"console": {"listen": "0.0.0.0:%PORT%"}}}', "platforms.console"),
    ('{"tls": {"ca_file": "/nonexistent/ca.pem"}}', "tls.ca_file"),
    # A secret missing for an enabled platform.
    ('{"platforms": {"telegram": {"enabled": true}}}', "platforms.telegram.token"),
    ('{"agent": {"backend": "openai", "model": "m", "api_key_env": "NO_SUCH_KEY_X"}}',
     "NO_SUCH_KEY_X"),
    # A key given twice: cJSON keeps both and a getter would see the first.
    ('{"drain_timeout": 1, "drain_timeout": 2}', 'key "drain_timeout": given twice'),
    ('{"platforms": {"console": {"listen": "127.0.0.1:%PORT%", "token": "first-token", '
     '"token": "second-token"}}}', 'key "platforms.console.token": given twice'),
    # Numbers out of range for what they are converted to.
    ('{"sessions": {"max_age": 1e999}}', 'key "sessions.max_age": expected a whole number'),
    ('{"sessions": {"max_bytes": 1e300}}', 'key "sessions.max_bytes": expected a whole number'),
    ('{"sessions": {"max_count": -1}}', 'key "sessions.max_count": expected a whole number'),
    ('{"sessions": {"idle_timeout": 0}}', 'key "sessions.idle_timeout": expected a number'),
    ('{"sessions": {"keep": 1}}', 'key "sessions.keep": unknown key'),
]


@pytest.mark.parametrize("text,frag", BAD_CONFIGS)
def test_config_errors_exit_78(build, tmp_path, port, text, frag):
    cfg = tmp_path / "bad.json"
    cfg.write_text(text.replace("%PORT%", str(port)))
    for args in (["--check-config", "-c", str(cfg)], ["--config", str(cfg)]):
        r = run_worker(build, args, tmp_path)
        assert r.returncode == 78, (args, r.stderr)
        assert str(cfg) in r.stderr, r.stderr
        assert frag in r.stderr, r.stderr
        # One clear message.
        assert len([l for l in r.stderr.splitlines() if l.strip()]) == 1, r.stderr
        assert "first-token" not in r.stderr and "second-token" not in r.stderr


def test_secret_from_dotenv_and_credentials(build, tmp_path):
    cfg = tmp_path / "tg.json"
    cfg.write_text('{"platforms": {"telegram": {"enabled": true}}}')
    r = run_worker(build, ["--check-config", "-c", str(cfg)], tmp_path)
    assert r.returncode == 78 and "platforms.telegram.token" in r.stderr
    # From $CREDENTIALS_DIRECTORY (systemd LoadCredential=).
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "TELEGRAM_BOT_TOKEN").write_text("123:fromcreds\n")
    r = run_worker(build, ["--check-config", "-c", str(cfg)], tmp_path,
                   env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert r.returncode == 0, r.stderr
    # From $HERMES_HOME/.env, with a warning when others can read it.
    env_file = tmp_path / ".env"
    env_file.write_text("# secrets\nexport TELEGRAM_BOT_TOKEN='123:fromdotenv'\n")
    env_file.chmod(0o640)
    r = run_worker(build, ["--check-config", "-c", str(cfg)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert ".env holds secrets and is readable by group or others" in r.stderr
    assert "fromdotenv" not in r.stderr
    env_file.chmod(0o600)
    r = run_worker(build, ["--check-config", "-c", str(cfg)], tmp_path)
    assert r.returncode == 0 and "readable" not in r.stderr


def test_missing_explicit_config(build, tmp_path):
    r = run_worker(build, ["-c", str(tmp_path / "none.json")], tmp_path)
    assert r.returncode == 78
    assert "none.json" in r.stderr and "No such file" in r.stderr


def test_secret_file_readable_warns(build, tmp_path, port):
    cfg = write_config(tmp_path, port, console={"token": "tok123"})
    cfg.chmod(0o644)
    r = run_worker(build, ["--check-config", "-c", str(cfg)], tmp_path)
    assert r.returncode == 0
    assert "readable by group or others" in r.stderr
    assert "tok123" not in r.stderr
    cfg.chmod(0o600)
    r = run_worker(build, ["--check-config", "-c", str(cfg)], tmp_path)
    assert "readable by group or others" not in r.stderr


def test_embedded_default_with_passed_socket(build, tmp_path):
    """No config at all: the console with the echo agent, here on a socket
    passed as LISTEN_FDS (so the test needs no fixed port)."""
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(16)
    port = ls.getsockname()[1]
    env = clean_env(tmp_path, {"LISTEN_FDS": "1", "LISTEN_FDNAMES": "console"})
    fd = ls.fileno()
    # The socket goes to fd 3, and LISTEN_PID must be the worker's own pid:
    # the shell's $$ survives its exec (bash: the fd may be above 9).
    proc = subprocess.Popen(["/bin/bash", "-c", 'exec 3<&%d; LISTEN_PID=$$ exec "$0"' % fd,
                             str(build / "hermes-worker")],
                            env=env, pass_fds=(fd,),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        con = Console(port)
        st = con.wait_ready()
        assert st["agent"] == "echo"
        assert st["platforms"][0]["name"] == "console"
        assert con.ask("hi there", user_id="anyone") == ["hi there"]
        assert (tmp_path / "state").is_dir()
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=20)[0].decode()
        assert proc.returncode == 0
        assert "embedded default" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        ls.close()


def test_notify_ready_status_watchdog_stopping(build, tmp_path, port):
    cfg = write_config(tmp_path, port)
    n = NotifyListener(tmp_path)
    w = WorkerProc(build, cfg, tmp_path, env={"NOTIFY_SOCKET": n.path,
                                             "WATCHDOG_USEC": "200000"})
    try:
        w.start()
        n.wait(lambda m: "READY=1" in m.split("\n"))
        assert any(m.startswith("STATUS=") and "console: up" in m for m in
                   n.wait(lambda m: "console: up" in m))
        n.msgs.clear()
        time.sleep(0.5)
        pings = [m for m in n.drain(0.05) if m == "WATCHDOG=1"]
        assert len(pings) >= 2
        w.proc.send_signal(signal.SIGTERM)
        assert w.wait_exit() == 0
        n.wait(lambda m: m == "STOPPING=1")
    finally:
        w.kill()
        n.close()


def test_watchdog_for_other_pid_not_pinged(build, tmp_path, port):
    cfg = write_config(tmp_path, port)
    n = NotifyListener(tmp_path)
    w = WorkerProc(build, cfg, tmp_path, env={"NOTIFY_SOCKET": n.path,
                                             "WATCHDOG_USEC": "100000", "WATCHDOG_PID": "1"})
    try:
        w.start()
        n.wait(lambda m: "READY=1" in m)
        time.sleep(0.4)
        assert "WATCHDOG=1" not in n.drain(0.05)
    finally:
        w.stop()
        n.close()


def test_sigint_stops_and_usr1_reexecs(build, tmp_path, port):
    cfg = write_config(tmp_path, port)
    with WorkerProc(build, cfg, tmp_path) as w:
        con = Console(port)
        st = con.wait_ready()
        assert st["generation"] == 0 and st["supervisor_pid"] is None
        pid = st["worker_pid"]
        w.proc.send_signal(signal.SIGUSR1)
        # No supervisor: the worker re-executes itself in place.
        st = wait_for(lambda: _status_gen(con, 1), what="generation 1")
        assert st["worker_pid"] == pid == w.pid
        assert con.ask("after reexec") == ["after reexec"]
        w.proc.send_signal(signal.SIGINT)
        assert w.wait_exit() == 0
    assert "no supervisor: restarting in place" in w.log()


def _status_gen(con, gen):
    try:
        st = con.status()
    except Exception:
        return None
    return st if st["generation"] == gen else None


def test_restart_without_supervisor_from_chat(build, tmp_path, port):
    cfg = write_config(tmp_path, port)
    with WorkerProc(build, cfg, tmp_path) as w:
        con = Console(port)
        con.wait_ready()
        r = con.post("/restart", chat_id="ops", wait=20)
        assert [m["text"] for m in r["replies"]] == ["Restarting the gateway..."]
        m = con.wait_text("ops", "Gateway online (generation 1, restarted in ")
        assert m["reply_to"] is None
        assert con.status()["worker_pid"] == w.pid
        assert not (tmp_path / "state" / "restart.json").exists()


def test_blocking_agent_does_not_block_status_or_heartbeats(build, tmp_path, port):
    slow = HangingAgent()
    cfg = write_config(tmp_path, port, agent=slow.config())
    n = NotifyListener(tmp_path)
    w = WorkerProc(build, cfg, tmp_path, env={"NOTIFY_SOCKET": n.path,
                                             "WATCHDOG_USEC": "200000"})
    try:
        w.start()
        con = Console(port)
        con.wait_ready()
        for i in range(3):
            con.post("think hard %d" % i, chat_id="c%d" % i)
        wait_for(lambda: slow.requests >= 3, what="agent requests")
        n.msgs.clear()
        t0 = time.monotonic()
        assert con.ask("/ping", chat_id="c0") == ["pong"]
        st = con.status()
        assert st["running"] == 3
        assert time.monotonic() - t0 < 10
        time.sleep(0.5)
        assert len([m for m in n.drain(0.05) if m == "WATCHDOG=1"]) >= 2
        # /stop cancels the running call in that conversation only.
        assert con.ask("/stop", chat_id="c1") == ["Stopped the agent's running answer."]
        assert wait_for(lambda: con.status()["running"] == 2, what="2 running")
    finally:
        w.stop()
        slow.close()
        n.close()


def test_console_token_from_env(build, tmp_path, port):
    cfg = write_config(tmp_path, port)
    with WorkerProc(build, cfg, tmp_path, env={"HERMES_CONSOLE_TOKEN": "envtok"}):
        con = Console(port, token="envtok")
        con.wait_ready()
        assert Console(port).request("GET", "/v1/status").status == 401
        assert con.ask("with token") == ["with token"]


def test_env_allowlist_and_refusal(build, tmp_path, port):
    cfg = write_config(tmp_path, port, console={"allowed_users": ["*"]})
    with WorkerProc(build, cfg, tmp_path, env={"CONSOLE_ALLOWED_USERS": "ann,bob"}):
        con = Console(port)
        con.wait_ready()
        assert con.ask("hello", user_id="ann") == ["hello"]
        refused = con.ask("hello", user_id="eve")
        assert len(refused) == 1 and "not authorized" in refused[0]
        # Admins are always allowed.
        assert con.ask("/ping", user_id="local") == ["pong"]


def test_sessions_survive_restart(build, tmp_path, port):
    cfg = write_config(tmp_path, port)
    with WorkerProc(build, cfg, tmp_path) as w:
        con = Console(port)
        con.wait_ready()
        assert con.ask("first words", chat_id="s1") == ["first words"]
        w.proc.send_signal(signal.SIGTERM)
        assert w.wait_exit() == 0
    hist = json.loads((tmp_path / "state" / "sessions" / "console:s1.json").read_text())
    assert hist == [{"role": "user", "content": "first words"},
                    {"role": "assistant", "content": "first words"}]
    # Handled ids are kept too.
    assert (tmp_path / "state" / "console.handled").read_text().split() != []


# --- the state directory -------------------------------------------------------

def _expect_state_dir_error(r, path, frag):
    """Exit 78 with one line naming the directory and the reason."""
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert r.returncode == 78, r.stderr
    assert len(lines) == 1, r.stderr
    assert "state directory %s: " % path in lines[0], r.stderr
    assert frag in lines[0], r.stderr


def _run_with_state(build, home, port, state, prefix=()):
    cfg = write_config(home, port, extra={"state_dir": str(state)})
    fs_util.give_to_unprivileged(cfg)
    return subprocess.run(list(prefix) + [str(build / "hermes-worker"), "-c", str(cfg)],
                          env=clean_env(home), capture_output=True, text=True, timeout=20,
                          stdin=subprocess.DEVNULL)


def test_state_dir_a_file_in_the_way(build, tmp_path, port):
    (tmp_path / "state").write_text("not a directory")
    r = _run_with_state(build, tmp_path, port, tmp_path / "state")
    _expect_state_dir_error(r, tmp_path / "state", "not a directory (a file is in the way)")
    # A file where a parent should be.
    r = _run_with_state(build, tmp_path, port, tmp_path / "state" / "sub")
    _expect_state_dir_error(r, tmp_path / "state" / "sub", "cannot create it: Not a directory")
    # Nothing was started: the port is still free.
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_state_dir_writable_by_others_is_refused(build, tmp_path, port):
    """A 0777 state directory would let anyone plant links in it: refused."""
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    r = _run_with_state(build, tmp_path, port, state)
    _expect_state_dir_error(r, state, "writable by group or others (mode 0777)")
    # sessions/ is checked the same way.
    state.chmod(0o700)
    (state / "sessions").mkdir()
    (state / "sessions").chmod(0o770)
    r = _run_with_state(build, tmp_path, port, state)
    _expect_state_dir_error(r, state / "sessions", "writable by group or others (mode 0770)")


def test_state_dir_owned_by_another_user_is_refused(build, tmp_path, port):
    if os.geteuid() != 0:
        pytest.skip("only root can give a directory to another user")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, fs_util.NOBODY, fs_util.NOBODY)
    r = _run_with_state(build, tmp_path, port, state)
    _expect_state_dir_error(r, state, "owned by uid %d, not by this user (uid 0)" % fs_util.NOBODY)


def test_state_dir_without_write_permission(build, port):
    """A 0500 directory of our own, as a user without privileges (root would write anyway)."""
    why = fs_util.unprivileged_unavailable()
    if why:
        pytest.skip(why)
    home = pathlib.Path(tempfile.mkdtemp(dir="/tmp"))
    try:
        home.chmod(0o700)
        state = home / "state"
        state.mkdir(mode=0o500)
        fs_util.give_to_unprivileged(home, state)
        r = _run_with_state(build, home, port, state, fs_util.as_unprivileged([]))
        _expect_state_dir_error(r, state, "cannot write in it: Permission denied")
        # Nor can it be created under a parent we may not write.
        r = _run_with_state(build, home, port, state / "sub", fs_util.as_unprivileged([]))
        _expect_state_dir_error(r, state / "sub", "cannot create it: Permission denied")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.parametrize("how", ["tmpfs", "bind"])
def test_state_dir_on_a_read_only_mount(build, tmp_path, port, how):
    why = fs_util.mount_ns_unavailable()
    if why:
        pytest.skip(why)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    mount = fs_util.ro_tmpfs(state) if how == "tmpfs" else fs_util.ro_bind(state)
    r = _run_with_state(build, tmp_path, port, state, fs_util.in_mount_ns([mount], []))
    _expect_state_dir_error(r, state, "cannot write in it: Read-only file system")
    # A state directory still to be created below a read-only mount.
    r = _run_with_state(build, tmp_path, port, state / "new",
                        fs_util.in_mount_ns([mount], []))
    _expect_state_dir_error(r, state / "new", "cannot create it: Read-only file system")


def test_bad_state_dir_under_the_supervisor_stops_with_78(build, tmp_path, port):
    """The supervisor does not respawn a worker whose state directory is unusable."""
    (tmp_path / "state").write_text("in the way")
    cfg = write_config(tmp_path, port)
    gw = Gateway(build, tmp_path, cfg)
    try:
        assert gw.proc.wait(timeout=20) == 78
    finally:
        gw.cleanup()
    log = gw.log()
    assert log.count("state directory %s: not a directory" % (tmp_path / "state")) == 1, log


def _sessions_dir(home):
    """home/state/sessions, made beforehand as the worker would (private)."""
    sessions = home / "state" / "sessions"
    sessions.mkdir(parents=True, mode=0o700)
    (home / "state").chmod(0o700)
    return sessions


def test_planted_link_at_a_session_file_is_not_followed(build, tmp_path, port):
    """A link at a session's file name is neither read into the history
    (whose content goes to the agent) nor written through."""
    outside = tmp_path / "outside.json"
    secret = json.dumps([{"role": "user", "content": "outside secret"}])
    outside.write_text(secret)
    sessions = _sessions_dir(tmp_path)
    (sessions / "console:s1.json").symlink_to(outside)
    cfg = write_config(tmp_path, port)
    with WorkerProc(build, cfg, tmp_path) as w:
        con = Console(port)
        con.wait_ready()
        assert con.ask("mine", chat_id="s1") == ["mine"]
        w.proc.send_signal(signal.SIGTERM)
        assert w.wait_exit() == 0
    assert outside.read_text() == secret
    saved = sessions / "console:s1.json"
    assert not saved.is_symlink()
    assert json.loads(saved.read_text()) == [{"role": "user", "content": "mine"},
                                             {"role": "assistant", "content": "mine"}]
    assert "a link or not a regular file: ignored, never followed" in w.log()


# --- session retention and memory ------------------------------------------------

def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


def test_session_retention_at_start(build, tmp_path, port):
    sessions = _sessions_dir(tmp_path)
    day = 86400
    for name, age in [("console:old.json", 40 * day), ("console:a.json", 5 * day),
                      ("console:b.json", 4 * day), ("console:c.json", 3 * day),
                      ("console:d.json", 2 * day)]:
        (sessions / name).write_text("[]")
        _age(sessions / name, age)
    (sessions / "notes.txt").write_text("not a session")
    _age(sessions / "notes.txt", 40 * day)
    cfg = write_config(tmp_path, port, extra={"sessions": {"max_age": 30 * day,
                                                            "max_count": 2}})
    with WorkerProc(build, cfg, tmp_path) as w:
        Console(port).wait_ready()
        left = sorted(p.name for p in sessions.iterdir())
        assert left == ["console:c.json", "console:d.json", "notes.txt"], left
    assert "sessions: removed 3 saved histories" in w.log()


def test_session_retention_on_its_timer(build, tmp_path, port):
    """With max_age 2 s the policy runs every second: a history unchanged
    that long disappears while the worker runs."""
    cfg = write_config(tmp_path, port, extra={"sessions": {"max_age": 2}})
    saved = tmp_path / "state" / "sessions" / "console:t1.json"
    with WorkerProc(build, cfg, tmp_path):
        con = Console(port)
        con.wait_ready()
        assert con.ask("remember me", chat_id="t1") == ["remember me"]
        # Sessions are saved by the hub's flush; wait for the file, then its removal.
        wait_for(saved.exists, timeout=20, what="the session saved")
        wait_for(lambda: not saved.exists(), timeout=30, what="the session removed")


def _rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _sanitized(build):
    with open(build / "hermes-worker", "rb") as f:
        return b"__asan_init" in f.read()


def test_memory_returns_after_idle_eviction(build, tmp_path, port):
    """1,000 chats with a 60 KB message each hold ~130 MB of histories; once
    they are evicted (idle_timeout 1 s) the worker's RSS comes back near
    where it started instead of staying at its peak."""
    if _sanitized(build):
        pytest.skip("ASan's quarantine keeps freed memory by design")
    cfg = write_config(tmp_path, port, extra={"sessions": {"idle_timeout": 1}})
    text = "x" * 60000
    with WorkerProc(build, cfg, tmp_path) as w:
        con = Console(port)
        con.wait_ready()
        # Warm up: fill the console's bounded reply log (4 MiB) so the
        # baseline holds everything that is meant to stay.
        for i in range(80):
            con.ask(text, chat_id="warm")
        wait_for(lambda: con.status()["sessions"] == 0, timeout=30, what="warm-up evicted")
        base = _rss_kb(w.pid)
        for i in range(1000):
            con.post(text, chat_id="c%d" % i)
        peak = _rss_kb(w.pid)
        wait_for(lambda: con.status()["sessions"] == 0, timeout=60, what="sessions evicted")
        # The sweep that evicts also trims the heap; give it a moment on a loaded machine.
        after = wait_for(lambda: (lambda r: r if r < 2 * base else None)(_rss_kb(w.pid)),
                         timeout=20, what="RSS back within 2x of %d KiB (peak %d KiB, now %d KiB)"
                         % (base, peak, _rss_kb(w.pid)))
        assert after < 2 * base
