"""Horovod built by the environment cache against the run's torch, run under the mpi backend.

``pip_packages=["horovod==0.28.1"]`` builds Horovod from source (PyTorch, Gloo and MPI controllers)
through the layered uv environment with the C++17 compiler wrapper. A cold build takes many minutes,
so the environment is cached in a workspace that outlives the test session
(``TORCHYARD_TEST_HOROVOD_WORKSPACE``, default ``~/.cache/torchyard-tests/horovod``): CI on the same
machine builds it once. Select with ``-m horovod``.
"""

from __future__ import annotations

import os
import shutil
import time

import pytest
from tests.conftest import EXAMPLES, wait_until
from tests.integration import slurmcluster
from tests.integration.horovod_env import HOROVOD, HVD_WORKSPACE, built

from torchyard import ComputeTarget, Experiment, Mpi, PyTorch, Workspace

pytestmark = [
    pytest.mark.horovod,
    pytest.mark.timeout(3600),
    pytest.mark.skipif(shutil.which("mpirun") is None or shutil.which("mpicxx") is None,
                       reason="Open MPI (mpirun, mpicxx) is not installed"),
    pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("c++") is None,
                       reason="building Horovod needs cmake and a C++ compiler"),
]
# A cold build takes minutes (BENCHMARKS.md): scripts/test.sh builds it before the suite
# (tests/integration/horovod_env.py); the tests run when it is cached, or with TORCHYARD_TEST_BUILD_HOROVOD=1.
pytestmark.append(pytest.mark.skipif(not (built() or os.environ.get("TORCHYARD_TEST_BUILD_HOROVOD")),
                                     reason="Horovod's build is not cached here (python tests/integration/horovod_env.py "
                                            "builds it; TORCHYARD_TEST_BUILD_HOROVOD=1 pytest -m horovod does too)"))

EXAMPLE = EXAMPLES / "horovod"  # the Azure-style estimator of docs/guides/distributed.md runs this script


@pytest.fixture(scope="module")
def hvd_ws():
    workspace = Workspace(path=HVD_WORKSPACE)
    yield workspace
    if workspace._store is not None:
        workspace._store.dispose()


def _submit(ws, nodes: int, ppn: int, compute: str = "local"):
    # the Azure training guide's Horovod estimator: PyTorch(..., distributed_training=Mpi())
    est = PyTorch(str(EXAMPLE), entry_script="train_horovod.py", node_count=nodes, process_count_per_node=ppn,
                  distributed_training=Mpi(), pip_packages=[HOROVOD], compute_target=compute)
    return Experiment(ws, "horovod").submit(est)


@pytest.mark.parametrize(("nodes", "ppn"), [(1, 2), (2, 1)])
def test_horovod_allreduce_and_distributed_optimizer(hvd_ws, nodes, ppn):
    _check_horovod_run(hvd_ws, nodes, ppn, "local")


@pytest.mark.skipif(bool(slurmcluster.unavailable_reason()), reason=str(slurmcluster.unavailable_reason()))
def test_horovod_2x1_on_the_slurm_test_cluster(hvd_ws):
    with slurmcluster.SlurmCluster(nodes=2, cpus=2) as cluster:
        old = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = cluster.conf
        try:
            ComputeTarget.attach(hvd_ws, "hvd-slurm", slurmcluster_target())
            try:
                _check_horovod_run(hvd_ws, 2, 1, "hvd-slurm")
            except AssertionError as err:
                raise AssertionError(f"{err}\n{cluster.log_tail()}") from None
            wait_until(lambda: not cluster.jobs(), timeout=20, interval=0.2)
        finally:
            if old is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = old


def slurmcluster_target():
    from torchyard.compute.slurm import SlurmCompute

    # two slurmd on one host share its PMIx rendezvous files (/tmp/spmix_appdir_*), so srun --mpi=pmix
    # cannot start a step on this one-host cluster: mpirun's path, as in test_slurm.py
    return SlurmCompute(mpi_launch="mpirun")


def _check_horovod_run(hvd_ws, nodes, ppn, compute):
    run = _submit(hvd_ws, nodes, ppn, compute)
    details = run.wait_for_completion(timeout=3500, raise_on_error=False)
    assert details["status"] == "Completed", (details.get("error"), run.id)
    every = run.get_metrics(rank="all")
    assert sorted(every) == [0, 1]
    for metrics in every.values():
        assert metrics["total"] == 3.0 and metrics["size"] == 2
        assert metrics["mpi_built"] == 1 and metrics["gloo_built"] == 1 and metrics["mpi_enabled"] == 1
    assert every[0]["param_checksum"] == every[1]["param_checksum"]
    assert any(p.startswith("horovod==0.28.1") for p in run.get_environment()["packages"])


def test_a_second_run_reuses_the_build_within_50_ms(hvd_ws, tmp_path):
    from torchyard.environments import resolve
    from torchyard.spec.job import EnvironmentSpec

    spec = EnvironmentSpec(pip_packages=(HOROVOD,))
    first = resolve(hvd_ws.path, spec, str(tmp_path / "env.txt"))  # built by the tests above (or now)
    started = time.perf_counter()
    again = resolve(hvd_ws.path, spec, str(tmp_path / "env.txt"))
    assert time.perf_counter() - started <= 0.05
    assert again.cached and again.key == first.key
    assert os.path.isfile(os.path.join(again.path, "bin", "torchyard-cxx17"))
