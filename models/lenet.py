"""LeNet-5 (LeCun, Bottou, Bengio & Haffner, 1998), as the paper drew it and as it would be built
after batch normalisation.

A 32x32 image goes through two rounds of convolution and subsampling, then three fully connected
layers:

    32x32x1 -C1 6@5x5-> 28x28x6 -S2-> 14x14x6 -C3 16@5x5-> 10x10x16 -S4-> 5x5x16
            -C5 120@5x5-> 120 -F6 84-> 84 -> 10

`build_lenet5` keeps the paper's choices: tanh units, average-pool subsampling and C3's sparse
connection table (each C3 map sees 3, 4 or all 6 of the S2 maps, Table I of the paper). The output
is a softmax instead of the paper's Euclidean RBF units. `build_lenet5_modern` keeps the topology
with what came after: ReLU, max pooling and batch normalisation (dropout is available, off by
default: bench/README.md has the runs that chose it).
"""

import keras
import numpy as np
import tensorflow as tf
from keras import layers, ops

INPUT_SHAPE = (32, 32, 1)  # light ink on dark, values in [0, 1]

# Table I: which of the 6 S2 maps (rows) feed each of the 16 C3 maps (columns). Maps 0-5 see 3
# neighbouring S2 maps, 6-11 see 4 neighbours, 12-14 see 4 non-neighbours, map 15 sees all 6.
# Breaking the symmetry this way makes the maps learn different features.
C3_INPUTS = (
    [[j, (j + 1) % 6, (j + 2) % 6] for j in range(6)]
    + [[j, (j + 1) % 6, (j + 2) % 6, (j + 3) % 6] for j in range(6)]
    + [[0, 1, 3, 4], [1, 2, 4, 5], [0, 2, 3, 5]]
    + [list(range(6))]
)


# Registered under the package it had in apps/digit_ocr.py: saved checkpoints name it.
@keras.saving.register_keras_serializable(package="digit_ocr")
class ConnectionTable(keras.constraints.Constraint):
    """Keeps a convolution kernel [h, w, in, out] at zero where `inputs[out]` omits an input map."""

    def __init__(self, inputs, input_maps):
        self.inputs = [list(map(int, sources)) for sources in inputs]
        self.input_maps = int(input_maps)
        mask = np.zeros((self.input_maps, len(self.inputs)), dtype="float32")
        for out, sources in enumerate(self.inputs):
            mask[sources, out] = 1.0
        self.mask = mask

    def __call__(self, kernel):
        return kernel * ops.convert_to_tensor(self.mask, dtype=kernel.dtype)

    def get_config(self):
        return {"inputs": self.inputs, "input_maps": self.input_maps}


# Glorot's range for C5 as a 5x5 convolution: fan-in 5 x 5 x 16, fan-out 5 x 5 x 120.
C5_INIT_LIMIT = float(np.sqrt(6 / (5 * 5 * 16 + 5 * 5 * 120)))


def build_lenet5(num_classes: int = 10) -> keras.Model:
    c3_table = ConnectionTable(C3_INPUTS, input_maps=6)
    inputs = keras.Input(INPUT_SHAPE, name="pixels")
    x = layers.Conv2D(6, 5, activation="tanh", name="C1")(inputs)  # 28x28x6
    x = layers.AveragePooling2D(2, name="S2")(x)  # 14x14x6
    x = layers.Conv2D(16, 5, activation="tanh", kernel_constraint=c3_table, name="C3")(x)  # 10x10
    x = layers.AveragePooling2D(2, name="S4")(x)  # 5x5x16
    # C5's 5x5 window covers the whole 5x5 S4 map, so C5 is a fully connected layer over its 400
    # values (the paper calls it a convolution only because a larger input would give it more
    # than one position); as a matmul it trains faster (bench.lenet_kernels). Its weights start
    # in the convolution's Glorot range, so training starts where it always did. (A new
    # initializer for each model: it draws its seed when it is made, which must come after the
    # run's seed is set.)
    x = layers.Flatten()(x)  # 400
    c5_init = keras.initializers.RandomUniform(-C5_INIT_LIMIT, C5_INIT_LIMIT)
    x = layers.Dense(120, activation="tanh", kernel_initializer=c5_init, name="C5")(x)
    x = layers.Dense(84, activation="tanh", name="F6")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="lenet5")
    # Constraints act after each update; start from a kernel that already obeys the table.
    c3 = model.get_layer("C3")
    c3.kernel.assign(c3_table(c3.kernel))
    return model


def build_lenet5_modern(num_classes: int = 10, dropout: float = 0.0) -> keras.Model:
    replicas = tf.distribute.get_strategy().num_replicas_in_sync

    def conv_block(x, filters, name, pool=True):
        x = layers.Conv2D(filters, 5, use_bias=False, name=name)(x)
        # Synchronised across replicas: N replicas normalise with the statistics of the whole
        # global batch, as one device does (not on one device, where it would only cost time).
        x = layers.BatchNormalization(synchronized=replicas > 1, name=f"{name}_bn")(x)
        x = layers.ReLU()(x)
        return layers.MaxPooling2D(2)(x) if pool else x

    inputs = keras.Input(INPUT_SHAPE, name="pixels")
    x = conv_block(inputs, 6, "C1")  # 14x14x6
    x = conv_block(x, 16, "C3")  # 5x5x16
    x = conv_block(x, 120, "C5", pool=False)  # 1x1x120
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(84, activation="relu", name="F6")(x)
    x = layers.Dropout(dropout)(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="lenet5_modern")
