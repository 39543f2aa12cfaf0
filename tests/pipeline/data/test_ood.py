"""The OOD image set: every group, in range, deterministic, offline, and what it claims to be."""

from __future__ import annotations

import socket

import numpy as np
import pytest

from sgilo.pipeline.data import dicom_examples, mni, mni_sources, ood


@pytest.fixture(scope="module")
def groups() -> dict[str, ood.OODGroup]:
    return ood.ood_groups(128)


def test_every_group_is_present_with_finite_images_in_range(groups):
    assert list(groups) == list(ood.GROUPS)
    required = {"mni-coronal", "mni-sagittal", "synthetic-t2", "synthetic-pd", "pydicom-mr"}
    assert required | {"nibabel-mr", "non-brain", ood.IN_DOMAIN} <= set(groups)
    for name, g in groups.items():
        assert g.images.dtype == np.float32 and g.images.shape == (2, 128, 128), name
        assert np.isfinite(g.images).all() and g.images.min() >= 0 and g.images.max() <= 1
        assert len(g.labels) == 2 and g.source
        for image in g.images:
            assert image.max() > 0.5 and np.count_nonzero(image) > 0.1 * image.size, name
        assert not np.allclose(g.images[0], g.images[1]), name  # two different slices
    assert [n for n, g in groups.items() if g.in_domain] == [ood.IN_DOMAIN]


def test_groups_are_deterministic(groups):
    again = ood.ood_groups(128)
    for name in groups:
        np.testing.assert_array_equal(groups[name].images, again[name].images)


def test_in_domain_slices_are_held_out_validation_slices(groups):
    assert set(ood.AXIAL_Z) <= set(mni.VALIDATION_Z)
    assert not set(ood.AXIAL_Z) & set(mni.TRAINING_Z)
    validation = mni.mni_slices("validation", 128)
    rows = [mni.VALIDATION_Z.index(z) for z in ood.AXIAL_Z]
    np.testing.assert_array_equal(groups[ood.IN_DOMAIN].images, validation[rows])
    # the other groups are not the prior's axial T1 slices: none equals a training slice
    train = mni.mni_slices("train", 128)
    for name, g in groups.items():
        if name != ood.IN_DOMAIN:
            for image in g.images:
                assert np.abs(train - image).max(axis=(1, 2)).min() > 0.1, name


def _tissue(z: int) -> dict[str, np.ndarray]:
    csf, gm, wm = (mni.pad_to_square(mni.axial_display_slice(m, z)) for m in ood._tissue_maps())
    return {"csf": csf > 0.7, "gm": gm > 0.7, "wm": wm > 0.7}


@pytest.mark.parametrize("z_index", [0, 1])
def test_synthetic_contrasts_order_the_tissues(z_index):
    # at the native 233² grid the image and the tissue maps align pixel for pixel
    z = ood.AXIAL_Z[z_index]
    masks = _tissue(z)
    assert all(m.sum() > 100 for m in masks.values())
    t2 = ood.ood_group("synthetic-t2", 233).images[z_index]
    pd = ood.ood_group("synthetic-pd", 233).images[z_index]
    m2 = {k: t2[v].mean() for k, v in masks.items()}
    mp = {k: pd[v].mean() for k, v in masks.items()}
    assert m2["csf"] > m2["gm"] > m2["wm"]  # T2-like: CSF bright, WM darker than GM
    assert mp["csf"] > mp["gm"] > mp["wm"]  # PD-like: CSF bright, GM above WM ...
    assert mp["gm"] - mp["wm"] < 0.5 * (m2["gm"] - m2["wm"])  # ... with a small contrast


def test_loads_with_the_network_refused(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted by the OOD set")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    mni_sources.mni_arrays.cache_clear()
    ood._tissue_maps.cache_clear()
    dicom_examples._mr_paths.cache_clear()
    fresh = ood.ood_groups(32)
    assert all(g.images.shape == (2, 32, 32) for g in fresh.values())


def test_body_phantom_is_body_like_not_piecewise_constant():
    img = ood.body_phantom(0, size=128)
    assert img.shape == (128, 128) and (img >= 0).all()
    assert img[0, 0] == 0 and img[64, 64] > 0  # background outside, tissue inside the body
    assert len(np.unique(np.round(img, 6))) > 1000  # texture and bias, not a few levels
    np.testing.assert_array_equal(img, ood.body_phantom(0, size=128))
    assert not np.allclose(img, ood.body_phantom(1, size=128))


def test_unknown_group_and_bad_size_are_refused():
    with pytest.raises(ValueError, match="unknown OOD group"):
        ood.ood_group("phantom-x")
    with pytest.raises(ValueError, match="size"):
        ood.ood_group("mni-coronal", size=4)
