"""What a Kubernetes pod of a torchyard run runs: ``python -m torchyard.compute.k8s_pod``.

1. Unpack the run's code snapshot (the ConfigMap chunks mounted under ``--code``) into the
   ``--work`` emptyDir; write this node's launcher plan there (its node rank from
   ``TORCHYARD_NODE_RANK``, set in each Job's pod).
2. Run torchyard's per-node launcher, which runs the node bootstrap first (the job's environment
   built and its inputs placed in the pod) and then the node's ranks.
3. Meanwhile, send what the run folder gains (``compute.mirror.scan``: logs, metric journals, the
   launcher's report) as mirror frames on stdout, one line each::

       TORCHYARD-MIRROR <base64 of zlib'd msgpack {relative path: [offset, bytes]}>

   so the pod logs API (``read_namespaced_pod_log(follow=True)``) is the channel back to the
   supervisor; no volume is shared with the submitting machine. At the end node 0 also sends its
   ``outputs/`` (and named outputs, uploads) the same way, then ``TORCHYARD-END <exit code>``.

Frames carry absolute offsets, so reading a log again from its start (a broken stream) is harmless.
"""

from __future__ import annotations

import argparse
import base64
import glob
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zlib
from typing import Any

from torchyard.compute.mirror import Changes, scan
from torchyard.paths import RunPaths

FRAME = "TORCHYARD-MIRROR"
END = "TORCHYARD-END"
#: bytes of file content per frame line (kept moderate: CRI log files split very long lines)
LINE_BUDGET = 256 * 1024
TICK = 0.25


def encode(changes: Changes) -> str:
    import msgspec  # noqa: PLC0415

    return base64.b64encode(zlib.compress(msgspec.msgpack.encode(changes), 1)).decode()


def decode(text: str) -> Changes:
    import msgspec  # noqa: PLC0415

    data: Changes = msgspec.msgpack.decode(zlib.decompress(base64.b64decode(text)))
    return data


def unpack_code(code_dir: str, work: str) -> int:
    """Join the chunks (``<code>/<i>/part-NNN``, in order) and untar them into ``work``."""
    parts = sorted(glob.glob(os.path.join(code_dir, "*", "part-*")), key=lambda p: os.path.basename(p))
    chunks = []
    for path in parts:
        with open(path, "rb") as fh:
            chunks.append(fh.read())
    data = b"".join(chunks)
    os.makedirs(work, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(zlib.decompress(data)), mode="r") as tar:
        tar.extractall(work, filter="data")
    return len(data)


class Sender:
    """The pod's half of the mirror: what it already sent, per file."""

    def __init__(self, work: str) -> None:
        self.work = work
        self.offsets: dict[str, int] = {}

    def send(self, changes: Changes) -> None:
        for rel, (offset, data) in changes.items():
            self.offsets[rel] = zlib.crc32(data) if offset < 0 else offset + len(data)
        sys.stdout.write(f"{FRAME} {encode(changes)}\n")
        sys.stdout.flush()

    def tick(self) -> bool:
        changes = scan(self.work, self.offsets, LINE_BUDGET)
        if changes:
            self.send(changes)
        return bool(changes)

    def drain(self) -> None:
        while self.tick():
            pass

    def send_results(self) -> None:
        """Node 0's results (``RunPaths.collected()``), in chunks with offsets from 0."""
        for sub in RunPaths.collected():
            for dirpath, dirnames, files in os.walk(os.path.join(self.work, sub)):
                dirnames.sort()
                for fname in sorted(files):
                    path = os.path.join(dirpath, fname)
                    rel = os.path.relpath(path, self.work)
                    with open(path, "rb") as fh:
                        offset = 0
                        while True:
                            data = fh.read(LINE_BUDGET)
                            if not data and offset:
                                break
                            self.send({rel: [offset, data]})
                            offset += len(data)
                            if not data:
                                break


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m torchyard.compute.k8s_pod")
    parser.add_argument("--code", required=True)
    parser.add_argument("--plan", required=True)
    parser.add_argument("--work", required=True)
    args = parser.parse_args(argv)
    # batch/v1 Jobs: set per Job; under the Kubeflow operators: their PET_NODE_RANK
    rank = int(os.environ.get("TORCHYARD_NODE_RANK") or os.environ.get("PET_NODE_RANK") or "0")
    t0 = time.time()
    size = unpack_code(args.code, args.work)
    with open(args.plan) as fh:
        plan: dict[str, Any] = json.load(fh)
    plan["workdir"] = args.work
    plan["node_rank"] = rank
    paths = RunPaths(args.work)
    os.makedirs(paths.internal, exist_ok=True)
    os.makedirs(paths.logs, exist_ok=True)
    plan_path = paths.plan(rank)
    with open(plan_path, "w") as fh:
        json.dump(plan, fh)
    print(f"torchyard pod: node {rank} of {plan.get('node_count')}, code unpacked ({size} bytes) "
          f"in {time.time() - t0:.2f} s, python {sys.executable}", flush=True)
    sender = Sender(args.work)
    log = open(paths.launcher_log(rank), "ab")  # noqa: SIM115
    with log:
        proc = subprocess.Popen([sys.executable, "-m", "torchyard.launch.launcher", plan_path], cwd=args.work,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def forward(sig: int, _frame: Any) -> None:  # the kubelet's SIGTERM: the launcher stops the ranks
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    while proc.poll() is None:
        sender.tick()
        time.sleep(TICK)
    rc = proc.returncode
    sender.drain()
    if rank == 0:
        sender.send_results()
    print(f"{END} {rc}", flush=True)
    return rc if rc >= 0 else 128 - rc


if __name__ == "__main__":
    sys.exit(main())
