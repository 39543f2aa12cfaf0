# Two commands do all the setup on a fresh machine:  `make demo`  and  `make test`.
# Both create .venv on first use and install the pinned dependency set (requirements.lock).
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
export SGILO_CACHE_DIR ?= $(if $(TMPDIR),$(TMPDIR),/tmp)/sgilo-cache

.PHONY: demo test lint install

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sgilo demo --out sgilo-demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
