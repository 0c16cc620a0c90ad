"""Train a small MLP on scikit-learn's bundled digits dataset (no download).

Runs bare (`python train.py`), under torchyard on one process, or distributed unchanged: when
WORLD_SIZE > 1 it joins torch.distributed from the standard env vars and wraps the model in DDP.
"""

import argparse
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from torchyard import Run


def parse_args():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--batch-size", "--batch_size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_dir", "--data-dir", default=None, help="folder holding digits.npz (default: bundled data)")
    p.add_argument("--model_dir", "--model-dir", default=None, help="also save model.pt here (a named output)")
    p.add_argument("--epoch-sleep", type=float, default=0.0, help="seconds to sleep per epoch (tests)")
    p.add_argument("--fail-at-epoch", type=int, default=-1, help="raise at this epoch (tests)")
    p.add_argument("--verbose", action="store_true")
    return p.parse_args()


def load_data(data_dir):
    if data_dir:
        with np.load(os.path.join(data_dir, "digits.npz")) as f:
            x, y = f["x"], f["y"]
    else:
        d = load_digits()
        x, y = d.data, d.target
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y.astype(np.int64), test_size=0.25, random_state=0, stratify=y)


def main():
    args = parse_args()
    run = Run.get_context()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    # join a process group whenever torchyard set a backend (also 1 process on a GPU with nccl)
    distributed = world > 1 or os.environ.get("TORCHYARD_DIST_BACKEND") in ("gloo", "nccl")
    if distributed:
        backend = os.environ.get("TORCHYARD_DIST_BACKEND", "gloo")
        if backend == "mpi":  # the mpi backend still gives every rank the torch.distributed names
            backend = "gloo"
        dist.init_process_group(backend=backend)
    use_cuda = torch.cuda.is_available() and os.environ.get("CUDA_VISIBLE_DEVICES", "") != ""
    device = torch.device("cuda:0" if use_cuda else "cpu")
    if rank == 0:
        name = torch.cuda.get_device_name(0) if use_cuda else "cpu"
        print(f"device: {name}; world size {world}", flush=True)
        run.tag("device", name)

    torch.manual_seed(args.seed)
    x_tr, x_te, y_tr, y_te = load_data(args.data_dir)
    x_tr, y_tr = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    x_te, y_te = torch.from_numpy(x_te).to(device), torch.from_numpy(y_te).to(device)

    model = nn.Sequential(nn.Linear(64, args.hidden), nn.ReLU(), nn.Linear(args.hidden, 10)).to(device)
    if distributed:
        model = nn.parallel.DistributedDataParallel(model)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    # each rank takes its shard of every global batch, so the global batch is batch_size
    n = len(x_tr)
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        if epoch == args.fail_at_epoch:
            raise RuntimeError(f"failing on purpose at epoch {epoch}")
        t0 = time.time()
        model.train()
        perm = torch.randperm(n, generator=g)
        total, batches = 0.0, 0
        for start in range(0, n - n % args.batch_size, args.batch_size):  # full batches: every rank steps
            idx = perm[start : start + args.batch_size][rank::world]
            xb, yb = x_tr[idx].to(device), y_tr[idx].to(device)
            opt.zero_grad()
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            total += loss.item()
            batches += 1
        model.eval()
        with torch.no_grad():
            acc = (model(x_te).argmax(1) == y_te).float().mean().item()
        run.log("loss", total / max(batches, 1), step=epoch)
        run.log("accuracy", acc, step=epoch)
        if rank == 0 and (args.verbose or epoch == args.epochs - 1 or epoch % 5 == 0):
            print(f"epoch {epoch}: loss {total / max(batches, 1):.4f} accuracy {acc:.4f} ({time.time() - t0:.2f} s)", flush=True)
        if args.epoch_sleep:
            time.sleep(args.epoch_sleep)

    inner = model.module if distributed else model
    flat = torch.cat([p.detach().flatten().cpu() for p in inner.parameters()])
    run.log("param_checksum", float(flat.double().sum()))
    os.makedirs("outputs", exist_ok=True)
    if rank == 0:
        torch.save(inner.state_dict(), os.path.join("outputs", "model.pt"))
        if args.model_dir:
            os.makedirs(args.model_dir, exist_ok=True)
            torch.save(inner.state_dict(), os.path.join(args.model_dir, "model.pt"))
    torch.save(flat, os.path.join("outputs", f"params_rank{rank}.pt"))
    if distributed:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
