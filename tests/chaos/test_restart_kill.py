"""Restarts and SIGKILLs of the worker under load, with exact accounting.

Full target (CHAOS_SCALE=1): 1,000 /restarts and 200 SIGKILLs, in a random
order, while 8 clients post unique messages to their own chats.  Every
message the console took is answered exactly once, in its own chat; the
supervisor keeps its pid, reaps every worker and keeps its descriptors;
every worker generation starts with the same descriptors.
"""
import bisect
import os
import time

from chaos_util import (Ledger, Load, fd_targets, non_sockets, report, rng, scaled,
                        settle, zombies)

NOTICES = ("Restarting the gateway...", "Gateway online")


def doubles_by_action(details, timeline):
    """Counts the doubles by what the driver last did before they arose:
    a resent one by its first connection error, one id answered twice by
    its second answer.  timeline: [(time, action)] in order."""
    times = [t for t, _ in timeline]
    out = {}
    for d in details:
        if not d[0].startswith("doubled"):
            continue
        m = d[-1]
        if d[0] == "doubled_resent" and m.conn_error_at:
            t = m.conn_error_at[0]
        else:
            t = sorted(m.seen_at.values())[1]
        i = bisect.bisect_right(times, t) - 1
        key = "%s_after_%s" % (d[0], timeline[i][1] if i >= 0 else "nothing")
        out[key] = out.get(key, 0) + 1
    return out


def test_restarts_and_kills_under_load(build, gateway):
    restarts, kills = scaled(1000), scaled(200)
    clients = int(os.environ.get("CHAOS_CLIENTS", "8"))
    r = rng("restart_kill")
    g = gateway()
    g.wait_generation(0)
    con = g.console
    con.wait_ready()
    sup = g.pid
    time.sleep(0.3)                     # the readiness probe's connection is gone
    sup_fds = fd_targets(sup)
    worker_fds = fd_targets(g.worker_pid())
    worker_files = non_sockets(worker_fds)

    ledger = Ledger()
    load = Load(con, ledger, clients, extra_chats=["ops"])
    load.start()
    actions = ["restart"] * restarts + ["kill"] * kills
    r.shuffle(actions)
    problems = {"sup_fds": [], "worker_files": [], "zombies": [], "sup_pid": []}
    restart_ids, timeline = [], []
    t0 = time.monotonic()
    for gen, action in enumerate(actions, start=1):
        timeline.append((time.monotonic(), action))
        if action == "restart":
            restart_ids.append(g.restart())
        else:
            g.kill_worker()
        st = g.wait_generation(gen)
        if int(st["supervisor_pid"]) != sup or g.proc.poll() is not None:
            problems["sup_pid"].append((gen, st))
        z = settle(lambda: zombies(sup), lambda z: not z)
        if z:
            problems["zombies"].append((gen, z))
        fds = settle(lambda: fd_targets(sup), lambda f: f == sup_fds)
        if fds != sup_fds:
            problems["sup_fds"].append((gen, fds))
        files = settle(lambda: non_sockets(fd_targets(int(st["worker_pid"]))),
                       lambda f: f == worker_files)
        if files != worker_files:
            problems["worker_files"].append((gen, files))
        time.sleep(r.uniform(0, 0.05))
    chaos_s = time.monotonic() - t0
    load.stop_sending()
    unanswered = ledger.wait_answered(60, stall=10)
    time.sleep(1.5)                     # late doubles have time to show
    load.stop_collecting()

    final_pid = g.worker_pid()
    final_fds = settle(lambda: fd_targets(final_pid), lambda f: f == worker_fds, tries=300)
    status = con.status()
    f, details = ledger.audit(notices=NOTICES)
    ops = ledger.seen.get("ops", {}).values()
    restarting = [x for x in ops if x["text"] == "Restarting the gateway..."]
    online = [x for x in ops if x["text"].startswith("Gateway online")]
    f.update(restarts=restarts, kills=kills, clients=clients, chaos_seconds=round(chaos_s, 1),
             generation=g.generation(), restart_replies=len(restarting),
             online_notices=len(online), worker_fds_start=len(worker_fds),
             worker_fds_end=len(final_fds), sup_fds=len(sup_fds),
             zombies_seen=len(problems["zombies"]), sup_fd_changes=len(problems["sup_fds"]),
             worker_file_changes=len(problems["worker_files"]),
             **doubles_by_action(details, timeline))
    report("restart_kill", **f)

    assert f["sent"] > 0 and f["taken"] > 0
    # A POST whose connection a SIGKILL cut after the journal took it is resent by
    # the client and answered twice ("resent"): the console API has no idempotency
    # key yet, so the gateway cannot tell the resend from a new message.  That
    # open gap is measured (RELIABILITY.md), not hidden: only a resend that
    # followed a cut connection after a SIGKILL is let through; any other double
    # fails, as does one id answered twice.
    resent = [d for d in details if d[0] == "doubled_resent"]
    assert f["doubled"] == f["doubled_resent"], (f, details[:20])
    assert [k for k in f if k.startswith("doubled_resent_after_") and
            k != "doubled_resent_after_kill"] == [], f
    assert (f["lost"], f["doubled_same_id"], f["misrouted"], f["unexplained"]) == \
        (0, 0, 0, 0), (f, details[:20], unanswered[:5])
    print("resent doubles (no idempotency key yet):", len(resent))
    assert (f["bad_status"], f["never_taken"]) == (0, 0), (f, details[:20])
    assert problems == {"sup_fds": [], "worker_files": [], "zombies": [], "sup_pid": []}, \
        {k: v[:5] for k, v in problems.items()}
    assert status["supervisor_pid"] == sup and g.proc.poll() is None
    assert g.generation() == len(actions), g.log(40)
    assert sorted(int(x["reply_to"]) for x in restarting) == sorted(restart_ids)
    assert len(online) == restarts, [x["text"] for x in online][-5:]
    assert final_fds == worker_fds, (worker_fds, final_fds)
    assert zombies(sup) == []
