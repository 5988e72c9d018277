"""A small client for the console API and a launcher for hermes-worker.

Any area's tests may import it:

    from console_util import Console, WorkerProc, write_config

    cfg = write_config(tmp_path, port)                  # console + echo agent
    with WorkerProc(build, cfg, home=tmp_path) as w:
        con = Console(port)
        con.wait_ready()
        assert con.ask("hello") == ["hello"]

Only the Python standard library is used.  Every call has a timeout; every
request opens its own connection, so a client keeps working across a
worker restart (wait_ready() / retry=True ride over the gap).
"""
import http.client
import json
import os
import pathlib
import resource
import signal
import subprocess
import time
import urllib.parse


class ConsoleError(Exception):
    """An unexpected HTTP status from the console."""

    def __init__(self, status, body):
        super().__init__(f"HTTP {status}: {body[:300]!r}")
        self.status = status
        self.body = body


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers          # dict, lower-case names
        self.body = body                # bytes

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<Response {self.status} {self.body[:120]!r}>"


class Console:
    """Client for one console listening on host:port."""

    def __init__(self, port, host="127.0.0.1", token=None, timeout=30.0):
        self.host = host
        self.port = port
        self.token = token
        self.timeout = timeout

    @property
    def url(self):
        return f"http://{self.host}:{self.port}/"

    def request(self, method, path, body=None, headers=None, timeout=None,
                auth=True):
        """One request on a fresh connection; returns a Response (any status)."""
        h = {}
        if auth and self.token is not None:
            h["Authorization"] = "Bearer " + self.token
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        h.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port,
                                          timeout=timeout or self.timeout)
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, data)
        finally:
            conn.close()

    def _json(self, method, path, body=None, expect=(200,), timeout=None,
              retry=False, deadline=None):
        end = time.monotonic() + (deadline or self.timeout)
        while True:
            try:
                r = self.request(method, path, body, timeout=timeout)
                if retry and r.status == 503 and time.monotonic() < end:
                    time.sleep(0.1)
                    continue
                break
            except OSError:
                if not retry or time.monotonic() >= end:
                    raise
                time.sleep(0.1)
        if r.status not in expect:
            raise ConsoleError(r.status, r.body)
        return r.json()

    def post(self, text, chat_id="test", user_id="local", wait=None,
             retry=False, **extra):
        """POST /v1/messages; returns the JSON answer (202, or 200 with wait)."""
        path = "/v1/messages"
        if wait is not None:
            path += "?wait=" + str(wait)
        body = {"chat_id": chat_id, "user_id": user_id, "text": text}
        body.update(extra)
        t = None if wait is None else float(wait) + 15
        return self._json("POST", path, body, expect=(200, 202), timeout=t,
                          retry=retry)

    def ask(self, text, chat_id="test", user_id="local", wait=30):
        """Posts and waits for the answer; returns the reply texts."""
        r = self.post(text, chat_id=chat_id, user_id=user_id, wait=wait)
        return [m["text"] for m in r["replies"]]

    def messages(self, chat_id, after=0, wait=None, retry=False):
        """GET /v1/chats/{chat_id}/messages; returns {"messages", "last"}."""
        q = {"after": str(after)}
        if wait is not None:
            q["wait"] = str(wait)
        path = ("/v1/chats/" + urllib.parse.quote(chat_id, safe="") +
                "/messages?" + urllib.parse.urlencode(q))
        t = None if wait is None else float(wait) + 15
        return self._json("GET", path, timeout=t, retry=retry)

    def status(self, retry=False):
        return self._json("GET", "/v1/status", retry=retry)

    def wait_ready(self, timeout=20.0, alive=None):
        """Waits until the console answers /v1/status; returns the status.
        alive: optional callable; when it returns false, stop waiting."""
        end = time.monotonic() + timeout
        last = None
        while time.monotonic() < end:
            if alive is not None and not alive():
                raise TimeoutError(f"console on port {self.port}: process gone")
            try:
                r = self.request("GET", "/v1/status", timeout=5)
                if r.status == 200:
                    return r.json()
                last = r
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise TimeoutError(f"console on port {self.port} not ready: {last!r}")

    def wait_messages(self, chat_id, pred, after=0, timeout=30.0):
        """Long-polls chat_id until pred(messages so far) is true; returns them.

        Rides over restarts (connection errors and 503 are retried)."""
        end = time.monotonic() + timeout
        got = []
        while True:
            left = end - time.monotonic()
            if pred(got):
                return got
            if left <= 0:
                raise TimeoutError(f"chat {chat_id}: condition not met; got {got!r}")
            try:
                r = self.messages(chat_id, after=after, wait=min(5, max(left, 0.1)))
            except (OSError, ConsoleError):
                time.sleep(0.1)
                continue
            got.extend(r["messages"])
            after = r["last"]

    def wait_text(self, chat_id, text_pred, after=0, timeout=30.0):
        """Waits for a message whose text satisfies text_pred; returns it."""
        if isinstance(text_pred, str):
            s = text_pred
            text_pred = lambda t: s in t  # noqa: E731
        msgs = self.wait_messages(
            chat_id, lambda ms: any(text_pred(m["text"]) for m in ms),
            after=after, timeout=timeout)
        return next(m for m in msgs if text_pred(m["text"]))


def write_config(directory, port, console=None, agent=None, extra=None,
                 name="gateway.json"):
    """Writes a config with the console on 127.0.0.1:port and state in
    directory/state; console/agent/extra are merged in.  Returns the path."""
    directory = pathlib.Path(directory)
    conf = {
        "state_dir": str(directory / "state"),
        "agent": agent or {"backend": "echo"},
        "platforms": {"console": {"enabled": True,
                                  "listen": f"127.0.0.1:{port}"}},
    }
    conf["platforms"]["console"].update(console or {})
    for k, v in (extra or {}).items():
        conf[k] = v
    path = directory / name
    path.write_text(json.dumps(conf, indent=2))
    path.chmod(0o600)
    return path


# Variables the caller's environment must not leak into a test worker.
_SCRUB = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS",
          "LISTEN_FDNAMES", "LISTEN_PID", "HERMES_SUPERVISOR_PID",
          "HERMES_GENERATION", "HERMES_CONSOLE_TOKEN", "CREDENTIALS_DIRECTORY",
          "GATEWAY_ALLOWED_USERS", "TELEGRAM_BOT_TOKEN")


class WorkerProc:
    """A hermes-worker started directly (no supervisor), logging to a file."""

    def __init__(self, build, config, home, env=None, args=None, nofile=None):
        self.build = pathlib.Path(build)
        self.config = config
        self.home = pathlib.Path(home)
        self.env = env or {}
        self.args = args or []
        self.nofile = nofile            # RLIMIT_NOFILE for the worker, or None
        self.proc = None
        self.log_path = self.home / f"worker-{time.monotonic_ns()}.log"

    def start(self):
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env["HERMES_HOME"] = str(self.home)
        env.update(self.env)
        cmd = [str(self.build / "hermes-worker")]
        if self.config is not None:
            cmd += ["--config", str(self.config)]
        cmd += self.args
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True,
                                     preexec_fn=self._limits)
        return self

    def _limits(self):
        if self.nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def wait_exit(self, timeout=20.0):
        """Waits for the worker to exit; returns its exit status."""
        return self.proc.wait(timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=20.0):
        """Sends sig and waits; kills the process group if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self.kill()
        return self.proc.returncode

    def kill(self):
        """Kills the worker's whole process group (it runs in its own session)."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        if not self._log.closed:
            self._log.close()

    def __enter__(self):
        return self.start() if self.proc is None else self

    def __exit__(self, *exc):
        self.stop()


class Launcher:
    """Starts workers on a console port with a config in a directory and
    stops them all at the end (the body of a test module's fixture):

        @pytest.fixture
        def launch(build, tmp_path):
            with Launcher(build, tmp_path) as start:
                yield start
    """

    def __init__(self, build, directory):
        self.build = build
        self.directory = directory
        self.started = []

    def __call__(self, port=None, console=None, env=None, ready=True, agent=None,
                 token=None, home=None, extra=None, nofile=None):
        """Returns (worker, client); waits until ready unless ready=False."""
        from conftest import free_port
        port = port or free_port()
        home = home or self.directory
        cfg = write_config(home, port, console=console, agent=agent, extra=extra)
        w = WorkerProc(self.build, cfg, home=home, env=env, nofile=nofile).start()
        self.started.append(w)
        c = Console(port, token=token)
        if ready:
            try:
                c.wait_ready(alive=w.alive)
            except TimeoutError:
                raise AssertionError("worker not ready; log:\n" + w.log())
        return w, c

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for w in self.started:
            w.stop()
