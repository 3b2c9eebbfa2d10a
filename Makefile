# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint types unit system-deps venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	bash scripts/ensure-venv.sh $(PYTHON) $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test,deid]'
	touch $(STAMP)

system-deps:
	bash scripts/install-system-deps.sh

lint: venv
	$(BIN)/ruff check --no-cache src tests benchmarks examples
	$(BIN)/ruff format --check --no-cache src tests benchmarks examples

types: venv
	$(BIN)/mypy src

unit: venv system-deps
	bash scripts/loopback-only.sh $(BIN)/python -m pytest $(PYTEST_ARGS)

test: venv system-deps lint types unit

# The main job on the built-in emulator PACS: generate studies, search over MINT,
# download with WADO-URI and WADO-RS into ./dicomtrolley-demo/.
demo: venv
	$(BIN)/dicomtrolley demo $(DEMO_ARGS)

bench: venv system-deps
	bash scripts/loopback-only.sh $(BIN)/python benchmarks/search_parse.py
	bash scripts/loopback-only.sh $(BIN)/python benchmarks/wado_rs.py
	bash scripts/loopback-only.sh $(BIN)/python benchmarks/rad69.py
	bash scripts/loopback-only.sh $(BIN)/python benchmarks/dimse.py --demo
	bash scripts/loopback-only.sh $(BIN)/python benchmarks/batch.py
	$(BIN)/python benchmarks/verify.py
	bash scripts/loopback-only.sh $(BIN)/python benchmarks/faults.py --orthanc

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
