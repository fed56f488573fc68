# Two entry points (the README's quickstart): `make demo` and `make test`.
# Both create .venv on first use. torch is installed first, pinned, so that resolving the
# package's `torch>=2.2` never pulls a multi-GB CUDA build on CPU machines; elsewhere set
# TORCH_SPEC (e.g. TORCH_SPEC="torch==2.13.0" with your CUDA index) or pre-install torch.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup demo test lint docs bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/blmkd demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The documentation site (docs/, mkdocs.yml): a strict build fails on a broken link or anchor.
$(BIN)/.docs-installed: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e ".[docs]"
	touch $@

docs: $(BIN)/.docs-installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

clean:
	rm -rf $(VENV) build dist site *.egg-info
