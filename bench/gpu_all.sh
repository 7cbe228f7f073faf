#!/usr/bin/env bash
# The one prepared device run (H100/H200): the GPU path's figures in a single call.
#   1. NVDEC check: NVDEC windows vs PyAV windows on 30-s 720p and 270p H.264 (gpu_decode.py)
#   2. decode alone: PyAV processes vs NVDEC decoders vs both, clips/s      (gpu_decode.py)
#   3. the model alone: batch 1/8/32 per mode (bf16, channels-last, CUDA graphs, compile)
#   4. end to end: files -> embeddings through pemt.infer, clips/s and busy time per stage
#   (TRAIN=1 adds bench/gpu_train.py.)
# Before the call, on the development machine: bash bench/gpu_wheels.sh (PyAV and
# PyNvVideoCodec wheels for the device's Python 3.12 into .whl/, ~50 MB) and carry `.whl`.
# Each step has its own time limit so one slow step cannot take the whole lease; logs and
# results go to $OUT (or ./gpu-out by hand). About 7-8 minutes in all.
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PY:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"
  echo "NVDEC libraries:"; ls /usr/local/nvidia/lib64 2>/dev/null | grep -E "nvcuvid|nvidia-encode" ; ldconfig -p | grep -E "nvcuvid|nvidia-encode"
  $PY -c "import av; print('PyAV', av.__version__)"
  $PY -c "from pemt.media._select import nvdec_available; print('NVDEC available:', nvdec_available())"
  nproc
} 2>&1 | tee "$OUT/gpu.txt"
timeout "${DECODE_S:-200}" $PY bench/gpu_decode.py --out "$OUT" --clips "${CLIPS_N:-32}" 2>&1 | tee "$OUT/gpu_decode.log"
timeout "${MODEL_S:-200}" $PY bench/gpu_model.py --config paper --batches 1,8,32 --iters 10 \
  ${MODEL_MODES:+--modes "$MODEL_MODES"} 2>&1 | tee "$OUT/gpu_model.md"
for plan in ${E2E_PLANS:-nvdec:8+pyav:8 pyav:16}; do
  timeout "${E2E_S:-90}" $PY bench/gpu_e2e.py --clips /tmp/pemt-clips/720p.mp4 --n 48 --plan "$plan" \
    --batch 16 --out "$OUT/gpu_e2e.jsonl" 2>&1 | tail -3 | tee -a "$OUT/gpu_e2e.log"
done
if [ "${TRAIN:-0}" = 1 ]; then
  timeout "${TRAIN_S:-220}" $PY bench/gpu_train.py --config paper --batch 8 --steps 5 2>&1 | tee "$OUT/gpu_train.md"
fi
echo "--- summary"; grep -h "NVDEC check" "$OUT/gpu_decode.log" | cut -c1-300; grep -h "^| 720p\|^| 270p" "$OUT/gpu_decode.log" | cut -d'|' -f2-4
grep -h "^|" "$OUT/gpu_model.md" | tail -25; cat "$OUT/gpu_e2e.jsonl" 2>/dev/null
