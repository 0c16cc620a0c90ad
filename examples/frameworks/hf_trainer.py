"""The Hugging Face ``Trainer`` under torchyard, with its MLflow callback logging into the run.

    PyTorch(source_directory="examples/frameworks", entry_script="hf_trainer.py",
            node_count=2, process_count_per_node=1, distributed_backend="pytorch")

The Trainer joins the ranks torchyard started (it reads LOCAL_RANK, WORLD_SIZE, MASTER_ADDR); with
``report_to=["mlflow"]`` its callback finds ``MLFLOW_TRACKING_URI`` / ``MLFLOW_RUN_ID`` from the env
contract, so the losses land in the torchyard run and the TrainingArguments and model config become
its properties. The model is a tiny BERT built from a config in code: nothing is downloaded.
"""

import hashlib
import os

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from torchyard import Run


def checksum(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().double().numpy().tobytes())
    return h.hexdigest()


class Toy(torch.utils.data.Dataset):
    def __init__(self, n: int = 64, length: int = 8) -> None:
        gen = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 50, (n, length), generator=gen)
        self.labels = (self.ids.sum(1) % 2).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.ids[i], "attention_mask": torch.ones_like(self.ids[i]), "labels": self.labels[i]}


def main() -> None:
    run = Run.get_context()
    torch.manual_seed(int(os.environ.get("RANK", "0")))  # a different start on every rank: DDP must sync them
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16, num_labels=2)
    model = BertForSequenceClassification(config)
    run.log("init_checksum", checksum(model))
    args = TrainingArguments(
        output_dir="outputs/hf",
        use_cpu=not torch.cuda.is_available(),
        ddp_backend=os.environ.get("TORCHYARD_DIST_BACKEND", "gloo"),
        per_device_train_batch_size=8,
        max_steps=4,
        logging_steps=1,
        save_strategy="no",
        report_to=["mlflow"],
        disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=Toy())
    trainer.train()
    run.log("param_checksum", checksum(trainer.model))
    run.log("world_size", args.world_size)


if __name__ == "__main__":
    main()
