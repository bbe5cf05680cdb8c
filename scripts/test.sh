#!/usr/bin/env bash
# Install everything the tests need (apt, npm, pip, locally built images), then run the whole
# suite: unit, integration (real slapd, sshd, dockerd, nginx, JupyterHub) and e2e (Chromium).
# Extra arguments go to pytest. Safe to run again.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
venv="${SUITE_VENV:-/opt/jupyterhub-multiplespawner/venv}"
cd "$here"
bash scripts/install.sh test
echo "== building the container images (cached by content hash)"
"$venv/bin/python" -m images build notebook ssh-machine
echo "== running the test suite"
exec "$venv/bin/python" -m pytest "$@"
