#!/usr/bin/env bash
# Train (or continue) the brain-t1-128 prior on a CUDA machine that has python3 + torch but not
# this project's environment (the device machine of docs: a bare image with torch, h5py, skimage).
#
# Needs, in the repository root (ignored by git, see models/weights/PROVENANCE.md):
#   .gpu/whl/*.whl            pydantic 2.14.4, pydantic_core 2.50.5, annotated-types 0.8.0,
#                             typing-inspection 0.4.5 (cp312 manylinux wheels, `pip download`)
#   .gpu/mni_train_128.npy    mni_slices("train", 128) saved with np.save: read as a .npy source
#                             it gives exactly the `--data mni-train` images (max diff 6e-8)
#   .gpu/run/checkpoint.pt    optional: a run to continue (RESUME=1; same batch size)
# Writes RUN=.gpu/run and copies generator.pt, log.jsonl, the last sample grid and the training
# checkpoint (in 15 MB parts: cat checkpoint.pt.part-* > checkpoint.pt) to $OUT, then (unless
# SCORE_STEPS=0) trains and copies score_block0.pt and score_block1.pt (SGILO's rounds 1 and 2), and (TIMING=1) times the solvers on the GPU.
set -euo pipefail
if [ "${SKIP_WHEELS:-0}" != 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/whl/*.whl
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 SGILO_CACHE_DIR=/tmp/sgilo-cache
RUN=${RUN:-.gpu/run}
OUT=${OUT:-/tmp/out}
GAN_MINUTES=${GAN_MINUTES:-7}
SCORE_STEPS=${SCORE_STEPS:-4000}
DEVICE=${DEVICE:-cuda}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
args=(--data .gpu/mni_train_128.npy --out "$RUN" --resolution 128 --style-dim 128
      --channel-base 512 --channel-max 128 --channel-min 16 --batch "${BATCH:-8}"
      --steps 1000000 --checkpoint-every 1000 --max-minutes "$GAN_MINUTES" --device "$DEVICE")
[ "${RESUME:-0}" = 1 ] && args+=(--resume)
python3 -m sgilo.flows.cli train-gan "${args[@]}"
# the GAN's outputs first: a later step that fails or runs out of time loses nothing
mkdir -p "$OUT"
cp "$RUN/generator.pt" "$RUN/log.jsonl" "$OUT/"
cp "$(ls "$RUN"/samples/*.png | tail -1)" "$OUT/last_samples.png"
split -b 15M "$RUN/checkpoint.pt" "$OUT/checkpoint.pt.part-"
if [ "$SCORE_STEPS" -gt 0 ]; then
    for space in 1 0; do
        python3 -m sgilo.flows.cli train-score --generator "$RUN/generator.pt" --space "$space" \
            --out "$RUN/score-block$space" --steps "$SCORE_STEPS" --batch 128 --device "$DEVICE"
        cp "$RUN/score-block$space/score_model.pt" "$OUT/score_block$space.pt"
    done
fi
# TIMING=1: seconds per slice of CSGM/ILO/SGILO with the shipped prior (docs/SPEED.md §4)
if [ "${TIMING:-0}" = 1 ]; then
    timeout "${TIMING_SECONDS:-120}" python3 -m sgilo.pipeline.research.device_timing \
        --images .gpu/mni_train_128.npy --out "$OUT/device_timing.json" --device "$DEVICE" || true
fi
ls -la "$OUT"
