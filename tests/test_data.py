"""The data module: offline datasets, splits, smoke slices and errors (TFDS: test_tfds.py)."""

import numpy as np
import pytest

import kzoo.data
from kzoo.data import DataError


def test_digits_is_real_offline_data_split_by_class():
    data = kzoo.data.load("digits", seed=0)
    assert data.input_shape == (8, 8, 1) and data.num_classes == 10
    assert data.sizes == (1258, 269, 270)  # all 1,797 images, 70/15/15
    assert data.x_train.dtype == np.float32
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    assert "scikit-learn" in data.source
    # Stratified: every class appears in every split in similar proportion.
    for y in (data.y_train, data.y_val, data.y_test):
        counts = np.bincount(y, minlength=10) / len(y)
        np.testing.assert_allclose(counts, 0.1, atol=0.02)


def test_split_is_seeded_and_disjoint():
    a = kzoo.data.load("digits", seed=1)
    b = kzoo.data.load("digits", seed=1)
    c = kzoo.data.load("digits", seed=2)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    assert not np.array_equal(a.x_train, c.x_train)
    total = len(a.x_train) + len(a.x_val) + len(a.x_test)
    assert total == 1797


def test_smoke_slice_is_tiny():
    data = kzoo.data.load("digits", smoke=True)
    assert data.sizes == (64, 32, 32)
    assert len(data.y_train) == 64


def test_digits_resize():
    data = kzoo.data.load("digits", smoke=True, image_size=16)
    assert data.input_shape == (16, 16, 1)
    assert data.x_train.shape[1:] == (16, 16, 1)


def test_unknown_dataset_names_the_closest():
    with pytest.raises(DataError, match=r"Received unknown dataset 'digit'.*digits"):
        kzoo.data.load("digit")
