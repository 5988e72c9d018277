"""The gateway under a real systemd, booted in a throwaway container.

One container is booted per module (systemd-nspawn of the host's /usr with a
volatile root, see systemd_util.py).  The unit is installed the way a user
installs it, with `hermes-supervisor install-service` run inside the
container against the build (bind-mounted at /opt/hermes/build); a drop-in
then shortens the timeouts so the scenarios run in seconds.  Everything is
checked through systemctl and the unit's cgroup.  Where the container
cannot run, the tests are skipped with the reason.
"""
import json
import os
import re
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import BUILD, ROOT, free_port
import systemd_util as su

UNIT = "hermes-gateway.service"
SUP_INSIDE = f"{su.MOUNT}/build/hermes-supervisor"
# Test timings, set by a drop-in (the shipped unit: --stop-timeout 30, --watchdog 10,
# TimeoutStopSec=45, WatchdogSec=30).
STOP_TIMEOUT = 3
WORKER_WATCHDOG = 2
TIMEOUT_STOP_SEC = 15
WATCHDOG_SEC = 20
CHAT = "sd"


@pytest.fixture(scope="module")
def container(tmp_path_factory):
    reason = su.unavailable_reason()
    if reason is not None:
        pytest.skip(f"no systemd container here: {reason}")
    c = su.Container(ROOT, BUILD, tmp_path_factory.mktemp("nspawn"))
    try:
        why = c.boot()
        if why is not None:
            pytest.skip(f"cannot boot a systemd container here: {why}")
        yield c
    finally:
        c.poweroff()


def require_binaries():
    for name in ("hermes-supervisor", "hermes-worker"):
        if not (BUILD / name).exists():
            pytest.skip(f"{BUILD / name} is not built")


def drop_in(container, unit, extra_args="", source=None):
    """Shortens the installed unit's timeouts for the test; returns the new ExecStart."""
    text = container.run(["cat", source or f"/etc/systemd/system/{unit}"]).stdout
    exec_start = re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
    exec_start = re.sub(r"--stop-timeout \S+", f"--stop-timeout {STOP_TIMEOUT}", exec_start)
    exec_start = re.sub(r"--watchdog \S+", f"--watchdog {WORKER_WATCHDOG}", exec_start)
    exec_start += extra_args
    container.write(f"/etc/systemd/system/{unit}.d/50-test.conf",
                    "[Service]\nExecStart=\nExecStart=" + exec_start + "\n"
                    f"TimeoutStopSec={TIMEOUT_STOP_SEC}\nWatchdogSec={WATCHDOG_SEC}\n"
                    "RestartSec=1\n"
                    # Sanitizer builds: leak checks need ptrace, which the unit forbids.
                    "Environment=ASAN_OPTIONS=detect_leaks=0\n")
    container.systemctl("daemon-reload")
    return exec_start


def install(container, name, config_text):
    """Writes a config and runs install-service --name NAME inside; returns the unit name."""
    unit = f"hermes-gateway-{name}.service" if name else UNIT
    config = f"/etc/hermes/gateway-{name}.json" if name else "/etc/hermes/gateway.json"
    container.run(["install", "-d", "-m", "755", "/etc/hermes"])
    container.write(config, config_text, mode=0o644)
    argv = [SUP_INSIDE, "install-service", "--system", "--config", config]
    if name:
        argv += ["--name", name]
    r = container.run(argv, check=False)
    assert r.returncode == 0, f"install-service failed: {r.stdout}{r.stderr}"
    assert f"/etc/systemd/system/{unit}" in r.stdout
    return unit


def console_config(port):
    return ('{ "drain_timeout": 2, "agent": { "backend": "echo" },\n'
            '  "platforms": { "console": { "listen": "127.0.0.1:%d" } } }\n' % port)


class Gateway:
    """The installed hermes-gateway.service and its console."""

    def __init__(self, container, port):
        self.c = container
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def show(self, *props):
        return self.c.show(UNIT, *props)

    def main_pid(self):
        return int(self.show("MainPID")["MainPID"])

    def workers(self):
        """PIDs in the unit's cgroup other than the supervisor."""
        main = self.main_pid()
        return [p for p in self.c.cgroup_pids(UNIT) if p != main]

    def comm(self, pid):
        """The base name of the program pid runs."""
        r = self.c.run(["readlink", f"/proc/{pid}/exe"], check=False)
        return os.path.basename(r.stdout.strip())

    def worker(self):
        """The one worker's PID, once there is exactly one and it is a hermes-worker."""
        def one():
            w = self.workers()
            return w[0] if len(w) == 1 and self.comm(w[0]) == "hermes-worker" else None
        return su.wait_for(one, 30, what="exactly one hermes-worker in the cgroup",
                           detail=lambda: self.c.journal(UNIT))

    def wait_active(self, timeout=30):
        su.wait_for(lambda: self.show("ActiveState")["ActiveState"] == "active", timeout,
                    what=f"{UNIT} active", detail=lambda: self.c.journal(UNIT))

    def wait_replaced(self, old, timeout):
        """Waits for a ready worker other than old; returns its PID."""
        def new():
            w = self.workers()
            if old in w or len(w) != 1:
                return None
            st = self.status()
            return w[0] if st is not None and st.get("worker_pid") == w[0] else None
        return su.wait_for(new, timeout, interval=0.2, what=f"a new worker replacing {old}",
                           detail=lambda: self.c.journal(UNIT))

    def status(self):
        """GET /v1/status, or None while the console is not answering."""
        try:
            code, body = su.http("GET", self.url + "/v1/status", timeout=5)
        except OSError:
            return None
        return body if code == 200 else None

    def send(self, text, wait=15):
        code, body = su.http("POST", f"{self.url}/v1/messages?wait={wait}",
                             {"chat_id": CHAT, "user_id": "local", "text": text},
                             timeout=wait + 10)
        assert code == 200, (code, body)
        return body

    def messages_after(self, after, wait=5):
        try:
            code, body = su.http("GET", f"{self.url}/v1/chats/{CHAT}/messages"
                                 f"?after={after}&wait={wait}", timeout=wait + 10)
        except OSError:
            return []
        return body["messages"] if code == 200 else []


@pytest.fixture(scope="module")
def gateway(container):
    require_binaries()
    port = free_port()
    install(container, None, console_config(port))
    drop_in(container, UNIT)
    return Gateway(container, port)


def test_container_runs_notify_service(container):
    """The harness itself: a Type=notify shell service, with an absent credential."""
    container.write("/run/systemd/system/notifytest.service",
                    "[Service]\nType=notify\nNotifyAccess=all\n"
                    "LoadCredential=HERMES_TEST_ABSENT_TOKEN\n"
                    "ExecStart=/bin/sh -c 'systemd-notify --ready --status=hello; exec sleep 600'\n")
    container.systemctl("daemon-reload")
    container.systemctl("start", "notifytest.service")
    p = container.show("notifytest.service", "ActiveState", "StatusText", "MainPID")
    assert p["ActiveState"] == "active"
    assert p["StatusText"] == "hello"
    assert container.cgroup_pids("notifytest.service") == [int(p["MainPID"])]
    container.systemctl("stop", "notifytest.service")
    assert container.show("notifytest.service", "ActiveState")["ActiveState"] == "inactive"


def test_generated_units_verify_and_make_install(tmp_path):
    """make install stages everything; the generated units pass systemd-analyze verify."""
    require_binaries()
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    dest = tmp_path / "dest"
    make = ["make", "-s", "-C", str(ROOT), f"BUILD={BUILD}", "PREFIX=/usr", f"DESTDIR={dest}",
            "-o", f"{BUILD}/hermes-supervisor", "-o", f"{BUILD}/hermes-worker"]
    subprocess.run(make + ["install"], check=True, capture_output=True, timeout=60)
    expected = ["usr/bin/hermes-supervisor", "usr/bin/hermes-worker",
                "usr/share/man/man8/hermes-supervisor.8", "usr/share/man/man8/hermes-worker.8",
                "usr/share/man/man5/hermes-gateway.json.5",
                "usr/lib/systemd/system/hermes-gateway.service",
                "usr/lib/systemd/system/hermes-gateway@.service",
                "usr/lib/systemd/user/hermes-gateway.service",
                "usr/share/hermes/gateway.example.json"]
    for f in expected:
        assert (dest / f).is_file(), f
    unit = (dest / "usr/lib/systemd/system/hermes-gateway.service").read_text()
    assert "ExecStart=/usr/bin/hermes-supervisor --foreground" in unit
    assert "/usr/local" not in unit

    env = dict(os.environ, MANPATH=str(dest / "usr/share/man"))
    xdg = tempfile.mkdtemp(dir=tmp_path)
    env["XDG_RUNTIME_DIR"] = xdg
    for mode, sub in (("--system", "system"), ("--user", "user")):
        d = tmp_path / sub
        d.mkdir()
        r = subprocess.run([str(BUILD / "hermes-supervisor"), "install-service", mode, "--dry-run"],
                           capture_output=True, text=True, timeout=30, env=env)
        assert r.returncode == 0, r.stderr
        assert f"ExecStart={BUILD}/hermes-supervisor --foreground --config " in r.stdout
        (d / UNIT).write_text(r.stdout)
        argv = ["systemd-analyze", "verify"] + (["--user"] if mode == "--user" else [])
        # verify looks up Documentation=man: pages with man(1); without man-db
        # (a minimal Debian) that lookup cannot run, and the pages' presence is
        # checked above instead.
        if shutil.which("man") is None:
            argv.append("--man=no")
        argv.append(str(d / UNIT))
        v = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        assert v.returncode == 0 and v.stderr.strip() == "", f"{mode}: {v.stdout}{v.stderr}"

    subprocess.run(make + ["uninstall"], check=True, capture_output=True, timeout=60)
    left = [str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file()]
    assert left == [], left


def test_example_config_is_valid(tmp_path):
    """contrib/gateway.example.json passes the worker's own validation (for every
    platform this build has; a section for a platform not built in is dropped)."""
    require_binaries()
    cfg = json.loads((ROOT / "contrib" / "gateway.example.json").read_text())
    assert cfg["platforms"]["console"]["listen"] == "127.0.0.1:8642"
    env = dict(os.environ, HERMES_HOME=str(tmp_path))
    for _ in range(len(cfg["platforms"]) + 1):
        path = tmp_path / "gateway.json"
        path.write_text(json.dumps(cfg))
        r = subprocess.run([str(BUILD / "hermes-worker"), "--check-config", "--config", str(path)],
                           capture_output=True, text=True, timeout=30, env=env)
        m = re.search(r'"platforms\.(\w+)": unknown platform', r.stderr)
        if r.returncode == 78 and m and m.group(1) != "console":
            del cfg["platforms"][m.group(1)]
            continue
        break
    assert r.returncode == 0, r.stdout + r.stderr
    assert "configuration OK" in r.stdout
    bad = dict(cfg, unknown_top_key=1)
    path.write_text(json.dumps(bad))
    r = subprocess.run([str(BUILD / "hermes-worker"), "--check-config", "--config", str(path)],
                       capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 78 and "unknown_top_key" in r.stderr

def test_install_service_in_container(container, gateway):
    """install-service wrote and enabled the unit, and systemd accepts it (with the drop-in)."""
    assert container.systemctl("is-enabled", UNIT, check=False).stdout.strip() == "enabled"
    text = container.run(["cat", f"/etc/systemd/system/{UNIT}"]).stdout
    assert text.startswith("# Generated by hermes-supervisor install-service")
    assert f"ExecStart={SUP_INSIDE} --foreground --config /etc/hermes/gateway.json" in text
    v = container.run(["systemd-analyze", "verify", "--man=no", f"/etc/systemd/system/{UNIT}"],
                      check=False)
    assert v.returncode == 0 and v.stderr.strip() == "", v.stdout + v.stderr
    # Running it again rewrites its own unit; a unit it did not write is left alone.
    r = container.run([SUP_INSIDE, "install-service", "--config", "/etc/hermes/gateway.json"],
                      check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert container.run(["cat", f"/etc/systemd/system/{UNIT}"]).stdout == text
    container.write("/etc/systemd/system/hermes-gateway-foreign.service",
                    "[Service]\nExecStart=/bin/true\n")
    r = container.run([SUP_INSIDE, "install-service", "--name", "foreign"], check=False)
    assert r.returncode == 1 and "not written by install-service" in r.stderr
    assert "ExecStart=/bin/true" in container.run(
        ["cat", "/etc/systemd/system/hermes-gateway-foreign.service"]).stdout


def test_start(gateway):
    """start -> active; MainPID is the supervisor; StatusText shows the worker."""
    gateway.c.systemctl("start", UNIT)
    p = gateway.show("ActiveState", "SubState", "MainPID", "StatusText", "NRestarts")
    assert p["ActiveState"] == "active", gateway.c.journal(UNIT)
    main = int(p["MainPID"])
    assert gateway.comm(main) == "hermes-supervisor"
    worker = gateway.worker()
    su.wait_for(lambda: str(worker) in gateway.show("StatusText")["StatusText"], 15,
                what="the worker's pid in StatusText", detail=lambda: gateway.c.journal(UNIT))
    st = su.wait_for(gateway.status, 15, what="the console answering",
                     detail=lambda: gateway.c.journal(UNIT))
    assert st["worker_pid"] == worker
    assert st["supervisor_pid"] == main
    # The unit's hardening is in force and the gateway runs under it.
    assert gateway.c.run(["stat", "-c", "%U", f"/proc/{worker}"]).stdout.strip() != "root"
    reply = gateway.send("hello from systemd")
    assert [r["text"] for r in reply["replies"]] == ["hello from systemd"]


def test_restart_from_chat(gateway):
    """/restart -> MainPID unchanged, NRestarts=0, new worker in the cgroup, online notice."""
    gateway.wait_active()
    main, old = gateway.main_pid(), gateway.worker()
    body = gateway.send("/restart")
    assert any("Restarting" in r["text"] for r in body["replies"]), body
    new = gateway.wait_replaced(old, 30)
    after = body["message_id"]
    notice = su.wait_for(lambda: [m for m in gateway.messages_after(after)
                                  if m["text"].startswith("Gateway online")], 30,
                         what="the online notice", detail=lambda: gateway.c.journal(UNIT))
    assert "generation" in notice[0]["text"]
    gateway.wait_active()
    p = gateway.show("MainPID", "NRestarts", "ActiveState")
    assert int(p["MainPID"]) == main
    assert p["NRestarts"] == "0"
    assert new in gateway.c.cgroup_pids(UNIT)


def test_reload(gateway):
    """systemctl reload -> the worker recycled, MainPID unchanged."""
    gateway.wait_active()
    main, old = gateway.main_pid(), gateway.worker()
    gateway.c.systemctl("reload", UNIT)
    gateway.wait_replaced(old, 30)
    gateway.wait_active()
    assert gateway.main_pid() == main
    assert gateway.show("NRestarts")["NRestarts"] == "0"


@pytest.mark.parametrize("sig", ["STOP", "KILL"])
def test_worker_signalled(gateway, sig):
    """A SIGSTOPped worker is replaced within the watchdog period; a SIGKILLed one at once."""
    gateway.wait_active()
    main, old = gateway.main_pid(), gateway.worker()
    t0 = time.monotonic()
    gateway.c.run(["kill", f"-{sig}", str(old)])
    gateway.wait_replaced(old, 30)
    elapsed = time.monotonic() - t0
    gateway.wait_active()
    assert gateway.main_pid() == main
    assert gateway.show("NRestarts")["NRestarts"] == "0"
    # Generous bound (loaded machines): well inside systemd's own watchdog.
    assert elapsed < WATCHDOG_SEC, f"replaced after {elapsed:.1f}s"
    if sig == "STOP":
        # Caught by the supervisor's watchdog, not by anything else.
        assert elapsed >= WORKER_WATCHDOG - 0.5, f"replaced after {elapsed:.1f}s"
        assert "watchdog timeout" in gateway.c.journal(UNIT, lines=30)


def test_stop(gateway):
    """systemctl stop -> inactive within TimeoutStopSec, nothing left in the cgroup."""
    gateway.wait_active()
    gateway.worker()
    t0 = time.monotonic()
    gateway.c.systemctl("stop", UNIT)
    elapsed = time.monotonic() - t0
    p = gateway.show("ActiveState", "Result", "ExecMainStatus")
    assert p["ActiveState"] == "inactive", p
    assert p["Result"] == "success", p
    assert gateway.c.cgroup_pids(UNIT) == []
    assert elapsed < TIMEOUT_STOP_SEC, f"stop took {elapsed:.1f}s"


def test_broken_config_fails_with_78(container):
    """A broken config: the unit fails with status 78 and is not restarted."""
    require_binaries()
    unit = install(container, "broken",
                   '{ "platforms": { "console": { "listen": "127.0.0.1:%d", "bogus_key": 1 } } }\n'
                   % free_port())
    drop_in(container, unit)
    r = container.systemctl("start", unit, check=False)
    assert r.returncode != 0
    p = container.show(unit, "ActiveState", "Result", "ExecMainStatus", "NRestarts")
    assert p["ExecMainStatus"] == "78", p
    assert p["Result"] == "exit-code", p
    # RestartSec=1 in the drop-in: a restart would have happened by now.
    time.sleep(3)
    p = container.show(unit, "ActiveState", "NRestarts")
    assert p["ActiveState"] == "failed", p
    assert p["NRestarts"] == "0", p
    assert "bogus_key" in container.journal(unit)
    # uninstall-service stops, disables and removes it, and systemd forgets it.
    r = container.run([SUP_INSIDE, "uninstall-service", "--system", "--name", "broken"],
                      check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert container.run(["test", "-e", f"/etc/systemd/system/{unit}"],
                         check=False).returncode != 0
    container.systemctl("reset-failed", unit, check=False)
    assert container.show(unit, "LoadState")["LoadState"] == "not-found"
    r = container.run([SUP_INSIDE, "uninstall-service", "--system", "--name", "broken"],
                      check=False)
    assert r.returncode == 1 and "not installed" in r.stderr


def fixture_unit(container, name, worker_args):
    """A profile unit whose worker is the supervisor's fixture worker."""
    fixture = BUILD / "fixtures" / "sup_worker"
    if not fixture.exists():
        pytest.skip(f"{fixture} is not built")
    unit = install(container, name, "{}\n")
    drop_in(container, unit, f" -- {su.MOUNT}/build/fixtures/sup_worker {worker_args}")
    return unit


def unit_worker(container, unit, not_pid=None):
    """The one worker of unit (other than not_pid), once there is exactly one."""
    def one():
        main = int(container.show(unit, "MainPID")["MainPID"])
        w = [p for p in container.cgroup_pids(unit) if p != main]
        return w[0] if len(w) == 1 and w[0] != not_pid else None
    return su.wait_for(one, 30, what=f"one worker in {unit}",
                       detail=lambda: container.journal(unit))


def test_worker_stuck_in_teardown(container):
    """A worker that says STOPPING=1, ignores TERM and keeps a thread alive is
    replaced within the stop timeout on reload; on stop it cannot hold the unit."""
    unit = fixture_unit(container, "stuck", "--ready --watchdog --status fixture-up --on-term stuck")
    container.systemctl("start", unit)
    main = int(container.show(unit, "MainPID")["MainPID"])
    old = unit_worker(container, unit)
    t0 = time.monotonic()
    container.systemctl("reload", unit)
    new = unit_worker(container, unit, not_pid=old)
    elapsed = time.monotonic() - t0
    su.wait_for(lambda: container.show(unit, "ActiveState")["ActiveState"] == "active", 30,
                what=f"{unit} active again")
    p = container.show(unit, "MainPID", "NRestarts", "StatusText")
    assert int(p["MainPID"]) == main
    assert p["NRestarts"] == "0"
    assert old not in container.cgroup_pids(unit)
    # Not before the stop timeout (it really was stuck), and not much after it.
    assert STOP_TIMEOUT - 0.5 <= elapsed < STOP_TIMEOUT + 10, f"replaced after {elapsed:.1f}s"
    assert "stop timeout" in container.journal(unit)

    t0 = time.monotonic()
    container.systemctl("stop", unit)
    elapsed = time.monotonic() - t0
    p = container.show(unit, "ActiveState", "Result")
    assert p["ActiveState"] == "inactive" and p["Result"] == "success", p
    assert container.cgroup_pids(unit) == []
    assert new not in container.cgroup_pids(unit)
    assert elapsed < TIMEOUT_STOP_SEC, f"stop took {elapsed:.1f}s"


def test_credential_reaches_the_worker(container, gateway):
    """A token in /etc/credstore is passed by LoadCredential= and enforced by the console."""
    token = "credstore-token-" + str(os.getpid())
    container.write("/etc/credstore/HERMES_CONSOLE_TOKEN", token, mode=0o600)
    try:
        container.systemctl("restart", UNIT)
        gateway.wait_active()
        def answered():
            try:
                return su.http("GET", gateway.url + "/v1/status", token=token)[0] == 200
            except OSError:
                return False
        su.wait_for(answered, 30, what="the console answering with the token")
        assert su.http("GET", gateway.url + "/v1/status")[0] == 401
        assert su.http("GET", gateway.url + "/v1/status", token="wrong")[0] == 401
    finally:
        container.run(["rm", "-f", "/etc/credstore/HERMES_CONSOLE_TOKEN"])
        container.systemctl("stop", UNIT, check=False)


# The systemd version that introduced each directive the units use (from
# systemd's NEWS).  The reporter's CentOS 7 runs 219: whatever is newer must
# be hardening or a convenience that the gateway does without.
SINCE = {
    "Description": 1, "Documentation": 1, "Wants": 1, "After": 1, "WantedBy": 1,
    "Type": 1, "NotifyAccess": 1, "Environment": 1, "ExecStart": 1, "ExecReload": 1,
    "Restart": 1, "RestartSec": 1, "TimeoutStopSec": 1, "WatchdogSec": 1, "UMask": 1,
    "CapabilityBoundingSet": 1, "PrivateTmp": 1, "NoNewPrivileges": 187,
    "RestartPreventExitStatus": 189, "KillMode": 209, "PrivateDevices": 209,
    "SystemCallErrorNumber": 209, "SystemCallArchitectures": 209, "SystemCallFilter": 187,
    "RuntimeDirectory": 211, "RestrictAddressFamilies": 211, "ProtectSystem": 214,
    "ProtectHome": 214, "MemoryDenyWriteExecute": 231, "RestrictRealtime": 231,
    "DynamicUser": 232, "ProtectKernelTunables": 232, "ProtectKernelModules": 232,
    "ProtectControlGroups": 232, "RestrictNamespaces": 233, "StateDirectory": 235,
    "LockPersonality": 235, "ProtectHostname": 242, "RestrictSUIDSGID": 242,
    "ProtectKernelLogs": 244, "ProtectClock": 245, "LoadCredential": 247,
    "ProtectProc": 247,
}
HARDENING_OR_CONVENIENCE = {
    "MemoryDenyWriteExecute", "RestrictRealtime", "DynamicUser", "ProtectKernelTunables",
    "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces", "StateDirectory",
    "LockPersonality", "ProtectHostname", "RestrictSUIDSGID", "ProtectKernelLogs",
    "ProtectClock", "LoadCredential", "ProtectProc",
}


def as_seen_by_219(text):
    """The unit as systemd 219 applies it: newer directives and values dropped."""
    out = []
    for line in text.splitlines():
        key, eq, value = line.partition("=")
        if eq and not line.startswith("#"):
            assert key in SINCE, f"unclassified directive {key}"
            if SINCE[key] > 219:
                assert key in HARDENING_OR_CONVENIENCE, f"{key} (systemd {SINCE[key]}) is needed"
                continue
            if key == "ProtectSystem" and value == "strict":      # 232; 219 ignores it
                continue
            if key == "SystemCallFilter" and "@" in value:        # groups: 231
                continue
        out.append(line)
    return "\n".join(out) + "\n"


def test_unit_runs_as_on_systemd_219(container):
    """Without the directives newer than 219 the gateway starts, creates its own
    state directory, and recycles its worker on reload."""
    require_binaries()
    port = free_port()
    container.write("/etc/hermes/gateway-old.json", console_config(port))
    r = container.run([SUP_INSIDE, "install-service", "--system", "--name", "old", "--config",
                       "/etc/hermes/gateway-old.json", "--dry-run"])
    unit = "hermes-gateway-old.service"
    old_text = as_seen_by_219(r.stdout)
    assert "DynamicUser" not in old_text and "StateDirectory" not in old_text
    container.write(f"/etc/systemd/system/{unit}", old_text)
    drop_in(container, unit)
    container.run(["rm", "-rf", "/var/lib/hermes-old"])
    try:
        container.systemctl("start", unit)
        url = f"http://127.0.0.1:{port}"
        main = int(container.show(unit, "MainPID")["MainPID"])
        su.wait_for(lambda: container.run(["test", "-d", "/var/lib/hermes-old/state"],
                                          check=False).returncode == 0, 15,
                    what="the worker creating its state directory")
        first = unit_worker(container, unit)
        code, body = su.http("POST", url + "/v1/messages?wait=15",
                             {"chat_id": CHAT, "user_id": "local", "text": "old systemd"},
                             timeout=30)
        assert code == 200 and [x["text"] for x in body["replies"]] == ["old systemd"]
        container.systemctl("reload", unit)
        unit_worker(container, unit, not_pid=first)
        assert int(container.show(unit, "MainPID")["MainPID"]) == main
    finally:
        container.systemctl("stop", unit, check=False)
    assert container.show(unit, "ActiveState")["ActiveState"] == "inactive"


def test_user_unit(container):
    """install-service --user under a real user manager: start, reload, stop, uninstall."""
    require_binaries()
    why = container.start_user_manager()
    if why is not None:
        pytest.skip(f"no user manager in the container: {why}")
    port = free_port()
    container.run(["install", "-d", "-m", "700", "/root/.hermes"])
    container.write("/root/.hermes/gateway.json", console_config(port))
    r = container.user([SUP_INSIDE, "install-service", "--user"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/root/.config/systemd/user/hermes-gateway.service" in r.stdout
    assert container.user(["systemctl", "--user", "is-enabled", UNIT],
                          check=False).stdout.strip() == "enabled"

    def show(*props):
        out = container.user(["systemctl", "--user", "show", "-p", ",".join(props), UNIT]).stdout
        return dict(line.partition("=")[::2] for line in out.splitlines())

    try:
        container.user(["systemctl", "--user", "start", UNIT])
        p = show("ActiveState", "MainPID", "StatusText")
        assert p["ActiveState"] == "active", p
        main = int(p["MainPID"])
        assert "/root/.hermes/gateway.json" in container.run(
            ["cat", f"/proc/{main}/cmdline"]).stdout.replace("\0", " ")
        assert "--runtime-dir /run/user/0/hermes" in container.run(
            ["cat", f"/proc/{main}/cmdline"]).stdout.replace("\0", " ")
        first = su.wait_for(lambda: re.search(r"worker (\d+)", show("StatusText")["StatusText"]),
                            15, what="the worker in StatusText").group(1)
        code, body = su.http("POST", f"http://127.0.0.1:{port}/v1/messages?wait=15",
                             {"chat_id": CHAT, "user_id": "local", "text": "user unit"}, timeout=30)
        assert code == 200 and [x["text"] for x in body["replies"]] == ["user unit"]
        container.user(["systemctl", "--user", "reload", UNIT])
        su.wait_for(lambda: (m := re.search(r"ready: worker (\d+)", show("StatusText")["StatusText"]))
                    and m.group(1) != first, 30, what="a new worker after reload")
        assert int(show("MainPID")["MainPID"]) == main
        st = container.run([SUP_INSIDE, "status", "--runtime-dir", "/run/user/0/hermes"], check=False)
        assert st.returncode == 0 and f"supervisor_pid: {main}" in st.stdout, st.stdout + st.stderr
    finally:
        r = container.user([SUP_INSIDE, "uninstall-service", "--user"], check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert show("LoadState", "ActiveState") in ({"LoadState": "not-found", "ActiveState": "inactive"},)


def test_template_unit_instance(container):
    """The shipped hermes-gateway@.service runs a profile named by its instance."""
    require_binaries()
    text = (ROOT / "contrib" / "systemd" / "hermes-gateway@.service").read_text()
    container.write("/etc/systemd/system/hermes-gateway@.service",
                    text.replace("/usr/local/bin/", f"{su.MOUNT}/build/"))
    port = free_port()
    container.write("/etc/hermes/gateway-tpl.json", console_config(port))
    unit = "hermes-gateway@tpl.service"
    drop_in(container, unit, source="/etc/systemd/system/hermes-gateway@.service")
    v = container.run(["systemd-analyze", "verify", "--man=no", unit], check=False)
    assert v.returncode == 0 and v.stderr.strip() == "", v.stdout + v.stderr
    try:
        container.systemctl("start", unit)
        p = container.show(unit, "ActiveState", "MainPID")
        assert p["ActiveState"] == "active", container.journal(unit)
        cmdline = container.run(["cat", f"/proc/{p['MainPID']}/cmdline"]).stdout.replace("\0", " ")
        assert "--config /etc/hermes/gateway-tpl.json --runtime-dir /run/hermes-tpl " in cmdline
        unit_worker(container, unit)
        code, body = su.http("POST", f"http://127.0.0.1:{port}/v1/messages?wait=15",
                             {"chat_id": CHAT, "user_id": "local", "text": "template"}, timeout=30)
        assert code == 200 and [x["text"] for x in body["replies"]] == ["template"]
        assert container.run(["test", "-d", "/var/lib/hermes-tpl/state"], check=False).returncode == 0
    finally:
        container.systemctl("stop", unit, check=False)
    assert container.show(unit, "ActiveState")["ActiveState"] == "inactive"

def test_wedged_supervisor_caught_by_systemd_watchdog(container):
    """A frozen supervisor stops pinging: systemd's WatchdogSec= fires and
    Restart=on-failure brings the gateway back with a new main PID."""
    require_binaries()
    unit = install(container, "wd", console_config(free_port()))
    drop_in(container, unit)
    container.write(f"/etc/systemd/system/{unit}.d/60-watchdog.conf",
                    "[Service]\nWatchdogSec=3\nTimeoutAbortSec=2\n")
    container.systemctl("daemon-reload")
    try:
        container.systemctl("start", unit)
        main = int(container.show(unit, "MainPID")["MainPID"])
        unit_worker(container, unit)
        container.run(["kill", "-STOP", str(main)])
        su.wait_for(lambda: container.show(unit, "NRestarts")["NRestarts"] == "1", 40,
                    what=f"{unit} restarted by systemd", detail=lambda: container.journal(unit))
        su.wait_for(lambda: container.show(unit, "ActiveState")["ActiveState"] == "active", 30,
                    what=f"{unit} active again", detail=lambda: container.journal(unit))
        new_main = int(container.show(unit, "MainPID")["MainPID"])
        assert new_main != main
        assert main not in container.cgroup_pids(unit)
        unit_worker(container, unit)
        assert "Watchdog timeout" in container.journal(unit)
    finally:
        container.systemctl("stop", unit, check=False)
        container.run([SUP_INSIDE, "uninstall-service", "--system", "--name", "wd"], check=False)

def test_no_sanitizer_reports_in_journal(container):
    """Last: nothing the gateway logged inside the container is a sanitizer report."""
    r = container.run(["journalctl", "--no-pager", "-o", "cat"], check=False)
    assert "started worker" in r.stdout, "the journal holds no gateway messages"
    bad = [line for line in r.stdout.splitlines()
           if "AddressSanitizer" in line or "runtime error:" in line or "LeakSanitizer" in line]
    assert bad == [], "\n".join(bad[:20])
