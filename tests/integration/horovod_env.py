"""The Horovod environment the Horovod tests run in, built once into a workspace that outlives test
sessions (``TORCHYARD_TEST_HOROVOD_WORKSPACE``, default ``~/.cache/torchyard-tests/horovod``).

``python tests/integration/horovod_env.py`` builds it ahead of the suite (scripts/test.sh does, so
the build's minutes are not inside the suite's); it prints how long it took and where the build log
is, and exits 0 even when the build fails (the Horovod tests then skip, saying so), like
scripts/build_k8s.sh for the Kubernetes tests.
"""

from __future__ import annotations

import os
import sys
import time

HOROVOD = "horovod==0.28.1"
HVD_WORKSPACE = os.environ.get("TORCHYARD_TEST_HOROVOD_WORKSPACE") or os.path.expanduser("~/.cache/torchyard-tests/horovod")


def workspace_dir() -> str:
    from torchyard import Workspace  # noqa: PLC0415

    ws = Workspace(path=HVD_WORKSPACE)
    try:
        return ws.path
    finally:
        if ws._store is not None:
            ws._store.dispose()


def built() -> bool:
    """Whether this interpreter's Horovod environment is already in the test workspace's cache."""
    from torchyard.environments import planned_python  # noqa: PLC0415
    from torchyard.spec.job import EnvironmentSpec  # noqa: PLC0415

    spec = EnvironmentSpec(pip_packages=(HOROVOD,))
    return any(planned_python(p, spec)["cached"] for p in (os.path.join(HVD_WORKSPACE, ".torchyard"), HVD_WORKSPACE))


def main() -> int:
    from torchyard.environments import resolve  # noqa: PLC0415
    from torchyard.spec.job import EnvironmentSpec  # noqa: PLC0415

    if built():
        print(f"horovod: cached in {HVD_WORKSPACE}")
        return 0
    log = os.path.join(HVD_WORKSPACE, "build-logs", f"horovod-{int(time.time())}.txt")
    started = time.time()
    try:
        resolve(workspace_dir(), EnvironmentSpec(pip_packages=(HOROVOD,)), log)
    except Exception as err:  # noqa: BLE001 - reported; the tests skip saying why
        print(f"horovod: the build failed after {time.time() - started:.0f} s ({err}); log: {log}; "
              "tests/integration/test_horovod.py will skip", file=sys.stderr)
        return 0
    print(f"horovod: built in {time.time() - started:.0f} s (log: {log})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
