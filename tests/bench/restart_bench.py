#!/usr/bin/python3
"""/restart timing and idle memory of hermes-worker under hermes-supervisor.

For each of N restarts through the local console (echo agent):
  ready  = POST /restart -> the supervisor reports the new worker READY=1
           upstream (a NOTIFY_SOCKET listener stands in for systemd);
  online = POST /restart -> "Gateway online (generation N, ...)" readable
           in the same chat through the console API;
  self   = the "restarted in X ms" the new worker itself reports (marker
           written -> notice sent).
Then the idle RSS/PSS of the worker, without and with a TLS context.

usage: restart_bench.py BUILD_DIR [-n RESTARTS]
"""
import argparse
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, method, path, body=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=json.dumps(body) if body is not None else None,
                  headers={"Content-Type": "application/json"})
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def pct(xs, p):
    xs = sorted(xs)
    k = min(len(xs) - 1, max(0, int(round(p / 100.0 * len(xs) + 0.5)) - 1))
    return xs[k]


def mem_kb(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "RssAnon:", "RssFile:")):
                out[line.split(":")[0]] = int(line.split()[1])
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    return out


class Gateway:
    def __init__(self, build, tmp, agent=None, notify=None):
        self.port = free_port()
        self.tmp = tmp
        conf = {"state_dir": os.path.join(tmp, "state"),
                "agent": agent or {"backend": "echo"},
                "platforms": {"console": {"listen": "127.0.0.1:%d" % self.port}}}
        self.cfg = os.path.join(tmp, "gateway.json")
        with open(self.cfg, "w") as f:
            json.dump(conf, f)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("NOTIFY_", "WATCHDOG_", "LISTEN_", "HERMES_"))}
        env["HERMES_HOME"] = tmp
        if notify:
            env["NOTIFY_SOCKET"] = notify
        self.run = os.path.join(tmp, "run")
        self.log = open(os.path.join(tmp, "gateway.log"), "ab")
        self.proc = subprocess.Popen(
            [os.path.join(build, "hermes-supervisor"), "--foreground", "--runtime-dir",
             self.run, "-c", self.cfg], env=env, stdout=self.log, stderr=self.log)
        self.build = build

    def status(self):
        r = subprocess.run([os.path.join(self.build, "hermes-supervisor"), "status",
                            "--runtime-dir", self.run], capture_output=True, text=True)
        return dict(l.split(": ", 1) for l in r.stdout.splitlines() if ": " in l)

    def wait_console(self, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                st, body = request(self.port, "GET", "/v1/status", timeout=2)
                if st == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(0.01)
        raise SystemExit("console did not come up")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def recv_until(sock, pred, timeout):
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            raise SystemExit("no matching notify message")
        sock.settimeout(left)
        msg = sock.recv(65536).decode()
        if pred(msg):
            return time.monotonic()


def wait_notice(port, gen, after, timeout=20):
    """Polls the chat until the online notice of generation gen; returns (t, text, last)."""
    end = time.monotonic() + timeout
    rx = re.compile(r"Gateway online \(generation %d, restarted in (\d+) ms\)" % gen)
    while time.monotonic() < end:
        try:
            st, body = request(port, "GET",
                               "/v1/chats/bench/messages?after=%d&wait=5" % after, timeout=10)
        except OSError:
            time.sleep(0.002)
            continue
        if st != 200:
            time.sleep(0.002)
            continue
        j = json.loads(body)
        after = j["last"]
        for m in j["messages"]:
            mt = rx.search(m["text"])
            if mt:
                return time.monotonic(), int(mt.group(1)), after
    raise SystemExit("online notice of generation %d not seen" % gen)


def bench_restarts(build, n):
    tmp = tempfile.mkdtemp(prefix="hermes-bench-")
    nsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    npath = os.path.join(tmp, "notify.sock")
    nsock.bind(npath)
    g = Gateway(build, tmp, notify=npath)
    ready, online, self_ms = [], [], []
    try:
        recv_until(nsock, lambda m: "READY=1" in m.split("\n"), 20)
        g.wait_console()
        after = 0
        for i in range(n):
            t0 = time.monotonic()
            st, _ = request(g.port, "POST", "/v1/messages",
                            {"chat_id": "bench", "user_id": "local", "text": "/restart"})
            assert st == 202, st
            # RELOADING=1 first, then READY=1 for the new worker.
            recv_until(nsock, lambda m: "RELOADING=1" in m.split("\n"), 20)
            t_ready = recv_until(nsock, lambda m: "READY=1" in m.split("\n"), 20)
            t_online, ms, after = wait_notice(g.port, i + 1, after)
            ready.append((t_ready - t0) * 1000)
            online.append((t_online - t0) * 1000)
            self_ms.append(ms)
        st = g.status()
        assert st.get("generation") == str(n), st
        time.sleep(2)
        mem = mem_kb(int(st["worker_pid"]))
    finally:
        g.stop()
        nsock.close()
        subprocess.run(["rm", "-rf", tmp])
    return ready, online, self_ms, mem


def bench_rss_tls(build):
    """Idle memory with a client TLS context (an openai agent configured)."""
    tmp = tempfile.mkdtemp(prefix="hermes-bench-")
    g = Gateway(build, tmp, agent={"backend": "openai", "model": "m",
                                   "base_url": "http://127.0.0.1:9/v1"})
    try:
        s = g.wait_console()
        time.sleep(2)
        return mem_kb(s["worker_pid"])
    finally:
        g.stop()
        subprocess.run(["rm", "-rf", tmp])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("-n", type=int, default=50)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    ready, online, self_ms, mem = bench_restarts(build, a.n)
    tls = bench_rss_tls(build)
    print("restarts: %d (console, echo agent, hermes-supervisor)" % a.n)
    for name, xs in (("/restart -> new worker READY", ready),
                     ("/restart -> online notice readable", online),
                     ("worker's own 'restarted in'", self_ms)):
        print("%-36s p50 %7.1f ms  p99 %7.1f ms  max %7.1f ms" %
              (name, pct(xs, 50), pct(xs, 99), max(xs)))
    print("idle worker (console + echo):  RSS %d KiB (anon %d, file %d), PSS %d KiB" %
          (mem["VmRSS"], mem["RssAnon"], mem["RssFile"], mem["Pss"]))
    print("idle worker with TLS context:  RSS %d KiB (anon %d, file %d), PSS %d KiB" %
          (tls["VmRSS"], tls["RssAnon"], tls["RssFile"], tls["Pss"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
