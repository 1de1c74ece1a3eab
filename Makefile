# Every target creates .venv on first use: torch is pinned to the local CPU build before the project is installed,
# so the project's `torch>=` range is already satisfied and nothing larger is fetched.
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0

.PHONY: demo test test-slow fuzz lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==$(TORCH_VERSION)
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed  ## the main job: train the default model on the embedded data, then evaluate it
	$(VENV)/bin/mobilenet train

test: lint  ## the fast test suite (after the linter)
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed  ## ruff: pyflakes, pycodestyle, import order, bugbear, pyupgrade (rules in pyproject.toml)
	$(VENV)/bin/ruff check mobilenet tests

test-slow: $(VENV)/.installed
	$(PY) -m pytest -q -m slow

FUZZ_EXAMPLES ?= 1000
fuzz: $(VENV)/.installed  ## minutes of fuzzing every parser (inputs per parser: FUZZ_EXAMPLES), then 20 kill -9/resumes
	FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -s -p no:cacheprovider tests/test_fuzz.py
	$(PY) -m pytest -q -s -m slow tests/test_hardening.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
