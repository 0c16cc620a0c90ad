"""HyperDriveConfig validation, sampled values as script arguments, and sweep YAML files."""

from __future__ import annotations

import textwrap

import pytest

from torchyard import PyTorch, ScriptRunConfig
from torchyard.errors import SpecError
from torchyard.hyperdrive import (
    BanditPolicy,
    BayesianParameterSampling,
    GridParameterSampling,
    HyperDriveConfig,
    MedianStoppingPolicy,
    PrimaryMetricGoal,
    RandomParameterSampling,
    choice,
    uniform,
)
from torchyard.spec.jobfile import load_job_file
from torchyard.sweeps.config import trial_arguments


@pytest.fixture
def code(tmp_path):
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    return folder


def config(code, **kw):
    base = dict(
        run_config=PyTorch(str(code), entry_script="train.py", script_params={"--lr": 0.5, "--epochs": 3}),
        hyperparameter_sampling=RandomParameterSampling({"--lr": uniform(0.01, 0.1)}),
        primary_metric_name="accuracy",
        primary_metric_goal=PrimaryMetricGoal.MAXIMIZE,
        max_total_runs=4,
    )
    base.update(kw)
    return HyperDriveConfig(**base)


def test_defaults_and_goal_spellings(code):
    hd = config(code)
    assert hd.max_concurrent_runs == 4 and hd.max_duration_minutes == 10080 and hd.maximize
    assert config(code, primary_metric_goal="minimize").primary_metric_goal is PrimaryMetricGoal.MINIMIZE
    grid = config(code, hyperparameter_sampling=GridParameterSampling({"--lr": choice(0.1, 0.2)}), max_total_runs=10)
    assert grid.max_total_runs == 2  # a grid has no more points than that
    again = HyperDriveConfig.from_dict(hd.to_dict(seed=3))
    assert again.trial_spec == hd.trial_spec and again.max_total_runs == 4


@pytest.mark.parametrize(
    ("kw", "field"),
    [
        ({"primary_metric_goal": "sideways"}, "primary_metric_goal"),
        ({"primary_metric_name": None}, "primary_metric_name"),
        ({"primary_metric_name": ""}, "primary_metric_name"),
        ({"max_total_runs": 0}, "max_total_runs"),
        ({"max_total_runs": None}, "max_total_runs"),
        ({"max_concurrent_runs": 0}, "max_concurrent_runs"),
        ({"max_duration_minutes": -1}, "max_duration_minutes"),
        ({"hyperparameter_sampling": {"--lr": uniform(0, 1)}}, "hyperparameter_sampling"),
        ({"policy": "bandit"}, "policy"),
        ({"run_config": "train.py"}, "run_config"),
    ],
)
def test_bad_configs_name_the_field(code, kw, field):
    with pytest.raises(SpecError) as info:
        config(code, **kw)
    assert info.value.field == field


def test_bayesian_takes_no_policy(code):
    pytest.importorskip("optuna")
    with pytest.raises(SpecError) as info:
        config(code, hyperparameter_sampling=BayesianParameterSampling({"--lr": uniform(0, 1)}),
               policy=MedianStoppingPolicy())
    assert info.value.field == "policy"


def test_sampled_values_become_arguments_and_override_duplicates(code):
    est = PyTorch(str(code), entry_script="train.py", script_params={"--lr": 0.5, "--epochs": 3, "--verbose": ""})
    spec = trial_arguments(est.spec, {"--lr": 0.01, "hidden": 64, "--verbose": True})
    assert spec.arguments == ("--epochs", "3", "--lr", "0.01", "--hidden", "64", "--verbose", "True")
    src = ScriptRunConfig(str(code), "train.py", arguments=["--lr=0.3", "--momentum", "-0.5", "--x", "1"])
    spec = trial_arguments(src.spec, {"lr": 0.2, "--momentum": 0.9})
    assert spec.arguments == ("--x", "1", "--lr", "0.2", "--momentum", "0.9")
    src = ScriptRunConfig(str(code), "train.py", arguments=["--lr", "${{search_space.lr}}"])
    assert trial_arguments(src.spec, {"lr": 0.2, "b": 1}).arguments == ("--lr", "0.2", "--b", "1")
    cmd = ScriptRunConfig(str(code), command="python train.py --lr ${{search_space.lr}}")
    assert trial_arguments(cmd.spec, {"lr": 0.2, "opt": "a b"}).command == "python train.py --lr 0.2 --opt 'a b'"
    with pytest.raises(SpecError) as info:
        trial_arguments(cmd.spec, {"momentum": 0.9})
    assert info.value.field == "search_space" and "search_space.lr" in str(info.value)


def write(tmp_path, text):
    path = tmp_path / "sweep.yml"
    path.write_text(textwrap.dedent(text))
    return str(path)


SWEEP = """
    type: sweep
    experiment: digits
    trial:
      code: code
      command: python train.py --epochs 3 --lr ${{search_space.lr}}
      environment_variables: {A: "1"}
    compute: local
    search_space:
      lr: {type: loguniform, min_value: -6, max_value: -1}
      hidden: {type: choice, values: [16, 64]}
    sampling_algorithm: {type: random, seed: 7}
    objective: {goal: maximize, primary_metric: accuracy}
    early_termination: {type: bandit, slack_factor: 0.1, evaluation_interval: 2, delay_evaluation: 4}
    limits: {max_total_trials: 8, max_concurrent_trials: 2, timeout: 600, trial_timeout: 120}
    tags: {team: a}
"""


def test_sweep_yaml_compiles(tmp_path, code):
    loaded = load_job_file(write(tmp_path, SWEEP))
    hd = loaded.config
    assert loaded.experiment == "digits" and loaded.tags == {"team": "a"}
    assert isinstance(hd.hyperparameter_sampling, RandomParameterSampling) and hd.hyperparameter_sampling.seed == 7
    assert isinstance(hd.policy, BanditPolicy) and hd.policy.delay_evaluation == 4 and hd.policy.evaluation_interval == 2
    assert (hd.max_total_runs, hd.max_concurrent_runs, hd.max_duration_minutes) == (8, 2, 10)
    assert hd.primary_metric_name == "accuracy" and hd.maximize
    assert loaded.spec.max_run_duration_seconds == 120 and loaded.spec.environment_variables == {"A": "1"}
    spec = trial_arguments(loaded.spec, {"lr": 0.01, "hidden": 16})
    assert spec.command == "python train.py --epochs 3 --lr 0.01 --hidden 16"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("type: loguniform", "type: gaussian"), "search_space.lr.type"),
        (("sampling_algorithm: {type: random, seed: 7}", "sampling_algorithm: grid"), "search_space.lr"),
        (("sampling_algorithm: {type: random, seed: 7}", "sampling_algorithm: annealing"), "sampling_algorithm"),
        (("goal: maximize", "goal: up"), "objective.goal"),
        (("objective: {goal: maximize, primary_metric: accuracy}", "objective: {goal: maximize}"), "objective.primary_metric"),
        (("type: bandit, slack_factor: 0.1", "type: bandit"), "early_termination.slack_factor"),
        (("type: bandit", "type: eager"), "early_termination.type"),
        (("max_total_trials: 8, ", ""), "limits.max_total_trials"),
        (("timeout: 600", "timeout: 0"), "limits.timeout"),
        (("trial_timeout: 120", "trial_time: 120"), "limits.trial_time"),
        (("--lr ${{search_space.lr}}", "--lr ${{search_space.rate}}"), "search_space"),
        (("type: bandit, slack_factor: 0.1", "type: truncation_selection"), "early_termination.truncation_percentage"),
        (("type: bandit, slack_factor: 0.1", "type: truncation_selection, truncation_percentage: 10, "
                                              "exclude_finished_jobs: 'no'"), "early_termination.exclude_finished_jobs"),
        (("seed: 7", "seed: x"), "sampling_algorithm.seed"),
        (("trial_timeout: 120", "trial_timeout: -1"), "limits.trial_timeout"),
        (("timeout: 600", "timeout: true"), "limits.timeout"),
    ],
)
def test_bad_sweep_yaml_names_the_field(tmp_path, code, change, field):
    with pytest.raises(SpecError) as info:
        load_job_file(write(tmp_path, SWEEP.replace(*change)))
    assert info.value.field == field


def test_cli_submit_of_a_bad_sweep_exits_2_with_one_line(tmp_path, code, capsys):
    from torchyard.cli.main import main

    path = write(tmp_path, SWEEP.replace("goal: maximize", "goal: up"))
    assert main(["--workspace", str(tmp_path / ".torchyard"), "submit", path]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "objective.goal" in err[0]
    assert main(["--workspace", str(tmp_path / ".torchyard"), "sweep", "show", "nope"]) == 2
