#!/usr/bin/env bash
# Re-resolves requirements/lock.txt: every runtime, test and build dependency, transitively, at
# the exact versions scripts/install.sh installs. pip-compile (pip-tools, itself locked) resolves
# pyproject.toml's dependencies, its [dev] extra and requirements/lock.in with pip's own resolver
# and configuration (so it sees the same indexes and local wheels as pip install). It keeps every
# current pin that still fits; pip-compile's options pass through to move them:
#
#   bash scripts/lock.sh                              # after editing dependencies in pyproject.toml
#   bash scripts/lock.sh --upgrade-package pytest     # move one package (NAME==VERSION works too)
#   bash scripts/lock.sh --upgrade                    # move everything to the newest that resolves
#
# Then run .ci/run and commit the lock with the change: the lock holds versions CI has passed.
# Needs the project's environment (bash scripts/install.sh): the package's metadata is built
# without isolation, against the environment's torch and setuptools.
#
#   bash scripts/lock.sh --check [PYTHON]             # fail if the lock predates pyproject's inputs
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements/lock.txt

# The inputs the lock was resolved from, as one hash: the dependency lists of pyproject.toml (as
# parsed, so comments and formatting do not count) and the requirement lines of lock.in.
inputs_hash() {
    "$1" - <<'EOF'
import hashlib, json, tomllib
with open("pyproject.toml", "rb") as f:
    pyproject = tomllib.load(f)
with open("requirements/lock.in") as f:
    extra = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
inputs = {
    "build-system": pyproject["build-system"]["requires"],
    "dependencies": pyproject["project"]["dependencies"],
    "optional-dependencies": pyproject["project"].get("optional-dependencies", {}),
    "lock.in": extra,
}
print(hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest())
EOF
}

if [ "${1-}" = --check ]; then
    want=$(inputs_hash "${2:-python3}")
    if ! grep -qx "# inputs-sha256: $want" "$LOCK"; then
        echo "lock.sh: $LOCK is stale (pyproject.toml's dependencies or requirements/lock.in changed): run bash scripts/lock.sh" >&2
        exit 1
    fi
    exit 0
fi

PY=.venv/bin/python
if ! [ -x "$PY" ] || ! "$PY" -c 'import piptools' 2>/dev/null; then
    echo "lock.sh: needs the project's environment with pip-tools: run bash scripts/install.sh first" >&2
    exit 1
fi
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" "$PY" -m piptools compile --quiet \
    --extra dev --allow-unsafe --strip-extras --no-build-isolation \
    --no-emit-index-url --no-emit-find-links --output-file "$LOCK" "$@" \
    pyproject.toml requirements/lock.in
# A local torch build (2.13.0+cpu from a find-links wheel) is locked as its public version: the
# reproducibility contract is torch==2.13.0, and pip still prefers the +cpu wheel where it lies.
sed -i -E 's/^torch==([0-9][0-9.]*)\+[A-Za-z0-9.]+$/torch==\1/' "$LOCK"
echo "# inputs-sha256: $(inputs_hash "$PY")" >> "$LOCK"
echo "lock.sh: wrote $LOCK; run .ci/run before committing it" >&2
