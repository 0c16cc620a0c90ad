from pathlib import Path

import pytest

from torchyard import (
    Environment,
    Gloo,
    Mpi,
    MpiConfiguration,
    Nccl,
    PyTorch,
    PyTorchConfiguration,
    ScriptRunConfig,
    SpecError,
)
from torchyard.spec import flatten_script_params
from torchyard.spec.job import JobSpec


@pytest.fixture
def srcdir(tmp_path: Path) -> Path:
    (tmp_path / "train.py").write_text("pass\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "main.py").write_text("pass\n")
    return tmp_path


def test_flatten_follows_azure_rules():
    params = {"--epochs": 5, "--lr": 0.05, "--verbose": "", "--items": ["a", "b"], "--skip": None, "--flag": True}
    assert flatten_script_params(params) == (
        "--epochs", "5", "--lr", "0.05", "--verbose", "--items", "a", "b", "--flag", "True",
    )
    assert flatten_script_params(None) == ()


@pytest.mark.parametrize(
    ("params", "field"),
    [({"--x": {"a": 1}}, "script_params['--x']"), ({"--x": [object()]}, "script_params['--x'][0]"), ([1, 2], "script_params")],
)
def test_flatten_rejects_bad_values(params, field):
    with pytest.raises(SpecError) as info:
        flatten_script_params(params)
    assert info.value.field == field


def test_estimator_compiles_to_jobspec(srcdir):
    est = PyTorch(
        source_directory=str(srcdir),
        entry_script="train.py",
        script_params={"--epochs": 5},
        node_count=2,
        process_count_per_node=3,
        distributed_backend="nccl",
        use_gpu=True,
        environment_variables={"A": "1"},
        max_run_duration_seconds=60,
    )
    spec = est.to_job_spec()
    assert isinstance(spec, JobSpec)
    assert spec.arguments == ("--epochs", "5")
    assert spec.distribution.backend == "pytorch"
    assert spec.distribution.communication_backend == "nccl"
    assert spec.distribution.world_size == 6
    assert spec.environment_variables == {"A": "1"}
    assert JobSpec.from_json(spec.to_json()) == spec


def test_backend_defaults_to_gloo_on_cpu_and_nccl_on_gpu(srcdir):
    cpu = PyTorch(str(srcdir), entry_script="train.py", process_count_per_node=2, distributed_backend="pytorch")
    assert cpu.spec.distribution.communication_backend == "gloo"
    gpu = PyTorch(str(srcdir), entry_script="train.py", distributed_backend="pytorch", use_gpu=True)
    assert gpu.spec.distribution.communication_backend == "nccl"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"entry_script": "missing.py"}, "entry_script"),
        ({"entry_script": "../outside.py"}, "entry_script"),
        ({"entry_script": "/abs/train.py"}, "entry_script"),
        ({"entry_script": None}, "entry_script"),
        ({"entry_script": "train.py", "node_count": 0}, "node_count"),
        ({"entry_script": "train.py", "process_count_per_node": 0}, "process_count_per_node"),
        ({"entry_script": "train.py", "node_count": "2"}, "distribution.node_count"),
        ({"entry_script": "train.py", "use_gpu": "yes"}, "use_gpu"),
        ({"entry_script": "train.py", "node_count": 2}, "distributed_backend"),
        ({"entry_script": "train.py", "distributed_backend": "carrier-pigeon"}, "distributed_backend"),
        ({"entry_script": "train.py", "distributed_backend": "nccl"}, "distributed_backend"),
        ({"entry_script": "train.py", "max_run_duration_seconds": -1}, "max_run_duration_seconds"),
        ({"entry_script": "train.py", "environment_variables": {"A": 1}}, "environment_variables['A']"),
        ({"entry_script": "train.py", "pip_packages": "numpy"}, "pip_packages"),
        ({"entry_script": "train.py", "user_managed": True, "pip_packages": ["x"]}, "user_managed"),
        ({"entry_script": "train.py", "compute_target": 3}, "compute_target"),
    ],
)
def test_estimator_validation_names_the_field(srcdir, kwargs, field):
    with pytest.raises(SpecError) as info:
        PyTorch(source_directory=str(srcdir), **kwargs)
    assert info.value.field == field
    assert field.split(".")[0] in str(info.value)


def test_missing_source_directory(tmp_path):
    with pytest.raises(SpecError) as info:
        PyTorch(source_directory=str(tmp_path / "nope"), entry_script="train.py")
    assert info.value.field == "source_directory"


def test_more_than_one_process_needs_a_backend_message(srcdir):
    with pytest.raises(SpecError, match="'distributed_backend' must be specified when node_count > 1"):
        PyTorch(str(srcdir), entry_script="train.py", process_count_per_node=2)


@pytest.mark.parametrize(
    ("dist", "backend", "comm", "ppn"),
    [(Mpi(process_count_per_node=2), "mpi", None, 2), (Gloo(), "pytorch", "gloo", 1), (Nccl(), "pytorch", "nccl", 1)],
)
def test_distributed_training_objects(srcdir, dist, backend, comm, ppn):
    est = PyTorch(str(srcdir), entry_script="train.py", distributed_training=dist, use_gpu=comm == "nccl")
    assert est.spec.distribution.backend == backend
    assert est.spec.distribution.communication_backend == comm
    assert est.spec.distribution.process_count_per_node == ppn


def test_script_run_config_matches_estimator(srcdir):
    src = ScriptRunConfig(
        source_directory=str(srcdir),
        script="train.py",
        arguments=["--epochs", 5],
        distributed_job_config=PyTorchConfiguration(communication_backend="Gloo", process_count=4, node_count=2),
    )
    est = PyTorch(
        str(srcdir), entry_script="train.py", script_params={"--epochs": 5}, node_count=2,
        process_count_per_node=2, distributed_backend="gloo",
    )
    assert src.spec == est.spec


def test_script_run_config_mpi_and_environment(srcdir):
    env = Environment("e", pip=["requests"])
    cfg = ScriptRunConfig(str(srcdir), script="pkg/main.py", environment=env,
                          distributed_job_config=MpiConfiguration(process_count_per_node=2, node_count=1))
    assert cfg.spec.environment.pip_packages == ("requests",)
    assert cfg.spec.distribution.backend == "mpi"


def test_pytorch_configuration_validates_counts():
    with pytest.raises(SpecError) as info:
        PyTorchConfiguration(process_count=3, node_count=2)
    assert info.value.field == "process_count"
    with pytest.raises(SpecError):
        PyTorchConfiguration(communication_backend="carrier")


def test_command_or_script_not_both(srcdir):
    with pytest.raises(SpecError) as info:
        ScriptRunConfig(str(srcdir), script="train.py", command="python train.py")
    assert info.value.field == "command"


def test_spec_is_immutable(srcdir):
    spec = PyTorch(str(srcdir), entry_script="train.py").spec
    with pytest.raises(AttributeError):
        spec.entry_script = "other.py"  # type: ignore[misc]
