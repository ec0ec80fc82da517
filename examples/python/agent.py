#!/usr/bin/env python3
"""An orb agent in Python, written from docs/protocol.md alone: proof that the wire protocol is
language-neutral.

It connects over WebSocket (one JSON frame per message, section 2.2), says `hello` (section 4.1),
enrolls with the agent token the first time and keeps the device secret the server issues in a
file (section 5.1), then answers commands (sections 4.3, 4.4, 6.5), keeps the heartbeat (section
7), answers the server's pings, and reconnects with backoff when the link drops. It handles `ping`
and one command of its own, `greet`.

    pip install websockets==15.0.1
    python3 examples/python/agent.py --server ws://127.0.0.1:7780/v1/ws \
        --token-file orb-data/agent.token --id py-1
    orb send py-1 greet '{"name": "orb"}'

Dependencies: Python 3.9+ and the `websockets` package (pinned in requirements.txt).
"""

import argparse
import asyncio
import json
import os
import random
import sys
import time

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

PROTOCOL_VERSION = 1
AGENT_NAME = "orb-python-example/0.1.0"
COMMANDS = ["ping", "greet"]


class Refused(Exception):
    """The server refused the hello (an `error` frame instead of `welcome`)."""

    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code


def command_error(code, message):
    """A failed result, as a reply's `error` object (section 3: code and message required)."""
    return {"code": code, "message": message}


def handle(name, args):
    """Runs command `name` with its arguments: (result, None) or (None, error object)."""
    if name == "ping":
        return {"pong": True}, None
    if name == "greet":
        who = args.get("name") if isinstance(args, dict) else None
        if not isinstance(who, str) or not who:
            return None, command_error("bad_args", 'greet takes {"name": "..."} with a non-empty name')
        return {"greeting": f"hello, {who}", "from": "python"}, None
    return None, command_error("unknown_command", f"no handler for command '{name}'")


def read_secret(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def keep_secret(path, secret):
    """Writes the device secret for the next connections, readable by this user only."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(secret + "\n")


def hello(args, secret):
    body = {"version": PROTOCOL_VERSION, "role": "agent", "id": args.id, "commands": COMMANDS, "agent": AGENT_NAME}
    if secret:
        body["secret"] = secret
    else:
        # First connection: enroll with the shared agent token and keep the secret issued.
        body["token"] = args.token
        body["enroll"] = True
    return {"kind": "hello", "body": body}


async def session(args):
    """One connection, from hello to its end. Returns normally when the link drops."""
    secret = read_secret(args.secret_file)
    async with connect(args.server, max_size=None) as ws:
        await ws.send(json.dumps(hello(args, secret)))
        first = json.loads(await asyncio.wait_for(ws.recv(), timeout=10))
        if first.get("kind") == "error":
            error = first.get("error") or {}
            raise Refused(error.get("code"), error.get("message"))
        if first.get("kind") != "welcome":
            raise Refused("protocol_violation", f"expected welcome, got {first.get('kind')}")
        welcome = first.get("body") or {}
        if welcome.get("secret"):
            keep_secret(args.secret_file, welcome["secret"])
        print(f"agent: connected as {welcome.get('id')} to {welcome.get('server')}", flush=True)

        heartbeat = welcome.get("heartbeat_ms", 15000) / 1000
        last_sent = time.monotonic()
        pings = 0

        async def send(frame):
            nonlocal last_sent
            await ws.send(json.dumps(frame))
            last_sent = time.monotonic()

        async def keep_alive():
            # Section 7: send a ping when nothing was sent for the heartbeat interval.
            nonlocal pings
            while True:
                await asyncio.sleep(max(0.05, last_sent + heartbeat - time.monotonic()))
                if time.monotonic() - last_sent >= heartbeat:
                    pings += 1
                    await send({"kind": "ping", "id": f"hb-{pings}"})

        beat = asyncio.create_task(keep_alive())
        try:
            async for raw in ws:
                frame = json.loads(raw)
                kind = frame.get("kind")
                if kind == "cmd":
                    result, error = handle(frame.get("cmd"), frame.get("body"))
                    reply = {"kind": "reply", "re": frame.get("id")}
                    if error is None:
                        reply["body"] = result
                    else:
                        reply["error"] = error
                    await send(reply)
                elif kind == "ping":
                    await send({"kind": "pong", "re": frame.get("id")})
                elif kind == "bye":
                    reason = (frame.get("body") or {}).get("reason")
                    print(f"agent: the server said bye: {reason}", flush=True)
                    if reason in ("revoked", "removed"):
                        # Section 13, item 3: an operator shut this device out; reconnecting won't help.
                        raise SystemExit(f"agent: this device was {reason} by an operator; not reconnecting")
                    return
                elif kind == "error":
                    print(f"agent: error from the server: {frame.get('error')}", file=sys.stderr, flush=True)
                # pong, cancel (every handler here answers at once) and kinds this agent does not
                # know are ignored, as section 12 allows.
        except ConnectionClosed:
            return
        finally:
            beat.cancel()


async def main(args):
    delay = 0.1
    while True:
        try:
            await session(args)
            delay = 0.1
        except Refused as e:
            # A refused credential is not retried quickly (section 5): wait the longest backoff.
            print(f"agent: refused: {e}", file=sys.stderr, flush=True)
            delay = args.max_backoff
        except (OSError, ConnectionClosed, asyncio.TimeoutError) as e:
            print(f"agent: link down: {e!r}", file=sys.stderr, flush=True)
        await asyncio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, args.max_backoff)


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--server", required=True, help="ws:// URL of the server's /v1/ws")
    p.add_argument("--token-file", help="the server's agent token, for the first connection")
    p.add_argument("--id", required=True, help="this device's id")
    p.add_argument("--secret-file", help="where the device secret is kept (default: ./ID.secret)")
    p.add_argument("--max-backoff", type=float, default=10.0, help="longest wait between attempts, seconds")
    args = p.parse_args()
    args.secret_file = args.secret_file or f"{args.id}.secret"
    args.token = None
    if args.token_file:
        with open(args.token_file, encoding="utf-8") as f:
            args.token = f.read().strip()
    if not args.token and not read_secret(args.secret_file):
        p.error("the first connection needs --token-file (the server's agent token)")
    return args


if __name__ == "__main__":
    try:
        asyncio.run(main(parse()))
    except KeyboardInterrupt:
        pass
