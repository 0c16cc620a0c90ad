"""Local compute's admission rule (torchyard.compute.local_alloc.admit), table-driven, and its ledger."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from torchyard.compute.local import LocalCompute
from torchyard.compute.local_alloc import Ledger, Request, admit
from torchyard.errors import SpecError


def R(run_id: str, gpus: int = 1, priority: int = 0, user: str = "ann", submitted: float = 0.0) -> Request:
    return Request(run_id, gpus, priority, user, submitted)


# (requests, free GPUs, GPUs each user runs, runs running, max runs) -> who starts, in order
CASES = {
    "eight 1-GPU runs on 4 free GPUs: the 4 oldest": (
        [R(f"r{i}", submitted=i) for i in range(8)], 4, {}, 0, None, ["r0", "r1", "r2", "r3"]),
    "higher priority first, whatever its age": (
        [R("old", submitted=0), R("urgent", priority=5, submitted=9)], 1, {}, 0, None, ["urgent"]),
    "fair share: the user with fewer running GPUs first": (
        [R("a1", user="ann", submitted=0), R("b1", user="bob", submitted=5)], 1, {"ann": 2}, 2, None, ["b1"]),
    "two users' queues alternate": (
        [R("a1", user="ann", submitted=0), R("a2", user="ann", submitted=1), R("a3", user="ann", submitted=2),
         R("b1", user="bob", submitted=3), R("b2", user="bob", submitted=4)], 4, {}, 0, None, ["a1", "b1", "a2", "b2"]),
    "priority beats fair share": (
        [R("a1", user="ann", priority=1, submitted=5), R("b1", user="bob", submitted=0)], 1, {"ann": 3}, 3, None, ["a1"]),
    "no backfill: a small run waits behind a big one that does not fit": (
        [R("big", gpus=4, submitted=0), R("small", gpus=1, submitted=1)], 2, {}, 1, None, []),
    "a run that fits starts before the big one behind it": (
        [R("small", gpus=1, submitted=0), R("big", gpus=4, submitted=1)], 2, {}, 0, None, ["small"]),
    "CPU runs pass a blocked GPU run": (
        [R("big", gpus=4, submitted=0), R("cpu", gpus=0, submitted=1)], 2, {}, 1, None, ["cpu"]),
    "max_concurrent_runs holds everyone": (
        [R("cpu", gpus=0), R("gpu", gpus=1)], 4, {}, 2, 2, []),
    "max_concurrent_runs leaves one slot": (
        [R("a", gpus=0, submitted=0), R("b", gpus=0, submitted=1)], 0, {}, 1, 2, ["a"]),
    "nothing waiting": ([], 4, {}, 0, None, []),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_admission(case: str) -> None:
    requests, free, usage, running, max_runs, want = CASES[case]
    got = admit(requests, free, running_gpus=usage, running_runs=running, max_runs=max_runs)
    assert got.started == want
    assert set(got.waiting) == {r.run_id for r in requests} - set(want)


def test_reasons_name_the_gpus_the_free_ones_and_the_runs_ahead() -> None:
    got = admit([R("a", gpus=4, submitted=0), R("b", gpus=4, submitted=1), R("c", gpus=1, submitted=2),
                 R("d", gpus=2, submitted=3)], 2, running_runs=1)
    assert got.waiting == {
        "a": "waiting for 4 GPUs; 2 free; 0 runs ahead",
        "b": "waiting for 4 GPUs; 2 free; 1 run ahead",
        "c": "waiting for 1 GPU; 2 free; 2 runs ahead",
        "d": "waiting for 2 GPUs; 2 free; 3 runs ahead",
    }
    slots = admit([R("a", gpus=0), R("b", gpus=0, submitted=1)], 0, running_runs=2, max_runs=2)
    assert slots.waiting["b"] == "waiting for a run slot; 2 of max_concurrent_runs=2 running; 1 run ahead"


def test_ledger_hands_out_distinct_devices_and_takes_a_dead_holders_back(tmp_path) -> None:
    ledger = Ledger(str(tmp_path))
    devices = ["0", "1"]
    assert ledger.try_start("box", devices, None, R("r0", submitted=0)) == (["0"], None)
    assert ledger.try_start("box", devices, None, R("r1", submitted=1)) == (["1"], None)
    assert ledger.try_start("box", devices, None, R("r0", submitted=0)) == (["0"], None)  # asked again: the same
    gpus, reason = ledger.try_start("box", devices, None, R("r2", submitted=2))
    assert gpus is None and reason == "waiting for 1 GPU; 0 free; 0 runs ahead"
    ledger.release("r1")
    assert ledger.try_start("box", devices, None, R("r2", submitted=2)) == (["1"], None)
    # a holder whose supervisor died (another process, gone now): its GPU comes back
    code = (f"from torchyard.compute.local_alloc import Ledger, Request\n"
            f"print(Ledger({str(tmp_path)!r}).try_start('other', ['7'], None, Request('dead', 1)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "['7']" in out
    assert set(ledger.snapshot()["holders"]) == {"r0", "r2"}


def test_local_target_options(monkeypatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    box = LocalCompute("box", gpus=4, max_concurrent_runs=2)
    assert box.devices() == ["0", "1", "2", "3"] and box.allocates()
    assert box.to_config() == {"gpus": 4, "max_concurrent_runs": 2}
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6")
    assert LocalCompute("box", gpus=2).devices() == ["3", "5"]
    assert LocalCompute("box").devices() == ["3", "5", "6"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not LocalCompute("box").allocates()  # a GPU-less machine: every run starts at once, as always
    assert not LocalCompute("box", gpus=0).allocates()
    with pytest.raises(SpecError, match="at least 1"):
        LocalCompute("box", max_concurrent_runs=0)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def _holder(gpus, priority=0, preemptible=True, since=0.0, preempting_for=None):
    return {"gpus": [str(g) for g in gpus], "priority": priority, "preemptible": preemptible, "since": since,
            "preempting_for": preempting_for}


@pytest.mark.parametrize(
    ("holders", "need", "free", "priority", "expected"),
    [
        ({"a": _holder([0])}, 1, 1, 5, []),  # it fits already
        ({"a": _holder([0])}, 1, 0, 5, ["a"]),
        ({"a": _holder([0], preemptible=False)}, 1, 0, 5, []),  # not preemptible: never
        ({"a": _holder([0], priority=5)}, 1, 0, 5, []),  # the same priority: never
        ({"a": _holder([0], priority=7)}, 1, 0, 5, []),  # a higher one: never
        ({"a": _holder([0, 1])}, 1, 0, 5, ["a"]),  # one run holds more than needed: it is taken whole
        # lowest priority first, then the newest
        ({"a": _holder([0], priority=1, since=1), "b": _holder([1], priority=0, since=2),
          "c": _holder([2], priority=0, since=3)}, 1, 0, 5, ["c"]),
        ({"a": _holder([0], priority=1, since=1), "b": _holder([1], priority=0, since=2),
          "c": _holder([2], priority=0, since=3)}, 3, 0, 5, ["c", "b", "a"]),
        ({"a": _holder([0]), "b": _holder([1], preemptible=False)}, 2, 0, 5, []),  # not enough even with all: none
        ({"a": _holder([0], preempting_for="x"), "b": _holder([1])}, 1, 0, 5, []),  # a yielding run's GPU comes
        ({"a": _holder([0], preempting_for="x"), "b": _holder([1])}, 2, 0, 5, ["b"]),
    ],
)
def test_choose_victims(holders, need, free, priority, expected) -> None:
    from torchyard.compute.local_alloc import choose_victims

    assert choose_victims(holders, need, free, priority) == expected


def test_a_run_over_its_users_quota_waits_without_holding_back_the_others() -> None:
    reqs = [Request("a1", 1, user="alice", submitted=1), Request("a2", 1, user="alice", submitted=2),
            Request("b1", 1, user="bob", submitted=3)]
    got = admit(reqs, 4, quotas={"user:alice": {"gpus": 1, "runs": None}})
    assert got.started == ["a1", "b1"]
    assert got.waiting == {"a2": "waiting for user alice's quota: 1 of 1 GPU in use, 1 GPU asked"}
    # what alice already runs elsewhere on the machine counts
    got = admit(reqs[:1], 4, quotas={"user:alice": {"gpus": 1}}, quota_gpus={"user:alice": 1})
    assert got.started == [] and "1 of 1 GPU in use" in got.waiting["a1"]


def test_an_experiments_run_quota() -> None:
    reqs = [Request(f"r{i}", 0, experiment="big", submitted=i) for i in range(3)]
    got = admit(reqs, 0, quotas={"experiment:big": {"gpus": None, "runs": 2}}, quota_runs={"experiment:big": 1})
    assert got.started == ["r0"]
    assert got.waiting["r1"] == "waiting for experiment big's quota: 2 of 2 runs running"


def test_quota_cli(tmp_path) -> None:
    env = {**os.environ, "NO_COLOR": "1"}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "torchyard", "--workspace", str(tmp_path / "ws"), "quota", *args],
                              capture_output=True, text=True, env=env)

    assert cli("set", "--user", "alice", "--gpus", "2").returncode == 0
    assert cli("set", "--experiment", "digits", "--runs", "3", "-o", "json").returncode == 0
    listed = cli("list", "-o", "json")
    assert listed.returncode == 0
    import json

    assert json.loads(listed.stdout) == [{"kind": "experiment", "name": "digits", "gpus": None, "runs": 3},
                                         {"kind": "user", "name": "alice", "gpus": 2, "runs": None}]
    for bad, said in ((("set", "--user", "a"), "give --gpus N"), (("set", "--gpus", "1"), "one of --user"),
                      (("set", "--user", "a", "--experiment", "b", "--gpus", "1"), "one of --user"),
                      (("set", "--user", "a", "--gpus", "-1"), "0 or more"), (("remove", "--user", "zed"), "no quota")):
        out = cli(*bad)
        assert out.returncode != 0 and said in out.stderr and "Traceback" not in out.stderr, (bad, out.stderr)
    assert cli("remove", "--user", "alice").returncode == 0
    assert [r["name"] for r in json.loads(cli("list", "-o", "json").stdout)] == ["digits"]
