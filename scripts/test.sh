#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine, then lint, type-check and test.
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v mpirun >/dev/null 2>&1 || need+=(openmpi-bin libopenmpi-dev)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql)
{ command -v sbatch && command -v slurmctld && command -v munged; } >/dev/null 2>&1 || need+=(slurm-wlm munge)
{ command -v cmake && command -v g++ && command -v mpicxx; } >/dev/null 2>&1 || need+=(cmake g++ libopenmpi-dev)  # Horovod's source build
if [ ${#need[@]} -gt 0 ]; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

python -m pip install -q --disable-pip-version-check -e ".[test]"
ruff check src tests
mypy src
python -m pytest -p no:cacheprovider "$@"
