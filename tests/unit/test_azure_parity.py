"""Azure ML v1's names over torchyard (issue 22): the pure parts, and the ones that only touch a
workspace folder (no run is started here; tests/integration/test_azure_parity.py runs them)."""

from __future__ import annotations

import importlib
import json
import os
import sys

import pytest

from torchyard.azure import compute as azc
from torchyard.azure.compute import AmlCompute, ComputeTarget, ComputeTargetException, RemoteCompute
from torchyard.azure.workspace import UserErrorException, find_config
from torchyard.environments import curated
from torchyard.errors import NotFoundError, NotSupportedError, SpecError
from torchyard.models.webservice import AciWebservice, AksWebservice, LocalWebserviceDeploymentConfiguration
from torchyard.sdk import Workspace
from torchyard.spec.conda import CondaDependencies, python_for
from torchyard.spec.estimators import Environment, PyTorch
from torchyard.sweeps.ranking import best_of, rank, trial_index

HERE = sys.version.split()[0]
MAJOR_MINOR = ".".join(HERE.split(".")[:2])


@pytest.fixture
def ws(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHYARD_WORKSPACE", raising=False)
    monkeypatch.delenv("TORCHYARD_SERVER", raising=False)
    monkeypatch.chdir(tmp_path)
    return Workspace(str(tmp_path / ".torchyard"))


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")


# ---- compute ------------------------------------------------------------------------------------------


def test_vm_sizes_gpu_counts():
    assert azc.gpu_count("Standard_NC6") == 1
    assert azc.gpu_count("STANDARD_NC24s_v3") == 4
    assert azc.gpu_count("Standard_ND96asr_v4") == 8
    assert azc.gpu_count("Standard_D2_v2") == 0
    assert azc.gpu_count("Standard_NC999_future") is None  # a GPU family, count unknown
    assert azc.gpu_count("Standard_X9") == 0
    names = {row["name"] for row in AmlCompute.supported_vmsizes(None)}
    assert {"Standard_NC6", "Standard_NC4as_T4_v3", "Standard_DS3_v2", "Standard_NC6s_v3"} <= names


def test_provisioning_configuration_checks_and_refusals():
    cfg = AmlCompute.provisioning_configuration(vm_size="Standard_D2_v2", max_nodes=4, vm_priority="lowpriority")
    assert (cfg.vm_size, cfg.max_nodes, cfg.min_nodes) == ("Standard_D2_v2", 4, 0)
    with pytest.raises(NotSupportedError) as err:
        AmlCompute.provisioning_configuration(vm_size="Standard_D2_v2", max_nodes=1, vnet_name="vnet")
    assert err.value.field == "vnet_name"
    with pytest.raises(NotSupportedError):
        AmlCompute.provisioning_configuration(vm_size="Standard_D2_v2", admin_username="me")
    with pytest.raises(SpecError) as err:
        AmlCompute.provisioning_configuration(vm_size="Standard_D2_v2", min_nodes=3, max_nodes=2)
    assert err.value.field == "max_nodes"


def test_create_lookup_and_delete(ws, no_gpu, capsys):
    with pytest.raises(ComputeTargetException) as err:
        ComputeTarget(workspace=ws, name="gpu-cluster")
    assert isinstance(err.value, NotFoundError) and "gpu-cluster" in str(err.value)
    cfg = AmlCompute.provisioning_configuration(vm_size="STANDARD_NC6", max_nodes=4)
    target = ComputeTarget.create(ws, "gpu-cluster", cfg)
    assert type(target) is AmlCompute
    target.wait_for_completion(show_output=True)
    out = capsys.readouterr().out
    assert "Succeeded" in out and "has 1 GPU per node and this machine has 0" in out
    status = target.get_status().serialize()
    assert status["vmSize"] == "STANDARD_NC6" and status["scaleSettings"]["maximum_node_count"] == 4
    assert status["warnings"]
    # lookups, Azure's and torchyard's
    again = ComputeTarget(workspace=ws, name="gpu-cluster")
    assert type(again) is AmlCompute and again.vm_size == "STANDARD_NC6"
    assert type(AmlCompute(ws, "gpu-cluster")) is AmlCompute
    assert "gpu-cluster" in ws.compute_targets and "local" not in ws.compute_targets  # as in Azure
    assert type(ws.compute_targets["gpu-cluster"]) is AmlCompute
    assert list(ws.compute_targets) == ["gpu-cluster"] and len(ws.compute_targets.items()) == 1
    assert ws.compute_targets.get("gpu-cluster").kind == "local"  # runs on local compute by default
    assert [t.name for t in ComputeTarget.list(ws)] == ["local", "gpu-cluster"]
    # the same configuration again returns it; another one is refused
    assert ComputeTarget.create(ws, "gpu-cluster", cfg).name == "gpu-cluster"
    with pytest.raises(ComputeTargetException):
        ComputeTarget.create(ws, "gpu-cluster", AmlCompute.provisioning_configuration(vm_size="Standard_D2_v2"))
    # a job takes the object or its name
    est = PyTorch(source_directory=str(ws.path), entry_script="workspace.json", compute_target=target)
    assert est.spec.compute_target == "gpu-cluster"
    target.delete()
    assert "gpu-cluster" not in ws.compute_targets
    with pytest.raises(ComputeTargetException):
        ComputeTarget(ws, "local").delete()


def test_a_job_asking_more_nodes_than_the_clusters_max_nodes_is_refused(ws, no_gpu, tmp_path):
    from torchyard import Experiment, SpecError
    from torchyard.azureml.train.dnn import PyTorch as AzurePyTorch

    ComputeTarget.create(ws, "cpu-cluster", AmlCompute.provisioning_configuration(vm_size="Standard_D2_v2", max_nodes=2))
    (tmp_path / "train.py").write_text("pass\n")
    est = AzurePyTorch(source_directory=str(tmp_path), entry_script="train.py", compute_target="cpu-cluster",
                       node_count=3, distributed_training=None, distributed_backend="pytorch")
    with pytest.raises(SpecError) as err:
        Experiment(ws, "sizes").submit(est)
    assert err.value.field == "node_count"
    assert "at most 2 nodes (max_nodes)" in str(err.value) and "update(max_nodes=3)" in str(err.value)
    assert ws.store.list_runs() == []  # nothing recorded


def test_cluster_mapped_to_an_attached_target(ws):
    from torchyard.compute.ray import RayCompute

    ComputeTarget.attach(ws, "ray-a", RayCompute(address="10.0.0.5:6379"))
    assert ComputeTarget(ws, "ray-a").type == "Ray"
    with open(os.path.join(ws.path, "azureml.json"), "w") as fh:
        json.dump({"compute_map": {"Standard_NC24": "ray-a"}}, fh)
    target = ComputeTarget.create(ws, "big", AmlCompute.provisioning_configuration(vm_size="Standard_NC24", max_nodes=2))
    assert target.serialize()["properties"]["mapped_to"] == "ray-a"
    assert ws.compute_targets.get("big").kind == "ray"
    assert ws.compute_targets.get("big").address == "10.0.0.5:6379"


def test_remote_compute_attach_is_refused(ws):
    config = RemoteCompute.attach_configuration(address="10.0.0.9", ssh_port=22, username="me")
    with pytest.raises(NotSupportedError) as err:
        ComputeTarget.attach(ws, "vm", config)
    assert "RayCompute" in str(err.value)
    with pytest.raises(ComputeTargetException):
        ComputeTarget.create(ws, "x", object())


# ---- workspace ----------------------------------------------------------------------------------------


def _config(folder, **extra):
    os.makedirs(folder, exist_ok=True)
    data = {"subscription_id": "sub", "resource_group": "rg", "workspace_name": "demo", **extra}
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(data, fh)


def test_from_config_searches_parents_and_azureml_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHYARD_WORKSPACE", raising=False)
    monkeypatch.delenv("TORCHYARD_SERVER", raising=False)
    _config(tmp_path / ".azureml")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert find_config() == str(tmp_path / ".azureml" / "config.json")
    ws = Workspace.from_config()
    assert (ws.name, ws.subscription_id, ws.resource_group, ws.location) == ("demo", "sub", "rg", "local")
    assert ws.path == str(tmp_path / ".torchyard")
    # recorded: a later plain Workspace() knows its name
    assert Workspace(str(tmp_path / ".torchyard")).name == "demo"
    written = ws.write_config(path=str(tmp_path / "other"))
    with open(written) as fh:
        assert json.load(fh) == {"subscription_id": "sub", "resource_group": "rg", "workspace_name": "demo",
                                 "torchyard": ws.path}
    assert Workspace.from_config(path=written).path == ws.path
    assert ws.get_details()["name"] == "demo"


def test_from_config_torchyard_key_and_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHYARD_WORKSPACE", raising=False)
    monkeypatch.delenv("TORCHYARD_SERVER", raising=False)
    _config(tmp_path / "proj", torchyard="../shared/.torchyard")
    ws = Workspace.from_config(path=str(tmp_path / "proj"))
    assert ws.path == str(tmp_path / "shared" / ".torchyard")
    with pytest.raises(UserErrorException, match="could not find config.json"):
        Workspace.from_config(path=str(tmp_path / "shared" / ".torchyard" / "runs"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{}")
    with pytest.raises(UserErrorException, match="workspace_name"):
        Workspace.from_config(path=str(tmp_path / "bad"))
    # one folder, one name
    _config(tmp_path / "proj2", workspace_name="other", torchyard="../shared/.torchyard")
    with pytest.raises(UserErrorException, match="called 'demo'"):
        Workspace.from_config(path=str(tmp_path / "proj2"))


def test_get_create_and_azure_constructor(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TORCHYARD_WORKSPACE", raising=False)
    monkeypatch.delenv("TORCHYARD_SERVER", raising=False)
    monkeypatch.chdir(tmp_path)
    ws = Workspace.create("team", subscription_id="s", resource_group="r", location="westeurope")
    assert (ws.name, ws.location) == ("team", "westeurope")
    with pytest.raises(UserErrorException, match="exist_ok"):
        Workspace.create("team")
    assert Workspace.create("team", exist_ok=True, show_output=False).name == "team"
    with pytest.raises(NotSupportedError) as err:
        Workspace.create("team", exist_ok=True, storage_account="acct")
    assert err.value.field == "storage_account"
    assert Workspace.get("team").resource_group == "r"
    with pytest.raises(UserErrorException):
        Workspace.get("nope")
    azure = Workspace("s", "r", "team")
    assert azure.name == "team" and azure.path == ws.path
    assert azure.models == {} and azure.webservices == {}


# ---- environments --------------------------------------------------------------------------------------


def test_curated_catalogue_and_azure_names(ws, capsys):
    assert curated.azure_mapping("AzureML-PyTorch-1.6-GPU") == "torchyard-pytorch-2.11-horovod"
    assert curated.azure_mapping("AzureML-ACPT-pytorch-1.13-py38-cuda11.7-gpu") == "torchyard-pytorch-2.11"
    assert curated.azure_mapping("azureml-acpt-pytorch-2.12-cuda12.1") == "torchyard-pytorch-2.12"
    assert curated.azure_mapping("AzureML-pytorch-2.20-ubuntu22.04-py311-cuda12-gpu") == "torchyard-pytorch-2.13"
    assert curated.azure_mapping("AzureML-sklearn-1.0-ubuntu20.04-py38-cpu") == "torchyard-sklearn"
    assert curated.azure_mapping("AzureML-Minimal") == "torchyard-minimal"
    assert curated.azure_mapping("my-env") is None
    assert curated.nearest_torch("2.125") == "2.13" and curated.nearest_torch("2.12") == "2.12"
    env = Environment.get(ws, "torchyard-pytorch-2.13")
    assert "torch==2.13.0" in env.pip and not env.notes
    env = Environment.get(ws, name="AzureML-PyTorch-1.6-GPU")
    assert "horovod" in env.pip and env.notes and "torchyard-pytorch-2.11-horovod" in capsys.readouterr().err
    assert (env.name, env.version) == ("AzureML-PyTorch-1.6-GPU", "curated:torchyard-pytorch-2.11-horovod")
    # the run's environment log says so (a cache hit here: the build itself is not this test's)
    import msgspec

    from torchyard.environments import READY, environment_key, resolve
    from torchyard.spec.job import EnvironmentSpec

    spec = msgspec.convert(env.to_spec_dict(), EnvironmentSpec)
    cached = os.path.join(ws.path, "envs", environment_key(spec))
    os.makedirs(cached)
    open(os.path.join(cached, READY), "w").close()
    log = os.path.join(str(ws.path), "runs", "r", "logs", "environment.txt")
    assert resolve(ws.path, spec, log).cached
    with open(log) as fh:
        assert "'AzureML-PyTorch-1.6-GPU' is torchyard's curated 'torchyard-pytorch-2.11-horovod'" in fh.read()
    with pytest.raises(NotFoundError, match="curated"):
        Environment.get(ws, "AzureML-Quantum-9")
    # registered names win over the catalogue; list() has both
    Environment("torchyard-minimal", pip=["rich"]).register(ws)
    assert Environment.get(ws, "torchyard-minimal").pip == ["rich"]
    listed = Environment.list(ws)
    assert listed["torchyard-minimal"].pip == ["rich"] and "torchyard-pytorch-2.13-horovod" in listed


def test_conda_dependencies():
    cd = CondaDependencies.create(pip_packages=["azureml-defaults", "scikit-learn"], conda_packages=["numpy"])
    cd.add_pip_package("pillow>=10")
    cd.add_pip_package("scikit-learn==1.5")  # replaces by name
    cd.add_conda_package("pandas")
    assert list(cd.pip_packages) == ["pillow>=10", "scikit-learn==1.5"]
    assert list(cd.conda_packages) == ["numpy", "pandas"]
    assert cd.left_out == ["azureml-defaults"]
    cd.remove_conda_package("numpy")
    assert list(cd.conda_packages) == ["pandas"]
    assert "pillow>=10" in cd.serialize_to_string()
    cd.add_channel("conda-forge")
    with pytest.raises(NotSupportedError, match="pytorch::PACKAGE"):
        cd.add_channel("pytorch")
    with pytest.raises(NotSupportedError):
        cd.set_pip_option("--extra-index-url http://x")
    assert python_for(MAJOR_MINOR) is None and python_for(HERE) is None and python_for("2.7") == "2.7"


def test_environment_python_section(tmp_path):
    env = Environment("myenv")
    cd = CondaDependencies.create(pip_packages=["pyyaml"], python_version=MAJOR_MINOR)
    env.python.conda_dependencies = cd
    assert env.pip == ["pyyaml"] and env.python == None  # noqa: E711 - this interpreter
    assert list(env.python.conda_dependencies.pip_packages) == ["pyyaml"]
    env.python.user_managed_dependencies = True
    assert env.user_managed
    env.docker.enabled = True  # no result depends on it
    env.docker.base_image = None  # DEFAULT_CPU_IMAGE / DEFAULT_GPU_IMAGE are None here
    assert not env.notes
    env.docker.base_image = "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"  # recorded, said, not used
    assert env.docker.base_image == env.docker_base_image == "mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu20.04"
    assert "is not used: torchyard runs no containers" in env.notes[0]
    with pytest.raises(NotSupportedError) as err:
        env.docker.base_image_registry_password = "x"
    assert err.value.field == "docker.base_image_registry_password"
    assert Environment("e", python="3.99").python == "3.99"
    # from files
    spec = tmp_path / "env.yml"
    spec.write_text(f"name: x\nchannels: [conda-forge]\ndependencies:\n  - python={MAJOR_MINOR}\n  - pip\n"
                    "  - pip:\n    - azureml-core\n    - pyyaml\n")
    env = Environment.from_conda_specification("x", str(spec))
    assert env.pip == ["pyyaml"] and env.conda == [] and env.python == None  # noqa: E711
    spec.write_text("name: y\ndependencies:\n  - numpy\n  - pip:\n    - pyyaml\n")
    env = Environment.from_conda_specification("y", str(spec))
    assert env.conda_dependencies_file == str(spec)
    req = tmp_path / "requirements.txt"
    req.write_text("pyyaml\n")
    assert Environment.from_pip_requirements("r", str(req)).pip_requirements_file == str(req)
    with pytest.raises(SpecError):
        Environment.from_pip_requirements("r", str(tmp_path / "missing.txt"))


def test_environment_variables_reach_the_job_and_the_registry(ws, tmp_path):
    from torchyard.spec.estimators import ScriptRunConfig

    (tmp_path / "train.py").write_text("print(1)\n")
    env = Environment("with-vars", pip=["pyyaml"])
    env.environment_variables = {"A": "env", "B": "env"}
    src = ScriptRunConfig(source_directory=str(tmp_path), script="train.py", environment=env,
                          environment_variables={"B": "job"})
    assert src.spec.environment_variables == {"A": "env", "B": "job"}
    est = PyTorch(source_directory=str(tmp_path), entry_script="train.py", environment_definition=env)
    assert est.spec.environment_variables == {"A": "env", "B": "env"}
    registered = env.register(ws)
    assert Environment.get(ws, "with-vars").environment_variables == {"A": "env", "B": "env"}
    env.environment_variables = {"A": "other"}
    assert env.register(ws).version != registered.version  # other variables, another version


# ---- deployment ----------------------------------------------------------------------------------------


def test_aci_and_aks_deploy_configurations():
    from torchyard.models.webservice import InferenceConfig

    assert InferenceConfig(entry_script="score.py", source_directory=None).source_directory == "."  # Azure's default
    aci = AciWebservice.deploy_configuration(cpu_cores=1.5, memory_gb=1, auth_enabled=True, tags={"a": "b"})
    assert isinstance(aci, LocalWebserviceDeploymentConfiguration)
    assert (aci.workers, aci.auth_enabled, aci.service_type) == (2, True, "ACI")
    assert aci.azure["memory_gb"] == 1 and any("not enforced" in n for n in aci.notes)
    assert AciWebservice.deploy_configuration().auth_enabled is False
    for bad in ({"ssl_enabled": True}, {"dns_name_label": "x"}, {"vnet_name": "v"}, {"primary_key": "k"},
                {"collect_model_data": True}, {"enable_app_insights": True}):
        with pytest.raises(NotSupportedError) as err:
            AciWebservice.deploy_configuration(**bad)
        assert err.value.field == next(iter(bad))
    aks = AksWebservice.deploy_configuration(num_replicas=3, cpu_cores=2, scoring_timeout_ms=1000,
                                             replica_max_concurrent_requests=4)
    assert (aks.workers, aks.num_replicas, aks.cpus_per_replica, aks.auth_enabled) == (3, 3, 2.0, True)
    assert (aks.request_timeout_ms, aks.max_concurrent_requests) == (1000, 4)
    auto = AksWebservice.deploy_configuration(autoscale_enabled=True, autoscale_min_replicas=2, autoscale_max_replicas=5)
    assert auto.num_replicas == 2 and "autoscaling is not done here" in auto.notes[0]
    with pytest.raises(SpecError):
        AksWebservice.deploy_configuration(autoscale_enabled=True, num_replicas=2)
    for bad in ({"token_auth_enabled": True}, {"gpu_cores": 1}, {"namespace": "ns"}):
        with pytest.raises(NotSupportedError):
            AksWebservice.deploy_configuration(**bad)


# ---- sweeps: the one tie rule --------------------------------------------------------------------------


def test_tie_rule():
    entries = [(0.9, "s_10"), (0.9, "s_2"), (0.5, "s_0"), (0.9, "s_3")]
    assert best_of(entries, maximize=True) == (0.9, "s_2")  # the trial started first, not "s_10" or "s_3"
    assert best_of(entries, maximize=False) == (0.5, "s_0")
    assert best_of([], True) is None
    rows = [{"id": "s_1", "v": None}, {"id": "s_3", "v": 1.0}, {"id": "s_0", "v": None}, {"id": "s_2", "v": 1.0}]
    ranked = rank(rows, value=lambda r: r["v"], run_id=lambda r: r["id"], maximize=False)
    assert [r["id"] for r in ranked] == ["s_2", "s_3", "s_0", "s_1"]
    assert trial_index("abc_12") == 12 and trial_index("nothing") > 10**9


# ---- use_gpu on local compute without a GPU ------------------------------------------------------------


def test_script_run_config_with_nccl_asks_for_gpus(tmp_path):
    from torchyard.spec.estimators import PyTorchConfiguration, ScriptRunConfig

    (tmp_path / "train.py").write_text("print(1)\n")
    src = ScriptRunConfig(source_directory=str(tmp_path), script="train.py",
                          distributed_job_config=PyTorchConfiguration(communication_backend="Nccl", node_count=2))
    assert src.spec.use_gpu is True and src.spec.distribution.communication_backend == "nccl"
    plain = ScriptRunConfig(source_directory=str(tmp_path), script="train.py",
                            distributed_job_config=PyTorchConfiguration(process_count=2))
    assert plain.spec.use_gpu is False and plain.spec.distribution.communication_backend == "gloo"


def test_local_compute_runs_use_gpu_on_the_cpu(tmp_path, no_gpu):
    from torchyard.compute.base import PreparedJob
    from torchyard.compute.local import GPU_FALLBACK, LocalCompute

    (tmp_path / "train.py").write_text("print('hi')\n")
    est = PyTorch(source_directory=str(tmp_path), entry_script="train.py", use_gpu=True,
                  process_count_per_node=2, distributed_backend="pytorch")
    assert est.spec.distribution.communication_backend == "nccl"
    target = LocalCompute()
    target.check(est.spec)  # accepted: no NotSupportedError for use_gpu
    job = PreparedJob(run_id="r1", experiment="e", workspace=str(tmp_path), workdir=str(tmp_path / "run"),
                      spec=est.spec, rank_argv=["python", "train.py"], launcher_python=sys.executable)
    plan = target.dryrun(job)
    assert plan.nodes[0].plan.use_gpu is False and plan.nodes[0].plan.dist_backend == "gloo"
    assert "has no GPU: running on the CPU with the gloo backend instead of nccl" in plan.files[GPU_FALLBACK]
    assert GPU_FALLBACK in plan.describe()


def test_mpi_estimator_adds_horovod_when_the_code_imports_it(tmp_path, monkeypatch):
    import importlib.util as iu

    real = iu.find_spec
    monkeypatch.setattr(iu, "find_spec", lambda name, *a: None if name == "horovod" else real(name, *a))
    (tmp_path / "train.py").write_text("import os\nfrom helpers import setup\n")
    (tmp_path / "helpers.py").write_text("import torch\nimport horovod.torch as hvd\n")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "train.py").write_text("print('no horovod')  # import horovod in a comment is not code\n")

    def pip(folder, **kw):
        return list(PyTorch(source_directory=str(folder), entry_script="train.py", **kw).spec.environment.pip_packages)

    assert pip(tmp_path, distributed_backend="mpi", node_count=2) == ["horovod==0.28.1"]
    assert pip(tmp_path, distributed_backend="mpi", pip_packages=["Horovod[pytorch]==0.28.1"]) == ["Horovod[pytorch]==0.28.1"]
    assert pip(tmp_path, distributed_backend="pytorch") == []
    assert pip(tmp_path, distributed_backend="mpi", user_managed=True) == []
    assert pip(tmp_path / "plain", distributed_backend="mpi") == []


# ---- the azureml module tree and the boilerplate -------------------------------------------------------


def test_azureml_tree_imports(capsys):
    from torchyard import azureml

    assert azureml.core.VERSION
    for module, names in {
        "core": ["Workspace", "Experiment", "Environment", "ScriptRunConfig", "Run", "Model", "Datastore", "ComputeTarget"],
        "core.compute": ["ComputeTarget", "AmlCompute", "RemoteCompute"],
        "core.compute_target": ["ComputeTargetException"],
        "core.conda_dependencies": ["CondaDependencies"],
        "core.environment": ["Environment", "CondaDependencies"],
        "core.model": ["Model", "InferenceConfig"],
        "core.runconfig": ["MpiConfiguration", "PyTorchConfiguration", "DEFAULT_GPU_IMAGE"],
        "core.webservice": ["AciWebservice", "AksWebservice", "LocalWebservice", "Webservice"],
        "core.workspace": ["Workspace"],
        "core.authentication": ["InteractiveLoginAuthentication", "ServicePrincipalAuthentication"],
        "exceptions": ["ComputeTargetException", "UserErrorException", "WebserviceException", "AzureMLException"],
        "telemetry": ["set_diagnostics_collection"],
        "widgets": ["RunDetails"],
        "train.dnn": ["PyTorch", "Mpi", "Gloo", "Nccl"],
        "train.estimator": ["Estimator"],
        "train.hyperdrive": ["HyperDriveConfig", "RandomParameterSampling", "BanditPolicy", "PrimaryMetricGoal",
                             "choice", "uniform"],
        "train.hyperdrive.parameter_expressions": ["choice", "loguniform"],
    }.items():
        mod = importlib.import_module(f"torchyard.azureml.{module}")
        for name in names:
            assert hasattr(mod, name), f"{module}.{name}"
    from torchyard.azureml.telemetry import set_diagnostics_collection

    assert set_diagnostics_collection(send_diagnostics=True) is None
    import torchyard

    assert torchyard.ComputeTargetException is ComputeTargetException
    assert torchyard.AmlCompute is AmlCompute
