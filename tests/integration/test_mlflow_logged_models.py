"""MLflow 3's logged models with the real ``mlflow`` package and ``mlflow.pytorch``: ``log_model`` in a
torchyard run and through ``torchyard://``, ``models:/<model_id>`` and ``runs:/<run_id>/<name>``
URIs, and ``mlflow.register_model`` / ``run.register_model`` into torchyard's model registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import write_script

from torchyard import Experiment, Model, ScriptRunConfig

pytest.importorskip("mlflow")
pytest.importorskip("torch")

MODEL_FILES = {"MLmodel", "input_example.json", "requirements.txt"}

IN_RUN = """
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
    again = mlflow.pytorch.log_model(model, name="m", input_example=x, params={"k": "v"}, model_type="linear")
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
OUTSIDE = """
import json, sys
import numpy as np, torch
import mlflow, mlflow.pytorch

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
    loose = mlflow.pytorch.log_model(model, name="loose", input_example=x)  # no run at all
    out["loose_id"], out["loose_run"] = loose.model_id, loose.run_id
    out["loose"] = predict(f"models:/{loose.model_id}")
    out["loose_location"] = mlflow.get_logged_model(loose.model_id).artifact_location
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


def _outside(tmp_path: Path, ws: Any, **todo: Any) -> dict[str, Any]:
    script = write_script(tmp_path / "client", "outside.py", OUTSIDE)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TORCHYARD_"))}
    proc = subprocess.run([sys.executable, str(script), "torchyard://" + ws.path, json.dumps(todo)],
                          cwd=script.parent, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("JSON "))
    return json.loads(line[len("JSON "):])


def _close(a: list[list[float]], b: list[list[float]]) -> bool:
    return all(abs(p - q) < 1e-5 for ra, rb in zip(a, b, strict=True) for p, q in zip(ra, rb, strict=True))


def test_log_model_in_a_run_lands_in_its_artifacts_and_loads_through_the_workspace(ws, tmp_path):
    folder = tmp_path / "lm"
    write_script(folder, "lm.py", IN_RUN)
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
    out = _outside(tmp_path, ws, load_ids=[model_id, again], load_runs=[run.id],
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
    got = native.download(str(tmp_path / "dl"))
    assert {str(p.relative_to(got)) for p in Path(got).rglob("*") if p.is_file()} >= MODEL_FILES


def test_log_model_through_the_workspace_uri_with_and_without_a_run(ws, tmp_path):
    out = _outside(tmp_path, ws, log=True, search=["outside"])
    run_id, model_id = out["run_id"], out["model_id"]
    run = ws.get_run(run_id)
    assert run.get_status() == "Completed"
    assert {f"outputs/m/{f}" for f in MODEL_FILES} <= set(run.get_file_names())
    assert _close(out["by_id"][model_id], out["want"]) and _close(out["by_run"][run_id], out["want"])
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
    again = _outside(tmp_path, ws, register=[[f"models:/{out['loose_id']}", "loose"],
                                             [f"runs:/{run_id}/m", "lin-outside"]])
    assert again["registered"] == [["loose", "1", None, out["loose_id"]], ["lin-outside", "2", run_id, model_id]]
    assert Model(ws, "loose", version=1).run_id is None
    assert run.register_model("lin-native", "outputs/m").sha256 == version.sha256
