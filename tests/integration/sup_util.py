"""Helpers for the supervisor's integration tests.

`Sup` starts the real hermes-supervisor (in the foreground, its own runtime
dir in a temp dir) with the sup_worker fixture, and keeps track of every
process it may leave behind so the test's finalizer can kill them.
"""
import os
import re
import signal
import subprocess
import time


def wait_for(cond, timeout=10.0, interval=0.01, what="condition"):
    """Polls cond() until it returns a true value; returns it or fails."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


def alive(pid):
    """True when pid exists and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


class Sup:
    """One supervisor under test."""

    def __init__(self, build, tmp, worker_args=(), sup_args=(), env=None,
                 foreground=True, worker=None, name="sup", pass_fds=(), preexec_fn=None,
                 wrap=(), own_pids=True):
        self.build = build
        self.tmp = tmp
        self.run = os.path.join(str(tmp), name + "-run")
        self.rec = os.path.join(str(tmp), name + "-rec")
        self.log = os.path.join(str(tmp), name + ".log")
        self.extra_pids = []
        e = dict(os.environ)
        for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_PID",
                  "LISTEN_FDS", "LISTEN_FDNAMES", "JOURNAL_STREAM"):
            e.pop(k, None)
        e.update(env or {})
        wk = worker or [str(build / "fixtures" / "sup_worker"), "--record", self.rec]
        self.own_pids = own_pids
        args = list(wrap) + [str(build / "hermes-supervisor")]
        if foreground:
            args.append("--foreground")
        args += ["--runtime-dir", self.run] + list(sup_args) + ["--"] + wk + list(worker_args)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(args, stdout=self.logf, stderr=self.logf, env=e,
                                     pass_fds=pass_fds, preexec_fn=preexec_fn)
        self.pid = self.proc.pid

    # --- observation -------------------------------------------------------
    def logtext(self):
        with open(self.log, "rb") as f:
            return f.read().decode(errors="replace")

    def wait_log(self, pattern, timeout=10.0, count=1):
        rx = re.compile(pattern)
        return wait_for(lambda: len(rx.findall(self.logtext())) >= count, timeout,
                        what="log %r x%d; log so far:\n%s" % (pattern, count, self.logtext()))

    def records(self):
        """[(kind, pid, value, usec)] written by the fixture."""
        try:
            with open(self.rec) as f:
                out = []
                for line in f:
                    p = line.split()
                    if len(p) == 4:
                        out.append((p[0], int(p[1]), int(p[2]), int(p[3])))
                return out
        except FileNotFoundError:
            return []

    def starts(self):
        return [r for r in self.records() if r[0] == "start"]

    def wait_starts(self, n, timeout=10.0):
        wait_for(lambda: len(self.starts()) >= n, timeout,
                 what="%d worker starts; log:\n%s" % (n, self.logtext()))
        return self.starts()

    def state(self):
        try:
            with open(os.path.join(self.run, "state")) as f:
                return dict(l.rstrip("\n").split(": ", 1) for l in f if ": " in l)
        except FileNotFoundError:
            return {}

    def wait_state(self, state, timeout=10.0, **kw):
        def ok():
            s = self.state()
            return s.get("state") == state and all(s.get(k) == str(v) for k, v in kw.items())
        wait_for(ok, timeout, what="state %s %r (now %r); log:\n%s" % (
            state, kw, self.state(), self.logtext()))
        return self.state()

    def worker_pid(self):
        return int(self.state().get("worker_pid", "0"))

    def wait_exit(self, timeout=10.0):
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("supervisor did not exit; log:\n" + self.logtext())

    def ctl(self, *cmd, timeout=30):
        return subprocess.run([str(self.build / "hermes-supervisor")] + list(cmd) +
                              ["--runtime-dir", self.run], capture_output=True, text=True,
                              timeout=timeout)

    def signal(self, sig):
        self.proc.send_signal(sig)

    # --- cleanup -----------------------------------------------------------
    def cleanup(self):
        pids = set(self.extra_pids)
        if self.own_pids:
            pids |= {r[1] for r in self.records()}
        if self.proc.poll() is None:
            # A graceful stop first: the supervisor kills the worker's group and
            # orphans itself, which plain SIGKILL would leave behind.
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.logf.close()


class SupFactory:
    def __init__(self, build, tmp):
        self.build, self.tmp, self.all = build, tmp, []

    def __call__(self, *worker_args, sup_args=(), **kw):
        s = Sup(self.build, self.tmp, worker_args, sup_args, **kw)
        self.all.append(s)
        return s

    def cleanup(self):
        for s in self.all:
            s.cleanup()
