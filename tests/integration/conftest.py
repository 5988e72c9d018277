"""Shared pytest fixtures for the integration tests.

Every test starts the real binaries from $HERMES_BUILD (default ./build).
Area-specific helpers live in their own modules beside this file
(e.g. sup_util.py); keep this file to what every area needs.
"""
import os
import socket
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("HERMES_BUILD", ROOT / "build"))


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def build():
    return BUILD


@pytest.fixture
def port():
    return free_port()
