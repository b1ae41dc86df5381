#!/usr/bin/env bash
# One prepared GPU run for issue 19: install what a bare CUDA image lacks from wheels carried
# beside the repository (.whl/), then
#   1. bench/gpu_serve.py   the service path vs plain diffusers (SD1.5 single file, Turbo-style,
#                           SDXL), about 4-5 minutes under its --budget-s
#   3. bench/gpu_train.py --speed-only   UNet-stage it/s: per-step reads vs optimized vs
#                           compiled, about 2-3 minutes
# Results land in $OUT (gpu_serve.json, gpu_train_speed.json, logs, nvidia-smi.txt): at most 8
# files, as the device tool returns them. The 128-px training recipe is a separate,
# 10-minute call: python3 bench/gpu_train.py --size 128 --budget-s 540 --out /tmp/sd128
#
# Check it on a CPU machine (dry runs, the venv's packages): SKIP_WHEELS=1 PYTHON=.venv/bin/python
#   OUT=/tmp/x bash bench/gpu_all.sh
# Here (a machine with pip and the package index), once:
#   bash bench/gpu_all.sh --fetch-wheels        # writes .whl/ (git-ignored, ~17 MB)
# On the lent GPU machine (device tool):
#   run(command="bash bench/gpu_all.sh", carry=[".whl"], timeout_s=540)
set -uo pipefail
cd "$(dirname "$0")/.."

# What the device image lacks (it has torch, transformers, huggingface-hub, safetensors,
# numpy, pillow, tqdm, typer, scikit-image, timm): versions pinned to the project's venv.
WHEELS=(
  diffusers==0.42.1 importlib-metadata==10.2.0 lazy-importer==0.1.0
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  typing-extensions==4.16.0 pydantic-settings==2.16.3 python-dotenv==1.2.4
  sqlalchemy==2.1.9 sqlmodel==0.0.50 greenlet==3.5.6
  open-clip-torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
)

if [ "${1:-}" = "--fetch-wheels" ]; then
  PY=${PYTHON:-.venv/bin/python}
  exec "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}"
fi

OUT=${OUT:-/tmp/gpu-all-out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PY=${PYTHON:-python3}
if [ -z "${SKIP_WHEELS:-}" ] && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || { echo "wheel install failed"; exit 1; }
  export PYTHONPATH=/tmp/site:$PWD
else
  echo "no wheels installed (.whl/ missing or SKIP_WHEELS set): using the packages present"
  export PYTHONPATH=$PWD
fi
(nvidia-smi; "$PY" -c "import torch, diffusers; print(torch.__version__, diffusers.__version__)") \
  >"$OUT/nvidia-smi.txt" 2>&1

# Without CUDA (checking this script on a CPU machine) both benches take their dry runs.
DRY=()
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || DRY=(--dry-run)

start=$(date +%s)
timeout 330 "$PY" bench/gpu_serve.py "${DRY[@]}" --arch sd15,turbo,sdxl --budget-s 240 \
  --json-out "$OUT/gpu_serve.json" 2>&1 | tee "$OUT/gpu_serve.log" | grep -v "it/s]" | tail -n 60
echo "gpu_serve: $(( $(date +%s) - start )) s"

start=$(date +%s)
OUT="" timeout 170 "$PY" bench/gpu_train.py "${DRY[@]}" --speed-only --n 2000 --speed-steps 300 \
  --compile-modes default,reduce-overhead --out /tmp/sd-speed \
  --json-out "$OUT/gpu_train_speed.json" 2>&1 | tee "$OUT/gpu_train.log" | tail -n 40
echo "gpu_train speed: $(( $(date +%s) - start )) s"
ls -la "$OUT"
