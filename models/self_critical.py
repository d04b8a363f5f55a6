"""Self-critical sequence training (Rennie et al., 2017, arXiv:1612.00563): after cross-entropy
has taught the captioner to imitate the references word by word, it is trained on captions it
writes itself, rewarded by how well each whole caption scores against the photo's references.
Cross-entropy never sees the model's own mistakes (exposure bias) and does not score what the
metrics score; the policy gradient fixes both.

    regions [b, R, C] -> K captions sampled per photo (the K of its references in the batch)
    reward r_k = CIDEr-D(caption k, the photo's references)     (or sentence BLEU-4: `Reward`)
    baseline b_k = mean of the photo's other K - 1 rewards       (Luo, 2020, arXiv:2003.09971)
    loss = -sum_k (r_k - b_k) * log p(caption k) / words

The baseline of the other samples replaces Rennie et al.'s greedy decode: no second decoding per
batch, and an estimate of how good a caption of that photo usually is that does not depend on the
caption being scored. A caption better than its siblings is made likelier, a worse one less.

CIDEr-D (Vedantam et al., 2015) is the reward: n-grams (1-4) weighted by how rare they are in
the training references (TF-IDF), compared by cosine with each reference, clipped to the
reference's counts and damped by the length difference. It is computed here on token ids, with
the document frequencies of the training references, as SCST is usually run; the same scorer on
words with the test references' frequencies is coco-caption's CIDEr-D (`corpus_cider_d`).
"""

import math
from collections import Counter, defaultdict

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from layers.beam_search import EncoderDecoderSearch, tile_beams
from models.photo_captioner import photo_search
from pipelines import text_pairs

NGRAMS = 4
SIGMA = 6.0  # CIDEr-D's length penalty: exp(-(length difference)^2 / (2 sigma^2))
LEARNING_RATE = 5e-5  # Rennie et al.'s
CLIP_NORM = 1.0


# ---------------------------------------------------------------------------------------------
# CIDEr-D
# ---------------------------------------------------------------------------------------------


def ngram_counts(tokens, n: int = NGRAMS) -> Counter:
    tokens = tuple(tokens)
    return Counter(tokens[i : i + k] for k in range(1, n + 1)
                   for i in range(len(tokens) - k + 1))


class CiderD:
    """CIDEr-D of captions (sequences of words or of token ids) against references, with the
    document frequencies of `corpus`: a list of reference sets, one per photo (an n-gram counts
    once per photo however many of its references hold it)."""

    def __init__(self, corpus, n: int = NGRAMS, sigma: float = SIGMA):
        self.n, self.sigma = n, sigma
        self.frequency: defaultdict = defaultdict(float)
        for references in corpus:
            for ngram in set().union(*(ngram_counts(r, n) for r in references)):
                self.frequency[ngram] += 1
        self.log_documents = math.log(max(len(corpus), 1))

    def vector(self, tokens):
        """TF-IDF weights of each n-gram order, their norms, and the length."""
        weights = [{} for _ in range(self.n)]
        norms = [0.0] * self.n
        for ngram, count in ngram_counts(tokens, self.n).items():
            weight = count * (self.log_documents - math.log(max(1.0, self.frequency[ngram])))
            weights[len(ngram) - 1][ngram] = weight
            norms[len(ngram) - 1] += weight * weight
        return weights, [math.sqrt(v) for v in norms], len(tokens)

    def similarity(self, candidate, reference) -> float:
        (weights, norms, length), (ref_weights, ref_norms, ref_length) = candidate, reference
        damping = math.exp(-((length - ref_length) ** 2) / (2 * self.sigma**2))
        total = 0.0
        for order in range(self.n):
            overlap = sum(min(w, ref_weights[order].get(g, 0.0)) * ref_weights[order].get(g, 0.0)
                          for g, w in weights[order].items())
            if norms[order] and ref_norms[order]:
                overlap /= norms[order] * ref_norms[order]
            total += overlap * damping
        return total / self.n

    def score(self, caption, references) -> float:
        """CIDEr-D of one caption: 10 x the mean similarity over its references."""
        return self.score_vectors(self.vector(caption), [self.vector(r) for r in references])

    def score_vectors(self, candidate, references) -> float:
        """`score` of vectors already made (`vector`): a photo's references serve K samples."""
        return 10.0 * float(np.mean([self.similarity(candidate, r) for r in references]))


def sentence_bleu(caption, references, n: int = NGRAMS) -> float:
    """sacreBLEU's sentence BLEU in 0..1 (`sentence_bleu`: "exp" smoothing, effective order):
    clipped n-gram precisions, a zero count replaced by 1 / (2^k x total) for the k-th such
    order, and the brevity penalty against the reference closest in length."""
    length = len(caption)
    if not length:
        return 0.0
    most: Counter = Counter()
    for reference in references:
        most |= ngram_counts(reference, n)  # the highest count of each n-gram in any reference
    correct = [0] * n
    for ngram, count in ngram_counts(caption, n).items():
        correct[len(ngram) - 1] += min(count, most[ngram])
    if not any(correct):
        return 0.0
    closest = min((abs(len(r) - length), len(r)) for r in references)[1]
    brevity = 1.0 if length >= closest else math.exp(1 - closest / length)
    logs, halvings = [], 1.0
    for order in range(n):
        total = length - order
        if total <= 0:  # effective order: a caption of 3 words has no 4-grams to count
            break
        if correct[order]:
            logs.append(math.log(correct[order] / total))
        else:
            halvings *= 2
            logs.append(math.log(1.0 / (halvings * total)))
    return brevity * math.exp(sum(logs) / len(logs))


REWARDS = ("cider-d", "bleu4")
REWARD = "cider-d"


class Reward:
    """What a sampled caption earns against its photo's references: CIDEr-D (with the
    document frequencies of `corpus`, the training references) or sentence BLEU-4 x 10 (on
    CIDEr-D's scale: a good caption earns about 1 either way)."""

    def __init__(self, name: str, corpus):
        if name not in REWARDS:
            raise ValueError(f"reward {name!r}: choose from {', '.join(REWARDS)}")
        self.name = name
        self.cider = CiderD(corpus) if name == "cider-d" else None

    def __call__(self, sampled: np.ndarray, references: np.ndarray) -> np.ndarray:
        """sampled int [b * K, L] (each ended by END, PAD after), references int [b, K', L']
        (words, END, PAD) -> float32 [b * K], K = b*K / b samples per photo."""
        per_photo = len(sampled) // len(references)
        out = np.empty(len(sampled), np.float32)
        for photo, refs in enumerate(references):
            refs = [r for r in map(words, refs) if r]
            if self.cider is not None:
                vectors = [self.cider.vector(r) for r in refs]
            for row in range(photo * per_photo, (photo + 1) * per_photo):
                caption = words(sampled[row])
                if self.cider is not None:
                    out[row] = self.cider.score_vectors(self.cider.vector(caption), vectors)
                else:
                    out[row] = 10.0 * sentence_bleu(caption, refs)
        return out


def words(ids: np.ndarray) -> tuple:
    """Token ids up to the end token (or the first padding), as a tuple."""
    ids = list(np.asarray(ids))
    for stop in (text_pairs.END, text_pairs.PAD):
        if stop in ids:
            ids = ids[: ids.index(stop)]
    return tuple(int(i) for i in ids)


def corpus_cider_d(captions: list[str], references: list[list[str]]) -> float:
    """coco-caption's CIDEr-D of a test set: document frequencies from its own references,
    the mean of the captions' scores."""
    scorer = CiderD([[r.split() for r in refs] for refs in references])
    return float(np.mean([scorer.score(c.split(), [r.split() for r in refs])
                          for c, refs in zip(captions, references)]))


# ---------------------------------------------------------------------------------------------
# The policy gradient, as a Keras model that `runner.fit` trains like any other
# ---------------------------------------------------------------------------------------------


class SelfCriticalTrainer(keras.Model):
    """Trains the grid model (`models.photo_captioner.build_photo_models`' second model) on its
    own samples. Batches are `pipelines.region_grids.grid_batches`' ((regions [b, R, C],
    captions_in [b, K, L]), captions_out [b * K, L]): the references come from captions_out,
    and K captions are sampled per photo, L tokens at most.

    Sampling runs without dropout and so does the pass that scores the samples, so the
    gradient is that of the policy that sampled them. The seed generator is a variable of this
    model: a resumed run samples what the killed one would have."""

    def __init__(self, grid_model: keras.Model, search: EncoderDecoderSearch, reward: Reward,
                 seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.grid_model, self.search, self.reward = grid_model, search, reward
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.reward_tracker = keras.metrics.Mean(name="reward")
        self.loss_tracker = keras.metrics.Mean(name="loss")

    def call(self, inputs, training=None):
        return self.grid_model(inputs, training=training)

    def sample(self, regions, per_photo: int, length: int) -> tf.Tensor:
        """regions [b, R, C] -> sampled ids [b * per_photo, length], PAD after each END."""
        memory, keys, mask, state = self.search.encode(regions)
        memory, keys, mask = (tile_beams(x, per_photo) for x in (memory, keys, mask))
        state = tf.nest.map_structure(lambda s: tile_beams(s, per_photo), state)
        tokens = tf.fill([tf.shape(memory)[0]], tf.constant(text_pairs.START, tf.int32))
        finished = tf.zeros_like(tokens, tf.bool)
        sampled = []
        for _ in range(length):
            log_probs, state, _ = self.search.decode_step(tokens, state, memory, keys, mask)
            drawn = keras.random.categorical(log_probs, 1, dtype="int32",
                                             seed=self.seed_generator)[:, 0]
            tokens = tf.where(finished, text_pairs.PAD, drawn)
            finished = finished | tf.equal(tokens, text_pairs.END)
            sampled.append(tokens)
        return tf.stack(sampled, axis=1)

    def train_step(self, data):
        (regions, captions_in), captions_out = data
        per_photo, length = captions_in.shape[1], captions_in.shape[2]
        sampled = self.sample(regions, per_photo, length)  # [b * K, L]
        references = tf.reshape(captions_out, [-1, per_photo, length])
        rewards = tf.numpy_function(self.reward, [sampled, references], tf.float32)
        rewards = tf.reshape(rewards, [-1, per_photo])  # [b, K]
        baseline = (tf.reduce_sum(rewards, 1, keepdims=True) - rewards) / (per_photo - 1)
        advantage = tf.reshape(rewards - baseline, [-1, 1])
        # A token counts up to and including the first END: the later ones were never drawn.
        ended = tf.cumsum(tf.cast(tf.equal(sampled, text_pairs.END), tf.float32), axis=1,
                          exclusive=True)
        drawn = tf.cast(tf.equal(ended, 0.0), tf.float32)
        fed = tf.concat([tf.fill([tf.shape(sampled)[0], 1], text_pairs.START),
                         sampled[:, :-1]], axis=1)
        fed = tf.reshape(fed, [-1, per_photo, length])
        replicas = self.distribute_strategy.num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = self.grid_model([regions, fed], training=False)
            log_probs = ops.log_softmax(ops.cast(logits, "float32") + self.search.forbidden, -1)
            taken = tf.gather(log_probs, sampled, batch_dims=2)  # [b * K, L]
            loss = -tf.reduce_sum(advantage * taken * drawn) / tf.maximum(
                tf.reduce_sum(drawn), 1.0)
            scaled = loss / replicas
        variables = self.grid_model.trainable_variables
        self.optimizer.apply(tape.gradient(scaled, variables), variables)
        self.reward_tracker.update_state(rewards)
        self.loss_tracker.update_state(loss)
        return {"reward": self.reward_tracker.result(), "loss": self.loss_tracker.result()}

    @property
    def metrics(self):
        return [self.reward_tracker, self.loss_tracker]


def self_critical_trainer(grid_model: keras.Model, photo_model: keras.Model,
                          blocks: np.ndarray, learning_rate: float = LEARNING_RATE,
                          seed: int = 0, reward: str = REWARD) -> SelfCriticalTrainer:
    """A compiled trainer; `blocks` [photos, K, L] are the training references' ids
    (`pipelines.region_grids.PhotoCaptions.blocks["train"]`), whose n-gram frequencies weight
    the reward. Build it in the strategy's scope."""
    search = photo_search(photo_model)
    corpus = [[words(r[1:]) for r in photo] for photo in blocks]
    trainer = SelfCriticalTrainer(grid_model, search, Reward(reward, corpus), seed=seed,
                                  name="self_critical")
    trainer.compile(optimizer=keras.optimizers.Adam(learning_rate, global_clipnorm=CLIP_NORM))
    return trainer
