"""A Horovod (PyTorch) training step under torchyard's mpi backend, as in Azure ML's training guide:

    PyTorch(source_directory="examples/horovod", entry_script="train_horovod.py",
            node_count=2, process_count_per_node=1, distributed_training=Mpi(),
            pip_packages=["horovod==0.28.1"])

Every rank starts from different weights and sees different data; ``broadcast_parameters`` and
``DistributedOptimizer`` (gradients averaged by allreduce) keep them equal, which the logged
``param_checksum`` shows.
"""

import hashlib

import horovod.torch as hvd
import torch

from torchyard import Run


def checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().double().numpy().tobytes())
    return h.hexdigest()


def main() -> None:
    hvd.init()
    run = Run.get_context()
    total = hvd.allreduce(torch.tensor([float(hvd.rank() + 1)]), op=hvd.Sum, name="total").item()
    torch.manual_seed(hvd.rank())  # every rank starts apart ...
    model = torch.nn.Linear(4, 1)
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)  # ... then rank 0's weights everywhere
    optimizer = hvd.DistributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                         named_parameters=model.named_parameters())
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(100 + hvd.rank()))  # different data per rank
    for _ in range(2):
        optimizer.zero_grad()
        loss = model(x).pow(2).mean()
        loss.backward()
        optimizer.step()  # gradients averaged across ranks
    run.log("total", total)
    run.log("size", hvd.size())
    run.log("param_checksum", checksum(model))
    run.log("mpi_built", int(hvd.mpi_built()))
    run.log("gloo_built", int(hvd.gloo_built()))
    run.log("mpi_enabled", int(hvd.mpi_enabled()))


if __name__ == "__main__":
    main()
