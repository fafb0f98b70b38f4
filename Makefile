# Two commands a newcomer needs:  `make demo` (set up + pretrain, caption, evaluate on the embedded shapes data)
# and `make test` (set up + lint + the test suite). Both are safe to run twice.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: setup setup-dev demo test test-fast test-kernels benchmark clean

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

# The numerically sensitive tests again on a kernel set other than this CPU's own: PyTorch picks its
# kernels at run time (ATEN_CPU_CAPABILITY=default|avx2|avx512 limits them), so another machine
# rounds differently; a bound tuned to this CPU's rounding fails here first. KERNELS=avx2 for another.
KERNELS ?= default
NUMERIC_TESTS = tests/test_ddp.py tests/test_keras_parity.py tests/test_time_distributed.py \
	tests/test_speed_paths.py tests/test_bias_before_batchnorm.py tests/test_decoding.py \
	tests/test_variants.py tests/test_encoder_grid.py tests/test_training_contract.py
test-kernels: setup-dev
	ATEN_CPU_CAPABILITY=$(KERNELS) $(BIN)/pytest -q -p no:cacheprovider $(NUMERIC_TESTS)

test-fast: setup-dev
	$(BIN)/pytest -q -m "not slow"

benchmark: setup-dev
	$(BIN)/python scripts/benchmark.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# Golden digests (scripts/golden.py): the short runs of every embedded-data recipe at BASE and in
# the working tree, same / DIFFERS per recipe and artifact; exit 1 if anything differs.
BASE ?= HEAD
.PHONY: golden
golden: setup
	$(BIN)/python scripts/golden.py compare --base $(BASE)
