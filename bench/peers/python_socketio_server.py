"""Peer: python-socketio (asyncio, aiohttp). Every client joins room "bench";
POST /trigger {events: [...]} emits each payload to the room as event "bench"."""
import os

import socketio
from aiohttp import web

sio = socketio.AsyncServer(async_mode="aiohttp", cors_allowed_origins="*")
app = web.Application()
sio.attach(app)


@sio.event
async def connect(sid, environ, auth=None):
    await sio.enter_room(sid, "bench")


async def trigger(request):
    body = await request.json()
    for p in body.get("events", []):
        await sio.emit("bench", p, room="bench")
    return web.json_response({"ok": True})


app.router.add_post("/trigger", trigger)

if __name__ == "__main__":
    web.run_app(app, host="127.0.0.1", port=int(os.environ.get("PORT", "3002")), print=None)
