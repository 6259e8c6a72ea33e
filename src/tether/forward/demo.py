"""A small web app to try ``tether forward`` with: a page, a JSON endpoint and a
websocket echo, as an ASGI app for uvicorn.

    tether forward demo --ssh HUB:2222 -- uvicorn --uds {socket} tether.forward.demo:app

The page opens a websocket back to its own origin and shows what comes back, so a
browser shows at once whether the route carries websockets.
"""

from __future__ import annotations

import json
import os

PAGE = b"""<!doctype html>
<html><head><meta charset="utf-8"><title>tether forward demo</title></head>
<body style="font-family:sans-serif;max-width:40em;margin:2em auto">
<h1>tether forward demo</h1>
<p>This page is served by an app on a compute node, through the hub's gateway.</p>
<p>Websocket: <span id="ws">connecting...</span></p>
<script>
const ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host +
                         location.pathname.replace(/\\/$/, "") + "/ws");
ws.onopen = () => ws.send("echo " + Date.now());
ws.onmessage = (e) => { document.getElementById("ws").textContent = "ok: " + e.data; };
ws.onerror = () => { document.getElementById("ws").textContent = "failed"; };
</script>
</body></html>
"""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] == "websocket.receive":
            await send({"type": "websocket.send", "text": message.get("text"), "bytes": message.get("bytes")})
        return
    path = scope["path"].rstrip("/")
    if path.endswith("/api/hello"):
        body = json.dumps({"hello": "from the node", "pid": os.getpid(),
                           "forwarded_for": dict(scope["headers"]).get(b"x-forwarded-for", b"").decode()}).encode()
        ctype = b"application/json"
    else:
        body, ctype = PAGE, b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
