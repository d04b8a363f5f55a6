"""Deep belief network (DBN): a stack of RBMs pretrained greedily, then fine-tuned as a classifier.

Hinton, Osindero & Teh ("A fast learning algorithm for deep belief nets", Neural Computation 2006)
showed that a deep network can be trained one layer at a time without labels: train an RBM on
the data, then a second RBM on the first one's hidden activities, and so on. Each new layer models
what the layers below have found, and the stack's weights are a far better starting point for
backpropagation than random ones (Hinton & Salakhutdinov, Science 2006; Erhan et al., "Why does
unsupervised pre-training help deep learning?", JMLR 2010).

    pixels -> RBM 1 -> p(h1 | v) -> RBM 2 -> p(h2 | h1) -> ... -> top RBM

`DeepBeliefNetwork.pretrain` does the greedy part: each RBM is trained by `RBMTrainer.fit` on the
dataset mapped through the RBMs below it (a `tf.data` map, so nothing is materialised).
`classifier` turns the stack into an ordinary Keras model, Dense(sigmoid) layers whose kernels
and biases start as the RBMs' weights and hidden biases, plus a softmax output layer, for
fine-tuning with backpropagation. `sample` runs a Gibbs chain in the top RBM and passes its
state down through the lower RBMs' generative weights, showing what the network has learned
to imagine.
"""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from layers.rbm import RBM, RBMTrainer

PRETRAIN_LEARNING_RATE = 0.05
PRETRAIN_MOMENTUM = 0.5
PRETRAIN_WEIGHT_DECAY = 2e-4
FINE_TUNE_DROPOUT = 0.2


class DeepBeliefNetwork:
    """A stack of Bernoulli RBMs with `hidden_units[i]` hidden units in layer i."""

    def __init__(self, hidden_units: list[int], k: int = 1, persistent: bool = False,
                 seed: int = 0):
        self.rbms = [RBM(units, name=f"rbm_{i + 1}") for i, units in enumerate(hidden_units)]
        self.k = k
        self.persistent = persistent
        self.seed = seed

    def up(self, visible, layers_count: int | None = None):
        """Hidden probabilities of RBM `layers_count` (default: the top one) for `visible`."""
        for rbm in self.rbms[:layers_count]:
            visible = rbm(visible)
        return visible

    def pretrain(self, dataset: tf.data.Dataset, epochs: int, learning_rate=PRETRAIN_LEARNING_RATE,
                 verbose="auto", callbacks=None) -> list[dict]:
        """Greedy layer-wise training. `dataset` yields batches of flat visible vectors in [0, 1]
        (labels, if any, are dropped). Returns each RBM's Keras history."""
        features = int(np.prod(dataset.element_spec[0].shape[1:]))
        visible = dataset.map(lambda x, *_: ops.reshape(x, (-1, features)))
        histories = []
        for i, rbm in enumerate(self.rbms):
            trainer = RBMTrainer(rbm, k=self.k, persistent=self.persistent, seed=self.seed + i)
            trainer.compile(keras.optimizers.SGD(learning_rate, momentum=PRETRAIN_MOMENTUM,
                                                 weight_decay=PRETRAIN_WEIGHT_DECAY))
            if verbose:
                print(f"Pretraining RBM {i + 1}/{len(self.rbms)}: {rbm.units} hidden units")
            history = trainer.fit(visible, epochs=epochs, verbose=verbose, callbacks=callbacks)
            histories.append(history.history)
            # The next RBM learns from this one's hidden probabilities (Hinton et al., 2006).
            visible = visible.map(rbm, num_parallel_calls=tf.data.AUTOTUNE)
        return histories

    def classifier(self, input_shape, num_classes: int,
                   dropout: float = FINE_TUNE_DROPOUT) -> keras.Model:
        """A Keras MLP initialised from the RBMs: Flatten, Dense(sigmoid) per RBM, softmax."""
        inputs = keras.Input(input_shape, name="pixels")
        x = keras.layers.Flatten()(inputs)
        for rbm in self.rbms:
            dense = keras.layers.Dense(rbm.units, activation="sigmoid", name=f"{rbm.name}_dense")
            x = dense(x)
            if rbm.built:
                dense.set_weights([ops.convert_to_numpy(rbm.kernel),
                                   ops.convert_to_numpy(rbm.hidden_bias)])
            x = keras.layers.Dropout(dropout)(x)
        outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
        return keras.Model(inputs, outputs, name="dbn")

    def sample(self, count: int, gibbs_steps: int = 200, seed: int = 0):
        """`count` visible vectors dreamt by the network: a Gibbs chain in the top RBM, started
        from random hidden states below it, then one top-down pass of probabilities."""
        generator = keras.random.SeedGenerator(seed)
        top = self.rbms[-1]
        below_top = self.rbms[-2].units if len(self.rbms) > 1 else top.kernel.shape[0]
        state = ops.cast(keras.random.uniform((count, below_top), seed=generator) > 0.5, "float32")
        state = top.gibbs(state, gibbs_steps, seed=generator)
        for rbm in reversed(self.rbms[:-1]):
            state = rbm.visible_mean(state)
        return state
