"""A compute target that lives only in tests/ (tests/toytarget, pip-installed by scripts/test.sh and
registered by entry point; no line of src/ names it) runs a 2-node job: the interface is enough.

Its nodes are launchers in folders of their own, so everything comes back through the framework's
mirror channel: logs, metric journals, node reports, outputs."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from tests.conftest import run_processes, wait_until, write_script

from torchyard import ComputeTarget, Experiment, PyTorch
from torchyard.compute.registry import kinds, target_class

pytestmark = pytest.mark.skipif(importlib.util.find_spec("toytarget") is None,
                                reason="tests/toytarget is not installed (scripts/test.sh installs it)")

SCRIPT = """
import os, sys
import torch, torch.distributed as dist
from torchyard import Run
run = Run.get_context()
dist.init_process_group("gloo")
x = torch.tensor([float(dist.get_rank() + 1)])
dist.all_reduce(x)
run.log("sum", x.item())
print("rank", dist.get_rank(), "of", dist.get_world_size(), "in", os.getcwd(), flush=True)
os.makedirs("outputs", exist_ok=True)
open(f"outputs/from_rank_{dist.get_rank()}.txt", "w").write("hi")
if len(sys.argv) > 1 and dist.get_rank() == int(sys.argv[1]):
    raise SystemExit(3)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.fixture
def toy_ws(ws, tmp_path):
    ComputeTarget.attach(ws, "toybox", target_class("toy")(root=str(tmp_path / "nodes")))
    yield ws


def test_the_toy_kind_comes_from_an_entry_point():
    assert "toy" in kinds()
    assert target_class("toy").__module__ == "toytarget"


def test_a_two_node_job_on_a_target_defined_only_in_tests(toy_ws, tmp_path):
    write_script(tmp_path / "src", "ddp.py", SCRIPT)
    est = PyTorch(str(tmp_path / "src"), entry_script="ddp.py", compute_target="toybox", node_count=2,
                  distributed_backend="pytorch")
    run = Experiment(toy_ws, "toy").submit(est)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    assert run.get_metrics(rank="all") == {0: {"sum": 3.0}, 1: {"sum": 3.0}}
    node_dirs = details["compute"]["toy"]["node_folders"]
    logs = {r: Path(run.workdir, "logs", f"rank_{r}.txt").read_text() for r in (0, 1)}
    for rank, text in logs.items():  # each rank ran in its own node's folder, and its log came back
        assert f"rank {rank} of 2 in {node_dirs[rank]}" in text
    names = run.get_file_names()
    assert "outputs/from_rank_0.txt" in names and "logs/rank_1.txt" in names
    wait_until(lambda: not any(os.path.exists(d) for d in node_dirs), timeout=10)  # released after the end
    wait_until(lambda: not run_processes(run.workdir), timeout=10)


def test_a_run_whose_results_did_not_all_come_back_says_so(toy_ws, tmp_path, monkeypatch):
    """Node 1's return channel breaks after its first bytes: the run is not a silent success."""
    write_script(tmp_path / "src", "ddp.py", SCRIPT.replace("run.log(\"sum\", x.item())",
                                                            "run.log(\"sum\", x.item())\nimport time\n"
                                                            "for i in range(20):\n    run.log('n', i)\n    time.sleep(0.1)"))
    monkeypatch.setenv("TOYTARGET_BREAK_RETURN", "1")
    est = PyTorch(str(tmp_path / "src"), entry_script="ddp.py", compute_target="toybox", node_count=2,
                  distributed_backend="pytorch")
    run = Experiment(toy_ws, "toy").submit(est)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    warnings = details.get("warnings") or []
    assert warnings == ["node 1's launcher report did not come back: its ranks' logs, metrics and outputs may be "
                        "incomplete (the target's return channel broke)"], warnings
    assert len(run.get_metrics(rank=0)["n"]) == 20  # node 0's came back whole
    from torchyard.runtime.summary import execution_summary

    assert "Warning: node 1's launcher report" in execution_summary(toy_ws.store, toy_ws.store.get_run(run.id))
    monkeypatch.delenv("TOYTARGET_BREAK_RETURN")
    healthy = Experiment(toy_ws, "toy").submit(est)
    assert "warnings" not in healthy.wait_for_completion(timeout=120, raise_on_error=False)


def test_a_rank_failing_on_the_second_node_is_named(toy_ws, tmp_path):
    write_script(tmp_path / "src", "ddp.py", SCRIPT)
    est = PyTorch(str(tmp_path / "src"), entry_script="ddp.py", compute_target="toybox", node_count=2,
                  distributed_backend="pytorch", script_params={"1": ""})
    run = Experiment(toy_ws, "toy").submit(est)
    details = run.wait_for_completion(timeout=120, raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["rank"] == 1 and details["error"]["node_rank"] == 1


def test_the_dry_run_shows_the_toy_request(toy_ws, tmp_path):
    from torchyard.runtime.submit import plan

    write_script(tmp_path / "src", "ddp.py", SCRIPT)
    spec = PyTorch(str(tmp_path / "src"), entry_script="ddp.py", compute_target="toybox", node_count=2,
                   distributed_backend="pytorch").to_job_spec()
    text = plan(toy_ws, "toy", spec).describe()
    assert "toy nodes" in text and "node 1:" in text and "ddp.py" in text


def test_environment_and_inputs_are_placed_on_each_node_not_on_the_submitter(toy_ws, tmp_path, monkeypatch):
    """The toy target's nodes do not share the run folder: the node bootstrap builds the job's
    environment in the node cache and places its inputs there; the submitter builds nothing."""
    from torchyard import Datastore

    monkeypatch.setenv("TORCHYARD_NODE_CACHE", str(tmp_path / "nodecache"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "numbers.txt").write_text("1 2 3\n")
    store = Datastore.register_local(toy_ws, "shared", str(data))
    write_script(tmp_path / "src", "use.py", """
        import os, sys
        import tomli_w, torch
        from torchyard import Run
        text = open(os.path.join(sys.argv[sys.argv.index("--data") + 1], "numbers.txt")).read()
        run = Run.get_context()
        run.log("total", sum(int(x) for x in text.split()))
        run.log("in_node_cache", int(sys.executable.startswith(os.environ["TORCHYARD_NODE_CACHE"])))
        run.log("env_var_matches", int(os.environ["TORCHYARD_INPUT_DATA"] == sys.argv[sys.argv.index("--data") + 1]))
    """)
    est = PyTorch(str(tmp_path / "src"), entry_script="use.py", compute_target="toybox", node_count=2,
                  distributed_backend="pytorch", pip_packages=["tomli-w==1.2.0"],
                  script_params={"--data": store.path("").as_download()})
    run = Experiment(toy_ws, "toy").submit(est)
    details = run.wait_for_completion(timeout=240, raise_on_error=False)
    assert details["status"] == "Completed", details.get("error")
    every = run.get_metrics(rank="all")
    assert every[0] == every[1] == {"total": 6.0, "in_node_cache": 1.0, "env_var_matches": 1.0}
    assert not (Path(toy_ws.path) / "envs").exists()  # nothing was built on the submitting machine
    assert details["environment"]["placed_on"] == "nodes"
    assert "logs/bootstrap_node_1.txt" in run.get_file_names()


def test_a_package_that_cannot_be_installed_fails_the_run_naming_the_node(toy_ws, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHYARD_NODE_CACHE", str(tmp_path / "nodecache"))
    write_script(tmp_path / "src", "use.py", "print('never')\n")
    est = PyTorch(str(tmp_path / "src"), entry_script="use.py", compute_target="toybox",
                  pip_packages=["torchyard-no-such-package-xyz==9.9"])
    run = Experiment(toy_ws, "toy").submit(est)
    details = run.wait_for_completion(timeout=240, raise_on_error=False)
    assert details["status"] == "Failed"
    assert details["error"]["stage"] == "Preparing"
    assert details["error"]["message"].startswith("node 0 could not be prepared")
