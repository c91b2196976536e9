#!/usr/bin/env bash
# One-time set-up on a fresh machine: a virtual environment with lggseg and everything it needs.
# torch is pinned and installed first so that pip never resolves a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[setup] %s\n' "$*"; }
say "creating the virtual environment in .venv"
python3 -m venv .venv
. .venv/bin/activate
say "upgrading pip"
python -m pip install --quiet --upgrade pip
say "installing torch==2.13.0 (CPU wheel; this takes a minute or two)"
python -m pip install --quiet "torch==2.13.0"
say "installing lggseg with its extras onnx, serve, dicom, test, dev (a minute or two more)"
python -m pip install --quiet -e ".[onnx,serve,dicom,test,dev]" "torch==2.13.0"
# Browser tests drive Debian's Chromium (Playwright cannot download browsers here).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
  say "installing Debian's chromium for the browser tests"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed; browser tests will skip"
fi
say "done: activate with '. .venv/bin/activate'"
