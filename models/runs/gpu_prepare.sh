#!/usr/bin/env bash
# Fill .gpu/ (ignored by git) with what models/runs/train_gpu.sh needs on the bare CUDA machine,
# run here from the repository root, where pip can download and the project is installed:
#   .gpu/whl/            cp312 manylinux wheels of pydantic and its needs, at the versions of
#                        requirements.lock (the CUDA image has torch, numpy, scipy but no pydantic)
#   .gpu/mni_template.npz  nilearn's MNI152 arrays for synth-brain (pipeline/data/mni_sources.py)
#   .gpu/mni_train_128.npy the mni-train images, for DATA=mni-train or synth-mix and TIMING=1
# Then, on the device: carry .gpu and run e.g.
#   FROM=models/runs/brain-synth-128 BATCH=128 NEW_BATCH=1 GAN_MINUTES=9 SCORE_STEPS=0 \
#       OUT=$OUT bash models/runs/train_gpu.sh
set -euo pipefail
PY=${PY:-.venv/bin/python}
mkdir -p .gpu/whl
pin() { grep -i -E "^$1==" requirements.lock | head -1; }
for name in pydantic pydantic_core annotated-types typing-inspection typing_extensions; do
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .gpu/whl "$(pin "$name")"
done
"$PY" -m sgilo.pipeline.data.mni_sources .gpu/mni_template.npz
"$PY" -c "import numpy as np; from sgilo.pipeline.data.mni import mni_slices
np.save('.gpu/mni_train_128.npy', mni_slices('train', 128).astype(np.float32))"
du -sh .gpu/*
