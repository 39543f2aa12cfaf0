#!/usr/bin/env bash
# Train (or continue) a 128² magnitude StyleGAN-2 prior on a CUDA machine that has python3 + torch
# but not this project's environment (the device machine of docs: a bare image with torch, scipy,
# h5py, skimage; no nilearn, no pip index). Run it from the repository root.
#
# Data (DATA):
#   synth-brain (default)     the varied synthetic brains (docs/DATA.md); needs
#                             .gpu/mni_template.npz: `python -m sgilo.pipeline.data.mni_sources
#                             .gpu/mni_template.npz` on a machine with the project (8 MB)
#   mni-train                 the 101 axial training slices of brain-t1-128; needs
#                             .gpu/mni_train_128.npy: mni_slices("train", 128) saved with np.save
#                             (read as a .npy source it gives exactly the `--data mni-train` images)
#   synth-mix                 synth-brain with the mni-train slices mixed in at REAL_FRACTION
#                             (default 0.25; `train-gan --real-fraction`): needs both files
# (MNI_TRAIN_NPY overrides the path of the .npy file.)
# Also needs .gpu/whl/*.whl: pydantic 2.14.4, pydantic_core 2.50.5, annotated-types 0.8.0,
# typing-inspection 0.4.5 (cp312 manylinux wheels, `pip download`), unless SKIP_WHEELS=1.
#
# Continuing a run: RESUME=1 with its checkpoint.pt in RUN (default .gpu/run), or FROM=a run folder
# of the repository (e.g. models/runs/brain-synth-128) whose checkpoint.pt is copied to RUN first.
# The architecture arguments below are the shipped 128² configuration. A resume keeps the run's
# batch size (BATCH, default 8) unless NEW_BATCH=1 (`--new-batch`: a committed CPU run at batch 8
# continued at the batch that fills a GPU, e.g. BATCH=128 NEW_BATCH=1; valid, not exact).
#
# Writes generator.pt, log.jsonl, the last sample grid and the training checkpoint (in 15 MB
# parts: cat checkpoint.pt.part-* > checkpoint.pt) to OUT, then (unless SCORE_STEPS=0) trains
# and copies score_block0.pt and score_block1.pt (SGILO's rounds 1 and 2), and (TIMING=1) times
# the solvers on the GPU. GAN_MINUTES bounds the GAN's training (wall clock).
set -euo pipefail
if [ "${SKIP_WHEELS:-0}" != 1 ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .gpu/whl/*.whl
fi
# the repository root is the package `sgilo` (pyproject.toml): import it through a link
PKG=${PKG:-/tmp/pkg}
mkdir -p "$PKG" && ln -sfn "$PWD" "$PKG/sgilo"
export PYTHONPATH=/tmp/site:$PKG PYTHONUNBUFFERED=1 SGILO_CACHE_DIR=${SGILO_CACHE_DIR:-/tmp/sgilo-cache}
RUN=${RUN:-.gpu/run}
OUT=${OUT:-/tmp/out}
DATA=${DATA:-synth-brain}
GAN_MINUTES=${GAN_MINUTES:-7}
SCORE_STEPS=${SCORE_STEPS:-4000}
DEVICE=${DEVICE:-cuda}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true
MNI_TRAIN_NPY=${MNI_TRAIN_NPY:-.gpu/mni_train_128.npy}
case "$DATA" in
    synth-brain) export SGILO_MNI_ARCHIVE=${SGILO_MNI_ARCHIVE:-.gpu/mni_template.npz}
                 sources=(--data synth-brain) ;;
    mni-train) sources=(--data "$MNI_TRAIN_NPY") ;;
    synth-mix) export SGILO_MNI_ARCHIVE=${SGILO_MNI_ARCHIVE:-.gpu/mni_template.npz}
               sources=(--data synth-brain --data "$MNI_TRAIN_NPY"
                        --real-fraction "${REAL_FRACTION:-0.25}") ;;
    *) echo "DATA: expected synth-brain, mni-train or synth-mix, got $DATA" >&2; exit 2 ;;
esac
if [ -n "${FROM:-}" ] && [ ! -e "$RUN/checkpoint.pt" ]; then
    mkdir -p "$RUN" && cp "$FROM/checkpoint.pt" "$RUN/checkpoint.pt"
    RESUME=1
fi
args=("${sources[@]}" --out "$RUN" --resolution 128 --style-dim 128
      --channel-base 512 --channel-max 128 --channel-min 16 --batch "${BATCH:-8}"
      --steps 100000000 --checkpoint-every "${CHECKPOINT_EVERY:-1000}"
      --max-minutes "$GAN_MINUTES" --device "$DEVICE")
[ "${RESUME:-0}" = 1 ] && args+=(--resume)
[ "${NEW_BATCH:-0}" = 1 ] && args+=(--new-batch)
[ -n "${COMPILE:-}" ] && args+=(--compile "$COMPILE")
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
# TIMING=1: seconds per slice of CSGM/ILO/SGILO with the shipped prior (docs/SPEED.md §5)
if [ "${TIMING:-0}" = 1 ]; then
    timeout "${TIMING_SECONDS:-120}" python3 -m sgilo.pipeline.research.device_timing \
        --images .gpu/mni_train_128.npy --out "$OUT/device_timing.json" --device "$DEVICE" || true
fi
ls -la "$OUT"
