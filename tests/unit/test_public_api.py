import subprocess
import sys

import torchyard

EXPECTED = {
    "ComputeError", "DataReference", "Datastore", "Environment", "Experiment", "Gloo", "JobSpec", "Mpi", "MpiConfiguration", "Nccl",
    "NotFoundError", "NotSupportedError", "PyTorch", "PyTorchConfiguration", "Run", "RunFailedError",
    "RunStatus", "ScriptRunConfig", "SpecError", "TorchyardError", "Workspace", "WorkspaceError", "__version__",
    # compute targets
    "ComputeTarget", "RayCompute", "SlurmCompute", "KubernetesCompute",
    # sweeps (torchyard.hyperdrive)
    "BanditPolicy", "BayesianParameterSampling", "GridParameterSampling", "HyperDriveConfig", "HyperDriveRun",
    "MedianStoppingPolicy", "NoTerminationPolicy", "PrimaryMetricGoal", "RandomParameterSampling",
    "TruncationSelectionPolicy", "choice", "loguniform", "lognormal", "normal", "qloguniform", "qlognormal",
    "qnormal", "quniform", "randint", "uniform",
    # model registry and deployment (torchyard.models)
    "Endpoint", "InferenceConfig", "LocalWebservice", "Model", "Webservice",
    # Azure ML v1's names (torchyard.azure; the whole azureml tree is torchyard.azureml)
    "AciWebservice", "AksWebservice", "AmlCompute", "ComputeTargetException", "CondaDependencies",
}


def test_export_list_is_curated():
    assert set(torchyard.__all__) == EXPECTED
    for name in torchyard.__all__:
        assert getattr(torchyard, name) is not None


def test_the_type_checking_imports_are_the_lazy_table() -> None:
    """The public names appear in three places, each needed: the TYPE_CHECKING imports (type
    checkers), ``_LAZY`` (loading on first use) and a static ``__all__`` (ruff and type checkers read
    re-exports from it); they must say the same."""
    import ast
    from pathlib import Path

    tree = ast.parse(Path(torchyard.__file__).read_text())
    block = next(n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    imported = {alias.name: node.module for node in block.body if isinstance(node, ast.ImportFrom)
                for alias in node.names}
    assert imported == torchyard._LAZY
    assert set(torchyard.__all__) == {*torchyard._LAZY, "__version__"}


def test_unknown_attribute():
    try:
        torchyard.Nope  # noqa: B018
    except AttributeError as err:
        assert "Nope" in str(err)
    else:
        raise AssertionError("expected AttributeError")


def test_error_tree():
    from torchyard import errors

    for name in ("SpecError", "NotSupportedError", "WorkspaceError", "NotFoundError", "ComputeError", "RunFailedError"):
        assert issubclass(getattr(errors, name), errors.TorchyardError)
    assert issubclass(errors.NotSupportedError, errors.SpecError)
    err = errors.SpecError("node_count", "must be at least 1")
    assert err.field == "node_count"
    assert str(err) == "node_count: must be at least 1"


def test_status_terminal():
    from torchyard import RunStatus

    assert {s for s in RunStatus if s.is_terminal} == {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED}


def _imported_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True,
    ).stdout
    return set(out.split())


def test_sdk_and_cli_import_nothing_heavy():
    heavy = {"torch", "ray", "sqlalchemy", "alembic", "rich", "numpy"}
    assert not heavy & _imported_after("import torchyard.cli.main")
    assert not {"torch", "ray", "numpy"} & _imported_after(
        "from torchyard import Workspace, Experiment, PyTorch, ScriptRunConfig, Run"
    )
    # what a training script pays for Run.get_context()
    assert not {"torch", "sqlalchemy", "alembic", "psutil"} & _imported_after(
        "from torchyard import Run; Run.get_context()"
    )
