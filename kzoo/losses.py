"""Losses kzoo's recipes compile with, registered on `import kzoo`.

A `.keras` file names its loss, so every loss kzoo compiles a model with
lives here and is registered when kzoo is imported: a trained model then
loads in a fresh process with `import kzoo` alone.

>>> import keras
>>> from kzoo.losses import SparseCategoricalCrossentropyWithSmoothing
>>> loss = SparseCategoricalCrossentropyWithSmoothing(0.1)
>>> # targets (0.05, 0.95): 0.05 * 10 for the unlikely class, about 0 for the other
>>> round(float(loss(keras.ops.array([1]), keras.ops.array([[0.0, 10.0]]))), 4)
0.5
"""

import keras


@keras.saving.register_keras_serializable(package="kzoo")
class SparseCategoricalCrossentropyWithSmoothing(keras.losses.Loss):
    """Cross-entropy on logits for integer labels, with label smoothing.

    Keras' sparse cross-entropy has no label smoothing; this one-hot encodes
    the labels inside the loss so datasets keep integer labels.

    Args:
        label_smoothing: float. Mass spread over all classes. Defaults to 0.1.
        name: str. The loss's name. Defaults to "sparse_smoothed_crossentropy".
        **kwargs: other `keras.losses.Loss` arguments (`reduction`, `dtype`).

    Example:

    >>> import numpy as np
    >>> from kzoo.losses import SparseCategoricalCrossentropyWithSmoothing
    >>> loss = SparseCategoricalCrossentropyWithSmoothing(0.0)
    >>> round(float(loss(np.array([0]), np.array([[0.0, 0.0]]))), 4)  # log 2
    0.6931
    """

    def __init__(self, label_smoothing=0.1, name="sparse_smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        num_classes = keras.ops.shape(y_pred)[-1]
        y_true = keras.ops.one_hot(keras.ops.cast(y_true, "int32"), num_classes)
        return keras.losses.categorical_crossentropy(
            y_true, y_pred, from_logits=True, label_smoothing=self.label_smoothing
        )

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def classification_loss(label_smoothing=0.0):
    """Cross-entropy on logits for integer labels, with optional smoothing.

    Args:
        label_smoothing: float. Mass spread over all classes. Defaults to 0.

    Example:

    >>> from kzoo.losses import classification_loss
    >>> type(classification_loss(0.1)).__name__
    'SparseCategoricalCrossentropyWithSmoothing'
    """
    if label_smoothing:
        return SparseCategoricalCrossentropyWithSmoothing(label_smoothing)
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
