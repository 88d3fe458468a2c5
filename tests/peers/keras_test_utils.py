"""The helpers of Keras's ``keras.src.testing.test_utils`` that the ported tests use.

Ported from keras-team/keras at v3.15.1 (commit
250b42181ce9f37df68319d8f4753ec89a349a43); every change is marked ``# kit:``.
"""

import numpy as np


def get_test_data(train_samples, test_samples, input_shape, num_classes):
    # kit: keras.src.testing.test_utils.get_test_data, seeded (Keras seeds
    # NumPy with None): class templates plus unit Gaussian noise.
    rng = np.random.default_rng(0)
    total = train_samples + test_samples
    y = np.arange(total) % num_classes
    templates = 2 * num_classes * rng.random((num_classes, *input_shape))
    x = (templates[y] + rng.normal(size=(total, *input_shape))).astype("float32")
    return (x[:train_samples], y[:train_samples]), (x[train_samples:], y[train_samples:])
