"""The web page's first load in headless Chromium: bytes and time until it can be used.

    python -m bench.playground [--model-base saved_models] [--loads 10]

Serves `--model-base` (`make demo`'s exports by default) with `serving.server` on 127.0.0.1 and
opens `/` `--loads` times, each in a fresh browser context (an empty cache, as a first visit):
- bytes: every response the page needs to be drawn (HTML, script, style sheet, icon), apart
  from the API's answers (the model list and each model's metadata), which grow with the models;
- DOM interactive: the HTML parsed (Navigation Timing's domInteractive);
- panels ready: every model's panel built from its metadata and usable (the page's own
  "playground-ready" mark): the time to interactive a person sees.
Goal: under 100 KB in all. Needs Chromium (`apt-get install chromium`) and Playwright.
"""

import argparse
import shutil
import statistics
from pathlib import Path

from bench import save_results
from bench.serving import start_server

BUDGET_BYTES = 100 * 1024


def measure(url: str, loads: int) -> dict:
    from playwright.sync_api import sync_playwright

    samples = []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=shutil.which("chromium"),
                                         args=["--no-sandbox", "--disable-dev-shm-usage"])
        for _ in range(loads):
            context = browser.new_context()
            page = context.new_page()
            sizes = {}
            page.on("response", lambda r, sizes=sizes: "/v1/" not in r.url
                    and "models.json" not in r.url and sizes.update({r.url: len(r.body())}))
            page.goto(url)
            page.wait_for_selector("body[data-ready=true]")
            timing = page.evaluate(
                "() => ({interactive: performance.getEntriesByType('navigation')[0]"
                ".domInteractive, ready: performance.getEntriesByName('playground-ready')[0]"
                ".startTime, panels: document.querySelectorAll('section.panel').length})")
            samples.append({"bytes": sum(sizes.values()), "files": len(sizes), **timing})
            context.close()
        browser.close()
    return {
        "bytes": samples[0]["bytes"], "files": samples[0]["files"],
        "panels": samples[0]["panels"], "loads": loads,
        "dom_interactive_ms": statistics.median(s["interactive"] for s in samples),
        "panels_ready_ms": statistics.median(s["ready"] for s in samples),
        "panels_ready_ms_max": max(s["ready"] for s in samples),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.playground", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-base", type=Path, default=Path("saved_models"))
    parser.add_argument("--loads", type=int, default=10)
    args = parser.parse_args(argv)
    if shutil.which("chromium") is None:
        raise SystemExit("error: bench.playground needs Chromium: apt-get install chromium")
    models = sorted(p.name for p in args.model_base.iterdir() if p.is_dir())
    if not models:
        raise SystemExit(f"error: --model-base {args.model_base}: no models (make demo first)")
    server, port = start_server(args.model_base, batching=False, ready=models[0])
    try:
        figures = measure(f"http://127.0.0.1:{port}/", args.loads)
    finally:
        server.terminate()
        server.wait()
    print(f"first load: {figures['bytes']:,} bytes in {figures['files']} files "
          f"(goal < {BUDGET_BYTES:,}: {'met' if figures['bytes'] < BUDGET_BYTES else 'missed'}); "
          f"{figures['panels']} panels; median of {args.loads} loads: DOM interactive "
          f"{figures['dom_interactive_ms']:.0f} ms, panels ready {figures['panels_ready_ms']:.0f} "
          f"ms (slowest {figures['panels_ready_ms_max']:.0f} ms)")
    save_results("playground", {"models": models, **figures})


if __name__ == "__main__":
    main()
