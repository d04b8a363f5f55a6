"""RBM, DBN and DSN: exact checks on cases small enough to enumerate, the distributed updates
against one device, and real learning on the embedded digits."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from apps import runner
from layers.dbn import DeepBeliefNetwork
from layers.dsn import DeepStackingNetwork
from layers.rbm import RBM, RBMTrainer
from pipelines import images


def all_binary_states(n: int) -> np.ndarray:
    return np.array(list(itertools.product([0, 1], repeat=n)), dtype="float32")


def random_rbm(visible: int, hidden: int, kind: str = "bernoulli", seed: int = 0) -> RBM:
    rbm = RBM(hidden, visible=kind)
    rbm.build((None, visible))
    rng = np.random.default_rng(seed)
    for weight in rbm.weights:
        weight.assign(rng.normal(size=weight.shape).astype("float32"))
    return rbm


def energies(rbm: RBM, visible: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """E(v, h) for every pair, [len(visible), len(hidden)], straight from the definition."""
    W, c, b = (np.asarray(w, dtype="float64") for w in (rbm.kernel, rbm.hidden_bias,
                                                         rbm.visible_bias))
    v = visible.astype("float64")
    interaction = v @ W @ hidden.T.astype("float64")
    if rbm.visible == "bernoulli":
        visible_term = -(v @ b)[:, None]
    else:
        visible_term = 0.5 * ((v - b) ** 2).sum(axis=1)[:, None]
    return visible_term - (hidden @ c)[None, :] - interaction


# ---------------------------------------------------------------------------------------------
# RBM
# ---------------------------------------------------------------------------------------------


@pytest.mark.fast
@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_free_energy_equals_brute_force_sum_over_hidden_states(kind):
    rbm = random_rbm(4, 3, kind)
    visible = (all_binary_states(4) if kind == "bernoulli"
               else np.random.default_rng(1).normal(size=(16, 4)).astype("float32"))
    brute_force = -np.log(np.exp(-energies(rbm, visible, all_binary_states(3))).sum(axis=1))
    np.testing.assert_allclose(rbm.free_energy(visible).numpy(), brute_force, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.fast
def test_conditionals_match_the_joint_distribution():
    """p(h_j = 1 | v) from `call` equals the marginal computed from the enumerated joint."""
    rbm = random_rbm(4, 3)
    visible, hidden = all_binary_states(4), all_binary_states(3)
    joint = np.exp(-energies(rbm, visible, hidden))
    posterior = joint / joint.sum(axis=1, keepdims=True)  # p(h | v), [16 v, 8 h]
    np.testing.assert_allclose(rbm(visible).numpy(), posterior @ hidden, rtol=1e-5, atol=1e-6)


def exact_log_likelihood(rbm: RBM, data: np.ndarray) -> float:
    """Mean log p(v) over `data`, with the partition function summed over all visible states."""
    states = all_binary_states(data.shape[1])
    log_partition = np.logaddexp.reduce(-rbm.free_energy(states).numpy().astype("float64"))
    return float(np.mean(-rbm.free_energy(data).numpy()) - log_partition)


def two_prototype_data(rows: int = 1024, seed: int = 0) -> np.ndarray:
    """Six binary units drawn around two opposite prototypes: an enumerable distribution."""
    rng = np.random.default_rng(seed)
    prototype = np.array([1, 1, 1, 0, 0, 0], dtype=bool)
    flip = rng.random((rows, 6)) < 0.1
    which = rng.random((rows, 1)) < 0.5
    return (np.where(which, prototype, ~prototype) ^ flip).astype("float32")


@pytest.mark.parametrize("persistent", [False, True], ids=["CD-1", "PCD-1"])
def test_contrastive_divergence_raises_exact_log_likelihood(persistent):
    keras.utils.set_random_seed(0)
    data = two_prototype_data()
    rbm = RBM(4)
    trainer = RBMTrainer(rbm, k=1, persistent=persistent, chains=64)
    trainer.compile(keras.optimizers.SGD(0.1, momentum=0.5))
    trainer.fit(data[:64], batch_size=64, epochs=1, verbose=0)  # builds; a tiny first step
    before = exact_log_likelihood(rbm, data)
    trainer.fit(data, batch_size=32, epochs=30, verbose=0)
    after = exact_log_likelihood(rbm, data)
    # The data's entropy bounds the mean log-likelihood from above: 6 units flipped with p = 0.1
    # around one of two prototypes give about -2.6 nats; uniform guessing gives 6 ln 2 = -4.16.
    assert before < -4.0
    assert after > -3.0, (before, after)


def test_gaussian_rbm_free_energy_flags_points_off_the_data():
    """What the fraud app relies on: after training on normal points, outliers have higher free
    energy than held-out normal points."""
    from sklearn.metrics import roc_auc_score

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    mixing = rng.normal(size=(3, 8))
    normal = (rng.normal(size=(3000, 3)) @ mixing).astype("float32")  # rank-3 data in 8-d
    normal = (normal - normal.mean(0)) / normal.std(0)
    outliers = rng.normal(size=(200, 8)).astype("float32") * 1.5
    rbm = RBM(16, visible="gaussian")
    trainer = RBMTrainer(rbm, k=1)
    trainer.compile(keras.optimizers.SGD(0.01, momentum=0.9))
    trainer.fit(normal[:2500], batch_size=50, epochs=10, verbose=0)
    scores = np.concatenate([rbm.free_energy(normal[2500:]), rbm.free_energy(outliers)])
    labels = np.r_[np.zeros(500), np.ones(200)]
    assert roc_auc_score(labels, scores) > 0.9


@pytest.mark.fast
def test_rbm_update_under_mirrored_strategy_equals_one_device():
    """Same global batch, same initial weights: 3 CD-1 steps on 2 logical CPUs leave the same
    weights as on one device (gradients scaled per replica, noise drawn per example)."""
    data = two_prototype_data(rows=192)
    initial = [w.numpy() for w in random_rbm(6, 5).weights]

    def train(strategy):
        with strategy.scope():
            rbm = RBM(5)
            rbm.build((None, 6))
            rbm.set_weights(initial)
            trainer = RBMTrainer(rbm, k=2, seed=7)
            trainer.compile(keras.optimizers.SGD(0.1, momentum=0.5, weight_decay=1e-3))
        trainer.fit(tf.data.Dataset.from_tensor_slices(data).batch(64), epochs=1, verbose=0)
        return [w.numpy() for w in rbm.weights]

    single = train(tf.distribute.get_strategy())
    mirrored = train(runner.choose_strategy("mirrored"))
    for one, two, start in zip(single, mirrored, initial):
        assert not np.allclose(one, start)  # it did learn something
        np.testing.assert_allclose(two, one, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# DSN
# ---------------------------------------------------------------------------------------------


def toy_regression(rows=300, features=5, outputs=3, seed=0):
    rng = np.random.default_rng(seed)
    inputs = rng.normal(size=(rows, features)).astype("float32")
    targets = np.tanh(inputs @ rng.normal(size=(features, outputs))).astype("float32")
    return inputs, targets


@pytest.mark.fast
def test_closed_form_upper_weights_equal_numpy_ridge_least_squares():
    inputs, targets = toy_regression()
    ridge = 0.5
    dsn = DeepStackingNetwork(num_modules=2, hidden_units=20, output_units=3, ridge=ridge)
    batches = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(64)
    dsn.fit_module(0, batches, verbose=0)
    dsn.fit_module(1, batches, verbose=0)
    for k, module in enumerate(dsn.stack):
        hidden = module.hidden(dsn.module_inputs(inputs, k)).numpy().astype("float64")
        # min |H U - T|^2 + ridge |U|^2 as one least-squares problem: [H; sqrt(ridge) I] U = [T; 0]
        stacked = np.vstack([hidden, np.sqrt(ridge) * np.eye(20)])
        padded = np.vstack([targets, np.zeros((20, 3))])
        expected, *_ = np.linalg.lstsq(stacked, padded, rcond=None)
        np.testing.assert_allclose(module.upper.numpy(), expected, rtol=1e-4, atol=1e-5)
    # Stacking: module 2 reads the raw input and module 1's outputs.
    assert dsn.stack[1].lower_kernel.shape == (5 + 3, 20)
    # `depth` picks how many modules run, in eager calls and in Keras' traced predict alike.
    for depth in (1, 2, 1):
        dsn.depth = depth
        expected = dsn.stack[depth - 1](dsn.module_inputs(inputs, depth - 1)).numpy()
        np.testing.assert_allclose(dsn.predict(inputs, verbose=0), expected, atol=1e-5)


@pytest.mark.fast
def test_upper_weights_are_solved_from_solve_data_when_given():
    """Refined on distorted inputs, solved on the undistorted ones (what `--augment` does)."""
    inputs, targets = toy_regression()
    noisy = inputs + np.random.default_rng(1).normal(0, 0.5, inputs.shape).astype("float32")
    dsn = DeepStackingNetwork(num_modules=1, hidden_units=12, output_units=3, ridge=1.0)
    dsn.fit_module(0, tf.data.Dataset.from_tensor_slices((noisy, targets)).batch(64),
                   refine_epochs=1, verbose=0,
                   solve_data=tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(64))
    hidden = dsn.stack[0].hidden(inputs).numpy().astype("float64")
    expected = np.linalg.solve(hidden.T @ hidden + np.eye(12), hidden.T @ targets)
    np.testing.assert_allclose(dsn.stack[0].upper.numpy(), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.fast
def test_modules_of_different_widths_a_random_top_one_and_a_round_trip_through_saving(tmp_path):
    """What the MNIST benchmark stacks: refined modules, then a wider one whose W stays random."""
    inputs, targets = toy_regression()
    batches = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(64)
    keras.utils.set_random_seed(4)
    dsn = DeepStackingNetwork(num_modules=2, hidden_units=[6, 40], output_units=3)
    dsn.fit_module(0, batches, refine_epochs=2, verbose=0)
    top = dsn.stack[1]
    random_kernel = top.lower_kernel.numpy()
    dsn.fit_module(1, batches, refine_epochs=0, verbose=0)
    assert top.lower_kernel.shape == (5 + 3, 40) and top.upper.shape == (40, 3)
    np.testing.assert_array_equal(top.lower_kernel.numpy(), random_kernel)
    hidden = top.hidden(dsn.module_inputs(inputs, 1)).numpy().astype("float64")
    expected = np.linalg.solve(hidden.T @ hidden + np.eye(40), hidden.T @ targets)
    np.testing.assert_allclose(top.upper.numpy(), expected, rtol=1e-4, atol=1e-5)

    dsn.save(tmp_path / "dsn.keras")
    reloaded = keras.models.load_model(tmp_path / "dsn.keras", compile=False)
    assert reloaded.hidden_units == [6, 40]
    np.testing.assert_allclose(reloaded.predict(inputs, verbose=0),
                               dsn.predict(inputs, verbose=0), atol=1e-6)
    with pytest.raises(ValueError, match="one per module"):
        DeepStackingNetwork(num_modules=3, hidden_units=[6, 40], output_units=3)


@pytest.mark.fast
def test_refinement_follows_the_gradient_through_the_closed_form_upper_weights():
    """One full-batch refinement step is Adam's first step, lr * sign(gradient): its direction
    must be the sign of the numerical gradient of |H U(W) - T|^2, U(W) the ridge solution."""
    from layers import dsn as dsn_layer

    inputs, targets = toy_regression(rows=200)
    ridge = 0.5
    batches = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(64)
    keras.utils.set_random_seed(1)
    dsn = DeepStackingNetwork(num_modules=1, hidden_units=8, output_units=3, ridge=ridge)
    dsn.fit_module(0, batches, verbose=0)  # no refinement: W and a as initialised
    module = dsn.stack[0]
    start = [module.lower_kernel.numpy().astype("float64"),
             module.lower_bias.numpy().astype("float64")]
    dsn.fit_module(0, batches, refine_epochs=1, verbose=0)  # one batch of all 200 rows
    moved = [(before - after.numpy()) / dsn_layer.REFINE_LEARNING_RATE
             for before, after in zip(start, (module.lower_kernel, module.lower_bias))]

    def loss(kernel, bias):
        hidden = 1.0 / (1.0 + np.exp(-(inputs @ kernel + bias)))
        upper = np.linalg.solve(hidden.T @ hidden + ridge * np.eye(8), hidden.T @ targets)
        return np.sum((hidden @ upper - targets) ** 2) / len(inputs)

    step = 1e-6
    for index, weight in enumerate(start):
        numerical = np.zeros_like(weight)
        for position in np.ndindex(weight.shape):
            plus, minus = [w.copy() for w in start], [w.copy() for w in start]
            plus[index][position] += step
            minus[index][position] -= step
            numerical[position] = (loss(*plus) - loss(*minus)) / (2 * step)
        clear = np.abs(numerical) > 1e-3 * np.abs(numerical).max()
        assert clear.sum() >= 0.8 * clear.size
        np.testing.assert_allclose(moved[index][clear], np.sign(numerical[clear]), atol=1e-2)


def test_refinement_through_the_upper_weights_lowers_held_out_error():
    inputs, targets = toy_regression(rows=1200, features=8)
    train = tf.data.Dataset.from_tensor_slices((inputs[:1000], targets[:1000])).batch(100)
    held_out = tf.data.Dataset.from_tensor_slices((inputs[1000:], targets[1000:])).batch(100)
    errors = {}
    for epochs in (0, 400):
        keras.utils.set_random_seed(2)
        dsn = DeepStackingNetwork(num_modules=1, hidden_units=30, output_units=3)
        errors[epochs] = dsn.fit_module(0, train, refine_epochs=epochs,
                                        validation_data=held_out, verbose=0)["loss"]
    assert errors[400] < 0.7 * errors[0], errors


def test_dsn_training_under_mirrored_strategy_equals_one_device():
    inputs, targets = toy_regression(rows=256)
    batches = tf.data.Dataset.from_tensor_slices((inputs, targets)).batch(64)

    def train(strategy):
        keras.utils.set_random_seed(3)
        with strategy.scope():
            dsn = DeepStackingNetwork(num_modules=2, hidden_units=16, output_units=3)
            for k in range(2):  # 3 epochs of 4 batches: steps along the cosine decay too
                dsn.fit_module(k, batches, refine_epochs=3, refine_batch_size=64, verbose=0)
        return [w.numpy() for w in dsn.weights]

    single = train(tf.distribute.get_strategy())
    mirrored = train(runner.choose_strategy("mirrored"))
    for one, two in zip(single, mirrored):
        np.testing.assert_allclose(two, one, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# DBN and DSN on the embedded digits
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_batches(digits):
    return (images.batches(digits.train, 64, shuffle=True),
            images.batches(digits.validation, 256), images.batches(digits.test, 256))


def test_pretraining_gives_a_better_start_than_random_weights(digit_batches):
    """Same architecture, same short fine-tuning: the pretrained DBN ends with the lower held-out
    loss (Hinton et al., 2006; Erhan et al., 2010)."""
    train, validation, _ = digit_batches
    held_out_loss = {}
    for pretrained in (True, False):
        keras.utils.set_random_seed(0)
        dbn = DeepBeliefNetwork([256, 256])
        if pretrained:
            dbn.pretrain(train, epochs=5, verbose=0)
        classifier = dbn.classifier((32, 32, 1), 10)
        classifier.compile(keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        classifier.fit(train, epochs=3, verbose=0)
        held_out_loss[pretrained] = classifier.evaluate(validation, verbose=0)
    assert held_out_loss[True] < 0.8 * held_out_loss[False], held_out_loss


def test_dbn_dreams_look_like_its_data(digit_batches):
    """Samples from the top RBM, passed down, are far more probable under the first RBM than
    random images are."""
    train, _, _ = digit_batches
    keras.utils.set_random_seed(0)
    dbn = DeepBeliefNetwork([128, 64])
    dbn.pretrain(train, epochs=5, verbose=0)
    dreams = dbn.sample(50, gibbs_steps=50)
    noise = np.random.default_rng(0).random((50, 1024)).astype("float32")
    first = dbn.rbms[0]
    assert dreams.shape == (50, 1024)
    assert np.median(first.free_energy(dreams)) < np.median(first.free_energy(noise)) - 100


@pytest.mark.parametrize("distorted_validation", [False, True])
def test_dsn_on_distorted_digits_keeps_the_upper_weights_validation_prefers(
        distorted_validation, digits, tmp_path, monkeypatch):
    """`train --model dsn --augment`: U from the undistorted digits, or from them plus two
    distorted passes, whichever the validation digits prefer. Distortions far past
    label-preserving make the second worse on undistorted validation digits (by 3-5 points
    over seeds 0-2) and better on equally distorted ones (by 14-17 points)."""
    from apps import digit_ocr

    monkeypatch.setattr(images, "AUGMENT_ROTATION", 60.0)
    monkeypatch.setattr(images, "AUGMENT_SHIFT", 5.0)
    keras.utils.set_random_seed(0)
    undistorted = images.batches(digits.train, 64)
    # Cached: the validation digits are distorted once, and both U are judged on the same ones.
    validation = images.batches(digits.validation, 256, augment=distorted_validation).cache()
    dsn = DeepStackingNetwork(num_modules=1, hidden_units=200, output_units=10)
    digit_ocr.train_dsn(dsn, images.batches(digits.train, 64, shuffle=True, augment=True),
                        validation, 10, refine_epochs=1, run_dir=tmp_path, verbose=0,
                        undistorted_batches=undistorted)
    kept = dsn.stack[0].upper.numpy()
    solved_from_undistorted = dsn.solve_upper(
        0, undistorted.map(lambda x, labels: (x, tf.one_hot(labels, 10))))
    assert np.allclose(kept, solved_from_undistorted, atol=1e-5) != distorted_validation
    assert (tmp_path / "best.keras").is_file()


@pytest.mark.parametrize("model_name", ["dbn", "dsn"])
def test_digit_ocr_trains_dbn_and_dsn_past_95_percent(model_name, tmp_path):
    from apps import digit_ocr

    # The app's defaults: 30 fine-tuning epochs for the DBN (with 20, the best of 180 validation
    # digits came as early as epoch 10 in one run, 93.6% on test), DSN_REFINE_EPOCHS for the DSN.
    metrics = digit_ocr.train(digit_ocr.TrainConfig(model=model_name, run_dir=tmp_path,
                                                     verbose=0))
    assert metrics["test_accuracy"] >= 0.95, metrics["test_accuracy"]
    assert (tmp_path / "training_curves.png").is_file()
    if model_name == "dbn":
        assert (tmp_path / "dbn_samples.png").is_file()
    reloaded, run = digit_ocr.load_run(tmp_path)
    assert run["model"] == model_name
    assert reloaded.count_params() > 0
