#!/usr/bin/python3
"""Respawn latency, memory and idle wake-ups: hermes-supervisor side by side
with s6-supervise, runsv, daemontools' supervise and supervisord, all running
the same C fixture (build/fixtures/respawn_worker).

Latency = the fixture's first CLOCK_MONOTONIC reading in generation n+1 minus
its last reading before exit(75) in generation n ("worker exits 75 -> next
worker exec'd and running main()").

Two runs: "fast", where the fixture exits 75 at once (only hermes-supervisor
respawns such a worker without a 1 s throttle), and "fair", where it lives
--lifetime ms first so that no supervisor throttles, all five side by side.

usage: respawn.py BUILD [--respawns N] [--fast N] [--lifetime MS] [--idle SEC]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

# Service and runtime dirs on tmpfs, as /run is on a systemd host.
TMP = "/dev/shm" if os.path.isdir("/dev/shm") else None
SUPERVISORS = ["hermes-supervisor", "hermes-supervisor-glibc", "s6-supervise", "runsv", "supervise", "supervisord"]
# The floors are not supervisors: only in the fast comparison.


def make_service(name, build, d, log, idle, lifetime=0):
    """Prepares directory d for supervisor name; returns (argv, env, stop function)."""
    fixture = os.path.join(build, "fixtures", "respawn_worker")
    env = dict(os.environ, RESPAWN_LOG=log)
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID"):
        env.pop(k, None)
    if idle:
        env["RESPAWN_IDLE"] = "1"
    if lifetime:
        env["RESPAWN_LIFETIME_MS"] = str(lifetime)
    if name.startswith("bare_respawn"):
        return [os.path.join(build, "bench", name), fixture], env
    if name.startswith("hermes-supervisor"):
        exe = os.path.join(build, "bench" if name.endswith("glibc") else "", name)
        argv = [exe, "--foreground", "--runtime-dir",
                os.path.join(d, "run"), "--crash-limit", "100000/1", "--", fixture]
        return argv, env
    if name == "supervisord":
        conf = os.path.join(d, "supervisord.conf")
        with open(conf, "w") as f:
            f.write("[supervisord]\nnodaemon=true\nlogfile=%s/sd.log\npidfile=%s/sd.pid\n"
                    "[program:w]\ncommand=%s\nautorestart=true\nstartsecs=0\n"
                    "startretries=1000000\nexitcodes=0\n" % (d, d, fixture))
        return ["supervisord", "-n", "-c", conf], env
    shutil.copy(fixture, os.path.join(d, "run"))       # no shell in between
    if name == "s6-supervise":
        with open(os.path.join(d, "notification-fd"), "w") as f:
            f.write("3\n")
        env["RESPAWN_READY_FD"] = "3"
    return [name, d], env


def available(build, name):
    if name == "hermes-supervisor":
        return True
    if name.startswith("bare_respawn"):
        return os.path.exists(os.path.join(build, "bench", name))
    if name == "hermes-supervisor-glibc":
        return os.path.exists(os.path.join(build, "bench", name))
    return shutil.which(name) is not None


def read_log(log):
    try:
        with open(log) as f:
            return [l.split() for l in f if len(l.split()) == 2]
    except FileNotFoundError:
        return []


def latencies(recs):
    """Exit -> next start gaps in ms."""
    out, last_e = [], None
    for kind, ns in recs:
        if kind == "e":
            last_e = int(ns)
        elif kind == "s" and last_e is not None:
            out.append((int(ns) - last_e) / 1e6)
            last_e = None
    return out


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))] if v else float("nan")


def run_latency(names, build, n, lifetime, budget):
    """Runs the named supervisors side by side until each has n respawns.  With a
    lifetime, their starts are staggered across it, so that respawns on 2 cores do
    not collide and the figures do not depend on scheduling."""
    procs, logs, dirs = {}, {}, []
    for i, name in enumerate(names):
        if lifetime and i:
            time.sleep(lifetime / 1000.0 / len(names))
        d = tempfile.mkdtemp(prefix="bench-%s-" % name, dir=TMP)
        dirs.append(d)
        logs[name] = os.path.join(d, "log")
        argv, env = make_service(name, build, d, logs[name], False, lifetime)
        procs[name] = subprocess.Popen(argv, env=env, cwd=d, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline and any(
            len(latencies(read_log(logs[x]))) < n for x in names):
        time.sleep(0.2)
    out = {}
    for name in names:
        stop(procs[name])
        out[name] = latencies(read_log(logs[name]))[:n]
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return out


def stop(p):
    try:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(5)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait()


def proc_field(pid, fname, key):
    try:
        with open("/proc/%d/%s" % (pid, fname)) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def wakeups(pid):
    return (proc_field(pid, "status", "voluntary_ctxt_switches") +
            proc_field(pid, "status", "nonvoluntary_ctxt_switches"))


def run_idle(build, secs):
    """Starts all supervisors with an idle worker at once; returns {name: (rss, pss, wakeups/s)}."""
    procs, dirs = {}, []
    for name in [x for x in SUPERVISORS if available(build, x)]:
        d = tempfile.mkdtemp(prefix="idle-%s-" % name, dir=TMP)
        dirs.append(d)
        argv, env = make_service(name, build, d, os.path.join(d, "log"), idle=True)
        procs[name] = subprocess.Popen(argv, env=env, cwd=d, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(2.0)             # let every one settle (supervisord is slow to start)
    before = {n: wakeups(p.pid) for n, p in procs.items()}
    time.sleep(secs)
    out = {}
    for n, p in procs.items():
        out[n] = (proc_field(p.pid, "smaps_rollup", "Rss"), proc_field(p.pid, "smaps_rollup", "Pss"),
                  (wakeups(p.pid) - before[n]) / secs)
    for p in procs.values():
        stop(p)
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)
    return out


def fast_vs_floor(build, n, rounds):
    """hermes-supervisor and the bare loop of the same libc, alone each, in
    interleaved rounds (one at a time: they would share the 2 cores)."""
    pairs = {"musl": ("hermes-supervisor", "bare_respawn-musl"),
             "glibc": ("hermes-supervisor-glibc", "bare_respawn-glibc")}
    out = {}
    for libc, (sup, bare) in pairs.items():
        if not (available(build, sup) and available(build, bare)):
            continue
        a, b = [], []
        for _ in range(rounds):
            a += run_latency([sup], build, n // rounds, 0, 60)[sup]
            b += run_latency([bare], build, n // rounds, 0, 60)[bare]
        out[libc] = (a, b)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--respawns", type=int, default=200)
    ap.add_argument("--fast", type=int, default=1000)
    ap.add_argument("--lifetime", type=int, default=1100)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    names = [x for x in SUPERVISORS if available(build, x)]
    fast = run_latency(["hermes-supervisor"], build, a.fast, 0, 120)["hermes-supervisor"]
    floors = fast_vs_floor(build, a.fast, a.rounds)
    fair = run_latency(names, build, a.respawns, a.lifetime,
                       a.respawns * (a.lifetime / 1000.0 + 1.5) + 30)
    idle = run_idle(build, a.idle)
    print("Fast respawn (worker exits 75 at once): hermes-supervisor %d respawns, "
          "p50 %.3f ms, p99 %.3f ms\n" % (len(fast), pct(fast, 50), pct(fast, 99)))
    print("Fast respawn against the bare fork/exec/wait loop of the same libc, "
          "%d interleaved rounds of %d respawns each:\n" % (a.rounds, a.fast // a.rounds))
    print("| libc | hermes-supervisor p50 (ms) | bare loop p50 (ms) | ratio |")
    print("|---|---:|---:|---:|")
    for libc, (sup, bare) in floors.items():
        print("| %s | %.3f | %.3f | %.2f |" % (libc, pct(sup, 50), pct(bare, 50),
                                               pct(sup, 50) / pct(bare, 50)))
    print()
    print("| supervisor | respawns | p50 (ms) | p99 (ms) | RSS (KiB) | PSS (KiB) | idle wake-ups/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        lat = fair.get(name, [])
        rss, pss, wk = idle.get(name, (0, 0, float("nan")))
        print("| %s | %d | %.3f | %.3f | %d | %d | %.2f |" % (
            name, len(lat), pct(lat, 50), pct(lat, 99), rss, pss, wk))


if __name__ == "__main__":
    main()
