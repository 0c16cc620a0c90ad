"""MLflow inside torchyard runs and into a workspace from outside, with the real ``mlflow`` package.

Inside a run the env contract points MLflow at torchyard's tracking-store plugin: metrics (with their
steps and times) go through the rank's journal like ``run.log``, params become properties, tags tags,
artifacts ``outputs/``; nothing is written to the working directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.conftest import write_script

from torchyard import Experiment, PyTorch, ScriptRunConfig

pytest.importorskip("mlflow")

MLFLOW_SCRIPT = """
import json, os, time
import mlflow

rank = int(os.environ["RANK"])
before = time.time()
with mlflow.start_run() as active:
    mlflow.log_param("lr", 0.1)
    mlflow.log_params({"batch": 32, "opt": "sgd"})
    mlflow.set_tag("phase", "train")
    mlflow.set_tags({"rank_tag": f"r{rank}"})
    for step in range(5):
        mlflow.log_metric("loss", 1.0 / (step + 1) + rank, step=step * 10)
    mlflow.log_metrics({"acc": 0.5 + rank, "f1": 0.25}, step=3)
    with open("note.txt", "w") as fh:
        fh.write(f"from rank {rank}")
    if rank == 0:
        mlflow.log_artifact("note.txt")
        mlflow.log_artifact("note.txt", artifact_path="reports")
        os.makedirs("many", exist_ok=True)
        for name in ("a.txt", "b.txt"):
            with open(os.path.join("many", name), "w") as fh:
                fh.write(name)
        mlflow.log_artifacts("many", artifact_path="many")
        mlflow.log_text("hello", "texts/hello.txt")
        mlflow.log_dict({"a": 1}, "texts/d.json")
    seen = mlflow.get_run(active.info.run_id)
    history = mlflow.MlflowClient().get_metric_history(active.info.run_id, "loss")
# a second run started after the first ended is the same torchyard run
with mlflow.start_run() as again:
    mlflow.log_metric("after", 1.0)
with open(f"outputs/mlflow_{rank}.json", "w") as fh:
    json.dump({"run_id": active.info.run_id, "again": again.info.run_id, "before": before,
               "uri": mlflow.get_tracking_uri(), "artifact_uri": active.info.artifact_uri,
               "params": seen.data.params, "metrics": seen.data.metrics,
               "history_steps": [m.step for m in history]}, fh)
"""


@pytest.fixture
def mlsrc(tmp_path: Path) -> Path:
    folder = tmp_path / "mlsrc"
    write_script(folder, "ml.py", MLFLOW_SCRIPT)
    return folder


def _leftovers(folder: str) -> list[str]:
    return [n for n in os.listdir(folder) if n in ("mlruns", "mlflow.db", "mlartifacts")]


def test_mlflow_inside_a_2_rank_run_lands_in_the_run(ws, mlsrc, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = Experiment(ws, "mlf").submit(PyTorch(str(mlsrc), entry_script="ml.py", process_count_per_node=2,
                                               distributed_backend="pytorch"))
    assert run.wait_for_completion(timeout=180)["status"] == "Completed"
    seen = {r: json.loads(Path(run.workdir, "outputs", f"mlflow_{r}.json").read_text()) for r in (0, 1)}
    for rank, got in seen.items():
        assert got["run_id"] == got["again"] == run.id
        assert got["uri"] == "torchyard://" + ws.path
        assert got["artifact_uri"] == Path(run.workdir, "outputs").as_uri()
        assert got["params"] == {"lr": "0.1", "batch": "32", "opt": "sgd"}
        assert got["metrics"]["loss"] == 0.2 + rank
        assert got["history_steps"] == [0, 10, 20, 30, 40]
    metrics = run.get_metrics()
    assert metrics["loss"] == [1.0, 0.5, 1 / 3, 0.25, 0.2]
    assert metrics["acc"] == 0.5 and metrics["f1"] == 0.25 and metrics["after"] == 1.0
    assert run.get_metrics(rank=1)["loss"] == [2.0, 1.5, 1 + 1 / 3, 1.25, 1.2]
    # steps and MLflow's own times, through the journal
    values, steps, times = ws.store.get_series(run.id, rank=0, name="loss")[(0, "loss")]
    assert steps == [0, 10, 20, 30, 40]
    assert seen[0]["before"] - 1 <= times[0] <= times[-1] <= seen[0]["before"] + 60
    props = run.get_properties()
    assert {k: props[k] for k in ("lr", "batch", "opt")} == {"lr": "0.1", "batch": "32", "opt": "sgd"}
    tags = run.get_tags()
    assert tags["phase"] == "train"
    assert tags["rank_tag"] in ("r0", "r1")  # every rank may tag; the last one written wins
    assert not [t for t in tags if t.startswith("mlflow.")]
    names = run.get_file_names()
    assert {"outputs/note.txt", "outputs/reports/note.txt", "outputs/many/a.txt", "outputs/many/b.txt",
            "outputs/texts/hello.txt", "outputs/texts/d.json"} <= set(names)
    assert Path(run.download_file("outputs/reports/note.txt", str(tmp_path / "n.txt"))).read_text() == "from rank 0"
    # nothing in the run's working directory or here
    assert _leftovers(run.workdir) == []
    assert _leftovers(str(tmp_path)) == []


def test_a_user_set_tracking_uri_is_respected(ws, mlsrc, tmp_path):
    own = tmp_path / "own-mlruns"
    write_script(mlsrc, "own.py", """
        import json, os
        import mlflow
        with mlflow.start_run() as r:
            mlflow.log_metric("x", 3.0)
        with open("outputs/env.json", "w") as fh:
            json.dump({k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID")}, fh)
    """)
    uri = own.as_uri()
    run = Experiment(ws, "mlf").submit(ScriptRunConfig(str(mlsrc), script="own.py",
                                                       environment_variables={"MLFLOW_TRACKING_URI": uri,
                                                                              "MLFLOW_ALLOW_FILE_STORE": "true"}))
    assert run.wait_for_completion(timeout=120)["status"] == "Completed"
    env = json.loads(Path(run.workdir, "outputs", "env.json").read_text())
    assert env == {"MLFLOW_TRACKING_URI": uri, "MLFLOW_RUN_ID": None}
    assert "x" not in run.get_metrics()
    assert list(own.glob("*/*/metrics/x")), "MLflow's own file store got the metric"


OUTSIDE = """
import os, sys
import mlflow
mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment("outside")
with mlflow.start_run(run_name="first", tags={"team": "a"}) as r:
    mlflow.log_param("epochs", 3)
    for step in range(4):
        mlflow.log_metric("loss", 4.0 - step, step=step)
    mlflow.set_tag("stage", "done")
    with open("model.txt", "w") as fh:
        fh.write("weights")
    mlflow.log_artifact("model.txt", artifact_path="model")
    print("RUN", r.info.run_id, flush=True)
client = mlflow.MlflowClient()
found = client.search_runs([r.info.experiment_id], filter_string="params.epochs = '3'")
print("FOUND", [x.info.run_id for x in found], flush=True)
if len(sys.argv) > 2:
    with mlflow.start_run() as bad:
        print("RUN", bad.info.run_id, flush=True)
        if sys.argv[2] == "raise":
            raise RuntimeError("boom")
        os._exit(3)  # dies without ending the run
"""


def _outside(tmp_path: Path, uri: str, *extra: str) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    script = write_script(tmp_path / "client", "outside.py", OUTSIDE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TORCHYARD_"))}
    proc = subprocess.run([sys.executable, str(script), uri, *extra], cwd=script.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    ids = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RUN ")]
    return ids, proc


def test_an_mlflow_script_outside_logs_into_a_workspace_as_new_runs(ws, tmp_path):
    ids, proc = _outside(tmp_path, "torchyard://" + ws.path, "raise")
    assert proc.returncode == 1 and "boom" in proc.stderr, proc.stderr
    first, failed = ids
    assert f"FOUND ['{first}']" in proc.stdout
    run = ws.get_run(first)
    assert run.get_status() == "Completed"
    assert run.experiment.name == "outside" or run.get_details()["experiment"] == "outside"
    assert run.get_metrics()["loss"] == [4.0, 3.0, 2.0, 1.0]
    assert ws.store.get_series(first, rank=0, name="loss")[(0, "loss")][1] == [0, 1, 2, 3]
    assert run.get_properties()["epochs"] == "3"
    assert run.get_tags() == {"team": "a", "stage": "done"}
    assert run.get_file_names() == ["outputs/model/model.txt"]
    assert run.get_details()["target"] == "mlflow"
    assert ws.get_run(failed).get_status() == "Failed"
    assert _leftovers(str(tmp_path / "client")) == []


def test_an_mlflow_process_that_dies_mid_run_leaves_a_failed_run(ws, tmp_path):
    ids, proc = _outside(tmp_path, "torchyard://" + ws.path, "die")
    assert proc.returncode == 3, proc.stderr
    dead = ws.get_run(ids[-1])
    assert dead.get_status() == "Failed"
    assert "is gone" in dead.get_details()["error"]["message"]


def test_mlflow_autologging_inside_a_run_lands_in_the_run(ws, tmp_path):
    pytest.importorskip("pandas")  # MLflow's autologging needs it (mlflow-skinny does not bring it)
    pytest.importorskip("sklearn")
    folder = tmp_path / "auto"
    write_script(folder, "auto.py", """
        import mlflow, mlflow.sklearn
        from sklearn.datasets import load_digits
        from sklearn.linear_model import LogisticRegression
        mlflow.sklearn.autolog(log_models=False, log_datasets=False)
        X, y = load_digits(return_X_y=True)
        LogisticRegression(max_iter=30, C=0.5).fit(X, y)
    """)
    run = Experiment(ws, "mlf").submit(ScriptRunConfig(str(folder), script="auto.py"))
    assert run.wait_for_completion(timeout=120)["status"] == "Completed"
    assert run.get_properties()["C"] == "0.5" and run.get_properties()["max_iter"] == "30"
    assert 0.5 < run.get_metrics()["training_accuracy_score"] <= 1.0
    assert run.get_tags()["estimator_name"] == "LogisticRegression"
    assert _leftovers(run.workdir) == []


def test_a_run_in_its_own_environment_gets_mlflow_wired_only_if_it_can_import_it(ws, tmp_path):
    """The ranks run a layered venv's interpreter, not this one: the contract asks that interpreter's
    site-packages (and its base's), not the launcher's."""
    folder = tmp_path / "venvsrc"
    write_script(folder, "v.py", """
        import importlib.util, json, os, sys
        assert sys.prefix != sys.base_prefix, "not in the run's own environment"
        with open("outputs/v.json", "w") as fh:
            json.dump({"importable": importlib.util.find_spec("mlflow") is not None,
                       "uri": os.environ.get("MLFLOW_TRACKING_URI")}, fh)
    """)
    run = Experiment(ws, "mlf").submit(PyTorch(str(folder), entry_script="v.py", pip_packages=["six"]))
    assert run.wait_for_completion(timeout=180)["status"] == "Completed"
    assert run.get_environment()["key"] is not None
    seen = json.loads(Path(run.workdir, "outputs", "v.json").read_text())
    assert (seen["uri"] == "torchyard://" + ws.path) is seen["importable"], seen
