"""Keras optimizers with a faster update step where the backend allows it, saved backend-neutral.

`Adam` and `AdamW` are `keras.optimizers.Adam` and `keras.optimizers.AdamW`:
same arguments, same variables, same update equations. On the torch backend
with float32 CPU weights they update each variable with three fused in-place
ops (`kzoo.backend.fastpath.adam_update`, the `adam_inplace` entry of its
dispatch table) instead of Keras' multi-tensor ops (benchmark:
`KERAS_BACKEND=torch python -m benchmarks.optimizer_step`; figures in
`benchmarks/README.md`). Everywhere else, with `KZOO_FASTPATH=0`, or on a
Keras release whose private optimizer state `fastpath.adam_slots` does not
vouch for, they are Keras' own. kzoo's recipes, tuner and models' default
optimizers use them.

`SGD`, `RMSprop`, `Nadam` and `Lion` are Keras' own optimizers under a kzoo
name. On the torch backend `keras.optimizers.SGD(...)` returns Keras' torch
class (`keras.src.backend.torch.optimizers.torch_sgd.SGD`), and a `.keras`
file records that class, so a model compiled with it cannot load where torch
is absent. kzoo's subclasses are not swapped for torch classes: the file
records `kzoo>SGD`, which loads on every backend after `import kzoo`.

>>> import keras
>>> from kzoo.optimizers import Adam
>>> isinstance(Adam(1e-3), keras.optimizers.Adam)
True
"""

import keras

from kzoo.backend import fastpath


class _FastAdamUpdate:
    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if not fastpath.adam_update(self, grads, trainable_variables, learning_rate):
            super()._backend_update_step(grads, trainable_variables, learning_rate)


@keras.saving.register_keras_serializable(package="kzoo")
class Adam(_FastAdamUpdate, keras.optimizers.Adam):
    """`keras.optimizers.Adam` with a fused update on the torch backend on CPU.

    Takes exactly the arguments of `keras.optimizers.Adam`.
    """


@keras.saving.register_keras_serializable(package="kzoo")
class AdamW(_FastAdamUpdate, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` with a fused update on the torch backend on CPU.

    Takes exactly the arguments of `keras.optimizers.AdamW`; the decoupled
    weight decay is Keras' own.
    """


# The four classes below are alike on purpose: a `.keras` file names each, so each is
# declared, registered and documented where a reader looks for it.
@keras.saving.register_keras_serializable(package="kzoo")
class SGD(keras.optimizers.SGD):
    """`keras.optimizers.SGD`, saved under a backend-neutral name.

    Takes exactly the arguments of `keras.optimizers.SGD`.
    """


@keras.saving.register_keras_serializable(package="kzoo")
class RMSprop(keras.optimizers.RMSprop):
    """`keras.optimizers.RMSprop`, saved under a backend-neutral name.

    Takes exactly the arguments of `keras.optimizers.RMSprop`.
    """


@keras.saving.register_keras_serializable(package="kzoo")
class Nadam(keras.optimizers.Nadam):
    """`keras.optimizers.Nadam`, saved under a backend-neutral name.

    Takes exactly the arguments of `keras.optimizers.Nadam`.
    """


@keras.saving.register_keras_serializable(package="kzoo")
class Lion(keras.optimizers.Lion):
    """`keras.optimizers.Lion`, saved under a backend-neutral name.

    Takes exactly the arguments of `keras.optimizers.Lion`.
    """
