"""Restricted Boltzmann machine (RBM) as a Keras 3 layer, trained by contrastive divergence.

An RBM is a two-layer undirected graphical model (Smolensky, 1986): visible units `v` (the data)
and hidden units `h` (features), every visible unit connected to every hidden unit, no connections
within a layer. It gives each joint state an energy

    E(v, h) = -b.v - c.h - v.W.h                    (Bernoulli visible units, v in {0, 1})
    E(v, h) = |v - b|^2 / 2 - c.h - v.W.h           (Gaussian visible units, unit variance)

and the probability p(v, h) = exp(-E(v, h)) / Z. Because there are no lateral connections, the
units of one layer are independent given the other:

    p(h_j = 1 | v) = sigmoid(c_j + v.W[:, j])       what `call` returns: the learned features
    p(v_i = 1 | h) = sigmoid(b_i + W[i, :].h)       (Gaussian: v_i ~ N(b_i + W[i, :].h, 1))

so block Gibbs sampling alternates two matrix products. Summing h out gives the free energy
F(v) = -log sum_h exp(-E(v, h)), with p(v) = exp(-F(v)) / Z:

    F(v) = -b.v - sum_j softplus(c_j + v.W[:, j])                 (Bernoulli)
    F(v) = |v - b|^2 / 2 - sum_j softplus(c_j + v.W[:, j])        (Gaussian)

Low free energy = a probable input: the fraud app scores transactions with it.

Training maximises the log-likelihood, whose gradient is a difference of two expectations,
<v h>_data - <v h>_model. The second needs samples from the model. Contrastive divergence (CD-k,
Hinton, 2002, "Training products of experts by minimizing contrastive divergence") starts a Gibbs
chain at the data and stops after k steps; persistent CD (PCD, Tieleman, 2008, "Training restricted
Boltzmann machines using approximations to the likelihood gradient") keeps "fantasy particles"
running across updates, which follows the model distribution more faithfully. Momentum and weight
decay follow Hinton's "A practical guide to training RBMs" (2010).

The layer (`RBM`) is pure `keras.ops`: sampling functions take their random numbers as arguments.
`RBMTrainer` is the `keras.Model` whose `train_step` runs CD-k / PCD, so `fit`, callbacks and
progress bars work; it draws those random numbers so that training under `MirroredStrategy`
computes exactly what one device computes on the same global batch (see `RBMTrainer`).
"""

import keras
import tensorflow as tf
from keras import ops

VISIBLE_UNITS = ("bernoulli", "gaussian")


@keras.saving.register_keras_serializable(package="layers")
class RBM(keras.layers.Layer):
    """An RBM layer: `call(v)` gives the hidden probabilities p(h = 1 | v), [batch, units].

    Args:
        units: number of hidden units.
        visible: "bernoulli" for inputs in [0, 1] (pixel intensities read as probabilities) or
            "gaussian" for real-valued inputs standardised to unit variance.
    """

    def __init__(self, units: int, visible: str = "bernoulli", **kwargs):
        super().__init__(**kwargs)
        if visible not in VISIBLE_UNITS:
            raise ValueError(f"visible={visible!r}: choose from {VISIBLE_UNITS}")
        self.units = int(units)
        self.visible = visible

    def build(self, input_shape):
        n_visible = input_shape[-1]
        # Small random weights break the symmetry between hidden units (Hinton's guide, 8).
        self.kernel = self.add_weight(
            shape=(n_visible, self.units), initializer=keras.initializers.RandomNormal(0.0, 0.01),
            name="kernel",
        )
        self.hidden_bias = self.add_weight(shape=(self.units,), initializer="zeros",
                                           name="hidden_bias")
        self.visible_bias = self.add_weight(shape=(n_visible,), initializer="zeros",
                                            name="visible_bias")

    def call(self, visible):
        return self.hidden_probabilities(visible)

    def hidden_probabilities(self, visible):
        return ops.sigmoid(ops.matmul(visible, self.kernel) + self.hidden_bias)

    def visible_mean(self, hidden):
        """E[v | h]: probabilities for Bernoulli units, the Gaussian's mean otherwise."""
        activation = ops.matmul(hidden, ops.transpose(self.kernel)) + self.visible_bias
        return ops.sigmoid(activation) if self.visible == "bernoulli" else activation

    def sample_hidden(self, visible, uniform):
        """h ~ p(h | v), given uniform noise of h's shape."""
        return ops.cast(self.hidden_probabilities(visible) > uniform, self.compute_dtype)

    def sample_visible(self, hidden, noise):
        """v ~ p(v | h), given noise of v's shape: uniform for Bernoulli units, standard normal
        for Gaussian ones."""
        mean = self.visible_mean(hidden)
        if self.visible == "bernoulli":
            return ops.cast(mean > noise, self.compute_dtype)
        return mean + noise

    def visible_noise(self, shape, seed):
        if self.visible == "bernoulli":
            return keras.random.uniform(shape, seed=seed)
        return keras.random.normal(shape, seed=seed)

    def gibbs(self, visible, steps: int = 1, seed=None):
        """Runs `steps` rounds of block Gibbs sampling v -> h -> v from `visible`."""
        seed = seed if seed is not None else keras.random.SeedGenerator()
        for _ in range(steps):
            hidden_shape = (ops.shape(visible)[0], self.units)
            hidden = self.sample_hidden(visible, keras.random.uniform(hidden_shape, seed=seed))
            visible = self.sample_visible(hidden, self.visible_noise(ops.shape(visible), seed))
        return visible

    def free_energy(self, visible):
        """F(v), [batch]: -log of the unnormalised probability of each row of `visible`."""
        hidden_term = ops.sum(
            ops.softplus(ops.matmul(visible, self.kernel) + self.hidden_bias), axis=-1
        )
        if self.visible == "bernoulli":
            return -ops.sum(visible * self.visible_bias, axis=-1) - hidden_term
        return 0.5 * ops.sum(ops.square(visible - self.visible_bias), axis=-1) - hidden_term

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "visible": self.visible}


@keras.saving.register_keras_serializable(package="layers")
class RBMTrainer(keras.Model):
    """Trains an `RBM` with CD-k (or PCD-k) through `fit`; the data are visible vectors only.

    The CD statistics are turned into gradients of the negative log-likelihood and handed to the
    compiled optimizer, so momentum, weight decay and learning-rate schedules are the optimizer's
    (`keras.optimizers.SGD(learning_rate, momentum=0.5, weight_decay=...)` is the classic recipe)
    and `MirroredStrategy` aggregates them like any gradients. Two things make the distributed
    update equal the single-device one:

    - TensorFlow's optimizer sums gradients across replicas: each replica scales its batch means
      by 1 / replicas (what Keras does to a compiled loss).
    - Random numbers: a `SeedGenerator` would give every replica the same ones. Here every
      replica draws the noise of the whole global batch from a stateless seed (step, draw) and
      keeps the slice of its own examples, so the samples depend on an example's place in the
      global batch, not on which device holds it.

    Persistent chains (PCD) live in a variable synchronised on read: each replica keeps its own
    `chains` fantasy particles.

    Metrics: `reconstruction_error` (mean squared difference between v and its mean-field
    reconstruction, a progress signal, not the objective) and `free_energy` of the data.
    """

    def __init__(self, rbm: RBM, k: int = 1, persistent: bool = False, chains: int = 100,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.rbm = rbm
        self.k = int(k)
        self.persistent = bool(persistent)
        self.chains = int(chains)
        self.seed = int(seed)
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_error")
        self.free_energy_tracker = keras.metrics.Mean(name="free_energy")

    def build(self, input_shape):
        if not self.rbm.built:
            self.rbm.build(input_shape)
        if self.persistent:
            self.fantasy = keras.Variable(
                keras.random.uniform((self.chains, input_shape[-1]), seed=self.seed),
                trainable=False, synchronization="on_read", aggregation="mean",
                name="fantasy_particles",
            )
        self.built = True

    def call(self, visible):
        return self.rbm(visible)

    @property
    def metrics(self):
        return [self.reconstruction_tracker, self.free_energy_tracker]

    def compile(self, optimizer=None, **kwargs):
        if optimizer is None:
            optimizer = keras.optimizers.SGD(0.05, momentum=0.5, weight_decay=2e-4)
        super().compile(optimizer=optimizer, **kwargs)
        # Weight decay shrinks the weights only (Hinton's guide, 10), not the biases.
        self.optimizer.exclude_from_weight_decay(var_names=["bias"])

    def _noise(self, local_shape, draw, normal=False):
        """This replica's slice of the global batch's noise for random draw number `draw`."""
        context = tf.distribute.get_replica_context()
        replicas, replica = context.num_replicas_in_sync, context.replica_id_in_sync_group
        rows = local_shape[0]
        seed = tf.stack([tf.cast(self.seed, tf.int64),
                         tf.cast(self.optimizer.iterations, tf.int64) * 1000 + draw])
        shape = tf.stack([rows * replicas, local_shape[1]])
        sampler = tf.random.stateless_normal if normal else tf.random.stateless_uniform
        return sampler(shape, seed=seed)[replica * rows : (replica + 1) * rows]

    def _chain(self, visible, draw):
        """k steps of block Gibbs sampling; returns the chain's last visible state."""
        for _ in range(self.k):
            rows = tf.shape(visible)[0]
            hidden = self.rbm.sample_hidden(visible, self._noise((rows, self.rbm.units), draw))
            gaussian = self.rbm.visible == "gaussian"
            visible = self.rbm.sample_visible(
                hidden, self._noise(tf.shape(visible), draw + 1, normal=gaussian)
            )
            draw += 2
        return visible

    def train_step(self, data):
        visible = data[0] if isinstance(data, tuple) else data
        visible = ops.cast(visible, self.compute_dtype)
        replicas = tf.distribute.get_replica_context().num_replicas_in_sync

        positive_hidden = self(visible)  # builds the RBM (and the chains) on first use
        start = self.fantasy.value if self.persistent else visible
        negative_visible = self._chain(start, draw=0)
        negative_hidden = self.rbm.hidden_probabilities(negative_visible)
        if self.persistent:
            self.fantasy.assign(negative_visible)

        batch = ops.cast(ops.shape(visible)[0], self.compute_dtype)
        fantasies = ops.cast(ops.shape(negative_visible)[0], self.compute_dtype)
        # d(-log p(v))/d(theta) = <dE/dtheta>_data - <dE/dtheta>_model, as batch means.
        gradients = [
            ops.matmul(ops.transpose(negative_visible), negative_hidden) / fantasies
            - ops.matmul(ops.transpose(visible), positive_hidden) / batch,
            ops.mean(negative_hidden, axis=0) - ops.mean(positive_hidden, axis=0),
            self._visible_bias_gradient(visible, negative_visible),
        ]
        self.optimizer.apply(
            [g / replicas for g in gradients],
            [self.rbm.kernel, self.rbm.hidden_bias, self.rbm.visible_bias],
        )
        return self._update_metrics(visible)

    def _visible_bias_gradient(self, visible, negative_visible):
        # dE/db is -v (Bernoulli) and (b - v) (Gaussian); the b terms cancel between the phases.
        return ops.mean(negative_visible, axis=0) - ops.mean(visible, axis=0)

    def test_step(self, data):
        visible = ops.cast(data[0] if isinstance(data, tuple) else data, self.compute_dtype)
        self(visible)
        return self._update_metrics(visible)

    def _update_metrics(self, visible):
        reconstruction = self.rbm.visible_mean(self.rbm.hidden_probabilities(visible))
        self.reconstruction_tracker.update_state(
            ops.mean(ops.square(visible - reconstruction), axis=-1)
        )
        self.free_energy_tracker.update_state(self.rbm.free_energy(visible))
        return {m.name: m.result() for m in self.metrics}

    def get_config(self):
        return {**super().get_config(), "rbm": keras.saving.serialize_keras_object(self.rbm),
                "k": self.k, "persistent": self.persistent, "chains": self.chains,
                "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        config["rbm"] = keras.saving.deserialize_keras_object(config["rbm"])
        return cls(**config)
