"""An out-of-distribution (OOD) image set: offline 2-D magnitude slices no shipped prior was
trained on, in named groups, for ``sgilo bench --suite ood``.

The shipped MRI prior ``brain-t1-128`` was trained on the axial *training* slices of one
skull-stripped T1 template (:mod:`sgilo.pipeline.data.mni`: z = 12…148 at least 6 mm from the
validation bands z = 86…93 and 108…115). Every group below is something else — another plane,
another contrast, another scanner's image, another body part — except ``mni-axial-validation``,
the held-out axial slices of the training template, which gives the in-domain reference in the
same run. Sources (all ship inside wheels pinned in requirements.lock; nothing is downloaded,
no network is touched):

``mni-axial-validation`` (in domain)
    nilearn's MNI152 T1 template, axial validation slices z = 89 and 112 (MNI +17, +40 mm), as
    :func:`sgilo.pipeline.data.mni.mni_slices` makes them (divided by the volume maximum).
``mni-coronal``, ``mni-sagittal``
    the same template (``nilearn.datasets.load_mni152_template``) resliced: coronal planes
    y = 116 and 150 (MNI −18 and +16 mm: thalami and ventricles; frontal horns) shown with
    superior at the top and the patient's right on the left; sagittal planes x = 98 and 70
    (MNI 0 mm, the midline; −28 mm, through the left insula) with superior at the top and
    anterior on the left. No plane but axial was ever shown to the prior.
``synthetic-t2``, ``synthetic-pd``
    contrasts the prior never saw, built from nilearn's grey- and white-matter probability maps
    of the same template (``load_mni152_gm_template``, ``load_mni152_wm_template``) and a CSF
    map ``p_csf = clip(mask − p_gm − p_wm, 0, 1)`` inside nilearn's brain mask
    (``load_mni152_brain_mask``; nilearn ships no CSF map offline), at the validation slices
    z = 89 and 112:
    ``I = w_csf p_csf + w_gm p_gm + w_wm p_wm`` with (w_csf, w_gm, w_wm) = (1.0, 0.5, 0.3) for
    T2-like (CSF bright, white matter darker than grey) and (1.0, 0.85, 0.75) for PD-like
    (little grey/white contrast, grey above white, CSF bright).
``pydicom-mr``
    the real MR images bundled in the pydicom wheel that the project's DICOM reader decodes
    (:mod:`sgilo.pipeline.data.dicom_examples`): ``MR_small.dcm`` (64×64) and
    ``examples_overlay.dcm`` (300×484).
``nibabel-mr``
    the real MR volumes of nibabel's ``tests/data``: ``anatomical.nii`` (33×41×25 at 2 mm, a
    T1-weighted head) axial slice 12, and ``example4d.nii.gz`` (128×96×24×2, a T2*-weighted
    EPI) volume 0, axial slice 12; read with :func:`sgilo.pipeline.io.nifti.read_nifti_volumes`
    (RAS+, display orientation) and resampled to square pixels.
``non-brain``
    two slices of a synthetic abdomen-like phantom (:func:`body_phantom`, defined here: body
    outline with a subcutaneous fat layer, muscle, liver, spleen or kidneys, vertebra with
    marrow, aorta, a smooth intensity bias and fine tissue texture from a fixed seed). Why a
    phantom and not a photograph: the question is how the methods behave on MR-like data of
    another body part (the case an abdominal scan raises), and no abdominal MR image ships in
    any locked wheel; a photograph (scikit-image's ``camera``) would test something no user
    reconstructs. The texture and bias keep it from being piecewise constant, which would favour
    TV unduly.

Every image except the in-domain group goes through the training-data rule
:func:`sgilo.pipeline.data.training.prepare_image` (zero-pad to a centred square, resize with
anti-aliasing to ``size``, divide by the image's 99.5th percentile, clip to [0, 1]), so all share
the intensity convention of the images the prior was trained on. Everything is deterministic.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sgilo.pipeline.data import mni

__all__ = [
    "CONTRASTS",
    "GROUPS",
    "IN_DOMAIN",
    "OODGroup",
    "body_phantom",
    "ood_group",
    "ood_groups",
]

#: the group that is the prior's own domain (held-out axial slices of the training template)
IN_DOMAIN = "mni-axial-validation"
#: axial indices of the in-domain and synthetic-contrast slices (both in the validation bands)
AXIAL_Z: tuple[int, ...] = (89, 112)
CORONAL_Y: tuple[int, ...] = (116, 150)
SAGITTAL_X: tuple[int, ...] = (98, 70)
#: tissue weights (CSF, GM, WM) of the synthetic contrasts
CONTRASTS: dict[str, tuple[float, float, float]] = {
    "synthetic-t2": (1.0, 0.5, 0.3),
    "synthetic-pd": (1.0, 0.85, 0.75),
}
#: the slice of each nibabel test volume (axial display index)
NIBABEL_FILES: tuple[tuple[str, int], ...] = (("anatomical.nii", 12), ("example4d.nii.gz", 12))
PYDICOM_FILES: tuple[str, ...] = ("MR_small.dcm", "examples_overlay.dcm")


@dataclass(frozen=True)
class OODGroup:
    """One named group: ``images`` float32 ``(N, size, size)`` in [0, 1], a name per slice
    (``labels``), the source in words and whether it is the prior's own domain."""

    name: str
    images: np.ndarray
    labels: tuple[str, ...]
    source: str
    in_domain: bool = False


# ---------------------------------------------------------------------- template-derived
def _prepare(image: np.ndarray, size: int) -> np.ndarray:
    from sgilo.pipeline.data.training import prepare_image

    out = prepare_image(image, size)
    if out is None:  # pragma: no cover - every source slice here has signal
        raise ValueError("an all-zero OOD source slice")
    return out


def _in_domain(size: int) -> OODGroup:
    rows = [mni.mni_slice_z("validation").index(z) for z in AXIAL_Z]
    images = mni.mni_slices("validation", size=size)[rows]
    labels = tuple(f"axial z={z}" for z in AXIAL_Z)
    return OODGroup(IN_DOMAIN, images, labels, "nilearn MNI152 T1, validation slices", True)


def _coronal(size: int) -> OODGroup:
    volume, _ = mni.mni_volume()
    # (X, Z) plane → rows: superior first; columns: patient's right first
    images = [_prepare(np.flipud(np.fliplr(volume[:, y, :].T)), size) for y in CORONAL_Y]
    labels = tuple(f"coronal y={y}" for y in CORONAL_Y)
    return OODGroup("mni-coronal", np.stack(images), labels, "nilearn MNI152 T1, coronal")


def _sagittal(size: int) -> OODGroup:
    volume, _ = mni.mni_volume()
    # (Y, Z) plane → rows: superior first; columns: anterior first
    images = [_prepare(np.flipud(np.fliplr(volume[x, :, :].T)), size) for x in SAGITTAL_X]
    labels = tuple(f"sagittal x={x}" for x in SAGITTAL_X)
    return OODGroup("mni-sagittal", np.stack(images), labels, "nilearn MNI152 T1, sagittal")


@functools.lru_cache(maxsize=1)
def _tissue_maps() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """nilearn's (CSF, GM, WM) maps of the MNI152 template, float64 ``(197, 233, 189)``, each in
    [0, 1]; CSF = clip(brain mask − GM − WM, 0, 1) (module docstring)."""
    from sgilo.pipeline.data.mni_sources import mni_arrays

    arrays = mni_arrays()
    gm, wm, mask = arrays.gm, arrays.wm, arrays.mask
    csf = np.clip(mask - gm - wm, 0.0, 1.0)
    return csf, np.clip(gm, 0.0, 1.0), np.clip(wm, 0.0, 1.0)


def _contrast(name: str, size: int) -> OODGroup:
    maps = _tissue_maps()
    volume = sum(w * m for w, m in zip(CONTRASTS[name], maps, strict=True))
    images = [_prepare(mni.axial_display_slice(volume, z), size) for z in AXIAL_Z]
    labels = tuple(f"axial z={z}" for z in AXIAL_Z)
    w = CONTRASTS[name]
    source = f"nilearn MNI152 tissue maps, CSF/GM/WM weights {w[0]:g}/{w[1]:g}/{w[2]:g}"
    return OODGroup(name, np.stack(images), labels, source)


# ---------------------------------------------------------------------- real MR in wheels
def _pydicom(size: int) -> OODGroup:
    from sgilo.pipeline.data.dicom_examples import bundled_test_files_dir
    from sgilo.pipeline.io.dicom import read_dicom

    root = bundled_test_files_dir()
    images = [_prepare(read_dicom(root / name)[0].data[0], size) for name in PYDICOM_FILES]
    return OODGroup("pydicom-mr", np.stack(images), PYDICOM_FILES, "pydicom test_files (MR)")


def nibabel_data_dir() -> Path:
    """nibabel's bundled ``tests/data`` directory."""
    import nibabel

    return Path(nibabel.__file__).parent / "tests" / "data"


def _nibabel(size: int) -> OODGroup:
    from skimage.transform import resize

    from sgilo.pipeline.io.nifti import read_nifti_volumes

    images, labels = [], []
    for name, k in NIBABEL_FILES:
        volume = read_nifti_volumes(nibabel_data_dir() / name)[0]
        image = volume.data[k].astype(np.float64)
        dy, dx = float(volume.zooms[1]), float(volume.zooms[0])  # row, column spacing (mm)
        if not np.isclose(dy, dx, rtol=1e-3):  # square pixels of the smaller spacing
            d = min(dy, dx)
            shape = (round(image.shape[0] * dy / d), round(image.shape[1] * dx / d))
            image = resize(image, shape, anti_aliasing=True, preserve_range=True)
        images.append(_prepare(np.clip(image, 0.0, None), size))
        labels.append(f"{name} axial {k}")
    return OODGroup("nibabel-mr", np.stack(images), tuple(labels), "nibabel tests/data")


# ---------------------------------------------------------------------- non-brain
def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float):
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def body_phantom(level: int, size: int = 256, seed: int = 0) -> np.ndarray:
    """A synthetic axial abdomen-like slice, float64 ``(size, size)``, non-negative.

    Coordinates ``u = (col − c)/c``, ``v = (row − c)/c`` in [−1, 1]. Ellipses (centre, radii in
    those units) set tissue intensities (T1-like): fat 1.0, muscle 0.35, bowel 0.3, liver
    0.55, spleen 0.45, kidney cortex 0.6 / medulla 0.4, vertebral marrow 0.7 in a cortical-bone
    rim 0.05, aorta 0.15; ``level`` 0 is a liver/spleen level, 1 a kidney level. The image is
    multiplied by a smooth bias ``1 + 0.15 v − 0.1 u²`` and by ``1 + 0.04 t`` with ``t``
    unit-variance white noise from ``seed`` blurred by a Gaussian of σ = 1.5 pixels (texture).
    """
    from scipy.ndimage import gaussian_filter

    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    v, u = (yy - c) / c, (xx - c) / c
    img = np.zeros((size, size))
    img[_ellipse(v, u, 0.05, 0.0, 0.62, 0.88)] = 1.0  # subcutaneous fat
    img[_ellipse(v, u, 0.05, 0.0, 0.55, 0.80)] = 0.35  # muscle wall
    inner = _ellipse(v, u, 0.02, 0.0, 0.48, 0.72)
    img[inner] = 0.3  # bowel / mixed
    if level == 0:
        img[inner & _ellipse(v, u, -0.05, -0.3, 0.35, 0.4)] = 0.55  # liver (patient's right)
        img[inner & _ellipse(v, u, 0.05, 0.5, 0.2, 0.15)] = 0.45  # spleen
    else:
        for side in (-1, 1):
            img[_ellipse(v, u, 0.25, 0.3 * side, 0.13, 0.09)] = 0.6  # kidney cortex
            img[_ellipse(v, u, 0.25, 0.3 * side, 0.07, 0.045)] = 0.4  # medulla
    img[_ellipse(v, u, 0.35, 0.0, 0.12, 0.12)] = 0.05  # cortical bone
    img[_ellipse(v, u, 0.35, 0.0, 0.1, 0.1)] = 0.7  # marrow
    img[_ellipse(v, u, 0.12, -0.06, 0.05, 0.05)] = 0.15  # aorta
    for side in (-1, 1):  # paraspinal muscles
        img[_ellipse(v, u, 0.42, 0.2 * side, 0.09, 0.12)] = 0.35
    texture = gaussian_filter(np.random.default_rng(seed + level).standard_normal(img.shape), 1.5)
    texture /= texture.std()
    return img * (1.0 + 0.15 * v - 0.1 * u**2) * (1.0 + 0.04 * texture)


def _non_brain(size: int) -> OODGroup:
    images = [_prepare(body_phantom(level), size) for level in (0, 1)]
    labels = ("abdomen phantom, liver level", "abdomen phantom, kidney level")
    return OODGroup("non-brain", np.stack(images), labels, "synthetic abdomen-like phantom")


#: every group, in report order
GROUPS: dict[str, Callable[[int], OODGroup]] = {
    IN_DOMAIN: _in_domain,
    "mni-coronal": _coronal,
    "mni-sagittal": _sagittal,
    "synthetic-t2": lambda size: _contrast("synthetic-t2", size),
    "synthetic-pd": lambda size: _contrast("synthetic-pd", size),
    "pydicom-mr": _pydicom,
    "nibabel-mr": _nibabel,
    "non-brain": _non_brain,
}


def ood_group(name: str, size: int = 128) -> OODGroup:
    """One group by name (:data:`GROUPS`) at ``size``×``size``."""
    if name not in GROUPS:
        raise ValueError(f"unknown OOD group {name!r}; from {', '.join(GROUPS)}")
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 8:
        raise ValueError(f"size: expected an integer >= 8, received {size!r}")
    group = GROUPS[name](int(size))
    images = np.ascontiguousarray(group.images, dtype=np.float32)
    return OODGroup(group.name, images, group.labels, group.source, group.in_domain)


def ood_groups(size: int = 128, names: list[str] | None = None) -> dict[str, OODGroup]:
    """The groups ``names`` (default: all of :data:`GROUPS`), each float32 ``(N, size, size)``
    in [0, 1] with N = 2."""
    return {name: ood_group(name, size) for name in (names or list(GROUPS))}
