"""Makes Keras 3's `fit` work under `tf.distribute.MultiWorkerMirroredStrategy` (TF backend).

Upstream: keras-team/keras#20585 ("Does Keras 3 work with MultiWorkerMirroredStrategy?") and
tensorflow/tensorflow#72388 ("Invalid reduction dimension 0 for input with 0 dimensions"). Two
places in `keras.src.backend.tensorflow.trainer` fail once several workers hold the replicas:

1. `TensorFlowTrainer._maybe_symbolic_build` builds the model from the first batch, which it gets
   by `strategy.reduce("MEAN", batch)`: an all-reduce of the *data*. The multi-worker strategy
   cannot reduce a dataset's per-replica batch ("Attempt to convert a value (PerReplica...) to a
   Tensor"), and under MirroredStrategy the same mean fails when the batch does not split evenly.
   The build only needs shapes and dtypes, so the fix takes this worker's first replica's batch.
2. `reduce_per_replica(..., reduction="auto")` averages the logs (scalar losses and metrics) with
   `strategy.reduce("MEAN", v, axis=0)` when several workers are involved; a scalar has no axis 0.
   The fix averages them across replicas with `axis=None`, which is what one worker does.

Apply it once, before `fit`: `multiworker_fix.apply()` (the apps' `runner.choose_strategy` does
when asked for `multiworker`). It patches only the Keras versions listed as broken in
`KERAS_NEEDS_FIX` and does nothing on the others, so the module removes itself when Keras moves
on: `tests/test_scaling.py` trains two workers without the fix and fails if it has stopped being
needed (delete this module then) or if a Keras that the version check skips still needs it.
"""

import keras

# Keras (major, minor) versions verified to fail without the fix (tested: 3.15.1).
KERAS_NEEDS_FIX = ((3, 15),)


def needed(version: str = keras.__version__) -> bool:
    major, minor = (int(part) for part in version.split(".")[:2])
    return (major, minor) in KERAS_NEEDS_FIX


def applied() -> bool:
    from keras.src.backend.tensorflow import trainer

    return getattr(trainer.reduce_per_replica, "multiworker_fix", False)


def apply() -> bool:
    """Patches Keras' TensorFlow trainer where this Keras needs it; returns whether it did."""
    if not needed() or applied():
        return applied()
    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    def maybe_symbolic_build(self, iterator=None, data_batch=None):
        if self._distribute_strategy is None:
            return
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: self.distribute_strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues) else value,
                    next(batches),
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    keras_reduce_per_replica = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and trainer._collective_all_reduce_multi_worker(strategy):
            return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
        return keras_reduce_per_replica(values, strategy, reduction)

    reduce_per_replica.multiworker_fix = True
    trainer.TensorFlowTrainer._maybe_symbolic_build = maybe_symbolic_build
    trainer.reduce_per_replica = reduce_per_replica
    return True
