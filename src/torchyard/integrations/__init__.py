"""Bridges from the frameworks training scripts already use into torchyard runs.

``integrations.mlflow`` is MLflow's tracking-store plugin for the ``torchyard`` URI scheme (registered
through MLflow's ``mlflow.tracking_store`` entry-point group, so it is loaded by MLflow itself and
never by ``import torchyard``). ``integrations.tensorboard`` writes a run's metrics as TensorBoard
event files.

Layer: beside the SDK (L5). These modules import the in-job tracking client (L1) and, outside a
run, the workspace (L2); nothing below imports them.
"""
