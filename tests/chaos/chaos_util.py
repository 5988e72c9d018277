"""Tools for the chaos tests.

- `Gateway`: the real hermes-supervisor holding the console's socket
  (--listen) and its real hermes-worker, observed through the supervisor's
  state file, with a quick respawn and no crash limit so that hundreds of
  kills are survivable.
- `fd_targets`, `zombies`, `settle`: what /proc says about a process.
- `Ledger`, `Collector`, `Sender`: exact accounting of messages.  Every
  message has a unique text (the echo agent answers with it); each POST
  attempt is recorded; collectors long-poll every chat and keep every
  message they see; `Ledger.audit()` then counts what was lost, doubled,
  misrouted or unexplained.

Counts: CHAOS_SCALE (default 0.05) multiplies the full targets; 1 gives them
all (tests/chaos/run-full.sh).  CHAOS_SEED (default 1, so CI repeats itself)
seeds the random choices; CHAOS_REPORT names a file that gets one JSON line
of figures per test.
"""
import http.client
import json
import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import threading
import time

from console_util import Console

SCALE = float(os.environ.get("CHAOS_SCALE", "0.05"))
SEED = int(os.environ.get("CHAOS_SEED", "1"))
HTTP_ERRORS = (OSError, http.client.HTTPException)
ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("HERMES_BUILD", ROOT / "build"))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scaled(full, minimum=1):
    """full times CHAOS_SCALE, at least minimum."""
    return max(minimum, int(round(full * SCALE)))


def rng(name):
    """A random generator for one test, reproducible from CHAOS_SEED."""
    return random.Random("%d:%s" % (SEED, name))


def report(test, **figures):
    """Prints the figures of a test and appends them to $CHAOS_REPORT."""
    line = json.dumps(dict(test=test, seed=SEED, scale=SCALE, **figures), sort_keys=True)
    print("CHAOS " + line)
    path = os.environ.get("CHAOS_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def wait_for(cond, timeout, what, interval=0.01):
    """Polls cond() until it returns a true value; returns it or fails."""
    end = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out (%.0f s) waiting for %s" % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------
# The gateway
# --------------------------------------------------------------------------

SCRUB = ("NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_", "HERMES_", "CREDENTIALS_DIRECTORY",
         "GATEWAY_", "CONSOLE_", "TELEGRAM_", "JOURNAL_STREAM")


class Gateway:
    """hermes-supervisor --listen console=... with its worker.

    state_dir: where the worker keeps its state (default home/state).
    wrap: a command prefix for the supervisor (e.g. prlimit ...)."""

    def __init__(self, build, home, port, state_dir=None, wrap=(), sup_args=(),
                 extra=None, name="gw"):
        self.build = pathlib.Path(build)
        self.home = pathlib.Path(home)
        self.port = port
        self.state_dir = pathlib.Path(state_dir or self.home / "state")
        self.run = self.home / (name + "-run")
        self.log_path = self.home / (name + ".log")
        self.workers = set()
        conf = {"state_dir": str(self.state_dir), "agent": {"backend": "echo"},
                "platforms": {"console": {"enabled": True,
                                          "listen": "127.0.0.1:%d" % port}}}
        conf.update(extra or {})
        cfg = self.home / (name + ".json")
        cfg.write_text(json.dumps(conf, indent=2))
        cfg.chmod(0o600)
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
        env["HERMES_HOME"] = str(self.home)
        args = list(wrap) + [
            str(self.build / "hermes-supervisor"), "--foreground", "-c", str(cfg),
            "--runtime-dir", str(self.run), "--listen", "console=127.0.0.1:%d" % port,
            "--backoff-max", "0.1", "--crash-limit", "100000/1",
            "--stop-timeout", "20"] + list(sup_args)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.console = Console(port, timeout=20)

    def log(self, tail=None):
        text = self.log_path.read_text(errors="replace")
        return text if tail is None else "\n".join(text.splitlines()[-tail:])

    def state(self):
        """The supervisor's state file as a dict ({} while it is absent)."""
        try:
            with open(self.run / "state") as f:
                st = dict(l.rstrip("\n").split(": ", 1) for l in f if ": " in l)
        except OSError:
            return {}
        if st.get("worker_pid", "0").isdigit() and int(st["worker_pid"]) > 0:
            self.workers.add(int(st["worker_pid"]))
        return st

    def generation(self):
        return int(self.state().get("generation", "-1"))

    def worker_pid(self):
        return int(self.state().get("worker_pid", "0"))

    def wait_generation(self, gen, timeout=30.0):
        """Waits until worker generation gen is ready; returns the state."""
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("the supervisor exited (%s); log:\n%s" % (
                    self.proc.returncode, self.log(40)))
            st = self.state()
            return st if st.get("state") == "ready" and st.get("generation") == str(gen) \
                else None
        try:
            return wait_for(ready, timeout, "generation %d ready" % gen, interval=0.002)
        except AssertionError as e:
            raise AssertionError("%s (state %r); log:\n%s" % (e, self.state(), self.log(40)))

    def kill_worker(self):
        """SIGKILLs the current worker; returns its pid."""
        pid = self.worker_pid()
        assert pid > 0, self.state()
        os.kill(pid, signal.SIGKILL)
        return pid

    def restart(self, chat="ops", timeout=20.0):
        """Posts /restart (admin "local") until the console takes it; returns its id."""
        end = time.monotonic() + timeout
        while True:
            try:
                r = self.console.request("POST", "/v1/messages", {
                    "chat_id": chat, "user_id": "local", "text": "/restart"}, timeout=10)
                if r.status == 202:
                    return r.json()["message_id"]
                assert r.status == 503, r
            except HTTP_ERRORS:
                pass
            assert time.monotonic() < end, "/restart not taken in %.0f s" % timeout
            time.sleep(0.02)

    def stop(self):
        self.state()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in self.workers:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if not self._log.closed:
            self._log.close()


# --------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------

def fd_targets(pid):
    """What a process's descriptors are, sorted, inode numbers left out
    (["/dev/null", "anon_inode:[eventpoll]", "pipe", "socket", ...])."""
    out = []
    base = "/proc/%d/fd" % pid
    for fd in os.listdir(base):
        try:
            t = os.readlink(base + "/" + fd)
        except FileNotFoundError:
            continue
        out.append(re.sub(r"^(socket|pipe):\[\d+\]$", r"\1", t))
    return sorted(out)


def non_sockets(targets):
    return [t for t in targets if t != "socket"]


def children(ppid):
    """[(pid, state)] of the processes whose parent is ppid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == ppid:
            out.append((int(d), fields[0]))
    return out


def zombies(ppid):
    return [p for p, st in children(ppid) if st == "Z"]


def settle(sample, ok, tries=40, interval=0.01):
    """Samples until ok(value) holds (transient states pass); returns the last value."""
    v = sample()
    for _ in range(tries):
        if ok(v):
            break
        time.sleep(interval)
        v = sample()
    return v


def nofile_limit(pid):
    """(soft, hard) of "Max open files" in /proc/pid/limits."""
    with open("/proc/%d/limits" % pid) as f:
        for line in f:
            if line.startswith("Max open files"):
                p = line.split()
                return int(p[3]), int(p[4])
    raise AssertionError("no Max open files line for %d" % pid)


# --------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------

class Msg:
    """One message as the user means it: resending keeps its text."""

    def __init__(self, chat, text):
        self.chat = chat
        self.text = text
        self.ids = []            # ids of the attempts the console took (2xx)
        self.refused = 0         # 503 answers
        self.conn_errors = 0     # attempts that got no answer
        self.conn_error_at = []  # ... when (time.monotonic())
        self.bad = []            # any other status
        self.answers = {}        # reply message id -> its reply_to
        self.seen_at = {}        # reply message id -> when a poll first saw it

    def __repr__(self):
        return "<Msg %s %r ids=%s answers=%s>" % (self.chat, self.text[:40], self.ids,
                                                   self.answers)


class Ledger:
    """Every message sent and every message seen in every chat."""

    def __init__(self):
        self.lock = threading.Lock()
        self.by_text = {}
        self.by_id = {}
        self.seen = {}           # chat -> {message id: message}
        self.chats = set()

    def new(self, chat, text):
        m = Msg(chat, text)
        with self.lock:
            assert text not in self.by_text
            self.by_text[text] = m
            self.chats.add(chat)
        return m

    def taken(self, m, mid):
        with self.lock:
            m.ids.append(mid)
            self.by_id[mid] = m

    def record(self, chat, messages):
        """Keeps what a poll of chat returned (seen twice counts once)."""
        with self.lock:
            seen = self.seen.setdefault(chat, {})
            for x in messages:
                seen.setdefault(x["id"], x)
                m = self.by_text.get(x["text"])
                if m is not None and m.chat == chat:
                    m.answers[x["id"]] = x.get("reply_to")
                    m.seen_at.setdefault(x["id"], time.monotonic())

    def answered(self, m):
        with self.lock:
            return bool(m.answers)

    def outstanding(self, ms):
        with self.lock:
            return sum(1 for m in ms if m.ids and not m.answers)

    def wait_answered(self, timeout, stall=None):
        """Waits until every taken message has an answer, or timeout passes,
        or (with stall) no new answer came for stall seconds; returns the
        unanswered."""
        end = time.monotonic() + timeout
        last, since = None, time.monotonic()
        while True:
            with self.lock:
                left = [m for m in self.by_text.values() if m.ids and not m.answers]
            now = time.monotonic()
            if len(left) != last:
                last, since = len(left), now
            if not left or now > end or (stall is not None and now - since > stall):
                return left
            time.sleep(0.05)

    @staticmethod
    def _reply_to(x):
        try:
            return int(x.get("reply_to"))
        except (TypeError, ValueError):
            return None

    def audit(self, notices=()):
        """Counts, over everything sent and seen:
        lost: taken (or answered) messages without an answer;
        doubled: messages answered more than once (same_id: one id answered
          twice; resent: answers to two attempts of one message);
        misrouted: a reply in a chat other than its message's, or a reply to
          a message's id with another text;
        unexplained: messages in our chats that answer nothing we sent;
        notices: messages whose text starts with one of notices (the
          gateway's own, such as "Gateway online"), counted apart.
        Returns (figures, details)."""
        f = dict(sent=0, taken=0, answered=0, lost=0, doubled=0, doubled_same_id=0,
                 doubled_resent=0, misrouted=0, unexplained=0, notices=0,
                 refused_503=0, conn_errors=0, bad_status=0, never_taken=0)
        details = []
        with self.lock:
            for chat, seen in self.seen.items():
                for x in seen.values():
                    m = self.by_text.get(x["text"])
                    owner = self.by_id.get(self._reply_to(x))
                    if m is None and x["text"].startswith(tuple(notices)):
                        f["notices"] += 1
                    elif m is not None and m.chat != chat:
                        f["misrouted"] += 1
                        details.append(("misrouted", chat, x))
                    elif owner is not None and owner is not m:
                        f["misrouted"] += 1
                        details.append(("wrong text", chat, x))
                    elif m is None:
                        f["unexplained"] += 1
                        details.append(("unexplained", chat, x))
            for m in self.by_text.values():
                f["sent"] += 1
                f["refused_503"] += m.refused
                f["conn_errors"] += m.conn_errors
                f["bad_status"] += len(m.bad)
                if m.bad:
                    details.append(("bad status", m.chat, m.text, m.bad))
                if m.ids:
                    f["taken"] += 1
                elif not m.answers:
                    f["never_taken"] += 1
                    details.append(("never taken", m.chat, m.text))
                n = len(m.answers)
                if n:
                    f["answered"] += 1
                elif m.ids:
                    f["lost"] += 1
                    details.append(("lost", m.chat, m.text, m.ids))
                if n > 1:
                    f["doubled"] += 1
                    rts = list(m.answers.values())
                    kind = "doubled_same_id" if len(set(rts)) < len(rts) else "doubled_resent"
                    f[kind] += 1
                    details.append((kind, m.chat, m.text, m.ids, m.answers,
                                    m.conn_errors, m))
        return f, details


def post(con, ledger, m, deadline, wait=None):
    """Sends m until the console takes it (2xx with an id) or deadline passes.
    503 and connection errors are resent (the protocol); other statuses end
    it.  Returns the id or None."""
    path = "/v1/messages" + ("" if wait is None else "?wait=%s" % wait)
    body = {"chat_id": m.chat, "user_id": "local", "text": m.text}
    while time.monotonic() < deadline:
        try:
            r = con.request("POST", path, body, timeout=20 if wait is None else wait + 20)
        except HTTP_ERRORS:
            m.conn_errors += 1
            m.conn_error_at.append(time.monotonic())
            time.sleep(0.02)
            continue
        if r.status in (200, 202):
            j = r.json()
            ledger.taken(m, j["message_id"])
            if "replies" in j:
                ledger.record(m.chat, j["replies"])
            return j["message_id"]
        if r.status == 503:
            m.refused += 1
            time.sleep(0.02)
            continue
        m.bad.append(r.status)
        return None
    return None


def post_once(con, ledger, m):
    """One attempt; returns the HTTP status, or None for a connection error."""
    try:
        r = con.request("POST", "/v1/messages",
                        {"chat_id": m.chat, "user_id": "local", "text": m.text}, timeout=20)
    except HTTP_ERRORS:
        m.conn_errors += 1
        m.conn_error_at.append(time.monotonic())
        return None
    if r.status in (200, 202):
        ledger.taken(m, r.json()["message_id"])
    elif r.status == 503:
        m.refused += 1
    else:
        m.bad.append(r.status)
    return r.status


class Collector(threading.Thread):
    """Long-polls one chat from the start, riding over restarts, and hands
    every message seen to the ledger."""

    def __init__(self, con, ledger, chat, poll=2):
        super().__init__(daemon=True, name="collect-" + chat)
        self.con, self.ledger, self.chat, self.poll = con, ledger, chat, poll
        self.stopping = threading.Event()
        self.after = 0
        self.errors = 0

    def run(self):
        while not self.stopping.is_set():
            try:
                r = self.con.messages(self.chat, after=self.after, wait=self.poll)
            except Exception:           # connection errors, 503 while restarting
                self.errors += 1
                time.sleep(0.02)
                continue
            self.ledger.record(self.chat, r["messages"])
            self.after = max(self.after, r["last"])

    def stop(self):
        self.stopping.set()
        self.join(self.poll + 30)


class Sender(threading.Thread):
    """One client: unique messages round-robin to its own chats, at most
    `window` of them taken and unanswered at a time."""

    def __init__(self, con, ledger, name, chats, window=4, deadline=120):
        super().__init__(daemon=True, name="send-" + name)
        self.con, self.ledger, self.name = con, ledger, name
        self.chats, self.window, self.deadline = chats, window, deadline
        self.stopping = threading.Event()
        self.msgs = []

    def run(self):
        seq = 0
        while not self.stopping.is_set():
            if self.ledger.outstanding(self.msgs[-4 * self.window:]) >= self.window:
                time.sleep(0.005)
                continue
            chat = self.chats[seq % len(self.chats)]
            m = self.ledger.new(chat, "%s m%d %08x" % (self.name, seq, random.getrandbits(32)))
            self.msgs.append(m)
            seq += 1
            post(self.con, self.ledger, m, time.monotonic() + self.deadline)

    def stop(self):
        self.stopping.set()
        self.join(self.deadline + 30)


class Load:
    """clients Senders with chats_each chats, and a Collector per chat (plus extra chats)."""

    def __init__(self, con, ledger, clients, chats_each=2, extra_chats=(), prefix="c"):
        self.senders = [Sender(con, ledger, "%s%d" % (prefix, i),
                               ["%s%d-%d" % (prefix, i, j) for j in range(chats_each)])
                        for i in range(clients)]
        chats = [c for s in self.senders for c in s.chats] + list(extra_chats)
        self.collectors = [Collector(con, ledger, c) for c in chats]

    def start(self):
        for c in self.collectors:
            c.start()
        for s in self.senders:
            s.start()

    def stop_sending(self):
        for s in self.senders:
            s.stopping.set()
        for s in self.senders:
            s.stop()

    def stop_collecting(self):
        for c in self.collectors:
            c.stopping.set()
        for c in self.collectors:
            c.stop()

    def sent(self):
        return sum(len(s.msgs) for s in self.senders)
