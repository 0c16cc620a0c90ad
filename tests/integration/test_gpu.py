"""GPU checks: skipped cleanly where there is no NVIDIA GPU (CI never has one)."""

from __future__ import annotations

import pytest
from tests.conftest import EXAMPLES

from torchyard import Experiment, PyTorch

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")]


@pytest.mark.parametrize(("ppn", "backend"), [(1, "nccl"), (2, "gloo")])
def test_digits_on_the_gpu(ws, ppn, backend):
    est = PyTorch(str(EXAMPLES / "digits"), entry_script="train.py", use_gpu=True, process_count_per_node=ppn,
                  distributed_backend=backend, script_params={"--epochs": 10})
    run = Experiment(ws, "gpu").submit(est)
    details = run.wait_for_completion(timeout=600)
    assert details["status"] == "Completed"
    assert details["tags"]["device"] != "cpu"
    assert run.get_metrics()["accuracy"][-1] > 0.9
