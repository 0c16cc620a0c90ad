from pathlib import Path

import pytest

from torchyard import SpecError
from torchyard.spec.jobfile import load_job_file


def write(tmp_path: Path, text: str) -> str:
    (tmp_path / "code").mkdir(exist_ok=True)
    (tmp_path / "code" / "train.py").write_text("pass\n")
    path = tmp_path / "job.yml"
    path.write_text(text)
    return str(path)


def test_command_job_with_literal_inputs(tmp_path):
    job = load_job_file(write(tmp_path, """
$schema: https://azuremlschemas.azureedge.net/latest/commandJob.schema.json
type: command
experiment: digits
code: ./code
command: python train.py --epochs ${{inputs.epochs}} --lr ${{ inputs.lr }}
inputs: {epochs: 5, lr: {type: number, value: 0.1}}
compute: local
distribution: {type: pytorch, process_count_per_instance: 2}
resources: {instance_count: 2}
environment_variables: {A: "1"}
limits: {timeout: 60}
tags: {owner: me}
"""))
    spec = job.spec
    assert job.experiment == "digits"
    assert job.tags == {"owner": "me"}
    assert spec.command == "python train.py --epochs 5 --lr 0.1"
    assert spec.source_directory == str(tmp_path / "code")
    assert spec.distribution.node_count == 2
    assert spec.distribution.process_count_per_node == 2
    assert spec.distribution.communication_backend == "gloo"
    assert spec.max_run_duration_seconds == 60


def test_entry_script_and_args(tmp_path):
    job = load_job_file(write(tmp_path, "code: code\nentry_script: train.py\nargs: [--epochs, 3]\nexperiment_name: x\n"))
    assert job.spec.entry_script == "train.py"
    assert job.spec.arguments == ("--epochs", "3")
    assert job.experiment == "x"


def test_retry_block(tmp_path):
    job = load_job_file(write(tmp_path, "code: code\nentry_script: train.py\n"
                                        "retry: {max: 2, retry_on: [infrastructure, hung], preempt_grace: 90}\n"))
    assert (job.spec.max_retries, job.spec.retry_on, job.spec.preempt_grace_seconds) == (2, ("infrastructure", "hung"), 90)


def test_mpi_distribution(tmp_path):
    job = load_job_file(write(tmp_path, "code: code\nentry_script: train.py\ndistribution: {type: mpi, process_count_per_instance: 2}\n"))
    assert job.spec.distribution.backend == "mpi"


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("code: code\nentry_script: train.py\nbogus: 1\n", "bogus", "unknown field"),
        ("code: code\nentry_script: train.py\nresources: {instance_count: two}\n", "resources.instance_count", "expected `int`"),
        ("code: code\ncommand: python train.py ${{inputs.nope}}\n", "command", "inputs.nope"),
        ("code: code\nentry_script: train.py\nresources: {instance_count: 2}\n", "distributed_backend", "must be specified"),
        ("code: code\nentry_script: missing.py\n", "entry_script", "not found"),
        ("code: nowhere\nentry_script: train.py\n", "source_directory", "not a directory"),
        ("code: code\nentry_script: train.py\ntype: pipeline\n", "type", "use 'command' or 'sweep'"),
        ("code: code\nentry_script: train.py\ntype: sweep\n", "search_space", "is required"),
        ("code: code\nentry_script: train.py\ninputs: {d: {type: uri_folder, path: ./x, mode: bogus}}\n", "inputs.d.mode", "unknown mode"),
        ("code: code\nentry_script: train.py\noutputs: {m: {type: uri_file, path: ds:x/y}}\n", "outputs.m", "uri_folder"),
        ("- a\n- b\n", "job file", "mapping"),
        ("code: [unclosed\n", "job file", "malformed YAML at line"),
        ("code: code\nentry_script: train.py\nretry: {preempt_grace: -1}\n", "preempt_grace_seconds", "between 0 and 86400"),
        ("code: code\nentry_script: train.py\nretry: {preempt_grace: soon}\n", "retry.preempt_grace", "expected `float`"),
    ],
)
def test_bad_job_files_name_the_problem(tmp_path, text, field, fragment):
    with pytest.raises(SpecError) as info:
        load_job_file(write(tmp_path, text))
    assert info.value.field == field
    assert fragment.lower() in str(info.value).lower()


def test_missing_job_file(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_job_file(str(tmp_path / "nope.yml"))


def test_data_inputs_and_outputs(tmp_path):
    job = load_job_file(write(tmp_path, """
code: code
command: python train.py --data ${{inputs.train}} --file ${{inputs.one}} --out ${{outputs.model}} --n ${{inputs.n}}
inputs:
  train: {type: uri_folder, path: ds:blobs/digits/, mode: download}
  one: {type: uri_file, path: s3://bucket/a/b.npz}
  local: {type: uri_folder, path: ./data}
  az: {type: uri_folder, path: azureml://datastores/blobs/paths/x/y}
  n: 3
outputs:
  model: {type: uri_folder, path: "ds:blobs/models/{run_id}/"}
"""))
    spec = job.spec
    assert spec.command == "python train.py --data ${{inputs.train}} --file ${{inputs.one}} --out ${{outputs.model}} --n 3"
    assert spec.inputs["train"] == {"mode": "download", "type": "uri_folder", "datastore": "blobs", "path": "digits/"}
    assert spec.inputs["one"] == {"mode": "mount", "type": "uri_file", "url": "s3://bucket/a/b.npz"}
    assert spec.inputs["local"]["url"] == str(tmp_path / "data")
    assert spec.inputs["az"] == {"mode": "mount", "type": "uri_folder", "datastore": "blobs", "path": "x/y"}
    assert spec.outputs == {"model": {"type": "uri_folder", "datastore": "blobs", "path": "models/{run_id}/"}}
