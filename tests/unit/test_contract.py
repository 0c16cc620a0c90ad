from torchyard.launch.contract import AZURE_NAMES, TORCH_NAMES, TORCHYARD_NAMES, node_env, node_gpus, rank_env


def make(node_rank=1, nproc=2, nodes=2, user_env=None):
    return node_env(
        run_id="r1", experiment="e", workspace="/ws", workdir="/ws/runs/r1", master_addr="10.0.0.1",
        master_port=29500, node_rank=node_rank, node_count=nodes, process_count_per_node=nproc,
        dist_backend="gloo", user_env=user_env or {},
    )


def test_node_and_rank_env():
    node = make()
    env = {**node, **rank_env(node, 1, None)}
    for name in TORCH_NAMES + AZURE_NAMES + TORCHYARD_NAMES:
        assert name in env, name
    assert env["RANK"] == "3"
    assert env["LOCAL_RANK"] == "1"
    assert env["WORLD_SIZE"] == "4"
    assert env["LOCAL_WORLD_SIZE"] == "2"
    assert env["NODE_RANK"] == "1"
    assert env["AZ_BATCH_MASTER_NODE"] == "10.0.0.1:29500"
    assert env["AZ_BATCHAI_MPI_MASTER_NODE"] == "10.0.0.1"
    assert env["AZ_BATCHAI_PYTORCH_INIT_METHOD"] == "tcp://10.0.0.1:29500"
    assert env["AZ_BATCHAI_TASK_INDEX"] == "3"
    assert env["AZUREML_NODE_COUNT"] == "2"
    assert env["TORCHYARD_OUTPUT_DIR"] == "/ws/runs/r1/outputs"
    assert env["OMP_NUM_THREADS"] == "1" or "OMP_NUM_THREADS" in __import__("os").environ


def test_user_env_wins_and_gpu_round_robin():
    node = make(user_env={"OMP_NUM_THREADS": "4", "X": "y"})
    assert node["OMP_NUM_THREADS"] == "4"
    assert node["X"] == "y"
    assert rank_env(node, 0, ["3", "5"])["CUDA_VISIBLE_DEVICES"] == "3"
    assert rank_env(node, 1, ["3", "5"])["CUDA_VISIBLE_DEVICES"] == "5"
    assert rank_env(node, 1, ["3"])["CUDA_VISIBLE_DEVICES"] == "3"


def test_node_gpus_from_visible_devices():
    assert node_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert node_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_the_interface_to_the_master_is_given_to_gloo_and_nccl(monkeypatch):
    from torchyard.launch.contract import interface_to

    monkeypatch.delenv("GLOO_SOCKET_IFNAME", raising=False)
    monkeypatch.delenv("NCCL_SOCKET_IFNAME", raising=False)
    assert interface_to("127.0.0.1") == "lo"
    base = dict(run_id="r", experiment="e", workspace="/w", workdir="/w/r", master_addr="127.0.0.1", master_port=1,
                node_rank=0, node_count=2, process_count_per_node=1, dist_backend="gloo")
    env = node_env(**base, user_env={}, socket_ifname="lo")
    assert env["GLOO_SOCKET_IFNAME"] == env["NCCL_SOCKET_IFNAME"] == "lo"
    assert node_env(**base, user_env={"GLOO_SOCKET_IFNAME": "eth1"}, socket_ifname="lo")["GLOO_SOCKET_IFNAME"] == "eth1"
    single = dict(base, node_count=1)
    assert "GLOO_SOCKET_IFNAME" not in node_env(**single, user_env={}, socket_ifname="lo")  # one rank: no rendezvous


def test_a_layered_environment_sees_the_installing_venv(tmp_path, monkeypatch):
    """Bug: from a venv, `uv venv --system-site-packages` showed the base interpreter's packages only
    (no torch, no torchyard). The layered environment gets a .pth naming the venv's site folders, and
    only the layered environment does (never the venv itself)."""
    import site
    import sys

    from torchyard import environments

    venv_site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    venv_site.mkdir(parents=True)
    layered_site = tmp_path / "layered" / "lib" / "python3.11" / "site-packages"
    layered_site.mkdir(parents=True)
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    monkeypatch.setattr(site, "getsitepackages", lambda: [str(venv_site), "/usr/lib/python3/dist-packages"])
    environments._see_base_venv(str(tmp_path / "layered"))
    pth = (layered_site / "_torchyard_base_venv.pth").read_text()
    assert pth.startswith("import site; ") and repr(str(venv_site)) in pth and "dist-packages" not in pth
    assert not (venv_site / "_torchyard_base_venv.pth").exists()
    environments._see_base_venv(str(tmp_path / "venv"))  # asked to layer over itself: writes nothing there
    assert not (venv_site / "_torchyard_base_venv.pth").exists()
def test_tensorboard_dir_per_rank():
    node = make()
    assert node["TORCHYARD_TENSORBOARD_DIR"] == "/ws/runs/r1/logs/tensorboard/node_1"  # torchrun: per node
    assert rank_env(node, 1, None)["TORCHYARD_TENSORBOARD_DIR"] == "/ws/runs/r1/logs/tensorboard/rank_3"


def test_mlflow_wired_only_when_importable_and_not_set_by_the_user(tmp_path, monkeypatch):
    import importlib.util

    from torchyard.launch import contract

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    venv = tmp_path / "venv"
    site = venv / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    (venv / "bin").mkdir()
    python = str(venv / "bin" / "python")
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")

    def env_for(py, user_env=None):
        return node_env(run_id="r1", experiment="e", workspace="/ws", workdir="/ws/runs/r1", master_addr="a",
                        master_port=1, node_rank=0, node_count=1, process_count_per_node=1, dist_backend=None,
                        user_env=user_env or {}, python=py)

    assert "MLFLOW_TRACKING_URI" not in env_for(python)
    # a venv over a base interpreter that has mlflow, seeing the base's site-packages
    base = tmp_path / "base"
    (base / "lib" / "python3.11" / "site-packages" / "mlflow").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\ninclude-system-site-packages = true\n")
    assert env_for(python)["MLFLOW_TRACKING_URI"] == "torchyard:///ws"
    (venv / "pyvenv.cfg").write_text(f"home = {base / 'bin'}\ninclude-system-site-packages = false\n")
    assert "MLFLOW_TRACKING_URI" not in env_for(python)
    (site / "mlflow").mkdir()
    env = env_for(python)
    assert env["MLFLOW_TRACKING_URI"] == "torchyard:///ws"
    assert env["MLFLOW_RUN_ID"] == "r1"
    assert env["MLFLOW_REGISTRY_URI"] == "torchyard:///ws"
    assert env_for(python, {"MLFLOW_REGISTRY_URI": "sqlite:///r.db"})["MLFLOW_REGISTRY_URI"] == "sqlite:///r.db"
    mine = env_for(python, {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert mine["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000" and "MLFLOW_RUN_ID" not in mine
    here = importlib.util.find_spec("mlflow") is not None
    assert ("MLFLOW_TRACKING_URI" in env_for(None)) is here
    assert contract.module_importable("json") and not contract.module_importable("no_such_module_xyz")


def test_checkpoint_contract_and_the_stack_dump():
    """Issue #25: every rank gets its checkpoint folder and attempt; TORCHYARD_RESUME_FROM only on a
    resumed attempt; the rankboot folder (faulthandler on a real-time signal) goes first on PYTHONPATH."""
    import os

    from torchyard.launch.contract import RANKBOOT, RESUME_NAME, with_rankboot

    node = make()
    assert node["TORCHYARD_CHECKPOINT_DIR"] == "/ws/runs/r1/checkpoints"
    assert node["TORCHYARD_ATTEMPT"] == "0"
    assert RESUME_NAME not in node
    assert node["TORCHYARD_STACKS_DIR"] == "/ws/runs/r1/.torchyard-run/stacks"
    resumed = node_env(
        run_id="r1", experiment="e", workspace="/ws", workdir="/ws/runs/r1", master_addr="10.0.0.1",
        master_port=29500, node_rank=0, node_count=1, process_count_per_node=1, dist_backend=None, user_env={},
        attempt=2, resume_from="/ws/runs/r1/checkpoints/step_7")
    assert resumed["TORCHYARD_ATTEMPT"] == "2" and resumed[RESUME_NAME] == "/ws/runs/r1/checkpoints/step_7"
    assert os.path.isfile(os.path.join(RANKBOOT, "sitecustomize.py"))
    assert with_rankboot({}) == RANKBOOT
    assert with_rankboot({"PYTHONPATH": "/a"}) == RANKBOOT + os.pathsep + "/a"
