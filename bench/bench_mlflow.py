"""MLflow inside a torchyard run (issue 16). Prints one table; figures go to BENCHMARKS.md.

Inside ONE torchyard run (one process, one machine state), per call of:

1. ``run.log("loss", v, step)``                        torchyard's own API (the journal)
2. ``mlflow.log_metric("loss", v, step=step)``         MLflow, through torchyard's store (the same journal)
3. ``mlflow.log_metric`` into MLflow's own local file store (``file://``, MLFLOW_ALLOW_FILE_STORE)
4. ``mlflow.log_metric`` into MLflow's own SQLite store (``sqlite:///``)

Each time covers the calls and then the flush to where the values are durable (torchyard's journal
file; MLflow's stores write on every call). The two torchyard rows run ``--calls`` (default 100,000);
MLflow's own stores write a file line or a transaction per call, so they run ``--peer-calls``
(default 2,000) and are reported per call. The env contract's MLFLOW_REGISTRY_URI is set in the rank, so
MLflow's per-call client overhead is the same for every MLflow row.

Usage: python bench/bench_mlflow.py [--calls N] [--peer-calls M]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

SCRIPT = r"""
import json, os, sys, tempfile, time
N, M = int(sys.argv[1]), int(sys.argv[2])
scratch = sys.argv[3]
out = {}

from torchyard import Run
run = Run.get_context()
log = run.log
t0 = time.perf_counter()
for i in range(N):
    log("loss", 0.5, i)
run.flush()
out["run.log"] = (time.perf_counter() - t0) / N

t0 = time.perf_counter()
import mlflow
out["import mlflow"] = time.perf_counter() - t0
t0 = time.perf_counter()
active = mlflow.start_run()
out["start_run (torchyard)"] = time.perf_counter() - t0
log_metric = mlflow.log_metric
t0 = time.perf_counter()
for i in range(N):
    log_metric("mlflow_loss", 0.5, step=i)
run.flush()
out["mlflow.log_metric (torchyard)"] = (time.perf_counter() - t0) / N
mlflow.end_run()

os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
for name, uri in (("file", "file://" + os.path.join(scratch, "mlruns")),
                  ("sqlite", "sqlite:///" + os.path.join(scratch, "mlflow.db"))):
    mlflow.set_tracking_uri(uri)
    t0 = time.perf_counter()
    mlflow.set_experiment("bench")
    mlflow.start_run()
    out[f"start_run ({name})"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(M):
        log_metric("loss", 0.5, step=i)
    out[f"mlflow.log_metric ({name})"] = (time.perf_counter() - t0) / M
    mlflow.end_run()
with open(os.path.join(os.environ["TORCHYARD_OUTPUT_DIR"], "bench.json"), "w") as fh:
    json.dump(out, fh)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--peer-calls", type=int, default=2_000)
    args = parser.parse_args()

    from torchyard import Experiment, ScriptRunConfig, Workspace

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "src")
        os.makedirs(src)
        with open(os.path.join(src, "bench.py"), "w") as fh:
            fh.write(textwrap.dedent(SCRIPT))
        scratch = os.path.join(tmp, "scratch")
        os.makedirs(scratch)
        ws = Workspace(path=os.path.join(tmp, ".torchyard"))
        run = Experiment(ws, "bench").submit(ScriptRunConfig(src, script="bench.py", arguments=[
            str(args.calls), str(args.peer_calls), scratch]))
        run.wait_for_completion(timeout=3600)
        want = 2 * args.calls
        assert ws.store.metric_count(run.id) == want  # every value is in the store once the run is Completed
        with open(os.path.join(run.workdir, "outputs", "bench.json")) as fh:
            got = json.load(fh)
        assert len(run.get_metrics(name="mlflow_loss")["mlflow_loss"]) == args.calls
        ws.store.dispose()

    base = got["run.log"]
    rows = []
    for key, calls in (("run.log", args.calls), ("mlflow.log_metric (torchyard)", args.calls),
                       ("mlflow.log_metric (file)", args.peer_calls), ("mlflow.log_metric (sqlite)", args.peer_calls)):
        rows.append([key, f"{calls:,}", f"{got[key] * 1e6:.2f} us", f"{got[key] / base:.1f}x"])
    print_table(["per call, in one run", "calls", "time per call (incl. flush)", "vs run.log"], rows)
    print()
    print_table(["one-off", "seconds"], [
        ["import mlflow (in the rank)", f"{got['import mlflow']:.2f}"],
        ["mlflow.start_run() → torchyard store", f"{got['start_run (torchyard)']:.3f}"],
        ["set_experiment + start_run → file store", f"{got['start_run (file)']:.3f}"],
        ["set_experiment + start_run → SQLite store (creates the schema)", f"{got['start_run (sqlite)']:.3f}"],
    ])
    print(f"\npython {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
