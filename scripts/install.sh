#!/usr/bin/env bash
# Installs veritrain and its test tools into the current Python (3.11), and builds the repro
# profile's fixed-order kernels (a torch C++ extension, about 40 s with gcc).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --upgrade pip
# torch first: the kernels build against it, without build isolation (an isolated build would
# fetch a second torch). The pin is part of the reproducibility contract.
python3 -m pip install -q "torch==2.13.0" "setuptools>=68"
# merkly's metadata pins pydantic<2 although its code runs on pydantic 2; installing it without
# its declared dependencies keeps FastAPI on pydantic 2 (see docs/decisions.md).
python3 -m pip install -q --no-deps "merkly==1.0.2"
echo "install.sh: installing veritrain and compiling the repro kernels (about 40 s)..." >&2
python3 -m pip install -q --only-binary=pyyaml --no-build-isolation -e '.[dev]'
python3 -c "from protocol.repro.backend import get_cpu_kernels as k; print('repro kernels:', k().active_isa(), 'of', ', '.join(k().available_isas()))"
