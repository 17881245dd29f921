"""Data-parallel training on each engine's own machinery: the one place for it.

`setup()` reads the launcher's environment and returns a `Distribution`
that the recipe runner uses; recipes never see the backend:

- JAX: `keras.distribution.DataParallel` over every device. When the
  launcher sets `KERAS_DISTRIBUTION_NUM_PROCESSES` (and
  `KERAS_DISTRIBUTION_JOB_ADDRESSES`, `KERAS_DISTRIBUTION_PROCESS_ID`),
  `keras.distribution.initialize` first joins the processes through JAX's
  own coordinator; each process then feeds its slice of every global batch.
- TensorFlow: `tf.distribute.MultiWorkerMirroredStrategy` when `TF_CONFIG`
  is set (one process per worker), else `tf.distribute.MirroredStrategy`
  over the local devices. `KZOO_TF_CPU_DEVICES=N` splits the CPU into N
  logical devices, so the mirrored path runs on a CPU-only machine.
- PyTorch: one process per device launched by `torchrun` (which sets
  `WORLD_SIZE`, `RANK`, `MASTER_ADDR`...); `torch.distributed` joins them
  (gloo on CPU, NCCL on GPU), rank 0's weights are broadcast, and gradients
  are averaged across processes before every optimizer update, which is what
  `DistributedDataParallel` does (Keras' torch trainer calls the Keras model
  directly, so the averaging hooks into the optimizer instead of a DDP
  wrapper).
"""

import os

import keras
import numpy as np


class DistributionError(ValueError):
    """The launch environment does not allow the requested distribution."""


class Distribution:
    """What the runner needs to know about data-parallel training.

    Attributes:
        kind: str. `"jax_data_parallel"`, `"tf_mirrored"`,
            `"tf_multi_worker"`, `"torch_ddp"` or `"none"`.
        num_processes: int. Processes taking part.
        process_id: int. This process's index (0 is the chief).
        num_replicas: int. Devices the global batch is split across.
        local_devices: int. Devices this process feeds.
        feeds_local_slice: bool. True when each process must be given its
            own slice of every global batch (JAX multi-process, PyTorch);
            False when the engine splits the global batch itself.
    """

    def __init__(self, kind, num_processes=1, process_id=0, num_replicas=1, local_devices=1,
                 feeds_local_slice=False, strategy=None):
        self.kind = kind
        self.num_processes = num_processes
        self.process_id = process_id
        self.num_replicas = num_replicas
        self.local_devices = local_devices
        self.feeds_local_slice = feeds_local_slice
        self.strategy = strategy
        self._scope = None

    @property
    def is_chief(self):
        return self.process_id == 0

    def describe(self):
        return (f"{self.kind}: {self.num_replicas} replica(s) in {self.num_processes} "
                f"process(es), this is process {self.process_id}")

    # === Model creation and compilation ===
    def enter_scope(self):
        """Create variables under the strategy from now on (TensorFlow)."""
        if self.strategy is not None and self._scope is None:
            self._scope = self.strategy.scope()
            self._scope.__enter__()

    def exit_scope(self):
        if self._scope is not None:
            self._scope.__exit__(None, None, None)
            self._scope = None

    def prepare(self, model):
        """After `compile`: synchronise weights and gradients where needed."""
        if self.kind == "torch_ddp":
            _torch_prepare(model)
        return model

    def before_fit(self, model, x, y, batch_size):
        """Work around engine quirks that need a data sample, before `fit`."""
        if self.kind == "tf_multi_worker" and not hasattr(model, "_kzoo_built_for_workers"):
            _tf_multi_worker_build(model, self.strategy, x, y, batch_size)

    # === Data ===
    def local_slice(self, x, global_batch):
        """This process's part of every global batch of `x` (arrays, lists, dicts).

        The global batch `k` is `x[k*B:(k+1)*B]`; process `r` of `P` gets the
        `r`-th of its `P` equal chunks, so the processes together step
        through exactly the batches a single process would. Trailing examples
        that do not fill a global batch are dropped.
        """
        if not self.feeds_local_slice or x is None:
            return x
        if isinstance(x, dict):
            return {k: self.local_slice(v, global_batch) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(self.local_slice(v, global_batch) for v in x)
        x = np.asarray(x)
        per = global_batch // self.num_processes
        steps = len(x) // global_batch
        x = x[: steps * global_batch].reshape(steps, self.num_processes, per, *x.shape[1:])
        return x[:, self.process_id].reshape(steps * per, *x.shape[3:])

    def shutdown(self):
        self.exit_scope()
        if self.kind == "torch_ddp":
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


def setup():
    """Join the launcher's processes and return this backend's `Distribution`."""
    backend = keras.config.backend()
    if backend == "jax":
        return _setup_jax()
    if backend == "tensorflow":
        return _setup_tensorflow()
    if backend == "torch":
        return _setup_torch()
    raise DistributionError(
        f"Received --distribute with KERAS_BACKEND={backend!r}; data parallelism is "
        "available on jax, tensorflow and torch, so set KERAS_BACKEND to one of them."
    )


# === JAX ===
def _setup_jax():
    import jax

    num_processes = int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1"))
    if num_processes > 1:
        # Cross-process collectives between CPU devices go through gloo (GPUs
        # and TPUs use their own); asking for devices first would start XLA
        # too early, so this is set unconditionally.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize()
    devices = jax.devices()
    # kzoo gives each process its slice of the arrays itself (local_slice),
    # so Keras must not shard again (it only knows how to shard tf.data).
    keras.distribution.set_distribution(keras.distribution.DataParallel(
        devices=devices, auto_shard_dataset=jax.process_count() == 1))
    return Distribution(
        "jax_data_parallel", num_processes=jax.process_count(), process_id=jax.process_index(),
        num_replicas=len(devices), local_devices=jax.local_device_count(),
        feeds_local_slice=jax.process_count() > 1,
    )


# === TensorFlow ===
def _setup_tensorflow():
    import json

    import tensorflow as tf

    cpus = int(os.environ.get("KZOO_TF_CPU_DEVICES", "0") or 0)
    if cpus > 1:
        try:
            tf.config.set_logical_device_configuration(
                tf.config.list_physical_devices("CPU")[0],
                [tf.config.LogicalDeviceConfiguration()] * cpus,
            )
        except RuntimeError as err:
            raise DistributionError(
                f"Received KZOO_TF_CPU_DEVICES={cpus} after TensorFlow started ({err}); "
                "set up the distribution before running any TensorFlow op."
            ) from None
    if os.environ.get("TF_CONFIG"):
        config = json.loads(os.environ["TF_CONFIG"])
        workers = len(config.get("cluster", {}).get("worker", []))
        task = config.get("task", {})
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        _patch_multi_worker_log_reduction(tf)
        dist = Distribution(
            "tf_multi_worker", num_processes=workers, process_id=int(task.get("index", 0)),
            num_replicas=strategy.num_replicas_in_sync,
            local_devices=strategy.num_replicas_in_sync // max(1, workers), strategy=strategy,
        )
    else:
        devices = [d.name for d in tf.config.list_logical_devices("GPU")]
        if not devices:
            devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices)
        dist = Distribution(
            "tf_mirrored", num_replicas=strategy.num_replicas_in_sync,
            local_devices=strategy.num_replicas_in_sync, strategy=strategy,
        )
    dist.enter_scope()
    return dist


def _patch_multi_worker_log_reduction(tf):
    # Keras 3.15's TF trainer averages every per-replica log across workers
    # with strategy.reduce("MEAN", v, axis=0), which fails on the scalar
    # loss and metrics; scalars are averaged with axis=None instead.
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_kzoo", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        if reduction not in ("auto", "mean") or not isinstance(
            strategy, tf.distribute.MultiWorkerMirroredStrategy
        ):
            return original(values, strategy, reduction)

        def reduce(v):
            local = strategy.experimental_local_results(v)[0]
            return strategy.reduce("MEAN", v, axis=0 if local.shape.rank else None)

        return tf.nest.map_structure(reduce, values)

    reduce_per_replica._kzoo = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def _tf_multi_worker_build(model, strategy, x, y, batch_size):
    # Keras' TF trainer builds the model from a first batch, which it averages
    # across replicas with strategy.reduce; eagerly, under
    # MultiWorkerMirroredStrategy, that reduce rejects the per-replica batch.
    # Building from a host sample of the same shapes avoids the reduce.
    from kzoo.data import map_arrays

    per_replica = max(1, batch_size // strategy.num_replicas_in_sync)
    sample = tuple(map_arrays(lambda a: np.asarray(a[:per_replica]), v) for v in (x, y))

    def build(iterator=None, data_batch=None):
        with strategy.scope():
            model._symbolic_build(data_batch=sample)

    model._maybe_symbolic_build = build
    model._kzoo_built_for_workers = True


# === PyTorch ===
def _setup_torch():
    import torch
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        raise DistributionError(
            "Received --distribute data_parallel on torch without a launcher; start one "
            "process per device with `torchrun --nproc_per_node=N recipes/<recipe>.py ...`."
        )
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Distribution(
        "torch_ddp", num_processes=dist.get_world_size(), process_id=dist.get_rank(),
        num_replicas=dist.get_world_size(), local_devices=1, feeds_local_slice=True,
    )


def _torch_prepare(model):
    import torch
    import torch.distributed as dist

    world = dist.get_world_size()
    with torch.no_grad():
        for v in model.weights:  # every process starts from rank 0's weights
            dist.broadcast(v.value.data, src=0)
    optimizer = model.optimizer
    if getattr(optimizer, "_kzoo_allreduce", False):
        return
    apply = optimizer.apply

    def apply_averaged(grads, trainable_variables=None):
        # DistributedDataParallel's contract: every process applies the mean
        # of all processes' gradients, so the replicas stay identical.
        flat = [g for g in grads if g is not None]
        if flat:
            bucket = torch.cat([g.reshape(-1) for g in flat])
            dist.all_reduce(bucket)
            bucket /= world
            offset = 0
            for g in flat:
                n = g.numel()
                g.copy_(bucket[offset:offset + n].view_as(g))
                offset += n
        return apply(grads, trainable_variables)

    optimizer.apply = apply_averaged
    optimizer._kzoo_allreduce = True
