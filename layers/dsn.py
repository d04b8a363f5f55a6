"""Deep stacking network (DSN): simple modules stacked on the raw input plus earlier outputs.

Deng & Yu's deep stacking network ("Deep convex net: a scalable architecture for speech pattern
classification", Interspeech 2011; Deng, Yu & Platt, "Scalable stacking and learning for building
deep architectures", ICASSP 2012) is built from modules that are each trained on their own. A
module is a network with one hidden layer, sigmoid hidden units and linear outputs:

    H = sigmoid(X W + a)        X: [examples, inputs]   W: [inputs, hidden]   H: [examples, hidden]
    Y = H U                     U: [hidden, classes]    Y: [examples, classes]

(The papers keep examples in columns and write H = sigmoid(W^T X), Y = U^T H; here examples are
rows, as in Keras.) With the lower weights W fixed, the output is linear in U, so the upper weights
that minimise the squared error to one-hot targets T plus a ridge penalty lambda |U|^2 have a
closed form, a convex problem instead of a gradient descent:

    U = (H^T H + lambda I)^-1 H^T T

H^T H and H^T T are sums over examples, so they are accumulated batch by batch from a `tf.data`
pipeline and the data never sit in memory at once; under a `tf.distribute` strategy each replica
sums its share and the sums are added. Stacking: module k reads the raw input concatenated with the
outputs of modules 1..k-1, so each module corrects what the ones below got wrong.

W comes from random values or a pretrained RBM (`layers.rbm`) and is then refined by gradient
descent. Because U is a function of W, U(W) = (H(W)^T H(W) + lambda I)^-1 H(W)^T T, the squared
error E = |H U(W) - T|^2 is a function of W alone, and the papers descend its full gradient, the
one that accounts for how U moves when W does (Deng, Yu & Platt give it in closed form; here a
`tf.GradientTape` differentiates through the solve). U is solved inside each step from a large
batch (thousands of examples: H^T H must be well determined), and once W is refined the final U
is solved from the whole training set. Holding U fixed while W moves instead (the older
"fixed_upper" refinement, kept as an option) fits W to an upper layer that is about to change;
on MNIST (bench/README.md) it stopped at 1.73% test error, the gradient through U at 1.56%
(3 modules; 1.11% with 8 modules refined on distorted digits under a wide random-W one).

`DeepStackingNetwork` is a `keras.Model`: once trained it predicts, saves, exports and converts to
TFLite like any other (its ops are matmuls, sigmoids and concatenations).
"""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import ops

RIDGE = 1.0  # lambda: the upper weights' ridge penalty
REFINE_LEARNING_RATE = 3e-3  # Adam, refining W (through U: the start of a cosine decay)
# Examples per closed-form U inside the refinement: thousands, so that H^T H is well determined
# (Deng, Yu & Platt use large batches too); smaller datasets are refined full-batch.
REFINE_BATCH_SIZE = 5000
SOLVE_BATCH_SIZE = 5000  # examples per H^T H product when U is solved from a whole dataset


@keras.saving.register_keras_serializable(package="layers")
class DSNModule(keras.layers.Layer):
    """One DSN module: `call(x)` = sigmoid(x W + a) U; U is solved, not trained by gradients."""

    def __init__(self, hidden_units: int, output_units: int, init_scale: float = 4.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = int(hidden_units)
        self.output_units = int(output_units)
        self.init_scale = float(init_scale)

    def build(self, input_shape):
        fan_in = input_shape[-1]
        # Random lower weights large enough that the sigmoids are not all in their linear middle,
        # else the module is little more than a linear model of its input.
        self.lower_kernel = self.add_weight(
            shape=(fan_in, self.hidden_units),
            initializer=keras.initializers.RandomNormal(0.0, self.init_scale / np.sqrt(fan_in)),
            name="lower_kernel",
        )
        self.lower_bias = self.add_weight(shape=(self.hidden_units,), initializer="zeros",
                                          name="lower_bias")
        self.upper = self.add_weight(shape=(self.hidden_units, self.output_units),
                                     initializer="zeros", trainable=False, name="upper")

    def hidden(self, inputs):
        return ops.sigmoid(ops.matmul(inputs, self.lower_kernel) + self.lower_bias)

    def call(self, inputs):
        return ops.matmul(self.hidden(inputs), self.upper)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.output_units)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units,
                "output_units": self.output_units, "init_scale": self.init_scale}


@keras.saving.register_keras_serializable(package="layers")
class DeepStackingNetwork(keras.Model):
    """A stack of `DSNModule`s; `call(x)` gives the top module's outputs (class scores).

    Train it module by module with `fit_module(k, dataset)` (k = 0, 1, ...), where `dataset`
    yields (inputs, one-hot targets) batches. Inputs are flattened here, so images can go in as
    they are. `hidden_units` is one width for every module or a list, one per module: on MNIST
    (bench/mnist_layers.py) eight refined modules of 2,400 units carry a wide top module whose
    W stays random, too costly to refine (its H^T H grows with the square of the width): 1.11%
    test error.
    """

    def __init__(self, num_modules: int, hidden_units: int | Sequence[int], output_units: int,
                 ridge: float = RIDGE, **kwargs):
        super().__init__(**kwargs)
        self.num_modules = int(num_modules)
        widths = ([int(hidden_units)] * self.num_modules if np.isscalar(hidden_units)
                  else [int(units) for units in hidden_units])
        if len(widths) != self.num_modules:
            raise ValueError(f"hidden_units={hidden_units}: one width for all modules, or one"
                             f" per module ({self.num_modules})")
        self.hidden_units = widths[0] if np.isscalar(hidden_units) else widths
        self.output_units = int(output_units)
        self.ridge = float(ridge)
        self.stack = [DSNModule(units, output_units, name=f"module_{k + 1}")
                      for k, units in enumerate(widths)]
        self.depth = self.num_modules  # how many modules `call` runs; lowered while training

    @property
    def depth(self) -> int:
        return self._depth

    @depth.setter
    def depth(self, modules: int):
        self._depth = int(modules)
        # Keras traces `call` into its train/test/predict functions once; they must be traced
        # again for another depth, or `evaluate` would go on running the old number of modules.
        self.train_function = self.test_function = self.predict_function = None

    def build(self, input_shape):
        features = int(np.prod(input_shape[1:]))
        for k, module in enumerate(self.stack):
            module.build((None, features + k * self.output_units))
        self.built = True

    def module_inputs(self, inputs, k):
        """What module k reads: the raw input and the outputs of modules 0..k-1, side by side."""
        x = ops.reshape(inputs, (ops.shape(inputs)[0], -1))
        features = [x]
        for module in self.stack[:k]:
            features.append(module(ops.concatenate(features, axis=-1)))
        return ops.concatenate(features, axis=-1)

    def call(self, inputs):
        top = self.stack[self.depth - 1]
        return top(self.module_inputs(inputs, self.depth - 1))

    # -----------------------------------------------------------------------------------------
    # Training, one module at a time
    # -----------------------------------------------------------------------------------------

    def solve_upper(self, k: int, dataset: tf.data.Dataset) -> np.ndarray:
        """Sets module k's U = (H^T H + lambda I)^-1 H^T T, summed over `dataset`'s batches."""
        module = self.stack[k]
        strategy = tf.distribute.get_strategy()

        def statistics(inputs, targets):  # one replica's share of one batch
            hidden = tf.cast(module.hidden(self.module_inputs(inputs, k)), tf.float64)
            targets = tf.cast(targets, tf.float64)
            return (tf.matmul(hidden, hidden, transpose_a=True),
                    tf.matmul(hidden, targets, transpose_a=True))

        @tf.function
        def accumulate(inputs, targets):
            gram, cross = strategy.run(statistics, args=(inputs, targets))
            return (strategy.reduce("SUM", gram, axis=None),
                    strategy.reduce("SUM", cross, axis=None))

        # Sums in float64: over tens of thousands of examples float32 loses the small directions.
        # Large batches: each product is a whole [hidden, hidden] matrix, 1.2 GB for 12,000 units.
        gram = np.zeros((module.hidden_units, module.hidden_units))
        cross = np.zeros((module.hidden_units, self.output_units))
        big_batches = dataset.unbatch().batch(SOLVE_BATCH_SIZE)
        for inputs, targets in strategy.experimental_distribute_dataset(big_batches):
            batch_gram, batch_cross = accumulate(inputs, targets)
            gram += batch_gram.numpy()
            cross += batch_cross.numpy()
        upper = np.linalg.solve(gram + self.ridge * np.eye(module.hidden_units), cross)
        module.upper.assign(upper.astype("float32"))
        return upper

    def refine_through_upper(self, k: int, dataset: tf.data.Dataset, epochs: int,
                             batch_size: int = REFINE_BATCH_SIZE, verbose="auto",
                             learning_rate=None) -> list:
        """Gradient descent on module k's W and a, differentiating THROUGH the closed-form U.

        For each batch of `batch_size` examples, U = (H^T H + lambda I)^-1 H^T T is solved from
        the batch itself inside the gradient tape, so the loss |H U - T|^2 is a function of W
        alone and its gradient accounts for how U would follow W (Deng, Yu & Platt, 2012).
        Under a `tf.distribute` strategy the replicas add their H^T H and H^T T before the solve
        (an all-reduce, which the tape differentiates too), so every replica solves the same U.
        `learning_rate` is Adam's: a number or a `keras.optimizers.schedules` schedule; by
        default REFINE_LEARNING_RATE decayed to zero along a cosine over all the refinement's
        steps (one Adam for all the epochs, so its moments carry over from one to the next).
        Returns the mean loss of each epoch.
        """
        module = self.stack[k]
        strategy = tf.distribute.get_strategy()
        big_batches = dataset.unbatch().batch(batch_size)
        if epochs == 0:
            return []
        if learning_rate is None:
            steps_per_epoch = int(big_batches.reduce(0, lambda count, *_: count + 1))
            learning_rate = keras.optimizers.schedules.CosineDecay(
                REFINE_LEARNING_RATE, decay_steps=max(epochs * steps_per_epoch, 1))
        optimizer = keras.optimizers.Adam(learning_rate)
        variables = [module.lower_kernel, module.lower_bias]
        optimizer.build(variables)
        ridge = self.ridge * tf.eye(module.hidden_units, dtype=tf.float64)

        def step(inputs, targets):  # one replica's share of one batch
            context = tf.distribute.get_replica_context()
            targets = tf.cast(targets, tf.float32)
            count = context.all_reduce("SUM", tf.cast(tf.shape(targets)[0], tf.float32))
            with tf.GradientTape() as tape:
                hidden = module.hidden(self.module_inputs(inputs, k))  # [B, hidden]
                gram = context.all_reduce("SUM", tf.matmul(hidden, hidden, transpose_a=True))
                cross = context.all_reduce("SUM", tf.matmul(hidden, targets, transpose_a=True))
                # The products in float32 (the bulk of the work), the solve in float64.
                upper = tf.linalg.cholesky_solve(
                    tf.linalg.cholesky(tf.cast(gram, tf.float64) + ridge),
                    tf.cast(cross, tf.float64))
                errors = tf.matmul(hidden, tf.cast(upper, tf.float32)) - targets
                loss = tf.reduce_sum(tf.square(errors)) / count  # this replica's share
            # The optimizer adds the replicas' gradients, as in Keras' own train_step.
            optimizer.apply(tape.gradient(loss, variables), variables)
            return loss

        @tf.function
        def distributed_step(inputs, targets):
            losses = strategy.run(step, args=(inputs, targets))
            return strategy.reduce("SUM", losses, axis=None)

        history = []
        for epoch in range(epochs):
            losses = [float(distributed_step(inputs, targets)) for inputs, targets
                      in strategy.experimental_distribute_dataset(big_batches)]
            history.append(float(np.mean(losses)))
            if verbose:
                print(f"  refinement epoch {epoch + 1}/{epochs}:"
                      f" squared error {history[-1]:.4f} per example")
        return history

    def fit_module(self, k: int, dataset: tf.data.Dataset, lower_init=None,
                   refine_epochs: int = 0, validation_data=None, verbose="auto",
                   refine: str = "through_upper",
                   refine_batch_size: int = REFINE_BATCH_SIZE, solve_data=None) -> dict:
        """Trains module k on top of the (fixed) modules below it.

        Args:
            lower_init: optional (kernel, bias) for W and a, e.g. from an RBM trained on the
                module's inputs; random otherwise.
            refine_epochs: epochs of gradient descent on W and a before the final U.
            refine: "through_upper" (the papers' method, see `refine_through_upper`), or
                "fixed_upper": Keras `fit` epochs of the mean squared error with U held fixed,
                each followed by a new closed-form U.
            refine_batch_size: examples per closed-form U in the "through_upper" refinement.
            solve_data: the batches U is solved from in the end (default: `dataset`). When
                `dataset` distorts its images, e.g. the undistorted ones, which the module will
                be asked about (`apps.digit_ocr.train_dsn` also tries them plus distorted passes
                and keeps the U the validation digits prefer).
        Returns module k's mean squared error and accuracy after training (on `validation_data`
        when given); U is solved from the whole of `solve_data` at the end.
        """
        if refine not in ("through_upper", "fixed_upper"):
            raise ValueError(f"refine={refine!r}: choose 'through_upper' or 'fixed_upper'")
        if not self.built:
            self.build(dataset.element_spec[0].shape)
        module = self.stack[k]
        if lower_init is not None:
            module.lower_kernel.assign(lower_init[0])
            module.lower_bias.assign(lower_init[1])
        self.depth = k + 1
        for j, each in enumerate(self.stack):  # only module k learns; those below are done
            each.trainable = j == k
        self.compile(optimizer=keras.optimizers.Adam(REFINE_LEARNING_RATE),
                     loss="mean_squared_error", metrics=["categorical_accuracy"])
        solve_data = dataset if solve_data is None else solve_data
        if refine == "through_upper":
            self.refine_through_upper(k, dataset, refine_epochs, refine_batch_size, verbose)
            self.solve_upper(k, solve_data)
        else:
            self.solve_upper(k, solve_data)
            for _ in range(refine_epochs):
                self.fit(dataset, epochs=1, verbose=verbose)
                self.solve_upper(k, solve_data)
        figures = self.evaluate(validation_data or dataset, verbose=0, return_dict=True)
        return figures

    def get_config(self):
        return {**super().get_config(), "num_modules": self.num_modules,
                "hidden_units": self.hidden_units, "output_units": self.output_units,
                "ridge": self.ridge}
