"""WAV files to log-mel frames with numpy only, no TensorFlow.

This is what runs before a speech model where TensorFlow is absent (`serving.litert_speech`, a
phone app), and it is the reference for the TensorFlow ops of `pipelines.audio`, which do the same
inside the SavedModel graph; tests keep the two in agreement.

    samples = read_wav("seven.wav")          # float32 in [-1, 1], mono, 8 kHz, checked
    clip, length = fit_length(samples)       # [CLIP_SAMPLES], and how many of them are speech
    features = log_mel(clip[None])           # [1, NUM_FRAMES, NUM_MELS]
    frames = valid_frames([length])          # [1]: how many of them hold the recording

A recording of several digits in a row (a phone number read aloud) is cut at its pauses first:
`split_at_pauses(samples)` returns one stretch of samples per spoken digit.
"""

import io
import wave
from pathlib import Path

import numpy as np

from pipelines import DataError

SAMPLE_RATE = 8000  # Hz: the Free Spoken Digit Dataset's rate, and a telephone's
CLIP_SAMPLES = SAMPLE_RATE  # one second: longer than 99% of FSDD's digits (the longest: 2.3 s)
FRAME_LENGTH = 256  # samples, 32 ms: the analysis window of the short-time Fourier transform
FRAME_STEP = 128  # samples, 16 ms between frames
FFT_LENGTH = 256  # -> 129 frequency bins from 0 to 4 kHz
NUM_MELS = 40  # mel bands between MEL_LOW_HZ and MEL_HIGH_HZ
MEL_LOW_HZ, MEL_HIGH_HZ = 20.0, SAMPLE_RATE / 2
LOG_OFFSET = 1e-6  # log(power + LOG_OFFSET): silence (and padding) is log(1e-6) = -13.8
NUM_FRAMES = 1 + (CLIP_SAMPLES - FRAME_LENGTH) // FRAME_STEP  # 61 frames a clip
# Quieter than this everywhere (peak below -60 dBFS) is a silent file, not a recording.
SILENT_PEAK = 1e-3

# Resampling to SAMPLE_RATE: band-limited (windowed-sinc) interpolation. Linear interpolation
# would fold a 44.1 kHz recording's energy above 4 kHz back into the band the model hears; the
# sinc kernel is a low-pass at the lower of the two Nyquist frequencies (times RESAMPLE_ROLLOFF),
# Hann-windowed over RESAMPLE_ZEROS zero crossings on each side.
RESAMPLE_ZEROS = 16
RESAMPLE_ROLLOFF = 0.94

# Cutting a recording at its pauses (energy-based voice activity detection), in seconds.
VAD_FRAME, VAD_STEP = 0.02, 0.01
VAD_THRESHOLD_DB = 35.0  # a frame is speech when within this many dB of the loudest frame ...
VAD_FLOOR_DB = -55.0  # ... and louder than this (dB relative to full scale)
MIN_PAUSE = 0.08  # shorter quiet stretches are inside a digit ("six": s-i-k-s, "eight": ei-t)
MIN_DIGIT = 0.08  # shorter bursts are part of a digit within MAX_ATTACH, else a click or breath
MAX_ATTACH = 0.3
SEGMENT_MARGIN = 0.05  # of quiet kept on each side of a digit (its soft onset and tail)


# ---------------------------------------------------------------------------------------------
# Reading and checking WAV files
# ---------------------------------------------------------------------------------------------


def read_wav(source: str | Path | bytes, name: str | None = None) -> np.ndarray:
    """A WAV file (path or bytes) -> float32 samples in [-1, 1], mixed down to mono and resampled
    to SAMPLE_RATE. 8-bit (unsigned), 16-, 24- and 32-bit PCM. A file that is missing, empty, not
    a WAV, or silent is a DataError naming it (`name`, else the path)."""
    name = name or str(source if not isinstance(source, bytes) else "<bytes>")
    if not isinstance(source, bytes):
        if not Path(source).is_file():
            raise DataError(f"{name}: no such file")
        source = Path(source).read_bytes()
    if not source:
        raise DataError(f"{name}: empty file")
    try:
        with wave.open(io.BytesIO(source)) as handle:
            channels, width = handle.getnchannels(), handle.getsampwidth()
            rate, frames = handle.getframerate(), handle.getnframes()
            raw = handle.readframes(frames)
    except (wave.Error, EOFError) as error:
        raise DataError(f"{name}: not a WAV file ({error})") from None
    if width not in (1, 2, 3, 4):
        raise DataError(f"{name}: {8 * width}-bit samples; 8, 16, 24 or 32-bit PCM only")
    count = len(raw) // (width * channels)  # a truncated file holds fewer frames than it says
    if count == 0:
        raise DataError(f"{name}: no samples")
    samples = pcm_to_float(raw[: count * width * channels], width).reshape(count, channels)
    samples = samples.mean(axis=1)  # stereo (or more) mixed down
    if np.abs(samples).max() < SILENT_PEAK:
        raise DataError(f"{name}: silent (peak below {20 * np.log10(SILENT_PEAK):.0f} dBFS)")
    return resample(samples, rate).astype(np.float32)


def pcm_to_float(raw: bytes, width: int) -> np.ndarray:
    """Little-endian PCM bytes -> float64 in [-1, 1]. 8-bit WAV is unsigned (128 is silence)."""
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float64) - 128) / 128
    if width == 3:  # no numpy dtype: pad each 3-byte sample to 4 bytes, sign kept by the shift
        bytes3 = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        padded = np.zeros((len(bytes3), 4), np.uint8)
        padded[:, 1:] = bytes3
        return (padded.view("<i4")[:, 0] >> 8).astype(np.float64) / 2**23
    dtype = {2: "<i2", 4: "<i4"}[width]
    return np.frombuffer(raw, dtype).astype(np.float64) / 2 ** (8 * width - 1)


def write_wav(path, samples: np.ndarray, rate: int = SAMPLE_RATE, width: int = 2):
    """Float samples in [-1, 1] ([N] or [N, channels]) -> a PCM WAV file of `width` bytes
    (`path`: a path, or a binary file object)."""
    samples = np.asarray(samples, np.float64)
    samples = samples[:, None] if samples.ndim == 1 else samples
    scaled = np.clip(samples, -1, 1 - 2.0 ** (1 - 8 * width))
    if width == 1:
        pcm = np.round(scaled * 128 + 128).astype(np.uint8).tobytes()
    else:
        values = np.round(scaled * 2 ** (8 * width - 1)).astype("<i4")
        # 16-bit: the low 2 bytes of each little-endian int32, 24-bit the low 3, 32-bit all 4
        pcm = values.view(np.uint8).reshape(*values.shape, 4)[..., :width].tobytes()
    with wave.open(path if hasattr(path, "write") else str(path), "wb") as handle:
        handle.setnchannels(samples.shape[1])
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(pcm)
    return path


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling from `rate` to `target` Hz (see RESAMPLE_ZEROS); float64."""
    if rate == target:
        return samples.astype(np.float64)
    ratio = rate / target  # input samples per output sample
    count = len(samples) * target // rate
    outputs = []
    for start in range(0, count, 4096):  # bounded memory for long recordings
        times = np.arange(start, min(start + 4096, count)) * ratio
        taps, weights = sinc_taps(times, ratio)
        padded = np.concatenate([samples, [0.0]])  # index -1 (outside the file) reads a zero
        outside = (taps < 0) | (taps >= len(samples))
        outputs.append((padded[np.where(outside, -1, taps)] * weights).sum(axis=1))
    return np.concatenate(outputs) if outputs else np.zeros(0)


def sinc_taps(times: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """For output samples at input positions `times`: the input indices each one reads, and
    their weights (a Hann-windowed sinc low-pass), both [len(times), taps]."""
    cutoff = min(1.0, 1.0 / ratio) * RESAMPLE_ROLLOFF  # in cycles per input sample, x2
    half_width = RESAMPLE_ZEROS / cutoff  # input samples on each side
    reach = int(np.ceil(half_width))
    taps = np.floor(times)[:, None].astype(np.int64) + np.arange(-reach + 1, reach + 1)
    distance = times[:, None] - taps
    window = np.where(np.abs(distance) < half_width,
                      0.5 + 0.5 * np.cos(np.pi * distance / half_width), 0.0)
    return taps, cutoff * np.sinc(cutoff * distance) * window


def fit_length(samples: np.ndarray, length: int = CLIP_SAMPLES) -> tuple[np.ndarray, int]:
    """Zero-pads at the end, or keeps the middle `length` samples of a longer recording:
    (float32 [length], how many of them are the recording's)."""
    if len(samples) >= length:
        start = (len(samples) - length) // 2
        return samples[start : start + length].astype(np.float32), length
    clip = np.zeros(length, np.float32)
    clip[: len(samples)] = samples
    return clip, len(samples)


# ---------------------------------------------------------------------------------------------
# Log-mel features: the numpy twin of `pipelines.audio.log_mel`
# ---------------------------------------------------------------------------------------------


def hertz_to_mel(frequencies):
    return 1127.0 * np.log1p(np.asarray(frequencies, np.float64) / 700.0)  # HTK's mel scale


def mel_matrix() -> np.ndarray:
    """[FFT_LENGTH // 2 + 1, NUM_MELS] triangular filters: tf.signal.linear_to_mel_weight_matrix
    written out (triangles in the mel domain, the DC bin weighted zero)."""
    bins = FFT_LENGTH // 2 + 1
    bin_mels = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, bins)[1:])[:, None]
    edges = np.linspace(hertz_to_mel(MEL_LOW_HZ), hertz_to_mel(MEL_HIGH_HZ), NUM_MELS + 2)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_mels - lower) / (centre - lower)
    falling = (upper - bin_mels) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.pad(weights, [[1, 0], [0, 0]]).astype(np.float32)


def log_mel(clips: np.ndarray) -> np.ndarray:
    """[batch, CLIP_SAMPLES] -> float32 [batch, NUM_FRAMES, NUM_MELS]: log of the mel-filtered
    power spectrum of Hann-windowed frames."""
    clips = np.asarray(clips, np.float32)
    starts = np.arange(NUM_FRAMES) * FRAME_STEP
    frames = clips[:, starts[:, None] + np.arange(FRAME_LENGTH)]  # [batch, frames, samples]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(FRAME_LENGTH) / FRAME_LENGTH)  # periodic
    spectrum = np.fft.rfft(frames * window.astype(np.float32), n=FFT_LENGTH)
    power = spectrum.real**2 + spectrum.imag**2
    return np.log(power @ mel_matrix() + LOG_OFFSET).astype(np.float32)


def valid_frames(lengths) -> np.ndarray:
    """int32 [batch]: how many frames hold some of each clip's `lengths` samples (at least 1)."""
    lengths = np.asarray(lengths, np.int64)
    return np.clip(-(-(lengths - FRAME_LENGTH) // FRAME_STEP) + 1, 1, NUM_FRAMES).astype(np.int32)


def model_inputs(recordings: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Recordings (8 kHz samples) -> what the classifier reads: {"features", "frames"}."""
    clips, lengths = zip(*(fit_length(r) for r in recordings)) if recordings else ((), ())
    clips = np.stack(clips) if clips else np.zeros((0, CLIP_SAMPLES), np.float32)
    return {"features": log_mel(clips), "frames": valid_frames(np.array(lengths, np.int64))}


# ---------------------------------------------------------------------------------------------
# Several digits in a row: cut at the pauses
# ---------------------------------------------------------------------------------------------


def split_at_pauses(samples: np.ndarray, rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """One stretch of samples per spoken word, in order: frames of speech are those within
    VAD_THRESHOLD_DB of the loudest frame; quiet gaps shorter than MIN_PAUSE are bridged,
    bursts shorter than MIN_DIGIT join their nearer neighbour, and SEGMENT_MARGIN is kept on
    each side."""
    size, step = int(VAD_FRAME * rate), int(VAD_STEP * rate)
    if len(samples) < size:
        return [samples] if len(samples) else []
    count = 1 + (len(samples) - size) // step
    frames = samples[np.arange(count)[:, None] * step + np.arange(size)]
    energy_db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)
    speech = energy_db > max(energy_db.max() - VAD_THRESHOLD_DB, VAD_FLOOR_DB)
    # Runs of speech frames as [start, end) frame indices
    edges = np.diff(np.concatenate([[0], speech.astype(np.int8), [0]]))
    runs = list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))
    merged = []
    for start, end in runs:
        if merged and (start - merged[-1][1]) * step < MIN_PAUSE * rate:
            merged[-1][1] = end
        else:
            merged.append([start, end])
    # A burst too short for a digit is the tail or onset of one ("eight"'s t after its closure):
    # it joins the nearer neighbour, or is dropped (a click) when it stands alone.
    digits = [run for run in merged if (run[1] - run[0]) * step >= MIN_DIGIT * rate]
    for start, end in (run for run in merged if (run[1] - run[0]) * step < MIN_DIGIT * rate):
        before = [run for run in digits if run[1] <= start]
        after = [run for run in digits if run[0] >= end]
        gaps = [(start - before[-1][1], before[-1]) if before else None,
                (after[0][0] - end, after[0]) if after else None]
        gaps = [gap for gap in gaps if gap and gap[0] * step < MAX_ATTACH * rate]
        if gaps:
            neighbour = min(gaps, key=lambda gap: gap[0])[1]
            neighbour[0], neighbour[1] = min(neighbour[0], start), max(neighbour[1], end)
    spans = [(start * step, (end - 1) * step + size) for start, end in digits]  # in samples
    # Each digit keeps up to SEGMENT_MARGIN of quiet on each side, at most half of a pause
    edges = [0] + [(last + first) // 2 for (_, last), (first, _) in zip(spans, spans[1:])]
    edges.append(len(samples))
    margin = int(SEGMENT_MARGIN * rate)
    return [samples[max(edges[i], first - margin) : min(edges[i + 1], last + margin)]
            for i, (first, last) in enumerate(spans)]
