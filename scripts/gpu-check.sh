#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and its driver (see issue 5, "GPUs"):
# starts the embedded server, creates a session with one GPU, and runs
# torch.cuda.is_available() and a small matmul in it, printing the device's name; then
# checks that a session without a GPU sees none. Exits non-zero on any failure.
#
#   scripts/gpu-check.sh            # PyTorch from BAI_GPU_CHECK_PYTHON (default /usr/bin/python3)
#
# The sandbox sees the host's /usr read-only, so the interpreter and its torch must live
# under /usr (a system or /usr/local install; a venv elsewhere is not visible inside).
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${BAI_GPU_CHECK_PYTHON:-/usr/bin/python3}
say() { printf '\n== %s\n' "$*"; }

say "host"
nvidia-smi --query-gpu=index,name,uuid,memory.total --format=csv,noheader
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available:", torch.cuda.is_available())'

[ -x .venv/bin/bai ] || ./dev setup >/dev/null
DATA=$(mktemp -d /tmp/bai-gpu-check-XXXXXX)
chmod 711 "$DATA"
PORT=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BAI_AGENT_RUNNER_PYTHON="$PY" .venv/bin/bai server --data-dir "$DATA" --port "$PORT" >"$DATA/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null; wait $SERVER 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do [ -f "$DATA/client.env" ] && break; sleep 0.1; done
# shellcheck disable=SC1091
source "$DATA/client.env"
export BACKEND_ENDPOINT BACKEND_ACCESS_KEY BACKEND_SECRET_KEY

say "the agent's slots"
.venv/bin/bai admin agent list

say "a session with one GPU"
.venv/bin/bai run python -r cuda.device=1 -r mem=8g --stats -c '
import os, torch
assert torch.cuda.is_available(), "CUDA is not available in the session"
print("visible:", os.environ.get("CUDA_VISIBLE_DEVICES"), "count:", torch.cuda.device_count())
print("device:", torch.cuda.get_device_name(0))
a = torch.randn(1024, 1024, device="cuda")
b = a @ a
torch.cuda.synchronize()
print("matmul:", tuple(b.shape), "on", b.device, "checksum %.3f" % float(b.float().abs().mean()))
'

say "a session without a GPU"
.venv/bin/bai run python -c '
import os, torch
nodes = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
print("nodes:", nodes, "cuda available:", torch.cuda.is_available())
assert not torch.cuda.is_available() and not [n for n in nodes if n[6:].isdigit()]
'
say "GPU check passed"
