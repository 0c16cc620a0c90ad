"""MLflow inside torchyard runs and into a workspace from outside, with the real ``mlflow`` package.

Inside a run the env contract points MLflow at torchyard's tracking-store plugin: metrics (with their
steps and times) go through the rank's journal like ``run.log``, params become properties, tags tags,
artifacts ``outputs/``; nothing is written to the working directory. MLflow 3's logged models
(``mlflow.pytorch.log_model``) land in the run's artifacts and load back through ``models:/<model_id>``
and ``runs:/`` URIs; ``mlflow.register_model`` and ``run.register_model`` register them in
torchyard's registry.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import write_script

from torchyard import Experiment, Model, PyTorch, ScriptRunConfig

pytest.importorskip("mlflow")

# mlflow.pytorch's logged models (below) run torch in their scripts only
needs_torch = pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")

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
    if rank == 0:  # the ranks share the run folder as their working directory: one writer
        with open("note.txt", "w") as fh:
            fh.write(f"from rank {rank}")
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


# ---- MLflow 3's logged models: log_model in a run and through torchyard://, models:/ and runs:/ URIs,
# mlflow.register_model and run.register_model into torchyard's registry (with the real mlflow.pytorch)

MODEL_FILES = {"MLmodel", "input_example.json", "requirements.txt"}

LM_IN_RUN = """
import json, os
import numpy as np, torch
import mlflow, mlflow.pytorch

torch.manual_seed(0)
model = torch.nn.Linear(3, 2)
x = np.arange(12, dtype=np.float32).reshape(4, 3)
with mlflow.start_run() as run:
    mlflow.log_param("lr", 0.1)
    mlflow.log_metric("loss", 0.5, step=0)
    info = mlflow.pytorch.log_model(model, name="m", input_example=x, registered_model_name="lin-in-run")
    again = mlflow.pytorch.log_model(model, name="m", input_example=x, params={"k": "v"}, model_type="linear",
                                     pip_requirements=["torch"])  # no requirements inference (seconds)
    client = mlflow.MlflowClient()
    client.set_logged_model_tags(info.model_id, {"team": "a"})
    found = mlflow.search_logged_models(filter_string="name = 'm'", output_format="list")
    by_id = mlflow.pytorch.load_model(f"models:/{info.model_id}")
    by_run = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/m")
    by_name = mlflow.pytorch.load_model("models:/lin-in-run/1")
    want = model(torch.from_numpy(x)).tolist()
    got = {k: m(torch.from_numpy(x)).tolist() == want for k, m in
           (("id", by_id), ("run", by_run), ("name", by_name))}
    outputs = [(o.model_id, o.step) for o in mlflow.get_run(run.info.run_id).outputs.model_outputs]
with open("outputs/ml.json", "w") as fh:
    json.dump({"model_id": info.model_id, "again": again.model_id, "run_id": run.info.run_id,
               "found": sorted(m.model_id for m in found), "same": got, "outputs": outputs,
               "want": want, "version": info.registered_model_version,
               "metrics": mlflow.get_run(run.info.run_id).data.metrics}, fh)
"""

# through torchyard:// (no torchyard run around it): argv = URI, JSON instructions; prints JSON
LM_OUTSIDE = """
import json, sys
import numpy as np, torch
import mlflow, mlflow.pyfunc, mlflow.pytorch

uri, todo = sys.argv[1], json.loads(sys.argv[2])
mlflow.set_tracking_uri(uri)
mlflow.set_registry_uri(uri)
x = np.arange(12, dtype=np.float32).reshape(4, 3)
out = {}

def predict(model_uri):
    return mlflow.pytorch.load_model(model_uri)(torch.from_numpy(x)).tolist()

if todo.get("log"):
    torch.manual_seed(1)
    model = torch.nn.Linear(3, 2)
    out["want"] = model(torch.from_numpy(x)).tolist()
    mlflow.set_experiment("outside")
    with mlflow.start_run() as run:
        mlflow.log_metric("loss", 0.25)
        info = mlflow.pytorch.log_model(model, name="m", input_example=x, registered_model_name="lin-outside")
    out["run_id"], out["model_id"], out["version"] = run.info.run_id, info.model_id, info.registered_model_version
    loose = mlflow.pytorch.log_model(model, name="loose", input_example=x, pip_requirements=["torch"])  # no run
    out["loose_id"], out["loose_run"] = loose.model_id, loose.run_id
    out["loose"] = predict(f"models:/{loose.model_id}")
    out["loose_location"] = mlflow.get_logged_model(loose.model_id).artifact_location
    out["pyfunc"] = mlflow.pyfunc.load_model(info.model_uri).predict(x).tolist()
for model_id in todo.get("load_ids", []) + ([out["model_id"]] if "model_id" in out else []):
    out.setdefault("by_id", {})[model_id] = predict(f"models:/{model_id}")
    lm = mlflow.get_logged_model(model_id)
    out.setdefault("logged", {})[model_id] = {"status": str(lm.status), "run": lm.source_run_id, "name": lm.name,
                                              "location": lm.artifact_location, "tags": lm.tags,
                                              "metrics": {m.key: m.value for m in lm.metrics}}
for run_id in todo.get("load_runs", []) + ([out["run_id"]] if "run_id" in out else []):
    out.setdefault("by_run", {})[run_id] = predict(f"runs:/{run_id}/m")
for model_uri, name in todo.get("register", []):
    mv = mlflow.register_model(model_uri, name)
    out.setdefault("registered", []).append([mv.name, mv.version, mv.run_id, mv.model_id])
    out.setdefault("by_name", []).append(predict(f"models:/{name}/{mv.version}"))
if todo.get("search"):
    client = mlflow.MlflowClient()
    out["search"] = sorted(m.model_id for m in client.search_logged_models(todo["search"]))
print("JSON", json.dumps(out), flush=True)
"""


def _lm_outside(tmp_path: Path, ws: Any, **todo: Any) -> dict[str, Any]:
    script = write_script(tmp_path / "lm_client", "lm_outside.py", LM_OUTSIDE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TORCHYARD_"))}
    proc = subprocess.run([sys.executable, str(script), "torchyard://" + ws.path, json.dumps(todo)],
                          cwd=script.parent, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("JSON "))
    return json.loads(line[len("JSON "):])


def _close(a: list[list[float]], b: list[list[float]]) -> bool:
    return all(abs(p - q) < 1e-5 for ra, rb in zip(a, b, strict=True) for p, q in zip(ra, rb, strict=True))


@needs_torch
def test_log_model_in_a_run_lands_in_its_artifacts_and_loads_through_the_workspace(ws, tmp_path):
    folder = tmp_path / "lm"
    write_script(folder, "lm.py", LM_IN_RUN)
    run = Experiment(ws, "mlm").submit(ScriptRunConfig(str(folder), script="lm.py"))
    details = run.wait_for_completion(timeout=240, raise_on_error=False)
    assert details["status"] == "Completed", Path(run.workdir, "logs", "rank_0.txt").read_text()[-3000:]
    seen = json.loads(Path(run.workdir, "outputs", "ml.json").read_text())
    model_id, again = seen["model_id"], seen["again"]
    assert seen["run_id"] == run.id
    assert seen["same"] == {"id": True, "run": True, "name": True}
    assert seen["found"] == sorted([model_id, again])
    assert sorted(seen["outputs"]) == sorted([[model_id, 0], [again, 0]])
    assert seen["version"] == "1"
    # the model folder is a run artifact (the second model of the same name beside it)
    names = set(run.get_file_names())
    assert {f"outputs/m/{f}" for f in MODEL_FILES} <= names
    assert f"outputs/m-{again}/MLmodel" in names
    # MLflow's re-logging of the run's metrics at the model's step is not doubled in the run
    assert run.get_metrics()["loss"] == 0.5
    # through torchyard:// after the run: models:/<id>, runs:/<run>/m, register both ways
    out = _lm_outside(tmp_path, ws, load_ids=[model_id, again], load_runs=[run.id],
                   register=[[f"models:/{model_id}", "lin"], [f"runs:/{run.id}/m", "lin"]], search=["mlm"])
    assert _close(out["by_id"][model_id], seen["want"]) and _close(out["by_run"][run.id], seen["want"])
    logged = out["logged"][model_id]
    assert logged["status"] == "READY" and logged["run"] == run.id and logged["name"] == "m"
    assert logged["location"] == Path(ws.artifacts_dir(run.id), "outputs", "m").as_uri()
    assert logged["tags"]["team"] == "a"
    assert json.loads(logged["tags"]["mlflow.modelVersions"]) == [{"name": "lin-in-run", "version": "1"}]
    assert logged["metrics"] == {"loss": 0.5}
    assert out["search"] == sorted([model_id, again])
    assert out["registered"] == [["lin", "1", run.id, model_id], ["lin", "2", run.id, model_id]]
    assert all(_close(p, seen["want"]) for p in out["by_name"])
    # ... into torchyard's registry, with lineage; and torchyard's own run.register_model
    for name, version in (("lin-in-run", 1), ("lin", 1), ("lin", 2)):
        m = Model(ws, name, version=version)
        assert m.run_id == run.id and m.experiment_name == "mlm" and m.model_framework == "MLflow"
        assert m.properties["mlflow.model_id"] == model_id
    assert Model(ws, "lin", version=1).sha256 == Model(ws, "lin-in-run", version=1).sha256
    native = run.register_model("lin-native", "outputs/m")
    assert native.sha256 == Model(ws, "lin", version=1).sha256
    # a later run finds the earlier run's model through the workspace folder (no torch needed)
    write_script(folder, "lookup.py", """
        import json, os, sys
        import mlflow, mlflow.artifacts
        lm = mlflow.get_logged_model(sys.argv[1])
        got = mlflow.artifacts.download_artifacts(f"models:/{sys.argv[1]}")
        with open("outputs/lookup.json", "w") as fh:
            json.dump({"location": lm.artifact_location, "files": sorted(os.listdir(got))}, fh)
    """)
    later = Experiment(ws, "mlm").submit(ScriptRunConfig(str(folder), script="lookup.py", arguments=[model_id]))
    assert later.wait_for_completion(timeout=120, raise_on_error=False)["status"] == "Completed", \
        Path(later.workdir, "logs", "rank_0.txt").read_text()[-3000:]
    looked = json.loads(Path(later.workdir, "outputs", "lookup.json").read_text())
    assert looked["location"] == logged["location"] and "MLmodel" in looked["files"]
    got = native.download(str(tmp_path / "dl"))
    assert {str(p.relative_to(got)) for p in Path(got).rglob("*") if p.is_file()} >= MODEL_FILES


@needs_torch
def test_log_model_through_the_workspace_uri_with_and_without_a_run(ws, tmp_path):
    out = _lm_outside(tmp_path, ws, log=True, search=["outside"])
    run_id, model_id = out["run_id"], out["model_id"]
    run = ws.get_run(run_id)
    assert run.get_status() == "Completed"
    assert {f"outputs/m/{f}" for f in MODEL_FILES} <= set(run.get_file_names())
    assert _close(out["by_id"][model_id], out["want"]) and _close(out["by_run"][run_id], out["want"])
    assert _close(out["pyfunc"], out["want"])  # mlflow.pyfunc, models:/<model_id>
    logged = out["logged"][model_id]
    assert logged["status"] == "READY" and logged["run"] == run_id
    assert logged["location"] == Path(ws.artifacts_dir(run_id), "outputs", "m").as_uri()
    assert logged["metrics"] == {"loss": 0.25}
    assert run.get_metrics()["loss"] == 0.25
    # no run: the model lives in the workspace's own folder
    assert out["loose_run"] is None and _close(out["loose"], out["want"])
    assert out["loose_location"] == Path(ws.path, "mlflow", "models", "loose").as_uri()
    assert sorted(out["search"]) == sorted([model_id, out["loose_id"]])
    # registered while logging (log_model's registered_model_name)
    assert out["version"] == "1"
    version = Model(ws, "lin-outside", version=1)
    assert version.run_id == run_id and version.experiment_name == "outside"
    assert version.properties["mlflow.model_id"] == model_id
    # a later process registers both through MLflow and through torchyard
    again = _lm_outside(tmp_path, ws, register=[[f"models:/{out['loose_id']}", "loose"],
                                             [f"runs:/{run_id}/m", "lin-outside"]])
    assert again["registered"] == [["loose", "1", None, out["loose_id"]], ["lin-outside", "2", run_id, model_id]]
    assert Model(ws, "loose", version=1).run_id is None
    assert run.register_model("lin-native", "outputs/m").sha256 == version.sha256


def test_logged_model_and_registry_calls_through_the_workspace_store(ws, tmp_path):
    """MLflow's client calls on the two stores, in this process (no torch, no model flavor)."""
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModelStatus
    from mlflow.exceptions import MlflowException

    uri = "torchyard://" + ws.path
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp_id = client.create_experiment("calls")
    run = client.create_run(exp_id)
    run_id = run.info.run_id
    a = client.create_logged_model(exp_id, name="a", source_run_id=run_id, params={"k": "v"}, tags={"t": "1"},
                                   model_type="toy")
    b = client.create_logged_model(exp_id, name="a", source_run_id=run_id)  # same name: a folder of its own
    loose = client.create_logged_model(exp_id, name="loose")
    assert a.status == LoggedModelStatus.PENDING and a.source_run_id == run_id
    assert a.artifact_location == Path(ws.artifacts_dir(run_id), "outputs", "a").as_uri()
    assert b.artifact_location == Path(ws.artifacts_dir(run_id), "outputs", f"a-{b.model_id}").as_uri()
    assert loose.source_run_id is None
    client.log_model_artifacts(a.model_id, str(write_script(tmp_path / "ma", "weights.txt", "w").parent))
    assert client.finalize_logged_model(a.model_id, LoggedModelStatus.READY).status == LoggedModelStatus.READY
    client.set_logged_model_tags(a.model_id, {"u": "2"})
    client.delete_logged_model_tag(a.model_id, "t")
    got = client.get_logged_model(a.model_id)
    assert got.tags == {"u": "2"} and got.params == {"k": "v"} and got.model_type == "toy"
    with pytest.raises(MlflowException, match="No tag"):
        client.delete_logged_model_tag(a.model_id, "t")
    assert Path(ws.artifacts_dir(run_id), "outputs", "a", "weights.txt").read_text() == "w"
    assert {m.model_id for m in client.search_logged_models([exp_id])} == {a.model_id, b.model_id, loose.model_id}
    assert [m.model_id for m in client.search_logged_models([exp_id], filter_string="params.k = 'v'")] == [a.model_id]
    assert [m.model_id for m in client.search_logged_models([exp_id], filter_string="status = 'READY'")] == [a.model_id]
    last = client.search_logged_models([exp_id], order_by=[{"field_name": "name", "ascending": False}])
    assert last[0].model_id == loose.model_id
    assert client.search_logged_models(["0"]).to_list() == []
    client.delete_logged_model(b.model_id)
    with pytest.raises(MlflowException, match="not found") as err:
        client.get_logged_model(b.model_id)
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
    with pytest.raises(MlflowException, match="not found"):
        client.get_logged_model("m-nosuchmodel")
    # a metric naming a model is the model's; a point the run already has is not logged twice
    client.log_metric(run_id, "acc", 0.5, step=1, timestamp=1000)
    client.log_metric(run_id, "acc", 0.5, step=1, timestamp=1000, model_id=a.model_id)  # log_model's re-log
    client.log_metric(run_id, "f1", 0.75, step=2, model_id=a.model_id)
    assert [(m.value, m.step) for m in client.get_metric_history(run_id, "acc")] == [(0.5, 1)]
    assert [(m.value, m.step) for m in client.get_metric_history(run_id, "f1")] == [(0.75, 2)]
    assert {(m.key, m.value, m.step) for m in client.get_logged_model(a.model_id).metrics} == {("acc", 0.5, 1),
                                                                                              ("f1", 0.75, 2)}
    client.set_terminated(run_id)
    # the registry: a version from the logged model, aliases, tags, what it refuses
    mv = client.create_model_version("calls", Path(ws.artifacts_dir(run_id), "outputs", "a").as_uri(), run_id=run_id,
                                     tags={"stage": "dev"}, model_id=a.model_id)
    assert (mv.name, mv.version, mv.run_id, mv.model_id, mv.current_stage) == ("calls", "1", run_id, a.model_id, "None")
    client.set_registered_model_alias("calls", "champion", "1")
    assert client.get_model_version_by_alias("calls", "champion").version == "1"
    client.set_model_version_tag("calls", "1", "reviewed", "yes")
    assert client.get_model_version("calls", "1").tags == {"stage": "dev", "reviewed": "yes"}
    with pytest.warns(FutureWarning, match="stages"):  # MLflow's own deprecation of stages
        assert [v.version for v in client.get_latest_versions("calls")] == ["1"]
    assert [v.version for v in client.search_model_versions("name = 'calls'")] == ["1"]
    assert [m.name for m in client.search_registered_models()] == ["calls"]
    where = client.get_model_version_download_uri("calls", "1")
    assert Path(where, "weights.txt").read_text() == "w"
    version = Model(ws, "calls", version=1)
    assert version.aliases == ["champion"] and version.file_name == "a" and version.experiment_name == "calls"
    with pytest.warns(FutureWarning), pytest.raises(MlflowException, match="not supported by torchyard"):
        client.transition_model_version_stage("calls", "1", "Production")
    for call in (lambda: client.update_model_version("calls", "1", description="x"),
                 lambda: client.delete_registered_model("calls"),
                 lambda: client.rename_registered_model("calls", "other")):
        with pytest.raises(MlflowException, match="not supported by torchyard"):
            call()
    with pytest.raises(MlflowException, match="already exists"):
        client.create_registered_model("calls")
    client.delete_model_version("calls", "1")
    with pytest.raises(MlflowException) as err:
        client.get_model_version("calls", "1")
    assert err.value.error_code == "RESOURCE_DOES_NOT_EXIST"
