"""Hyperparameter sweeps with early termination (Azure ML's HyperDrive), on any compute target.

::

    expressions.py   choice, randint, uniform, ... and the Grid / Random / Bayesian samplers
    policies.py      BanditPolicy, MedianStoppingPolicy, TruncationSelectionPolicy, NoTerminationPolicy
    config.py        HyperDriveConfig and PrimaryMetricGoal; how sampled values become script arguments
    (the detached sweep controller is torchyard.runtime.sweep_controller)
    run.py           HyperDriveRun, the parent run's SDK view
    yamlsweep.py     ``type: sweep`` YAML job files (Azure ML v2 style)

A sweep is a parent run whose children are ordinary runs (ids ``<parent>_<i>``); everything the
controller needs is in the store (the parent's definition and seed, each child's hyperparameters),
so a controller that dies is restarted and goes on without rerunning finished trials.
Nothing here imports optuna, torch or numpy at import time.
"""
