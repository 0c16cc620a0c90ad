#!/usr/bin/env bash
# The GPU check of the distributed issue, for a lent GPU machine (never CI). Expects the wheels of
# sqlalchemy, alembic, mako and msgspec for its Python in .whl/ (see BENCHMARKS.md).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src:$PWD PYTHONUNBUFFERED=1
{
  date -u; nvidia-smi -L; python3 -c "import sys, torch; print(sys.version.split()[0], 'torch', torch.__version__)"
  python3 - <<'PY'
import time
from torchyard import Workspace, Experiment, PyTorch
ws = Workspace(path="/tmp/tyws/.torchyard")
exp = Experiment(ws, "gpu-check")
for label, kw in [("1x1 use_gpu nccl", dict(distributed_backend="nccl")),
                  ("1x2 use_gpu gloo on CUDA tensors", dict(process_count_per_node=2, distributed_backend="gloo")),
                  ("1x1 cpu (reference)", dict(use_gpu=False))]:
    kw.setdefault("use_gpu", True)
    est = PyTorch("examples/digits", entry_script="train.py", script_params={"--epochs": 20}, **kw)
    t = time.time()
    try:
        run = exp.submit(est)
    except Exception as err:
        print(f"== {label}: not submitted: {err}")
        continue
    d = run.wait_for_completion(show_output=True, raise_on_error=False)
    m = run.get_metrics()
    print(f"== {label}: {d['status']} device={d['tags'].get('device')} accuracy={m.get('accuracy', [None])[-1]} "
          f"wall={time.time() - t:.1f}s error={(d.get('error') or {}).get('message')}")
PY
  python3 -m pytest -q -p no:cacheprovider tests/integration/test_gpu.py -W ignore::DeprecationWarning 2>&1 | tail -5
} 2>&1 | tee "$OUT/gpu_check.txt"
