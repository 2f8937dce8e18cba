#!/usr/bin/env bash
# Read-only checks of the local NVIDIA GPU through biscale's NVML path, and a torch profile at the clocks as found.
#
#   bash scripts/measure_gpu.sh OUT_DIR [GPU_LABEL]       (GPU_LABEL: the profile's gpu column, default h100-sxm)
#
# Writes into OUT_DIR: log.txt, nvidia_smi_q.txt, gpu_status.json (`biscale gpu status --json`), gpu_watch.json
# (`biscale gpu watch --json`, 5 samples), metrics.txt (`biscale gpu export` scraped over HTTP), and profile.csv,
# profile.meta.json, conditions.json (scripts/profile_torch_gpu.py). Never changes clocks, power limits,
# persistence or compute mode: every command it runs only reads NVML. Needs PyTorch and transformers for the profile;
# PROFILE_ARGS overrides the profile's size (default: TP 1,2,4,8, 12 shapes per phase, 0.8 s windows).
set -u
out=${1:?usage: measure_gpu.sh OUT_DIR [GPU_LABEL]}
label=${2:-h100-sxm}
mkdir -p "$out"
exec > >(tee "$out/log.txt") 2>&1
py=${PYTHON:-python3}
biscale() { "$py" -c 'import sys; from biscale.cli.main import main; sys.exit(main(sys.argv[1:]))' "$@"; }
step() { echo "== $* ($(date -u +%H:%M:%S))"; }

step nvidia-smi
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu \
  --format=csv
nvidia-smi -q >"$out/nvidia_smi_q.txt"
"$py" -c 'import torch, transformers, pynvml; print("torch", torch.__version__, "transformers", transformers.__version__)'

step "biscale gpu status"
biscale gpu status --json >"$out/gpu_status.json"; echo "rc=$?"; cat "$out/gpu_status.json"; echo
step "biscale gpu watch"
biscale gpu watch --count 5 --interval-s 0.5 --json >"$out/gpu_watch.json"; echo "rc=$?"
step "biscale gpu export"
biscale gpu export --port 9466 --duration-s 6 & exporter=$!
sleep 4
"$py" -c 'import urllib.request; print(urllib.request.urlopen("http://127.0.0.1:9466/metrics", timeout=5).read().decode())' \
  >"$out/metrics.txt"; echo "rc=$?"
grep -v '^#' "$out/metrics.txt" | grep -i -E 'gpu|biscale' | head -20
wait "$exporter"

step "profile at the clocks as found"
# shellcheck disable=SC2086
"$py" scripts/profile_torch_gpu.py --gpu-label "$label" --out "$out" \
  ${PROFILE_ARGS:---tp 1,2,4,8 --shapes 12 --min-window-s 0.8}
echo "rc=$?"
step done
