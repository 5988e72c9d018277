#!/usr/bin/python3
"""A protocol-faithful fake of an OpenAI-compatible chat-completions server.

Serves POST /v1/chat/completions (and /chat/completions) on 127.0.0.1, plain
or over TLS with a certificate from a throwaway CA (trustme; the CA is
written to <dir>/ca.pem for the client's tls.ca_file).

Behaviour copied from the real API:
- The body must be JSON with "model" (string) and "messages" (a non-empty
  list of {"role","content"}); otherwise 400 with an OpenAI error object
  {"error": {"message", "type", "param", "code"}}.
- With --api-key, "Authorization: Bearer KEY" is required; otherwise 401
  "Incorrect API key provided: <the key given>" (the real API echoes a
  masked key; this fake echoes it whole, so clients must not show it).
- "stream": true -> text/event-stream of chat.completion.chunk objects:
  first a delta with the role, then content deltas, then an empty delta
  with finish_reason "stop", then "data: [DONE]".  Otherwise one
  chat.completion object with usage.
- The reply is "echo: <last user message>" unless --reply or a fault says
  otherwise.

Faults, chosen per request by the last user message starting with
"fault:<kind>[:<arg>]" or for the next requests with POST /_fake/fault
{"kind", "arg", "count"}:
  status:<code>   that HTTP status with an OpenAI error object
  slow:<secs>     wait, then answer normally
  hang            never answer (until the client goes away)
  garbage         200 with a body that is not JSON (or "data: <not json>")
  truncated       stream: some deltas then the connection closes without
                  [DONE]; non-stream: fewer bytes than Content-Length
  huge:<bytes>    a reply of that many bytes
  empty           an empty reply text
  drip:<secs>     stream: a pause between deltas
  stream_error    stream: an error object in the stream
  cut             stream: one delta, then a clean end without finish or [DONE]
  nostream        answer with one JSON object although stream was asked
Control: GET /_fake/requests -> {"requests": [{"path", "authorization",
"content_type", "body"}]}; DELETE /_fake/requests; POST /_fake/fault.

Run: fake_openai.py [--tls-dir DIR] [--api-key K] [--port N]; prints one JSON
line {"port", "url", "ca"} when ready.  Or, from Python tests,
FakeOpenAI(...).start() runs it in a thread (see the class).
"""
import argparse
import asyncio
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time

from aiohttp import web

MODEL_CREATED = 1700000000


class _DropResets(logging.Filter):
    """Clients that go away mid-answer (cancel, timeout) are expected here."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, (ConnectionResetError, ConnectionError))


logging.getLogger("aiohttp.server").addFilter(_DropResets())


def oai_error(status, message, etype="invalid_request_error", code=None):
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return web.json_response(body, status=status)


class State:
    def __init__(self, api_key=None, reply=None):
        self.api_key = api_key
        self.reply = reply
        self.requests = []
        self.faults = []            # [{"kind", "arg", "count"}]
        self.seq = 0


def pick_fault(state, messages):
    """The fault for this request: from the last user message, else the queue."""
    last = ""
    for m in messages:
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            last = m["content"]
    if last.startswith("fault:"):
        parts = last.split(":", 2)
        kind = parts[1].split()[0] if len(parts) > 1 and parts[1] else ""
        arg = parts[2].split()[0] if len(parts) > 2 and parts[2].split() else None
        return kind, arg, last
    if state.faults:
        f = state.faults[0]
        f["count"] -= 1
        if f["count"] <= 0:
            state.faults.pop(0)
        return f["kind"], f.get("arg"), last
    return None, None, last


def chunk_obj(cid, model, delta, finish=None):
    return {"id": cid, "object": "chat.completion.chunk", "created": MODEL_CREATED,
            "model": model, "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "delta": delta, "logprobs": None,
                         "finish_reason": finish}]}


def completion_obj(cid, model, text):
    return {"id": cid, "object": "chat.completion", "created": MODEL_CREATED, "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": max(1, len(text) // 4),
                      "total_tokens": 1 + max(1, len(text) // 4)}}


def split_text(text, n=3):
    """The reply cut into n roughly equal deltas (keeping UTF-8 characters whole)."""
    if not text:
        return []
    size = max(1, (len(text) + n - 1) // n)
    return [text[i:i + size] for i in range(0, len(text), size)]


async def sse_send(resp, obj):
    data = obj if isinstance(obj, str) else json.dumps(obj)
    await resp.write(("data: " + data + "\n\n").encode())


async def stream_reply(request, state, cid, model, text, kind, arg):
    resp = web.StreamResponse(status=200, headers={"Content-Type": "text/event-stream",
                                                    "Cache-Control": "no-cache"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    if kind == "garbage":
        await resp.write(b"data: this is not json\n\n")
        await resp.write_eof()
        return resp
    await sse_send(resp, chunk_obj(cid, model, {"role": "assistant", "content": ""}))
    # A comment line, as some servers send to keep the connection alive.
    await resp.write(b": keep-alive\n\n")
    pieces = split_text(text)
    for i, piece in enumerate(pieces):
        if kind == "truncated" and i == 1:
            request.transport.close()
            return resp
        if kind == "cut" and i == 1:
            await resp.write_eof()
            return resp
        if kind == "stream_error" and i == 1:
            await sse_send(resp, {"error": {"message": "The server had an error while "
                                             "processing your request.", "type": "server_error",
                                             "param": None, "code": None}})
            await resp.write_eof()
            return resp
        await sse_send(resp, chunk_obj(cid, model, {"content": piece}))
        if kind == "drip":
            await asyncio.sleep(float(arg or 0.2))
    if kind == "truncated":
        request.transport.close()
        return resp
    await sse_send(resp, chunk_obj(cid, model, {}, "stop"))
    await sse_send(resp, "[DONE]")
    await resp.write_eof()
    return resp


async def whole_reply(request, state, cid, model, text, kind):
    if kind == "garbage":
        return web.Response(status=200, text="<html>this is not json</html>",
                            content_type="text/html")
    body = json.dumps(completion_obj(cid, model, text)).encode()
    if kind == "truncated":
        resp = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:len(body) // 2])
        request.transport.close()
        return resp
    return web.Response(status=200, body=body, content_type="application/json")


async def completions(request):
    state = request.app["state"]
    raw = await request.read()
    rec = {"path": request.path, "authorization": request.headers.get("Authorization"),
           "content_type": request.headers.get("Content-Type"),
           "body": raw.decode("utf-8", "replace"), "time": time.time()}
    state.requests.append(rec)
    if state.api_key is not None:
        auth = request.headers.get("Authorization", "")
        if auth != "Bearer " + state.api_key:
            given = auth[7:] if auth.startswith("Bearer ") else auth
            return oai_error(401, "Incorrect API key provided: %s. You can find your API key "
                             "at https://platform.openai.com/account/api-keys." % given,
                             code="invalid_api_key")
    try:
        body = json.loads(raw)
    except ValueError:
        return oai_error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return oai_error(400, "The body must be a JSON object.")
    model = body.get("model")
    messages = body.get("messages")
    if not isinstance(model, str) or not model:
        return oai_error(400, "you must provide a model parameter")
    if not isinstance(messages, list) or not messages:
        return oai_error(400, "'messages' must be a non-empty array", code=None)
    for m in messages:
        if (not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool")
                or not isinstance(m.get("content"), str)):
            return oai_error(400, "Invalid message in 'messages'.")
    kind, arg, last = pick_fault(state, messages)
    state.seq += 1
    cid = "chatcmpl-fake%d" % state.seq
    text = state.reply if state.reply is not None else "echo: " + last
    if kind == "status":
        code = int(arg or 500)
        msgs = {429: "Rate limit reached for requests", 500: "The server had an error",
                503: "The engine is currently overloaded, please try again later",
                404: "The model `%s` does not exist" % model}
        return oai_error(code, msgs.get(code, "Error %d" % code),
                         etype="server_error" if code >= 500 else "invalid_request_error")
    if kind == "slow":
        await asyncio.sleep(float(arg or 2))
    if kind == "hang":
        await asyncio.sleep(3600)
    if kind == "huge":
        text = "x" * int(arg or 2000000)
    if kind == "empty":
        text = ""
    if body.get("stream") and kind != "nostream":
        return await stream_reply(request, state, cid, model, text, kind, arg)
    return await whole_reply(request, state, cid, model, text, kind)


async def get_requests(request):
    return web.json_response({"requests": request.app["state"].requests})


async def clear_requests(request):
    request.app["state"].requests.clear()
    return web.json_response({"ok": True})


async def set_fault(request):
    f = await request.json()
    request.app["state"].faults.append({"kind": f["kind"], "arg": f.get("arg"),
                                        "count": int(f.get("count", 1))})
    return web.json_response({"ok": True})


def make_app(state):
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app["state"] = state
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_post("/chat/completions", completions)
    app.router.add_get("/_fake/requests", get_requests)
    app.router.add_delete("/_fake/requests", clear_requests)
    app.router.add_post("/_fake/fault", set_fault)
    return app


def make_tls(tls_dir):
    """A server TLS context from a new trustme CA; writes tls_dir/ca.pem."""
    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(ctx)
    path = os.path.join(tls_dir, "ca.pem")
    ca.cert_pem.write_to_path(path)
    return ctx, path


async def serve(state, port=0, tls_dir=None):
    """Starts the server; returns (runner, port, ca_path)."""
    ctx, ca = (None, None)
    if tls_dir is not None:
        ctx, ca = make_tls(tls_dir)
    runner = web.AppRunner(make_app(state), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx, shutdown_timeout=0.2)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, port, ca


class FakeOpenAI:
    """The fake in a background thread, for pytest:

        fake = FakeOpenAI(tls_dir=tmp_path, api_key="sk-test").start()
        fake.url  -> "https://127.0.0.1:PORT/v1";  fake.ca -> CA path or None
        fake.requests() -> list of recorded requests;  fake.fault("hang")
        fake.stop()
    """

    def __init__(self, tls_dir=None, api_key=None, reply=None):
        self.state = State(api_key=api_key, reply=reply)
        self.tls_dir = str(tls_dir) if tls_dir is not None else None
        self.loop = None
        self.thread = None
        self.port = None
        self.ca = None
        self.url = None

    def start(self):
        ready = threading.Event()
        err = []

        def run():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
            try:
                self.runner, self.port, self.ca = self.loop.run_until_complete(
                    serve(self.state, 0, self.tls_dir))
            except Exception as e:          # reported to the starting thread
                err.append(e)
                ready.set()
                return
            ready.set()
            self.loop.run_forever()
            self.loop.run_until_complete(self.runner.cleanup())
            self.loop.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        ready.wait(30)
        if err:
            raise err[0]
        scheme = "https" if self.tls_dir else "http"
        self.url = "%s://127.0.0.1:%d/v1" % (scheme, self.port)
        return self

    def _call(self, fn):
        fut = asyncio.run_coroutine_threadsafe(fn(), self.loop)
        return fut.result(10)

    def requests(self):
        async def get():
            return list(self.state.requests)
        return self._call(get)

    def fault(self, kind, arg=None, count=1):
        async def add():
            self.state.faults.append({"kind": kind, "arg": arg, "count": count})
        self._call(add)

    def stop(self):
        if self.loop is not None and self.thread is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.thread = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tls-dir", help="serve TLS; write the CA to DIR/ca.pem")
    ap.add_argument("--api-key", help="require this bearer key")
    ap.add_argument("--reply", help="fixed reply text instead of the echo")
    args = ap.parse_args()
    state = State(api_key=args.api_key, reply=args.reply)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    runner, port, ca = loop.run_until_complete(serve(state, args.port, args.tls_dir))
    scheme = "https" if args.tls_dir else "http"
    print(json.dumps({"port": port, "url": "%s://127.0.0.1:%d/v1" % (scheme, port), "ca": ca}),
          flush=True)
    stop = asyncio.Event()
    for s in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(s, stop.set)
    loop.run_until_complete(stop.wait())
    loop.run_until_complete(runner.cleanup())


if __name__ == "__main__":
    sys.exit(main())
