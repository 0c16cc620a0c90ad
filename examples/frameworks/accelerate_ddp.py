"""Accelerate under torchyard: ``Accelerator()`` reads the env contract (RANK, WORLD_SIZE, MASTER_ADDR...)
and joins the ranks torchyard started; no ``accelerate launch``.

    PyTorch(source_directory="examples/frameworks", entry_script="accelerate_ddp.py",
            node_count=1, process_count_per_node=2, distributed_backend="pytorch")
"""

import hashlib

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, TensorDataset

from torchyard import Run


def checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().double().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    run = Run.get_context()
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    torch.manual_seed(accelerator.process_index)  # a different start on every rank: DDP must sync them
    model = torch.nn.Linear(8, 1)
    run.log("init_checksum", checksum(model))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=gen)
    loader = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    for step, (xb, yb) in enumerate(loader):
        loss = torch.nn.functional.mse_loss(model(xb), yb)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        run.log("loss", loss.item(), step=step)
        if step == 3:
            break
    run.log("param_checksum", checksum(accelerator.unwrap_model(model)))
    run.log("world_size", accelerator.num_processes)
    run.log("distributed_type", accelerator.distributed_type.value)


if __name__ == "__main__":
    main()
