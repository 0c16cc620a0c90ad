"""Datastore benchmark (issue: data). Prints one table; figures go to BENCHMARKS.md.

A local moto S3 server (a subprocess, see tests/integration/s3server.py) holds 1,000 files of 200 KB
(200 MB in all). Timed, each into a fresh folder:

1. ``resolve_input`` download, cold (empty workspace cache): every byte is fetched;
2. ``resolve_input`` download again (another run of the same workspace): served from the cache;
3. the peer: an ``s3fs`` recursive ``get`` of the same prefix (what ``aws s3 sync`` does), and
   ``aws s3 sync`` itself when the AWS CLI is on PATH.

Every result is checked byte for byte against the uploaded data. The server is the bottleneck here,
the same for torchyard and the peers.

Usage: python bench/bench_datastore.py [--files 1000] [--mb 200] [--repeat 1]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "integration"))

import s3server  # noqa: E402

BUCKET = "torchyard-bench"
PREFIX = "dataset"


def digest_tree(folder: str) -> dict[str, str]:
    out = {}
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.md5(fh.read()).hexdigest()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--mb", type=float, default=200)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each measurement (median)")
    args = ap.parse_args()
    reason = s3server.unavailable_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    os.environ.update(
        AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
    )
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)

    import boto3
    import s3fs

    from torchyard.data import Datastore, resolve_input

    work = tempfile.mkdtemp(prefix="tybench_data_")
    size = int(args.mb * 1024 * 1024 / args.files)
    total = size * args.files
    rows: list[tuple[str, float, int]] = []
    try:
        with s3server.S3Server() as server:
            endpoint = server.endpoint_url
            assert endpoint
            client = boto3.client("s3", endpoint_url=endpoint)
            expected: dict[str, str] = {}
            try:
                client.create_bucket(Bucket=BUCKET)

                def put(i: int) -> tuple[str, str]:
                    body = os.urandom(size)
                    rel = f"part-{i // 100:02d}/file-{i:05d}.bin"
                    client.put_object(Bucket=BUCKET, Key=f"{PREFIX}/{rel}", Body=body)
                    return rel, hashlib.md5(body).hexdigest()

                t0 = time.perf_counter()
                with ThreadPoolExecutor(8) as pool:
                    expected = dict(pool.map(put, range(args.files)))
                upload_s = time.perf_counter() - t0
            finally:
                client.close()
            print(
                f"uploaded {args.files} files, {total / 2**20:.0f} MiB to moto at {endpoint} in {upload_s:.1f} s",
                file=sys.stderr,
            )

            def check(folder: str) -> None:
                got = digest_tree(folder)
                assert got == expected, f"{folder}: {len(got)} files, content differs from the upload"

            def measure(what: str, fn: Callable[[str, str], int], fresh_workspace: bool) -> None:
                times, downloaded = [], []
                for i in range(args.repeat):
                    dest = os.path.join(work, f"dest-{len(rows)}-{i}")
                    ws = os.path.join(work, f"ws-{len(rows)}-{i}") if fresh_workspace else shared_ws
                    if fresh_workspace:
                        Datastore.register_s3(ws, "bench", BUCKET, endpoint_url=endpoint)
                    t = time.perf_counter()
                    got = fn(ws, dest)
                    times.append(time.perf_counter() - t)
                    downloaded.append(got)
                    check(dest)
                    shutil.rmtree(dest, ignore_errors=True)
                rows.append((what, statistics.median(times), max(downloaded)))

            shared_ws = os.path.join(work, "ws")
            Datastore.register_s3(shared_ws, "bench", BUCKET, endpoint_url=endpoint)
            ref = {"datastore": "bench", "path": PREFIX, "mode": "download"}

            def resolve(ws: str, dest: str) -> int:
                return int(resolve_input(ws, ref, dest, io.StringIO())["bytes_downloaded"])

            measure("torchyard resolve_input, cold (empty cache)", resolve, fresh_workspace=True)
            resolve(shared_ws, os.path.join(work, "prime"))  # fill the shared workspace's cache
            measure("torchyard resolve_input, cached (second run)", resolve, fresh_workspace=False)

            def s3fs_get(_ws: str, dest: str) -> int:
                fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}, skip_instance_cache=True)
                fs.get(f"{BUCKET}/{PREFIX}/", dest + "/", recursive=True)
                return total

            measure("peer: s3fs get -r (the `aws s3 sync` equivalent)", s3fs_get, fresh_workspace=False)

            aws = shutil.which("aws")
            if aws:

                def aws_sync(_ws: str, dest: str) -> int:
                    subprocess.run(
                        [aws, "--endpoint-url", endpoint, "s3", "sync", "--only-show-errors",
                         f"s3://{BUCKET}/{PREFIX}", dest],
                        check=True,
                    )  # fmt: skip
                    return total

                measure("peer: aws s3 sync", aws_sync, fresh_workspace=False)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    header = ("what", "seconds", "MB/s", "bytes downloaded")
    print(
        f"{args.files:,} files, {total / 2**20:.0f} MiB ({total / 1e6:.0f} MB) in a local moto S3 server "
        f"(one process on this machine); MB/s = 10^6 bytes/s; median of {args.repeat}"
    )
    print_table(header, [(w, f"{s:.2f}", f"{total / 1e6 / s:.0f}", f"{b:,}") for w, s, b in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
