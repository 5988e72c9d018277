"""A throwaway container running a real systemd, for the unit-file tests.

The host's own /usr is booted with systemd-nspawn (volatile root, so
nothing the tests do survives), the project is bind-mounted read-only at
/opt/hermes, and commands run inside through nsenter.  The container
shares the host's network namespace, so a test talks to a gateway inside
over 127.0.0.1.
"""
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request

MOUNT = "/opt/hermes"
BOOT_TIMEOUT = 60


def unavailable_reason():
    """Why a container cannot run here, or None when it can."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (package systemd-container / util-linux)"
    if not os.path.exists("/lib/systemd/systemd") and not os.path.exists("/usr/lib/systemd/systemd"):
        return "no systemd binary on this host to boot"
    return None


def wait_for(cond, timeout, interval=0.1, what="condition", detail=None):
    """Polls cond() until it returns a true value; returns it, or raises AssertionError
    (with detail(), e.g. the unit's journal, computed at the timeout)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    extra = f"\n{detail()}" if detail is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){extra}")


def _children(pid):
    """PIDs whose parent is pid."""
    kids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: parse after the last ')'.
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == pid:
            kids.append(int(entry))
    return kids


def _own_cgroups(name):
    """Creates cgroup NAME below our own in the unified and name=systemd hierarchies.

    Without it, systemd-nspawn --keep-unit (the host has no systemd to ask for
    a scope) puts every container in "<our cgroup>/payload": two test runs at
    once would have two systemd instances managing the same cgroups, each
    killing the other's services.  Returns the directories (maybe none).
    """
    mine = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, ctrl, path = line.rstrip("\n").split(":", 2)
            mine[ctrl] = path
    made = []
    for base, ctrl in (("/sys/fs/cgroup/unified", ""), ("/sys/fs/cgroup/systemd", "name=systemd"),
                       ("/sys/fs/cgroup", "")):
        if ctrl not in mine or not os.path.exists(f"{base}/cgroup.procs"):
            continue
        if base == "/sys/fs/cgroup" and any(d.startswith("/sys/fs/cgroup/unified") for d in made):
            continue
        d = os.path.join(base + mine[ctrl], name)
        try:
            os.makedirs(d, exist_ok=True)
        except OSError:
            continue
        made.append(d)
    return made


def _remove_cgroups(dirs):
    for d in dirs:
        for root, subdirs, _ in os.walk(d, topdown=False):
            for sub in subdirs:
                try:
                    os.rmdir(os.path.join(root, sub))
                except OSError:
                    pass
        try:
            os.rmdir(d)
        except OSError:
            pass


class Container:
    """One booted container; call poweroff() when done."""

    def __init__(self, root, build, logdir):
        self.root = str(root)
        self.build = str(build)
        self.name = f"hermestest-{os.getpid()}"
        self.logpath = os.path.join(str(logdir), "nspawn.log")
        self.proc = None
        self.leader = None
        self.cgroups = []

    @property
    def build_inside(self):
        """Where the build directory appears inside the container."""
        return f"{MOUNT}/build"

    def boot(self):
        """Boots basic.target; returns None, or a reason the container could not boot."""
        cmd = ["systemd-nspawn", "-D", "/", "--volatile=yes", "--register=no",
               "--keep-unit", "--boot", "--console=read-only",
               f"--bind-ro={self.root}:{MOUNT}",
               f"--bind-ro={self.build}:{self.build_inside}",
               "--bind-ro=/etc/hosts", f"--machine={self.name}",
               "--", "systemd.firstboot=off", "systemd.unit=basic.target"]
        self.log = open(self.logpath, "wb")
        self.cgroups = _own_cgroups(self.name)
        cgroups = self.cgroups

        def enter_cgroups():
            for d in cgroups:
                try:
                    with open(f"{d}/cgroup.procs", "w") as f:
                        f.write(str(os.getpid()))
                except OSError:
                    pass

        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT, preexec_fn=enter_cgroups)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return f"systemd-nspawn exited with {self.proc.returncode}: {self.log_tail()}"
            if self.leader is None:
                kids = _children(self.proc.pid)
                self.leader = kids[0] if kids else None
            if self.leader is not None:
                r = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
                if r.stdout.strip() in ("running", "degraded"):
                    return None
            time.sleep(0.1)
        return f"the container did not boot within {BOOT_TIMEOUT}s: {self.log_tail()}"

    def log_tail(self, n=20):
        try:
            with open(self.logpath, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def run(self, argv, check=True, timeout=60, input=None):
        """Runs argv inside the container (its mount, pid, uts and ipc namespaces)."""
        cmd = ["nsenter", "-t", str(self.leader), "-m", "-p", "-u", "-i", "--"] + list(argv)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{argv} exited {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}")
        return r

    def sh(self, script, check=True, timeout=60):
        return self.run(["sh", "-c", script], check=check, timeout=timeout)

    def write(self, path, text, mode=0o644):
        """Writes a file inside the container."""
        self.run(["sh", "-c", f'mkdir -p "$(dirname "$1")" && cat > "$1" && chmod {mode:o} "$1"',
                  "sh", path], input=text)

    def systemctl(self, *args, check=True, timeout=90):
        return self.run(["systemctl"] + list(args), check=check, timeout=timeout)

    def show(self, unit, *props):
        """systemctl show: a dict of the requested properties."""
        r = self.systemctl("show", "-p", ",".join(props), unit)
        out = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition("=")
            out[k] = v
        return out

    def cgroup_pids(self, unit):
        """PIDs (container namespace) in the unit's cgroup, or [] when it has none."""
        cg = self.show(unit, "ControlGroup")["ControlGroup"]
        if not cg:
            return []
        # The unified hierarchy, or on a hybrid host its cgroup2 or name=systemd mount.
        for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"):
            r = self.run(["cat", f"{base}{cg}/cgroup.procs"], check=False)
            if r.returncode == 0:
                return sorted(int(x) for x in r.stdout.split())
        return []

    def journal(self, unit, lines=60):
        r = self.run(["journalctl", "--no-pager", "-o", "cat", "-n", str(lines), "-u", unit],
                     check=False)
        return r.stdout + r.stderr

    USER_ENV = ["env", "XDG_RUNTIME_DIR=/run/user/0", "HOME=/root",
                "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/0/bus"]

    def start_user_manager(self):
        """Starts root's user manager (user@0.service); returns None or why it could not.

        The volatile /etc has no PAM stack, and no pam_systemd to set
        XDG_RUNTIME_DIR: a permissive systemd-user PAM file and a drop-in supply both.
        """
        self.write("/etc/pam.d/systemd-user", "auth required pam_permit.so\n"
                   "account required pam_permit.so\nsession required pam_permit.so\n")
        self.write("/etc/systemd/system/user@.service.d/50-test.conf",
                   "[Service]\nEnvironment=XDG_RUNTIME_DIR=/run/user/%i\n")
        self.systemctl("daemon-reload")
        r = self.systemctl("start", "user@0.service", check=False)
        if r.returncode != 0:
            return r.stderr + self.journal("user@0.service", lines=20)
        return None

    def user(self, argv, check=True, timeout=60):
        """Runs argv inside as root's user session (systemctl --user works)."""
        return self.run(self.USER_ENV + list(argv), check=check, timeout=timeout)

    def poweroff(self):
        """Stops the container; kills it when it does not stop in time."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.leader is not None:
            self.run(["systemctl", "poweroff", "--no-block"], check=False, timeout=10)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()
        self.proc = None
        _remove_cgroups(self.cgroups)


def http(method, url, body=None, timeout=30, token=None):
    """One HTTP request; returns (status, parsed JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw = e.read()
        status = e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None
