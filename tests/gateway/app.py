"""A small ASGI app the gateway tests put behind the gateway, on a UNIX socket.

/echo      JSON of what the app received (method, path, headers, body)
/stream    ten chunks, 0.1 s apart
/cookie    sets a cookie with a Domain attribute
/count     how many requests reached the app
/ws        websocket echo
/flood     up to 256 MiB in 1 MiB pieces, as fast as the gateway takes them
/flooded   how many bytes /flood has sent so far
"""

import asyncio
import json

COUNT = {"n": 0}
FLOOD = {"sent": 0}


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()  # connect
        await send({"type": "websocket.accept"})
        while True:
            msg = await receive()
            if msg["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": msg.get("text"), "bytes": msg.get("bytes")})
    path = scope["path"]
    if path == "/count":  # not counted itself
        return await _reply(send, 200, json.dumps(COUNT["n"]).encode())
    if path == "/flooded":
        return await _reply(send, 200, json.dumps(FLOOD["sent"]).encode())
    if path == "/flood":  # uvicorn's send waits while its transport is paused: flow control decides the pace
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        piece = b"f" * (1 << 20)
        for _ in range(256):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
            FLOOD["sent"] += len(piece)
        return await send({"type": "http.response.body", "body": b""})
    COUNT["n"] += 1
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for i in range(10):
            await send({"type": "http.response.body", "body": f"chunk {i}\n".encode(), "more_body": True})
            await asyncio.sleep(0.1)
        return await send({"type": "http.response.body", "body": b""})
    if path == "/cookie":
        return await _reply(send, 200, b"ok", [(b"set-cookie", b"app=1; Domain=localhost; Path=/; HttpOnly")])
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    info = {"method": scope["method"], "path": path, "query": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]], "body": body.decode("latin-1")}
    return await _reply(send, 200, json.dumps(info).encode())


async def _reply(send, status, body, headers=()):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), *headers]})
    await send({"type": "http.response.body", "body": body})
