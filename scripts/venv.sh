#!/usr/bin/env bash
# Creates (once) and prints the path of the project's virtual environment.
#
# The environment is cached under ~/.cache/llmservice/venv/<key>, where the key hashes the
# Python version and requirements/lock.txt (which pins everything pyproject.toml asks for): a
# fresh clone with the same pins reuses it (torch alone is several GB), a change of pins builds
# a new one. The project itself is installed in editable mode (seconds) whenever another
# checkout calls, so the cached environment always points at the checkout that called it.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "llmservice needs Python >= 3.11 (found $("$python" --version 2>&1))" >&2; exit 1; }
key=$( { "$python" --version; cat "$root/requirements/lock.txt"; } \
  | sha256sum | cut -c1-16)
cache=${LLMSERVICE_CACHE:-$HOME/.cache/llmservice}
venv=$cache/venv/$key
mkdir -p "$cache/venv"
# Concurrent callers (parallel make jobs, several shells) wait for one builder instead of
# deleting each other's half-built environment.
exec 9>"$venv.lock"
flock 9
if [ ! -f "$venv/.complete" ]; then
  echo "creating the virtual environment $venv (first run: downloads torch, a few minutes)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade "pip==26.3" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check -c "$root/requirements/lock.txt" \
    -r "$root/requirements/lock.txt" >&2
  touch "$venv/.complete"
fi
# The editable install points the environment at one checkout (and carries pyproject.toml's
# entry points): redo it when another checkout calls or pyproject.toml changed.
stamp="$root $(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$venv/.checkout" 2>/dev/null)" != "$stamp" ]; then
  log=$(mktemp)
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation \
    -e "$root" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
  echo "$stamp" >"$venv/.checkout"
fi
ln -sfn "$venv" "$root/.venv"
echo "$venv"
