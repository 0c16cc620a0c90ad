"""Scoring script for the digits model (examples/digits/train.py's ``outputs/model.pt``), in Azure ML's
``init()``/``run()`` shape: deploy it with ``InferenceConfig(entry_script="score.py", ...)``.

Input: ``{"data": [[64 pixel values in 0..1], ...]}`` (scikit-learn's digits divided by 16).
Output: ``{"label": [...], "probability": [...]}``.
"""

import json
import os

import torch
import torch.nn as nn

model = None


def init():
    global model
    # AZUREML_MODEL_DIR is the registered model's folder (its model.pt inside)
    model_path = os.path.join(os.getenv("AZUREML_MODEL_DIR"), "model.pt")
    state = torch.load(model_path, map_location="cpu")
    hidden = state["0.weight"].shape[0]
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    model.load_state_dict(state)
    model.eval()


def run(input_data):
    x = torch.tensor(json.loads(input_data)["data"], dtype=torch.float32)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)
    return {"label": probs.argmax(dim=1).tolist(), "probability": [round(p, 4) for p in probs.max(dim=1).values.tolist()]}
