"""Spoken digits on the Free Spoken Digit Dataset (../shared/data/fsdd): the official split for
the BiLSTM and the DSN, speaker-independent folds, the int8 .tflite against Keras, and digit
strings read by `predict`.

    python -m bench.speech                       # everything (about 40 CPU-minutes on 2 cores)
    python -m bench.speech --folds 2 --no-dsn    # the first two speaker folds, no DSN
    python -m bench.speech --frontend none       # the LSTM without its convolutions
    python -m bench.speech --members 3           # the LSTM as an ensemble of three seeds

1. Official split (takes 0-4 of every speaker test, 300 recordings): test accuracy, training wall
   and CPU time of `train --model lstm` and `train --model dsn`. Targets: LSTM >= 99.0%, DSN >= 97%.
2. Speaker-independent: each speaker held out in turn (`--holdout`), trained on the other five:
   mean and worst accuracy of the LSTM. Target: mean >= 90%.
3. The official LSTM exported: int8 and float32 .tflite in LiteRT (features by the numpy twin)
   beside Keras on the 300 test recordings; sizes; latency per one-second recording at 1 thread
   (features and model). Target: int8 within 0.5 points of Keras.
4. 200 phone-number-like strings, 4-8 digits of one speaker's test recordings with pauses of
   0.1-0.5 s, read by `apps.speech.predict` (cut at the pauses): % entirely right. Target: >= 95%.
The official LSTM's confusion matrix is copied beside the JSON.
"""

import argparse
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from apps import runner, speech
from bench import RESULTS, SHARED_DATA, save_results
from pipelines import audio, wav

FSDD = SHARED_DATA / "fsdd"
TARGETS = {"lstm": 0.990, "dsn": 0.97, "speaker_mean": 0.90, "int8_points": 0.5, "strings": 0.95}
STRINGS = 200
DIGITS_PER_STRING = (4, 8)
PAUSE_SECONDS = (0.1, 0.5)
LATENCY_RUNS = 200


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def train_one(workdir: Path, name: str, **options) -> dict:
    """One `train` on FSDD into workdir/name; a finished one found there (an earlier bench with
    the same --workdir) is read, not trained again."""
    row_file = workdir / name / "bench_row.json"
    if row_file.is_file():
        return json.loads(row_file.read_text())
    cpu, wall = cpu_seconds(), time.perf_counter()
    metrics = speech.train(speech.TrainConfig(data=str(FSDD), run_dir=workdir / name,
                                              verbose=2, mark_last=False, **options))
    row = {"run": name, "accuracy": metrics["test_accuracy"],
           "test recordings": metrics["test_examples"],
           "wall s": round(time.perf_counter() - wall, 1),
           "CPU s": round(cpu_seconds() - cpu, 1), "options": options}
    row_file.write_text(json.dumps(row) + "\n")
    return row


def latency(model_path: Path, runs: int = LATENCY_RUNS) -> dict:
    """Milliseconds per one-second recording at one thread: numpy features, then the model."""
    from serving import litert, litert_speech

    classify = litert_speech.open_signature(model_path, threads=1)
    recording = wav.read_wav(sorted(FSDD.glob("recordings/*.wav"))[0])
    inputs = wav.model_inputs([recording])
    timings = {"features": [], "model": []}
    for _ in range(runs):
        started = time.perf_counter()
        inputs = wav.model_inputs([recording])
        between = time.perf_counter()
        litert.digit_probabilities(classify, inputs)
        timings["features"].append(between - started)
        timings["model"].append(time.perf_counter() - between)
    return {f"{part} ms": round(1000 * float(np.median(values)), 2)
            for part, values in timings.items()}


def digit_strings(run_dir: Path, workdir: Path, count: int = STRINGS, seed: int = 0) -> dict:
    """Phone-number-like strings from the official test recordings, read by `predict`."""
    rng = np.random.default_rng(seed)
    recordings = {}
    for path in FSDD.glob("recordings/*.wav"):
        digit, speaker, take = path.stem.split("_")
        if int(take) in audio.FSDD_TEST_TAKES:
            recordings.setdefault(speaker, {}).setdefault(digit, []).append(path)
    folder = workdir / "strings"
    folder.mkdir(parents=True, exist_ok=True)
    files, truths = [], []
    for i in range(count):
        speaker = rng.choice(sorted(recordings))
        digits = [str(d) for d in rng.integers(0, 10, rng.integers(DIGITS_PER_STRING[0],
                                                                   DIGITS_PER_STRING[1] + 1))]
        parts = []
        for digit in digits:
            takes = recordings[speaker][digit]
            parts.append(wav.read_wav(takes[rng.integers(len(takes))]))
            parts.append(np.zeros(int(rng.uniform(*PAUSE_SECONDS) * wav.SAMPLE_RATE), np.float32))
        files.append(wav.write_wav(folder / f"{i:03d}.wav", np.concatenate(parts[:-1])))
        truths.append("".join(digits))
    started = time.perf_counter()
    results = speech.predict(files, run_dir)
    seconds = time.perf_counter() - started
    texts = [result["text"] for result in results]
    return {"strings": count,
            "entirely right": float(np.mean([t == truth for t, truth in zip(texts, truths)])),
            "right number of digits": float(np.mean([len(t) == len(truth)
                                                     for t, truth in zip(texts, truths)])),
            "digits": int(sum(len(truth) for truth in truths)),
            "predict s": round(seconds, 1),
            "examples wrong": [{"truth": truth, "read": t} for t, truth in zip(texts, truths)
                               if t != truth][:10]}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.speech", description=__doc__.split(
        "\n")[0])
    parser.add_argument("--folds", type=int, default=6,
                        help="speakers held out in turn (<= 6; 0: the official split only)")
    parser.add_argument("--holdouts", nargs="+", metavar="SPEAKER",
                        help="hold out these speakers in turn instead of the first --folds")
    parser.add_argument("--fold-epochs", type=int, default=speech.EPOCHS,
                        help="LSTM epochs per speaker fold (default: %(default)s)")
    parser.add_argument("--frontend", choices=speech.FRONTENDS, default=speech.DEFAULT_FRONTEND,
                        help="the LSTM's front end, official split and folds (default:"
                             " %(default)s)")
    parser.add_argument("--warp", action="store_true",
                        help="the LSTM trained with vocal tract length perturbation too")
    parser.add_argument("--members", type=int, default=1,
                        help="the LSTM as an ensemble of this many, official split and folds"
                             " (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=speech.SEED,
                        help="every model's seed (default: %(default)s)")
    parser.add_argument("--no-dsn", action="store_true", help="skip the DSN")
    parser.add_argument("--workdir", type=Path,
                        help="keep the runs here, and reuse the finished ones found there"
                             " (default: a temporary directory)")
    parser.add_argument("--folds-only", action="store_true",
                        help="only the speaker folds (into --workdir, for a later full run)")
    args = parser.parse_args(argv)
    if not FSDD.is_dir():
        raise SystemExit(f"no FSDD in {FSDD}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-speech-"))
    workdir.mkdir(parents=True, exist_ok=True)
    lstm_options = {"frontend": args.frontend, "warp": args.warp, "seed": args.seed,
                    "members": args.members}
    speakers = sorted({path.stem.split("_")[1] for path in FSDD.glob("recordings/*.wav")})
    folds = [train_one(workdir, f"lstm-without-{speaker}", holdout=speaker,
                       epochs=args.fold_epochs, **lstm_options) | {"held out": speaker}
             for speaker in (args.holdouts or speakers[: args.folds])]
    if args.folds_only:
        runner.print_table(folds)
        return {"folds": folds}
    rows = [train_one(workdir, "lstm", **lstm_options)]
    if not args.no_dsn:
        rows.append(train_one(workdir, "dsn", model="dsn", seed=args.seed))
    print()
    runner.print_table([{k: v for k, v in row.items() if k != "options"} for row in rows])

    speaker_independent = None
    if folds:
        accuracies = [fold["accuracy"] for fold in folds]
        speaker_independent = {"folds": folds, "mean": float(np.mean(accuracies)),
                               "worst": float(np.min(accuracies)),
                               "CPU s": round(sum(fold["CPU s"] for fold in folds), 1)}
        print()
        runner.print_table([{k: v for k, v in fold.items() if k != "options"} for fold in folds])

    report = speech.export(workdir / "lstm", workdir / "saved_models", quiet=True)
    extra = Path(report["saved_model"]) / "assets.extra"
    tflite = {variant: {"accuracy": report[variant]["accuracy"],
                        "agreement with Keras": report[variant]["agreement_with_keras"],
                        "KiB": round(report[variant]["bytes"] / 1024, 1),
                        **latency(extra / report[variant]["file"])}
              for variant in speech.TFLITE_VARIANTS}
    tflite["keras accuracy"] = report["keras"]["accuracy"]
    int8_points = 100 * (report["keras"]["accuracy"] - report["int8"]["accuracy"])
    print()
    runner.print_table([{"variant": v, **tflite[v]} for v in speech.TFLITE_VARIANTS])

    strings = digit_strings(workdir / "lstm", workdir)
    print(f"\n{strings['entirely right']:.1%} of {strings['strings']} digit strings read entirely"
          f" right ({strings['right number of digits']:.1%} cut into the right number of digits)")

    RESULTS.mkdir(exist_ok=True)
    picture = RESULTS / f"speech-confusion-{time.strftime('%Y%m%d-%H%M%S')}.png"
    shutil.copy(workdir / "lstm" / "confusion_matrix.png", picture)
    official = {row["run"]: row for row in rows}
    checks = {
        "LSTM official >= 99.0%": official["lstm"]["accuracy"] >= TARGETS["lstm"],
        "DSN official >= 97%": (official["dsn"]["accuracy"] >= TARGETS["dsn"]
                                if "dsn" in official else None),
        "LSTM speaker-independent mean >= 90%": (
            speaker_independent["mean"] >= TARGETS["speaker_mean"] if folds else None),
        "int8 within 0.5 points": abs(int8_points) <= TARGETS["int8_points"],
        "strings >= 95% right": strings["entirely right"] >= TARGETS["strings"],
    }
    print()
    runner.print_table([{"target": k, "met": {True: "yes", False: "NO", None: "-"}[v]}
                        for k, v in checks.items()])
    payload = {"official": rows, "speaker_independent": speaker_independent, "tflite": tflite,
               "int8_points_below_keras": round(int8_points, 2), "strings": strings,
               "targets_met": checks, "confusion_matrix": str(picture), "workdir": str(workdir)}
    save_results("speech", payload)
    return payload


if __name__ == "__main__":
    runner.run_cli(lambda argv: main(argv))
