#!/usr/bin/env bash
# Install what is needed and start the quickstart hub on http://127.0.0.1:8000
# (examples/quickstart: SQLite, no cloud, local-process notebooks; container templates appear
# when a Docker engine and the notebook image are there). Ctrl-C stops it. Safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SUITE_VENV:-/opt/jupyterhub-multiplespawner/venv}"
bash "$here/scripts/install.sh" run
export PATH="$venv/bin:$PATH"
state="${QUICKSTART_STATE:-/var/lib/jupyterhub-multiplespawner/quickstart}"
mkdir -p "$state" && chmod 700 "$state"
cd "$state"
exec "$venv/bin/jupyterhub" -f "$here/examples/quickstart/jupyterhub_config.py" "$@"
