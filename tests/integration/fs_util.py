"""File-system set-ups for tests of directories the gateway cannot use:
a read-only tmpfs or bind mount (in a private mount namespace, so nothing
leaks to the host) and running a program as an unprivileged user (root
ignores permission bits)."""
import functools
import os
import shlex
import shutil
import subprocess
import tempfile

NOBODY = 65534


@functools.lru_cache(maxsize=None)
def mount_ns_unavailable():
    """Why a private mount namespace with a tmpfs cannot be had, or None."""
    if shutil.which("unshare") is None:
        return "unshare(1) is not installed"
    d = tempfile.mkdtemp()
    try:
        r = subprocess.run(["unshare", "-m", "sh", "-c",
                            "mount --make-rprivate / && mount -t tmpfs tmpfs " + shlex.quote(d)],
                           capture_output=True, text=True, timeout=10)
    finally:
        os.rmdir(d)
    if r.returncode != 0:
        return "cannot mount in a private mount namespace: " + r.stderr.strip()
    return None


def ro_tmpfs(path):
    """Shell commands mounting an empty read-only tmpfs (mode 0700) on path."""
    return "mount -t tmpfs -o ro,mode=0700 tmpfs %s" % shlex.quote(str(path))


def ro_bind(path):
    """Shell commands making path a read-only bind mount of itself."""
    p = shlex.quote(str(path))
    return "mount --bind %s %s && mount -o remount,bind,ro %s" % (p, p, p)


def in_mount_ns(mounts, argv):
    """argv run after the mount commands, in a private mount namespace."""
    script = "set -e; mount --make-rprivate /; %s; exec \"$@\"" % "; ".join(mounts)
    return ["unshare", "-m", "sh", "-c", script, "sh"] + [str(a) for a in argv]


def unprivileged_unavailable():
    """Why a program cannot be run as a user without privileges, or None."""
    if os.geteuid() != 0:
        return None                     # we are one already
    if shutil.which("setpriv") is None:
        return "running as root without setpriv(1)"
    return None


def as_unprivileged(argv):
    """argv run as nobody when we are root (root would ignore modes), else as is."""
    if os.geteuid() != 0:
        return [str(a) for a in argv]
    return ["setpriv", "--reuid=%d" % NOBODY, "--regid=%d" % NOBODY, "--clear-groups",
            "--"] + [str(a) for a in argv]


def give_to_unprivileged(*paths):
    """Hands paths to the user as_unprivileged() runs as (a no-op when not root)."""
    if os.geteuid() == 0:
        for p in paths:
            os.chown(p, NOBODY, NOBODY)
