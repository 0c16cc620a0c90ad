"""Sweep benchmark (issue: sweeps). Prints one table; figures go to BENCHMARKS.md.

The same random search over the digits example (``--lr`` loguniform(-7, -1), i.e. e^-7..e^-1, and
``--hidden`` choice(8, 16, 32, 64)), a fixed budget of trials, for several seeds:

- torchyard sweeps (real child runs, ``max_concurrent_runs=2``) with no policy, BanditPolicy,
  MedianStoppingPolicy and TruncationSelectionPolicy;
- the peer: an in-process Optuna study over the same space and budget, trying exactly the same
  configurations (enqueued from the same seeded sampler), with MedianPruner(n_startup_trials=1,
  n_warmup_steps=5) (MedianStoppingPolicy's delay), training the same
  model the same way (examples/digits/train.py's MLP, SGD with momentum, same split and seed) and
  pruning between epochs.

Compute is counted in trial-epochs: the epochs each trial actually trained (the accuracy values it
logged). "best final" is the best trial's last logged accuracy. A torchyard trial is stopped by a
cancel from the controller, so it trains on for the cancel's latency (about a second): each epoch
sleeps ``--epoch-sleep`` seconds so that an epoch lasts about as long as on a real model.

Usage: python bench/bench_sweep.py [--trials 10] [--epochs 15] [--seeds 3] [--epoch-sleep 0.25]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

from _table import print_table  # noqa: E402 - bench/ is on sys.path when run as a script

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "examples", "digits")
sys.path.insert(0, os.path.join(REPO, "src"))


def policies() -> dict[str, object]:
    from torchyard import BanditPolicy, MedianStoppingPolicy, NoTerminationPolicy, TruncationSelectionPolicy

    return {
        "none": NoTerminationPolicy(),
        "bandit(slack_factor=0.1, delay=3)": BanditPolicy(slack_factor=0.1, evaluation_interval=1, delay_evaluation=3),
        "median_stopping(delay=5)": MedianStoppingPolicy(evaluation_interval=1, delay_evaluation=5),
        "truncation(30%, delay=3)": TruncationSelectionPolicy(truncation_percentage=30, delay_evaluation=3),
    }


def space() -> dict[str, object]:
    from torchyard import choice, loguniform

    return {"--lr": loguniform(-7, -1), "--hidden": choice(8, 16, 32, 64)}


def torchyard_sweep(ws, name: str, policy, seed: int, args) -> tuple[int, float, float, int]:
    """(trial-epochs, best final accuracy, wall seconds, trials stopped early)."""
    from torchyard import Experiment, HyperDriveConfig, PyTorch, RandomParameterSampling

    est = PyTorch(DIGITS, entry_script="train.py",
                  script_params={"--epochs": args.epochs, "--epoch-sleep": args.epoch_sleep},
                  environment_variables={"OMP_NUM_THREADS": "1"})
    config = HyperDriveConfig(run_config=est, hyperparameter_sampling=RandomParameterSampling(space(), seed=seed),
                              policy=policy, primary_metric_name="accuracy", primary_metric_goal="MAXIMIZE",
                              max_total_runs=args.trials, max_concurrent_runs=2)
    t0 = time.perf_counter()
    hd = Experiment(ws, name).submit(config)
    hd.wait_for_completion(timeout=3600)
    wall = time.perf_counter() - t0
    epochs, finals, stopped = 0, [], 0
    for child in hd.get_children():
        values = child.get_metrics().get("accuracy", [])
        values = values if isinstance(values, list) else [values]
        epochs += len(values)
        if values:
            finals.append(values[-1])
        stopped += child.get_status() == "Canceled"
    return epochs, max(finals), wall, stopped


def optuna_peer(seed: int, args) -> tuple[int, float, float, int]:
    import numpy as np
    import optuna
    import torch
    import torch.nn as nn
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    torch.set_num_threads(1)
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    x_tr, x_te, y_tr, y_te = train_test_split(x, d.target.astype(np.int64), test_size=0.25, random_state=0,
                                              stratify=d.target)
    x_tr, y_tr, x_te, y_te = map(torch.from_numpy, (x_tr, y_tr, x_te, y_te))
    counted = {"epochs": 0}
    finals: list[float] = []

    def objective(trial: optuna.Trial) -> float:
        import math

        lr = math.exp(trial.suggest_float("loglr", -7, -1))
        hidden = trial.suggest_categorical("hidden", [8, 16, 32, 64])
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
        opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        loss_fn = nn.CrossEntropyLoss()
        g = torch.Generator().manual_seed(0)
        n, bs = len(x_tr), 64
        acc = 0.0
        for epoch in range(args.epochs):
            model.train()
            perm = torch.randperm(n, generator=g)
            for start in range(0, n - n % bs, bs):
                idx = perm[start:start + bs]
                opt.zero_grad()
                loss_fn(model(x_tr[idx]), y_tr[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                acc = (model(x_te).argmax(1) == y_te).float().mean().item()
            counted["epochs"] += 1
            if args.epoch_sleep:
                time.sleep(args.epoch_sleep)
            trial.report(acc, epoch)
            if trial.should_prune():
                finals.append(acc)
                raise optuna.TrialPruned()
        finals.append(acc)
        return acc

    import math

    from torchyard import RandomParameterSampling

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=5))
    sampling = RandomParameterSampling(space(), seed=seed)
    for i in range(args.trials):  # exactly the configurations the torchyard sweeps try
        values = sampling.suggest(i, seed)
        study.enqueue_trial({"loglr": math.log(values["--lr"]), "hidden": values["--hidden"]})
    t0 = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    pruned = sum(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    return counted["epochs"], max(finals), time.perf_counter() - t0, pruned


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epoch-sleep", type=float, default=0.25)
    args = p.parse_args()
    os.environ["TORCHYARD_AGENT"] = "0"
    from torchyard import Workspace

    results: dict[str, list[tuple[int, float, float, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(path=os.path.join(tmp, ".torchyard"))
        for seed in range(args.seeds):
            for name, policy in policies().items():
                r = torchyard_sweep(ws, f"bench{seed}", policy, seed, args)
                results.setdefault(f"torchyard {name}", []).append(r)
                print(f"seed {seed} {name}: {r}", file=sys.stderr, flush=True)
            r = optuna_peer(seed, args)
            results.setdefault("optuna MedianPruner (peer)", []).append(r)
            print(f"seed {seed} optuna: {r}", file=sys.stderr, flush=True)
    base = statistics.fmean(r[0] for r in results["torchyard none"])
    base_acc = statistics.fmean(r[1] for r in results["torchyard none"])
    rows = []
    for name, rs in results.items():
        epochs = statistics.fmean(r[0] for r in rs)
        acc = statistics.fmean(r[1] for r in rs)
        rows.append([
            name,
            f"{epochs:.1f}",
            f"{(1 - epochs / base) * 100:.0f}%" if name != "torchyard none" else "-",
            f"{acc * 100:.2f}",
            f"{(acc - base_acc) * 100:+.2f}",
            f"{statistics.fmean(r[3] for r in rs):.1f}",
            f"{statistics.fmean(r[2] for r in rs):.1f}",
        ])
    print(f"\n{args.trials} trials x {args.epochs} epochs (budget {args.trials * args.epochs} trial-epochs), "
          f"{args.seeds} seeds, epoch sleep {args.epoch_sleep} s; means over seeds")
    print_table(["search", "trial-epochs", "saved vs none", "best final acc %", "vs none (points)",
                 "stopped early", "wall s"], rows)


if __name__ == "__main__":
    main()
