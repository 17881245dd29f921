import os
import sys

# The shared harness lives beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("MPLBACKEND", "Agg")

import keras  # noqa: E402  (after KERAS_BACKEND is set)
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_every_test():
    # pytest-xdist hands tests to workers in varying order; seeding each test makes
    # its weights and data independent of which tests ran before it in the process.
    keras.utils.set_random_seed(0)
