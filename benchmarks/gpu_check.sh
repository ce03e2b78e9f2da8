#!/usr/bin/env bash
# The GPU checks of the throughput work, in one run of about 6 minutes on one CUDA GPU, with
# nothing downloaded: the GPU tests, the training step fp32 (TF32) vs bf16 in both memory
# layouts, and end to end vs model only (steady rates) on demo data at 256 px with the decoded
# cache and the GPU augmentation, fp32 and bf16 channels-last, then Pillow vs cache. The time
# limits come from the first H200 run (docs/performance.md); models.py and breakdown.py need
# a session of their own (about 2 minutes each at batch 128).
#
#     OUT=/tmp/gpu-logs bash benchmarks/gpu_check.sh      # from the repository root
#
# Needs fakedet's dependencies on that machine: the H200 image used on 2026-12-04 had PyTorch,
# timm and onnxruntime but not pydantic (nor pydantic-core, annotated-types, typing-inspection),
# which were installed from wheels before the script ran.
#
# Each step has its own time limit and the script goes on when one fails; every log lands in
# $OUT, with summary.txt listing each step's exit status and seconds.
set -u
OUT="${OUT:-gpu-check-logs}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
PYTHON="${PYTHON:-python3}"
SUMMARY="$OUT/summary.txt"
: >"$SUMMARY"

BUDGET=345  # seconds for the whole script: a step that could overrun it is skipped
step() {  # step NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log
    local name=$1 limit=$2
    shift 2
    if ((SECONDS + limit > BUDGET)); then
        echo "$name: skipped (would pass the ${BUDGET} s budget at ${SECONDS} s)" | tee -a "$SUMMARY"
        return
    fi
    local started=$SECONDS
    timeout --kill-after=5 "$limit" "$@" >"$OUT/$name.log" 2>&1
    local status=$?
    echo "$name: exit $status in $((SECONDS - started)) s (limit $limit s)" | tee -a "$SUMMARY"
}

"$PYTHON" - >"$OUT/machine.txt" 2>&1 <<'EOF'
import torch
from fakedet.advisor import detect_hardware, recommend
print(torch.__version__, torch.version.cuda, torch.cuda.get_device_name(0))
print("capability", torch.cuda.get_device_capability(0))
for mode in ("fast", "full"):
    print(mode, recommend(detect_hardware(), mode))
EOF
BATCH=$("$PYTHON" -c "from fakedet.advisor import detect_hardware, recommend; print(recommend(detect_hardware(), 'fast').batch_size)" 2>/dev/null || echo 256)
WORKERS=$("$PYTHON" -c "from fakedet.advisor import detect_hardware, recommend; print(recommend(detect_hardware(), 'fast').num_workers)" 2>/dev/null || echo 12)
echo "advisor: batch $BATCH, workers $WORKERS" | tee -a "$SUMMARY"

step pytest_gpu 80 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider --continue-on-collection-errors tests

# The training step alone, fp32 (TF32) vs bf16, NCHW vs channels-last, autotuner off and on.
step precision 75 "$PYTHON" benchmarks/precision.py --device cuda --batch "$BATCH" \
    --img-size 256 --steps 5 --rounds 3

DEMO="$OUT/demo"
step demo_data 45 "$PYTHON" -m fakedet demo-data "$DEMO" --num-images 600 --img-size 256
# End to end (the Trainer's epoch fed by the DataLoader) over model only (the same epoch fed
# from memory), steady rates (each epoch's first 2 batches left out): the decoded cache with
# the GPU augmentation, fp32 and bf16 channels-last, JPEGs decoded by nvJPEG, then Pillow vs
# cache with the workers' augmentation (skipped when the budget is spent).
DATA=(benchmarks/data.py --data "$DEMO" --batch-size "$BATCH" --batches 24 --skip 2 --repeats 2
    --workers "$WORKERS")
step data_gpu_augment 45 "$PYTHON" "${DATA[@]}" --decoders cache --gpu-augment
step data_gpu_augment_bf16_cl 45 "$PYTHON" "${DATA[@]}" --decoders cache --gpu-augment \
    --use-amp --channels-last
# nvJPEG (--gpu-decode): the demo re-saved as JPEG (in place), Pillow vs decoding on the GPU.
step data_gpu_decode 45 "$PYTHON" "${DATA[@]}" --jpeg --decoders pil device --gpu-augment
step data_cpu_augment 50 "$PYTHON" "${DATA[@]}" --decoders pil cache

rm -rf "$DEMO"  # the images and their cache: too large to bring back
echo "total: $SECONDS s" | tee -a "$SUMMARY"
