#!/usr/bin/env bash
# The GPU check of the encode stage (issue 20): on a machine with CUDA, the default video
# encoder (EfficientNet-Lite0) through the project's paths (EncodeModality, the post-align
# stage) against a raw torch forward of the same model, batch and device, in bf16 and fp16
# autocast, with the batch size chosen from the GPU's free memory (bench_encoders.py
# --batch auto). It prints the device, the date and bench_encoders.py's tables; the ratios
# "EncodeModality / raw forward" and "post-align stage / raw forward" are the figures (goal
# >= 0.9). On a machine without CUDA it says so in one sentence and exits 0.
#
#   benchmarks/gpu_check.sh [extra bench_encoders.py options, e.g. --repeat 5]
#
# PY (default .venv/bin/python, else python3) is the interpreter with mmalign[encoders].
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
then
    echo "gpu_check: no CUDA device is available to torch on this machine, so there is nothing to measure (run it where nvidia-smi lists a GPU)."
    exit 0
fi

echo "gpu_check $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname)"
"$PY" - <<'EOF'
import torch
i = torch.cuda.current_device()
free, total = torch.cuda.mem_get_info(i)
print(f"device cuda:{i} {torch.cuda.get_device_name(i)}, {free / 2**30:.1f} of "
      f"{total / 2**30:.1f} GiB free, torch {torch.__version__}, CUDA {torch.version.cuda}, "
      f"bf16 {'supported' if torch.cuda.is_bf16_supported() else 'not supported'}")
EOF

precisions=(fp16)
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_bf16_supported() else 1)'; then
    precisions=(bf16 fp16)
fi
for precision in "${precisions[@]}"; do
    echo "== precision $precision"
    "$PY" benchmarks/bench_encoders.py --device cuda --precision "$precision" --batch auto \
        --frames 4096 --small 1024 --bucket 300 --repeat 3 "$@"
done
