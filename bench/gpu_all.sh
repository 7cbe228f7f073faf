#!/usr/bin/env bash
# The one prepared device run (H100/H200): GPU figures for BENCHMARKS.md in a single call.
#   model forward: paper, batch 32, eager fp32 / bf16 / CUDA graphs / torch.compile   (issue 4)
#   training: paper on 30-s clips, clips/s and peak memory with and without activation
#             checkpointing, largest batch per GPU                                      (issue 3)
# Each step has its own time limit so one slow step cannot take the whole lease; every log
# goes to $OUT (or ./gpu-out when run by hand).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
$PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())" | tee -a "$OUT/gpu.txt"
timeout "${MODEL_S:-300}" $PY bench/gpu_model.py --config paper --batch 32 --iters 10 \
  --modes "${MODEL_MODES:-eager fp32 (factored),eager fp32,eager bf16 autocast,CUDA graph bf16,torch.compile bf16}" \
  2>&1 | tee "$OUT/gpu_model.md"
timeout "${TRAIN_S:-220}" $PY bench/gpu_train.py --config paper --batch 8 --steps 5 \
  2>&1 | tee "$OUT/gpu_train.md"
