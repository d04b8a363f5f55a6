"""Spoken digits: datasets of WAV recordings, and tf.data pipelines of log-mel frames.

What `--data` can name:
- `fsdd-subset` (default, offline): 360 recordings of the Free Spoken Digit Dataset kept in the
  project (`pipelines/data/fsdd_subset.zip`, CC BY-SA 4.0, see FSDD_ATTRIBUTION.md): 6 speakers x
  10 digits x takes 5-8 to train, takes 0-1 to test.
- a folder of FSDD recordings (`{digit}_{speaker}_{take}.wav`, or the dataset's checkout with its
  `recordings/` folder): the official split (takes 0-4 test), or with `holdout=SPEAKER` every
  recording of that speaker held out (speaker-independent).
- `tfds:spoken_digit`: the same data from TensorFlow Datasets (prepared beforehand: offline,
  `tfds.load` would retry its download for minutes).
- a folder of WAV files with one subfolder per label (any sample rate, mono or stereo).

Every recording is read and checked by `pipelines.wav` (numpy) before training starts: one that is
not a WAV, empty or silent stops the run with one line naming it. Recordings are kept as clips of
CLIP_SAMPLES at 8 kHz with their true length; the features are computed in the tf.data pipeline
(and, by the same function, inside the served graph from WAV bytes):

    clip [8000] -> log_mel -> features [61 frames, 40 mels]    valid_frames(length) -> frames

Training batches are augmented: a random delay at the start (time shift), noise at a random
signal-to-noise ratio, SpecAugment's time and frequency masks (Park et al., 2019), and on request
a random stretch of the mel axis (vocal tract length perturbation).
"""

import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tensorflow as tf

from pipelines import DataError, wav
from pipelines.wav import CLIP_SAMPLES, FRAME_LENGTH, FRAME_STEP, NUM_FRAMES, NUM_MELS

DEFAULT_DATA = "fsdd-subset"
EMBEDDED = Path(__file__).resolve().parent / "data" / "fsdd_subset.zip"
CLASS_NAMES = [str(digit) for digit in range(10)]
FSDD_NAME = re.compile(r"^(\d)_([A-Za-z]+)_(\d+)\.wav$")
FSDD_TEST_TAKES = range(5)  # the dataset's README: takes 0-4 are the test set
VALIDATION_EVERY = 10  # every 10th training recording (in file order) validates
FOLDER_TEST_SHARE = 0.1  # a folder of labels: a seeded 10% tests, 10% validates

# Augmentation (training batches only)
MAX_SHIFT = 0.1  # seconds of silence put before the recording, at most
NOISE_SNR_DB = (15.0, 40.0)  # white noise at a signal-to-noise ratio drawn from this range
# Vocal tract length perturbation (Jaitly & Hinton, 2013) on the mel axis, when asked for: band m
# of a training recording reads band m * alpha, alpha drawn from 1 +- WARP (formants move as they
# would for a shorter or longer vocal tract): a few speakers made to sound like more.
WARP = 0.1
TIME_MASK_FRAMES = 6  # SpecAugment: one mask of up to this many frames (16 ms each) ...
FREQUENCY_MASK_MELS = 6  # ... and one of up to this many mel bands, per recording


@dataclass
class SpeechSplit:
    """Recordings as fixed-length clips: float32 [N, CLIP_SAMPLES], their lengths, labels."""

    clips: np.ndarray
    lengths: np.ndarray  # int32 [N], samples of each clip that are the recording
    labels: np.ndarray  # int32 [N]
    files: list[str] = field(default_factory=list)
    speakers: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, keep) -> "SpeechSplit":
        keep = np.asarray(keep)
        pick = np.flatnonzero(keep) if keep.dtype == bool else keep
        return SpeechSplit(self.clips[pick], self.lengths[pick], self.labels[pick],
                           [self.files[i] for i in pick] if self.files else [],
                           [self.speakers[i] for i in pick] if self.speakers else [])


@dataclass
class SpeechDataset:
    name: str
    class_names: list[str]
    train: SpeechSplit
    validation: SpeechSplit
    test: SpeechSplit

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# ---------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------


def to_split(recordings: list[np.ndarray], labels, files=(), speakers=()) -> SpeechSplit:
    fitted = [wav.fit_length(samples) for samples in recordings]
    clips = (np.stack([clip for clip, _ in fitted]) if fitted
             else np.zeros((0, CLIP_SAMPLES), np.float32))
    return SpeechSplit(clips, np.array([n for _, n in fitted], np.int32),
                       np.asarray(labels, np.int32), list(files), list(speakers))


def fsdd_dataset(name: str, recordings: dict[str, bytes | Path],
                 holdout: str | None = None) -> SpeechDataset:
    """FSDD files by name -> the official split (takes 0-4 test) or, with `holdout`, that
    speaker's recordings as the test set. Every VALIDATION_EVERY-th training file validates."""
    parsed = []
    for file_name in sorted(recordings):
        match = FSDD_NAME.match(file_name)
        if match:
            digit, speaker, take = match.groups()
            parsed.append((file_name, int(digit), speaker, int(take)))
    if not parsed:
        raise DataError(f"--data {name}: no FSDD recordings ({{digit}}_{{speaker}}_{{take}}.wav)")
    speakers = sorted({speaker for _, _, speaker, _ in parsed})
    if holdout is not None and holdout not in speakers:
        raise DataError(f"--holdout {holdout}: no such speaker in {name} ({', '.join(speakers)})")
    samples = [wav.read_wav(recordings[f], name=f"{name}/{f}") for f, *_ in parsed]
    split = to_split(samples, [d for _, d, _, _ in parsed], [f for f, *_ in parsed],
                     [s for _, _, s, _ in parsed])
    if holdout is None:
        is_test = np.array([take in FSDD_TEST_TAKES for *_, take in parsed])
    else:
        is_test = np.array([speaker == holdout for _, _, speaker, _ in parsed])
    rest = np.flatnonzero(~is_test)
    validation = np.zeros(len(parsed), bool)
    validation[rest[VALIDATION_EVERY - 1 :: VALIDATION_EVERY]] = True
    label = f"{name} ({'official split' if holdout is None else f'speaker {holdout} held out'})"
    return SpeechDataset(label, CLASS_NAMES, split.subset(~is_test & ~validation),
                         split.subset(validation), split.subset(is_test))


def load_embedded(holdout: str | None = None) -> SpeechDataset:
    with zipfile.ZipFile(EMBEDDED) as archive:
        recordings = {Path(n).name: archive.read(n) for n in archive.namelist()
                      if n.endswith(".wav")}
    return fsdd_dataset(DEFAULT_DATA, recordings, holdout)


def is_fsdd_folder(folder: Path) -> bool:
    return any(FSDD_NAME.match(path.name) for path in folder.glob("*.wav"))


def load_fsdd(folder: Path, holdout: str | None = None) -> SpeechDataset:
    """A folder of FSDD recordings, or the dataset's checkout (its recordings/ folder)."""
    if (folder / "recordings").is_dir():
        folder = folder / "recordings"
    return fsdd_dataset(str(folder), {path.name: path for path in folder.glob("*.wav")}, holdout)


def load_label_folders(folder: Path, seed: int = 42) -> SpeechDataset:
    """One subfolder of WAV files per label; a seeded FOLDER_TEST_SHARE tests, as much validates
    (at least one recording of each label in each when it has three)."""
    labels = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob("*.wav")))
    if len(labels) < 2:
        raise DataError(f"--data {folder}: not FSDD recordings nor subfolders of WAV files"
                        " (one per label, at least two)")
    rng = np.random.default_rng(seed)
    parts = {"train": [], "validation": [], "test": []}
    for index, label in enumerate(labels):
        files = sorted((folder / label).glob("*.wav"))
        order = rng.permutation(len(files))
        held = max(1, round(FOLDER_TEST_SHARE * len(files))) if len(files) >= 3 else 0
        for rank, i in enumerate(order):
            part = "test" if rank < held else "validation" if rank < 2 * held else "train"
            parts[part].append((files[i], index))
    splits = {part: to_split([wav.read_wav(path) for path, _ in items],
                             [i for _, i in items], [str(path) for path, _ in items])
              for part, items in parts.items()}
    return SpeechDataset(str(folder), labels, **splits)


def load_tfds(name: str, holdout: str | None = None) -> SpeechDataset:
    """`tfds:spoken_digit` (FSDD itself): the official split from its file names. Prepared
    beforehand: offline, an unprepared set would retry its download for minutes."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name)
    except Exception as error:  # DatasetNotFoundError and friends
        raise DataError(f"tfds:{name}: unknown dataset ({str(error).splitlines()[0]})") from None
    if not builder.is_prepared():
        raise DataError(f"tfds:{name}: not prepared in {builder.data_dir}; run `tfds build"
                        f" {name}` on a connected machine, or use --data with the FSDD folder")
    recordings = {}
    for example in builder.as_dataset(split="train"):
        file_name = Path(example["audio/filename"].numpy().decode()).name
        audio = example["audio"].numpy().astype("<i2")
        recordings[file_name] = wav_bytes(audio, builder.info.features["audio"].sample_rate)
    return fsdd_dataset(f"tfds:{name}", recordings, holdout)


def wav_bytes(pcm16: np.ndarray, rate: int) -> bytes:
    import io

    buffer = io.BytesIO()
    wav.write_wav(buffer, pcm16 / 32768, rate)
    return buffer.getvalue()


def load_speech_dataset(spec: str = DEFAULT_DATA, holdout: str | None = None,
                        seed: int = 42) -> SpeechDataset:
    """What `--data` names (see the module's docstring); `holdout`: a speaker to test on."""
    if spec == DEFAULT_DATA:
        return load_embedded(holdout)
    if spec.startswith("tfds:"):
        return load_tfds(spec.removeprefix("tfds:"), holdout)
    folder = Path(spec)
    if not folder.is_dir():
        raise DataError(f"--data {spec}: not '{DEFAULT_DATA}', 'tfds:NAME', nor a folder (of FSDD"
                        " recordings, or of one subfolder of WAV files per label)")
    if is_fsdd_folder(folder) or (folder / "recordings").is_dir():
        return load_fsdd(folder, holdout)
    if holdout is not None:
        raise DataError(f"--holdout {holdout}: only FSDD recordings name their speakers")
    return load_label_folders(folder, seed)


# ---------------------------------------------------------------------------------------------
# Features: the same TensorFlow ops in tf.data and in the served graph
# ---------------------------------------------------------------------------------------------


def log_mel(clips: tf.Tensor) -> tf.Tensor:
    """float32 [batch, CLIP_SAMPLES] -> [batch, NUM_FRAMES, NUM_MELS] (twin: `wav.log_mel`)."""
    spectrum = tf.signal.stft(clips, FRAME_LENGTH, FRAME_STEP, wav.FFT_LENGTH,
                              window_fn=tf.signal.hann_window, pad_end=False)
    power = tf.math.real(spectrum) ** 2 + tf.math.imag(spectrum) ** 2
    mel = tf.signal.linear_to_mel_weight_matrix(NUM_MELS, wav.FFT_LENGTH // 2 + 1,
                                                wav.SAMPLE_RATE, wav.MEL_LOW_HZ, wav.MEL_HIGH_HZ)
    return tf.math.log(tf.tensordot(power, mel, 1) + wav.LOG_OFFSET)


def valid_frames(lengths: tf.Tensor) -> tf.Tensor:
    """int [batch] lengths in samples -> int32 [batch] frames that hold them (twin:
    `wav.valid_frames`)."""
    lengths = tf.cast(lengths, tf.int32)
    return tf.clip_by_value(-((FRAME_LENGTH - lengths) // FRAME_STEP) + 1, 1, NUM_FRAMES)


def resample(samples: tf.Tensor, rate: tf.Tensor) -> tf.Tensor:
    """float32 [N] at `rate` Hz -> [N * 8000 // rate] at 8 kHz: `wav.resample` in TensorFlow."""
    rate = tf.cast(rate, tf.float64)
    ratio = rate / wav.SAMPLE_RATE
    count = tf.cast(tf.shape(samples, out_type=tf.int64)[0], tf.float64) * wav.SAMPLE_RATE // rate
    times = tf.range(count, dtype=tf.float64) * ratio
    cutoff = tf.minimum(tf.constant(1.0, tf.float64), 1.0 / ratio) * wav.RESAMPLE_ROLLOFF
    half_width = wav.RESAMPLE_ZEROS / cutoff
    reach = tf.cast(tf.math.ceil(half_width), tf.int64)
    taps = (tf.cast(tf.floor(times), tf.int64)[:, None]
            + tf.range(-reach + 1, reach + 1, dtype=tf.int64)[None])
    distance = times[:, None] - tf.cast(taps, tf.float64)
    window = tf.where(tf.abs(distance) < half_width,
                      0.5 + 0.5 * tf.cos(np.pi * distance / half_width), tf.zeros_like(distance))
    x = cutoff * distance
    sinc = tf.where(tf.equal(x, 0.0), tf.ones_like(x), tf.sin(np.pi * x) / (np.pi * x))
    inside = (taps >= 0) & (taps < tf.shape(samples, out_type=tf.int64)[0])
    values = tf.where(inside, tf.gather(tf.cast(samples, tf.float64),
                                        tf.where(inside, taps, tf.zeros_like(taps))),
                      tf.zeros_like(distance))
    return tf.cast(tf.reduce_sum(values * cutoff * sinc * window, axis=1), tf.float32)


def decode_wav(contents: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """16-bit PCM WAV bytes (what tf.audio.decode_wav reads), any rate, mono or stereo ->
    (float32 [CLIP_SAMPLES] clip, int32 length): `wav.read_wav` then `wav.fit_length`."""
    audio, rate = tf.audio.decode_wav(contents)  # [samples, channels], int32 Hz
    samples = tf.reduce_mean(audio, axis=1)
    samples = tf.cond(tf.equal(rate, wav.SAMPLE_RATE), lambda: samples,
                      lambda: resample(samples, rate))
    count = tf.shape(samples)[0]
    start = tf.maximum(count - CLIP_SAMPLES, 0) // 2  # the middle second of a longer one
    clip = samples[start : start + CLIP_SAMPLES]
    clip = tf.pad(clip, [[0, CLIP_SAMPLES - tf.shape(clip)[0]]])
    return tf.ensure_shape(clip, [CLIP_SAMPLES]), tf.minimum(count, CLIP_SAMPLES)


# ---------------------------------------------------------------------------------------------
# Batches for `fit`, augmented for training
# ---------------------------------------------------------------------------------------------


def augment(clips, lengths, seed):
    """Time shift and noise on the waveforms; returns (clips, lengths) with stateless random
    numbers from `seed` (int32 [2]), so an epoch's batches are the same in every run."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    batch = tf.shape(clips)[0]
    shifts = tf.random.stateless_uniform([batch], seeds[0], 0,
                                         int(MAX_SHIFT * wav.SAMPLE_RATE) + 1, tf.int32)
    # A delay of `shift` samples: each row read from `shift` samples earlier, zeros before.
    positions = tf.range(CLIP_SAMPLES)[None] - shifts[:, None]
    clips = tf.where(positions >= 0, tf.gather(clips, tf.maximum(positions, 0), batch_dims=1), 0.0)
    lengths = tf.minimum(lengths + shifts, CLIP_SAMPLES)
    inside = tf.sequence_mask(lengths, CLIP_SAMPLES, dtype=tf.float32)
    power = (tf.reduce_sum(clips**2, axis=1) / tf.cast(lengths, tf.float32))[:, None]
    snr_db = tf.random.stateless_uniform([batch, 1], seeds[1], *NOISE_SNR_DB)
    noise = tf.random.stateless_normal(tf.shape(clips), seeds[2])
    clips = clips + noise * tf.sqrt(power / 10 ** (snr_db / 10)) * inside
    return clips, lengths, seeds[3]


def warp_frequencies(features, seed):
    """[B, T, M] log-mel -> the same with each recording's mel axis stretched by its own alpha
    (see WARP), linearly interpolated between bands; the top band repeats past the edge."""
    batch = tf.shape(features)[0]
    alpha = tf.random.stateless_uniform([batch, 1], seed, 1 - WARP, 1 + WARP)
    positions = tf.minimum(tf.range(NUM_MELS, dtype=tf.float32)[None] * alpha, NUM_MELS - 1)
    below = tf.floor(positions)
    above = tf.minimum(below + 1, NUM_MELS - 1)
    weight = (positions - below)[:, None, :]  # [B, 1, M]

    def bands(index):  # [B, T, M]: for each recording, its bands at `index` [B, M]
        return tf.gather(features, tf.cast(index, tf.int32), axis=2, batch_dims=1)

    return bands(below) * (1 - weight) + bands(above) * weight


def spec_augment(features, frames, seed):
    """One time mask and one frequency mask per recording, filled with the recording's mean
    (what per-utterance normalisation then turns into zeros)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    batch = tf.shape(features)[0]
    mask = tf.sequence_mask(frames, NUM_FRAMES, dtype=tf.float32)  # [B, T]
    mean = (tf.reduce_sum(features * mask[..., None], axis=1, keepdims=True)
            / tf.reduce_sum(mask, axis=1)[:, None, None])  # [B, 1, M]

    def band(size_seed, start_seed, limit, extent):  # [B, extent] True inside the mask
        size = tf.random.stateless_uniform([batch, 1], size_seed, 0, limit + 1, tf.int32)
        start = tf.cast(tf.random.stateless_uniform([batch, 1], start_seed) * tf.cast(
            extent - size, tf.float32), tf.int32)
        span = tf.range(extent)[None]
        return (span >= start) & (span < start + size)

    in_time = band(seeds[0], seeds[1], TIME_MASK_FRAMES, NUM_FRAMES)[:, :, None]
    in_frequency = band(seeds[2], seeds[3], FREQUENCY_MASK_MELS, NUM_MELS)[:, None, :]
    return tf.where(in_time | in_frequency, mean, features)


def batches(split: SpeechSplit, batch_size: int, *, shuffle: bool = False,
            augment_data: bool = False, warp: bool = False, seed: int = 0) -> tf.data.Dataset:
    """({"features": float32 [B, NUM_FRAMES, NUM_MELS], "frames": int32 [B]}, labels [B]).

    Shuffled with numpy from `seed` and augmented with stateless random numbers from (`seed`,
    batch index): the same seed gives the same batches, and `skip(n)` the same later ones, which
    is what an exact resume needs (`apps.runner.fit`). `warp`: with `augment_data`, stretch
    the mel axis too (`warp_frequencies`).
    """
    order = (np.random.default_rng(seed).permutation(len(split)) if shuffle
             else np.arange(len(split)))
    data = tf.data.Dataset.from_tensor_slices(
        (split.clips[order], split.lengths[order], split.labels[order])).batch(batch_size)

    def features(index, clips, lengths, labels):
        batch_seed = tf.stack([tf.constant(seed, tf.int64), index])
        if augment_data:
            clips, lengths, spec_seed = augment(clips, lengths, tf.cast(batch_seed, tf.int32))
        inputs = {"features": log_mel(clips), "frames": valid_frames(lengths)}
        if augment_data:
            warp_seed, mask_seed = tf.unstack(tf.random.experimental.stateless_split(spec_seed))
            if warp:
                inputs["features"] = warp_frequencies(inputs["features"], warp_seed)
            inputs["features"] = spec_augment(inputs["features"], inputs["frames"], mask_seed)
        return inputs, labels

    return data.enumerate().map(lambda index, batch: features(index, *batch),
                                num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def arrays(split: SpeechSplit) -> dict[str, np.ndarray]:
    """A split's model inputs as numpy, not augmented: {"features", "frames"}."""
    if not len(split):
        return {"features": np.zeros((0, NUM_FRAMES, NUM_MELS), np.float32),
                "frames": np.zeros(0, np.int32)}
    inputs = [x for x, _ in batches(split, 512)]
    return {key: np.concatenate([x[key].numpy() for x in inputs]) for key in ("features", "frames")}
