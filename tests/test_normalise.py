"""doll.data.images.normalise: uint8 and uint16 images take their percentiles from a histogram
and their mapping from a table, and must give the numbers of the float32 + np.percentile code
bit for bit (the decode cache, explain and predict all read images through it)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from doll.data import images
from doll.data.images import normalise


def reference(img: np.ndarray, percentiles=(0.5, 99.5)) -> np.ndarray:
    """normalise as it was: the image in float32, np.percentile, the mapping per pixel."""
    img = img.astype(np.float32)
    lo, hi = np.percentile(img, list(percentiles))
    if hi - lo < 1e-6:
        return np.zeros(img.shape, np.uint8)
    return np.clip((img - lo) * (255.0 / (hi - lo)), 0, 255).round().astype(np.uint8)


QUANTILES = [(0.5, 99.5), (0.0, 100.0), (1.0, 99.0), (0.1, 99.9), (33.3, 66.7)]


@pytest.mark.parametrize("dtype, top", [(np.uint8, 256), (np.uint8, 3), (np.uint16, 65536), (np.uint16, 4096),
                                        (np.uint16, 2)])
def test_histogram_normalisation_equals_np_percentile(dtype, top):
    rng = np.random.default_rng(top)
    for k in range(60):
        h, w = rng.integers(1, 260, 2)
        img = rng.integers(0, top, (h, w)).astype(dtype)
        if k % 4 == 0:  # a film's shape: most pixels in a narrow band, a few outliers
            img = np.clip(rng.normal(top / 2, top / 50 + 1, (h, w)), 0, top - 1).astype(dtype)
        for q in QUANTILES:
            assert np.array_equal(normalise(img, q), reference(img, q)), (dtype, top, k, q)
        view = img[::2, ::3]  # not contiguous
        assert np.array_equal(normalise(view), reference(view))


def test_constant_and_one_pixel_images():
    for img in (np.full((5, 7), 200, np.uint8), np.zeros((1, 1), np.uint16), np.array([[0, 65535]], np.uint16)):
        assert np.array_equal(normalise(img), reference(img))


@settings(max_examples=200, deadline=None)
@given(arrays(st.sampled_from([np.uint8, np.uint16]), st.tuples(st.integers(1, 40), st.integers(1, 40))),
       st.floats(0, 50), st.floats(50, 100))
def test_normalise_fuzz(img, low, high):
    assert np.array_equal(normalise(img, (low, high)), reference(img, (low, high)))


def test_other_types_and_a_numpy_that_disagrees_take_np_percentile(monkeypatch):
    rng = np.random.default_rng(3)
    for img in (rng.random((30, 40)).astype(np.float32), rng.integers(-500, 500, (30, 40)).astype(np.int16)):
        assert np.array_equal(normalise(img), reference(img))
    monkeypatch.setattr(images, "_EXACT", [False])  # as if this NumPy's percentile arithmetic had changed
    monkeypatch.setattr(images, "histogram_percentiles", lambda *a: pytest.fail("the histogram was used"))
    img = rng.integers(0, 256, (30, 40), dtype=np.uint8)
    assert np.array_equal(normalise(img), reference(img))
