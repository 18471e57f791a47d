#!/usr/bin/env bash
# Installs veritrain and its test tools into the current Python (3.11).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q --upgrade pip
# merkly's metadata pins pydantic<2 although its code runs on pydantic 2; installing it without
# its declared dependencies keeps FastAPI on pydantic 2 (see docs/decisions.md).
python3 -m pip install -q --no-deps "merkly==1.0.2"
python3 -m pip install -q --only-binary=pyyaml -e '.[dev]'
