"""The remote shell ``mpirun`` uses on a Ray target: ``python -m torchyard.compute.ray_rsh HOST CMD...``.

Open MPI starts its daemon on every host of the hostfile through an ssh-like agent
(``plm_rsh_agent``). On Ray there may be no ssh between nodes, so each node's NodeAgent actor listens
on a port for one-shot commands guarded by a per-run token, and this program plays ssh: it sends
the command to the actor of ``HOST`` (a ``ray-node-K`` name from the hostfile, mapped to an address
by ``TORCHYARD_RAY_RSH``), relays the output and exits with the command's exit code.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import sys
from typing import Any

ENV = "TORCHYARD_RAY_RSH"


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack("!I", len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_frame(sock: socket.socket, limit: int | None = None) -> bytes | None:
    """One frame; None at end of stream (or, with ``limit``, for a frame longer than that)."""
    head = _recv_exact(sock, 4)
    if head is None:
        return None
    size = struct.unpack("!I", head)[0]
    if limit is not None and size > limit:
        return None
    return _recv_exact(sock, size)


def recv_request(sock: socket.socket, limit: int | None = None) -> dict[str, Any] | None:
    frame = recv_frame(sock, limit)
    if frame is None:
        return None
    try:
        request = json.loads(frame)
    except ValueError:
        return None
    return request if isinstance(request, dict) else None


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    while args and args[0].startswith("-"):  # ssh options mpirun may add (-x, -o ...)
        args = args[2:] if args[0] == "-o" else args[1:]
    if len(args) < 2:
        print("usage: python -m torchyard.compute.ray_rsh HOST COMMAND...", file=sys.stderr)
        return 255
    host, command = args[0], " ".join(args[1:])
    try:
        table = json.loads(os.environ[ENV])
        addr, port, token = table[host]
    except (KeyError, ValueError) as err:
        print(f"torchyard ray_rsh: no Ray node called {host!r} in this run ({err})", file=sys.stderr)
        return 255
    try:
        with socket.create_connection((addr, int(port)), timeout=30) as sock:
            sock.settimeout(None)
            send_frame(sock, json.dumps({"token": token, "command": command}).encode())
            out = sys.stdout.buffer
            while True:
                frame = recv_frame(sock)
                if frame is None:
                    print(f"torchyard ray_rsh: lost the connection to {host}", file=sys.stderr)
                    return 255
                if frame[:1] == b"o":
                    out.write(frame[1:])
                    out.flush()
                else:
                    return int(frame[1:])
    except OSError as err:
        print(f"torchyard ray_rsh: cannot reach {host} at {addr}:{port}: {err}", file=sys.stderr)
        return 255


if __name__ == "__main__":
    sys.exit(main())
