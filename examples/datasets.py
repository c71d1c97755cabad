"""The fixed data split behind the ``digits`` example model.

scikit-learn bundles its handwritten-digits data (1,797 images of 8x8 pixels, values 0..16), so
nothing is downloaded. The split is fixed, so the model script, the tests and the docs all see the
same held-out set::

    from tensorgate.examples.datasets import digits_split
    x_train, x_test, y_train, y_test = digits_split()
"""

from __future__ import annotations

import numpy as np

#: The split's seed and held-out share; changing either changes the committed ``digits`` model.
DIGITS_RANDOM_STATE = 0
DIGITS_TEST_SIZE = 0.25


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, x_test, y_train, y_test)``: float32 pixels [n, 64] (raw 0..16), int64 labels [n].

    A stratified split of ``sklearn.datasets.load_digits()`` (1,347 training and 450 held-out
    images). Needs scikit-learn (a dev dependency).
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.float32)
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=DIGITS_TEST_SIZE, random_state=DIGITS_RANDOM_STATE, stratify=y
    )
    return (
        np.ascontiguousarray(x_train),
        np.ascontiguousarray(x_test),
        np.ascontiguousarray(y_train),
        np.ascontiguousarray(y_test),
    )
