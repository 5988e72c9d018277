"""Fixtures for the chaos tests: the real supervisor and worker attacked
with restarts, kills, floods and broken state directories.

The console client and launcher come from tests/integration (imported, not
copied); chaos_util.py beside this file holds the accounting.  Counts scale
with CHAOS_SCALE (see chaos_util.py; run-full.sh runs the full targets).
"""
import pathlib
import subprocess
import sys

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "integration"))
sys.path.insert(0, str(HERE))

from chaos_util import BUILD, Gateway, free_port  # noqa: E402


@pytest.fixture
def build():
    return BUILD


@pytest.fixture
def port():
    return free_port()


@pytest.fixture
def gateway(build, tmp_path, port):
    """Starts Gateway(build, tmp_path, port, **kw); all are stopped at the end."""
    made = []

    def start(**kw):
        g = Gateway(build, tmp_path, port, **kw)
        made.append(g)
        return g

    yield start
    for g in made:
        g.stop()


class Mounts:
    """mount(8) for one test; everything mounted is unmounted at the end.
    A refused mount skips the test with mount's own words."""

    def __init__(self):
        self.done = []

    def mount(self, *args, target):
        r = subprocess.run(["mount"] + list(args) + [str(target)],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            pytest.skip("cannot mount here: " + (r.stderr or r.stdout).strip())
        self.done.append(str(target))

    def remount(self, target, opts):
        r = subprocess.run(["mount", "-o", "remount," + opts, str(target)],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr

    def umount(self, target):
        r = subprocess.run(["umount", str(target)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        self.done.remove(str(target))

    def cleanup(self):
        for t in reversed(self.done):
            subprocess.run(["umount", "-l", t], capture_output=True, timeout=30)


@pytest.fixture
def mounts():
    """Request it before `gateway`, so gateways stop before the unmount."""
    m = Mounts()
    yield m
    m.cleanup()
