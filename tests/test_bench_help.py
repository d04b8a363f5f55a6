"""Every benchmark answers --help without starting: the benchmarks run for minutes to hours and
no test runs them, so this is what notices a benchmark that no longer starts (a name it imports
moved away) before someone waits for it."""

import importlib
import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
NEEDS_TORCH = {"dsn_recipes_torch"}  # side-by-side twins: `pip install torch` first
MODULES = sorted(p.stem for p in BENCH.glob("*.py")
                 if p.stem != "__init__" and "def main(" in p.read_text())


@pytest.mark.parametrize("name", MODULES)
def test_a_benchmark_prints_its_help_and_runs_nothing(name, capsys):
    if name in NEEDS_TORCH and importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch")
    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    command = "python -m bench" if name == "__main__" else f"python -m bench.{name}"
    assert capsys.readouterr().out.startswith(f"usage: {command} ")
