"""`make demo`: every app trains on its embedded data, is evaluated and exported; one summary table.

    python -m apps.demo
"""

import time

from apps import captioning, digit_ocr, fraud, gan, runner, speech, translation

# digit_ocr first: the GAN judges its samples with the LeNet-5 that digit_ocr's demo trains.
DEMOS = [digit_ocr.demo, gan.demo, fraud.demo, translation.demo,
         captioning.demo, speech.demo]


def main() -> None:
    started = time.perf_counter()
    rows = []
    for demo in DEMOS:
        print(f"\n=== {demo.__module__} ===")
        rows.append(demo())
    print(f"\nDemo finished in {(time.perf_counter() - started) / 60:.1f} min\n")
    runner.print_table(rows)


if __name__ == "__main__":
    runner.run_cli(lambda argv: main())
