# Two commands a newcomer needs:  `make book`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Stored outputs and nbval comparisons are made at quick scale without progress bars.
NBENV  := LECTURELIB_PROGRESS=0 PYDEVD_DISABLE_FILE_VALIDATION=1
NB     ?= chapters/01_normalization.ipynb

.PHONY: book test unit nbval notebook notebooks site-check data venv benchmark clean

## book: venv + data, execute every chapter on the best device present, build _build/html
book: $(STAMP) data
	$(BIN)/python -m lecturelib.report > reports/build_environment.txt
	$(NBENV) $(BIN)/jupyter-book build . --warningiserror --keep-going
	@echo "Open _build/html/index.html in a browser."

## test: unit tests, nbval of every chapter, and the built site checked in headless Chromium
test: $(STAMP) data
	$(NBENV) LECTURELIB_SCALE=quick $(BIN)/python -m pytest tests chapters --nbval --nbval-current-env \
	    --nbval-cell-timeout=900 --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $(STAMP)

## data: make sure Fashion-MNIST is present (Debian package, FASHION_MNIST_DIR, cache, or download)
data: $(STAMP)
	$(BIN)/python -m lecturelib.data

## unit: only the unit tests (fast)
unit: $(STAMP)
	$(BIN)/python -m pytest tests -q -p no:cacheprovider

## notebook NB=...: execute one notebook in place at quick scale (stores its outputs)
notebook: $(STAMP)
	$(NBENV) LECTURELIB_SCALE=quick $(BIN)/jupyter nbconvert --to notebook --execute --inplace \
	    --ExecutePreprocessor.timeout=1800 $(NB)

## notebooks: execute every chapter in place at quick scale
notebooks: $(STAMP)
	for nb in chapters/*.ipynb; do $(MAKE) notebook NB=$$nb || exit 1; done

## nbval NB=...: re-run one notebook and compare with its stored outputs
nbval: $(STAMP)
	$(NBENV) LECTURELIB_SCALE=quick $(BIN)/python -m pytest $(NB) --nbval --nbval-current-env \
	    --nbval-cell-timeout=900 --sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider --durations=0

## benchmark: fit vs a plain DataLoader loop; writes benchmarks/results/
benchmark: $(STAMP) data
	$(BIN)/python benchmarks/bench_fit.py

clean:
	rm -rf _build .jupyter_cache
