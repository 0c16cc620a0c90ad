"""Lightning DDP under torchyard: torchyard starts the ranks, Lightning only joins them.

    PyTorch(source_directory="examples/frameworks", entry_script="lightning_ddp.py",
            node_count=2, process_count_per_node=1, distributed_backend="pytorch")

The settings that matter: ``devices`` = ``LOCAL_WORLD_SIZE`` and ``num_nodes`` = ``AZUREML_NODE_COUNT``
(Lightning sees ``LOCAL_RANK`` and does not spawn processes of its own); ``MLFlowLogger()`` with no
arguments logs into the torchyard run (the env contract sets ``MLFLOW_TRACKING_URI``).
"""

import hashlib
import os

import lightning as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from torch.utils.data import DataLoader, TensorDataset

from torchyard import Run


def checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().double().numpy().tobytes())
    return h.hexdigest()


class Net(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, _index):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


def main() -> None:
    run = Run.get_context()
    torch.manual_seed(int(os.environ.get("RANK", "0")))  # a different start on every rank: DDP must sync them
    model = Net()
    run.log("init_checksum", checksum(model))
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=gen)
    loader = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)  # Lightning adds the sampler
    trainer = L.Trainer(
        accelerator="cpu",
        strategy="ddp",
        devices=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        num_nodes=int(os.environ.get("AZUREML_NODE_COUNT", "1")),
        max_steps=4,
        logger=MLFlowLogger(),
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    run.log("param_checksum", checksum(model))
    run.log("world_size", trainer.world_size)


if __name__ == "__main__":
    main()
