#!/usr/bin/env bash
# Creates (once) the project's virtual environment and prints its path: <checkout>/.venv.
#
# The dependencies live in a shared environment cached under ~/.cache/llmservice/venv/<key>,
# where the key hashes the Python version and requirements/lock.txt (which pins everything
# pyproject.toml asks for): a fresh clone with the same pins reuses it (torch alone is several
# GB), a change of pins builds a new one. Each checkout gets a small environment of its own at
# .venv that sees the shared one's packages (a .pth file) and holds this checkout's editable
# install and entry points, so two checkouts never re-point each other's `import llmservice`.
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
# Environments of older versions of this script held one checkout's editable install: it would
# shadow every other checkout's through the .pth files the overlays read.
if [ -f "$venv/.checkout" ]; then
  "$venv/bin/pip" uninstall -q -y --disable-pip-version-check llmservice >&2 || true
  rm -f "$venv/.checkout"
fi
overlay=$root/.venv
[ -L "$overlay" ] && rm "$overlay"  # older versions linked .venv to the shared environment
stamp="$venv $(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$overlay/.stamp" 2>/dev/null)" != "$stamp" ]; then
  rm -rf "$overlay"
  "$venv/bin/python" -P -m venv --without-pip "$overlay"
  purelib='import sysconfig; print(sysconfig.get_paths()["purelib"])'
  shared_site=$("$venv/bin/python" -P -c "$purelib")
  # addsitedir (not a bare path) so the shared environment's own .pth files apply too.
  echo "import site; site.addsitedir('$shared_site')" \
    >"$("$overlay/bin/python" -P -c "$purelib")/_llmservice_shared_env.pth"
  log=$(mktemp)
  "$overlay/bin/python" -P -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation -e "$root" >"$log" 2>&1 || { cat "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
  # The shared environment's tools (pytest, ruff, mypy, kopf, ...): Python scripts run under
  # this environment's interpreter, so they import this checkout; native binaries are linked.
  for tool in "$venv"/bin/*; do
    name=$(basename "$tool")
    [ -e "$overlay/bin/$name" ] && continue
    case $name in activate* | Activate* | python*) continue ;; esac
    if head -c 2 "$tool" | grep -q '#!'; then
      printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$overlay/bin/python" "$tool" >"$overlay/bin/$name"
      chmod +x "$overlay/bin/$name"
    else
      ln -s "$tool" "$overlay/bin/$name"
    fi
  done
  echo "$stamp" >"$overlay/.stamp"
fi
echo "$overlay"
