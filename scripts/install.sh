#!/usr/bin/env bash
# Installs veritrain, its test tools and the repro profile's fixed-order kernels (a torch C++
# extension, about 40 s with gcc) into a Python 3.11 virtual environment, at exactly the versions
# of requirements/lock.txt (scripts/lock.sh writes it).
#
# The environment is the active virtual environment if there is one, else the project's own .venv,
# created here (a stock Debian/Ubuntu python3 refuses pip installs: PEP 668). Either way .venv is
# left pointing at it (a symlink to the active one), so .venv/bin/veritrain and .venv/bin/python
# are this install's whatever the shell that runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements/lock.txt

die() { echo "install.sh: $*" >&2; exit 1; }
is_py311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }
in_venv() { "$1" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; }

active=""
if command -v python3 >/dev/null && in_venv python3; then
    active=$(python3 -c 'import sys; print(sys.prefix)')
elif [ -n "${VIRTUAL_ENV-}" ] && [ -x "$VIRTUAL_ENV/bin/python" ]; then
    active=$VIRTUAL_ENV
fi

if [ -n "$active" ]; then
    PY=$active/bin/python
    is_py311 "$PY" || die "the active virtual environment ($active) is not Python 3.11, which veritrain needs"
    if [ -L .venv ] || ! [ -e .venv ]; then
        ln -sfn "$active" .venv
    elif [ "$(cd .venv && pwd -P)" != "$(cd "$active" && pwd -P)" ]; then
        die ".venv is a virtual environment other than the active one ($active): deactivate to use .venv, or remove .venv"
    fi
else
    # A .venv left by an earlier run (or the link to a venv active then) is reused while it works.
    if ! { [ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1; }; then
        base=""
        for candidate in python3 python3.11; do
            if command -v "$candidate" >/dev/null && is_py311 "$candidate"; then base=$candidate; break; fi
        done
        [ -n "$base" ] || die "needs Python 3.11 to create .venv, and neither python3 ($(python3 -V 2>&1)) nor python3.11 is: install python3.11"
        if ! "$base" -c 'import ensurepip, venv' 2>/dev/null; then
            # Debian and Ubuntu ship venv's pip bootstrap in a separate package.
            if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
                echo "install.sh: installing python3.11-venv (python3 -m venv needs it)" >&2
                { apt-get install -y -qq python3.11-venv || { apt-get update -qq && apt-get install -y -qq python3.11-venv; }; } >/dev/null \
                    || die "could not install python3.11-venv: apt-get install python3.11-venv"
            else
                die "$base cannot create a virtual environment: sudo apt-get install python3.11-venv"
            fi
        fi
        rm -rf .venv
        echo "install.sh: creating .venv with $base" >&2
        "$base" -m venv .venv
    fi
    PY=.venv/bin/python
    is_py311 "$PY" || die ".venv is not Python 3.11: remove it and rerun"
fi

# Every install below is constrained to the lock; pip first, then torch: the kernels build against
# it without build isolation (an isolated build would fetch a second torch). The torch pin is part
# of the reproducibility contract.
"$PY" -m pip --version >/dev/null 2>&1 || "$PY" -m ensurepip -q  # venvs made by uv have no pip
"$PY" -m pip install -q -c "$LOCK" pip
"$PY" -m pip install -q -c "$LOCK" "torch==2.13.0" setuptools
echo "install.sh: installing veritrain and compiling the repro kernels (about 40 s)..." >&2
"$PY" -m pip install -q -c "$LOCK" --only-binary=pyyaml --no-build-isolation -e '.[dev]'
# merkly's metadata pins pydantic<2 although its code runs on pydantic 2; installing it without
# its declared dependencies keeps FastAPI on pydantic 2 (see docs/decisions.md). It goes last: pip
# would report its declared pins as conflicts after any install that followed it.
"$PY" -m pip install -q --no-deps -r requirements/no-deps.txt
"$PY" -c "from protocol.repro.backend import get_cpu_kernels as k; print('repro kernels:', k().active_isa(), 'of', ', '.join(k().available_isas()))"
# A dependency added to pyproject.toml without re-locking was just installed unpinned: say so.
bash scripts/lock.sh --check "$PY"
echo "install.sh: installed into $(cd .venv && pwd -P) (.venv/bin/veritrain, .venv/bin/python)" >&2
