# fraudgen developer entry points. `make demo` and `make test` install everything they need themselves.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ROWS   ?= 1000000
OUT    ?= ./out

.PHONY: install demo test lint unit system-deps bench services clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # first: the CPU wheel on local disk, never the CUDA build
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## the main job on the embedded default: local Ray, local Parquet in ./out, no services
demo: $(STAMP)
	$(BIN)/fraudgen generate --rows $(ROWS) --seed 42 --batch-id demo --out $(OUT)
	$(BIN)/fraudgen validate $(OUT)/batch_id=demo --report $(OUT)/batch_id=demo

system-deps:
	./scripts/system-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy fraudgen

unit: $(STAMP)
	$(BIN)/pytest -q -m "not slow"

## lint + the whole suite (real Postgres, Kafka and S3 are started by the tests themselves)
test: $(STAMP) system-deps lint
	$(BIN)/pytest -q

bench: $(STAMP)
	@for b in bench/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf $(VENV) $(OUT) .mypy_cache .ruff_cache .pytest_cache
