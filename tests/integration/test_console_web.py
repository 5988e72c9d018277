"""The web console page (GET /) driven in a real headless Chromium over the
DevTools protocol: the status panel fills in, a typed message is echoed
into the chat, the token field works, and the page rides over a /restart.
A screenshot of each scene is kept in $HERMES_BUILD/screenshots/."""
import asyncio
import base64
import json
import os
import pathlib
import shutil
import signal
import subprocess
import time
import urllib.request

import pytest

from conftest import free_port
from console_util import Console, WorkerProc, write_config

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="chromium is not installed (contrib/install-deps.sh installs it)")

websockets = pytest.importorskip("websockets")


class Browser:
    """A headless Chromium in its own process group, with a throwaway profile."""

    def __init__(self, tmp):
        self.profile = pathlib.Path(tmp) / "chromium-profile"
        self.profile.mkdir()
        self.log = open(pathlib.Path(tmp) / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-quic", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--window-size=1200,800",
             f"--user-data-dir={self.profile}",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if port_file.exists() and port_file.read_text().strip():
                break
            if self.proc.poll() is not None:
                raise RuntimeError("chromium exited: " + self._log_text())
            time.sleep(0.05)
        else:
            self.close()
            raise RuntimeError("chromium did not open its DevTools port")
        self.port = int(port_file.read_text().split()[0])

    def _log_text(self):
        self.log.flush()
        return (self.log.name and pathlib.Path(self.log.name).read_text(errors="replace"))[-3000:]

    def page_ws(self):
        deadline = time.monotonic() + 30
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list",
                                        timeout=10) as r:
                targets = json.load(r)
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            if time.monotonic() > deadline:
                raise RuntimeError("no page target")
            time.sleep(0.1)

    def close(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=20)
        self.log.close()


class Page:
    """A minimal DevTools protocol client for one page."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    async def call(self, method, **params):
        self.next_id += 1
        mid = self.next_id
        await self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        while True:
            msg = json.loads(await asyncio.wait_for(self.ws.recv(), 60))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    async def eval(self, expr):
        r = await self.call("Runtime.evaluate", expression=expr,
                            returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait(self, expr, timeout=30.0, what=None):
        deadline = time.monotonic() + timeout
        while True:
            v = await self.eval(expr)
            if v:
                return v
            if time.monotonic() > deadline:
                dump = await self.eval("document.body.innerText")
                raise AssertionError(f"timed out waiting for {what or expr}; page:\n{dump}")
            await asyncio.sleep(0.1)

    async def type_and_send(self, text):
        await self.eval("document.getElementById('text').focus()")
        await self.call("Input.insertText", text=text)
        await self.call("Input.dispatchKeyEvent", type="keyDown", key="Enter",
                        code="Enter", windowsVirtualKeyCode=13, text="\r")
        await self.call("Input.dispatchKeyEvent", type="keyUp", key="Enter",
                        code="Enter", windowsVirtualKeyCode=13)

    async def bot_texts(self):
        return await self.eval(
            "[...document.querySelectorAll('#log .msg.bot')].map(e => e.firstChild.textContent)")

    async def screenshot(self, path):
        r = await self.call("Page.captureScreenshot", format="png")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(r["data"]))


def shot_path(build, name):
    return pathlib.Path(build) / "screenshots" / name


@pytest.fixture
def browser(tmp_path):
    b = Browser(tmp_path)
    yield b
    b.close()


@pytest.fixture
def worker(build, tmp_path):
    started = []

    def start(console=None, env=None, port=None):
        port = port or free_port()
        cfg = write_config(tmp_path, port, console=console)
        w = WorkerProc(build, cfg, home=tmp_path, env=env).start()
        started.append(w)
        return w, port

    yield start
    for w in started:
        w.stop()


async def open_page(browser, url):
    ws = await websockets.connect(browser.page_ws(), max_size=64 << 20)
    page = Page(ws)
    await page.call("Page.enable")
    await page.call("Runtime.enable")
    await page.call("Page.navigate", url=url)
    await page.wait("document.readyState === 'complete' && !!document.getElementById('log')",
                    what="the page to load")
    return page


def test_page_chat_and_status(browser, worker, build):
    w, port = worker()
    Console(port).wait_ready()

    async def scene():
        page = await open_page(browser, f"http://127.0.0.1:{port}/")
        try:
            assert await page.eval("document.title") == "Hermes console"
            await page.wait(f"document.getElementById('s-worker').textContent === '{w.pid}'",
                            what="the status panel")
            assert await page.eval("document.getElementById('conn').textContent") == "online"
            await page.wait("[...document.querySelectorAll('#platforms td')]"
                            ".some(td => td.textContent === 'up')", what="platform up")
            await page.type_and_send("hello from chromium")
            await page.wait("[...document.querySelectorAll('#log .msg.bot')]"
                            ".some(e => e.firstChild.textContent === 'hello from chromium')",
                            what="the echo")
            assert await page.eval("document.getElementById('text').value") == ""
            await page.type_and_send("/status")
            await page.wait("[...document.querySelectorAll('#log .msg.bot')]"
                            f".some(e => e.textContent.includes('worker pid: {w.pid}'))",
                            what="the /status reply")
            await page.screenshot(shot_path(build, "console-chat.png"))
        finally:
            await page.ws.close()

    asyncio.run(scene())
    # What the page showed went through the real API: the chat's log has it.
    texts = [m["text"] for m in Console(port).messages("web")["messages"]]
    assert texts[0] == "hello from chromium"
    assert any(f"worker pid: {w.pid}" in t for t in texts[1:])


def test_page_with_token(browser, worker, build):
    w, port = worker(console={"token": "web-secret"})
    Console(port, token="web-secret").wait_ready()

    async def scene():
        page = await open_page(browser, f"http://127.0.0.1:{port}/")
        try:
            await page.wait("document.getElementById('conn').textContent === 'token needed'",
                            what="the token prompt")
            await page.eval("(() => { const t = document.getElementById('token');"
                            " t.value = 'web-secret';"
                            " t.dispatchEvent(new Event('change')); })()")
            await page.wait(f"document.getElementById('s-worker').textContent === '{w.pid}'",
                            what="the status with the token")
            await page.type_and_send("with a token")
            await page.wait("[...document.querySelectorAll('#log .msg.bot')]"
                            ".some(e => e.firstChild.textContent === 'with a token')",
                            what="the echo")
            await page.screenshot(shot_path(build, "console-token.png"))
        finally:
            await page.ws.close()

    asyncio.run(scene())


def test_page_survives_restart(browser, worker, build):
    """/restart typed in the page: the reply, then the online notice of the
    next worker arrive in the same chat; the page keeps working after."""
    w, port = worker()
    c = Console(port)
    gen0 = c.wait_ready()["generation"]

    async def scene():
        page = await open_page(browser, f"http://127.0.0.1:{port}/")
        try:
            await page.wait("document.getElementById('conn').textContent === 'online'")
            await page.type_and_send("/restart")
            await page.wait("[...document.querySelectorAll('#log .msg.bot')]"
                            ".some(e => e.textContent.includes('Restarting the gateway'))",
                            what="the restart reply")
            await page.wait("[...document.querySelectorAll('#log .msg.bot')]"
                            ".some(e => e.textContent.includes('Gateway online'))",
                            timeout=60, what="the online notice")
            await page.wait(f"document.getElementById('s-generation').textContent === '{gen0 + 1}'",
                            timeout=30, what="the new generation in the status panel")
            await page.type_and_send("after the restart")
            await page.wait("[...document.querySelectorAll('#log .msg.bot')]"
                            ".some(e => e.firstChild.textContent === 'after the restart')",
                            what="the echo after the restart")
            await page.screenshot(shot_path(build, "console-restart.png"))
            texts = await page.bot_texts()
            assert sum("Gateway online" in t for t in texts) == 1, texts
        finally:
            await page.ws.close()

    asyncio.run(scene())
