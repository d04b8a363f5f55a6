# Two commands for a fresh machine: `make demo` and `make test`. Both create .venv when missing.
PYTHON_SYSTEM ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: demo test test-fast test-all bench serve screenshots lint clean

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PYTHON) || $(PYTHON_SYSTEM) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

demo: $(INSTALLED)  ## train, evaluate and export every app on its embedded data; one summary table
	$(PYTHON) -m apps.demo

# Test files are shared out whole (module fixtures train once) to this many processes: TensorFlow
# keeps only about one core busy through a test's tracing, saving and Python-side work.
TEST_WORKERS ?= 2

test: $(INSTALLED)  ## the suite without the minutes-long tests (what CI runs), TEST_WORKERS processes
	$(PYTHON) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: $(INSTALLED)  ## the edit-test loop: every model built, one step, saved, loaded, exported (tiny)
	$(PYTHON) -m pytest -m fast

test-all: $(INSTALLED)  ## the suite plus the minutes-long tests
	$(PYTHON) -m pytest -m "slow or not slow" -n $(TEST_WORKERS) --dist loadfile

bench: $(INSTALLED)  ## every benchmark under bench/; tables on stdout, JSON in bench/results/
	$(PYTHON) -m pip install --quiet -e '.[dev,bench]'
	$(PYTHON) -m bench

serve: $(INSTALLED)  ## TF-Serving-compatible REST API on 127.0.0.1:8501 over saved_models/ (make demo first)
	$(PYTHON) -m serving.server --model-base saved_models --batching

screenshots: $(INSTALLED)  ## the README's pictures of the web page, over `make demo`'s models (run it first)
	PLAYGROUND_MODEL_BASE=saved_models PLAYGROUND_SCREENSHOTS=docs/playground \
		$(PYTHON) -m pytest tests/test_playground.py -k "every_panel_used or fits_a_phone" -p no:cacheprovider

lint: $(INSTALLED)
	$(VENV)/bin/ruff check .

clean:
	rm -rf runs bench/results .pytest_cache
