"""Peer: Flask-SocketIO (threading mode with simple-websocket). Every client joins room
"bench"; POST /trigger {events: [...]} emits each payload to the room as event "bench"."""
import os

from flask import Flask, jsonify, request
from flask_socketio import SocketIO, join_room

app = Flask(__name__)
socketio = SocketIO(app, async_mode="threading", cors_allowed_origins="*")


@socketio.on("connect")
def on_connect(auth=None):
    join_room("bench")


@app.post("/trigger")
def trigger():
    body = request.get_json(force=True)
    for p in body.get("events", []):
        socketio.emit("bench", p, to="bench")
    return jsonify(ok=True)


if __name__ == "__main__":
    socketio.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "3003")),
                 allow_unsafe_werkzeug=True, log_output=False)
