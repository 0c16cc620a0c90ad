"""The runtime (L4): what runs a job, between the SDK/CLI above and compute targets below.

    submit.py            the one submit path: check, snapshot, record, start (and ``plan``, its pure
                         half, which is what ``--dry-run`` prints)
    supervisor.py        one detached process per run: its lifecycle
    stages.py            the supervisor's stages: environment, data, outputs, artifacts, failure report
    sweep_controller.py  one detached process per sweep
    liveness.py          noticing a dead supervisor or controller (NotResponding → Failed, or revive)
    agent.py             the warm per-workspace agent that forks supervisors
    spawn.py             starting a detached process (one pattern for supervisors, controllers, services)
    bootstrap.py         the node-side bootstrap: environment and inputs placed on a node
"""
