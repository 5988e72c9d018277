#!/usr/bin/python3
"""A real WebSocket server (python3-websockets) over TLS for the ws client's
unit tests: ws_echo.py CERT KEY.  Prints {"port": N} once listening on
127.0.0.1, then echoes every message, except:
  "auth?"               -> the request's Authorization header, as text
  "close:CODE:REASON"   -> a close handshake with that code and reason
"""
import asyncio
import json
import ssl
import sys

import websockets


async def handler(ws, path=None):
    async for msg in ws:
        if msg == "auth?":
            await ws.send(ws.request_headers.get("Authorization", ""))
        elif isinstance(msg, str) and msg.startswith("close:"):
            _, code, reason = msg.split(":", 2)
            await ws.close(int(code), reason)
            return
        else:
            await ws.send(msg)


async def main():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[1], sys.argv[2])
    async with websockets.serve(handler, "127.0.0.1", 0, ssl=ctx, max_size=None,
                                compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        print(json.dumps({"port": port}), flush=True)
        await asyncio.Future()


asyncio.run(main())
