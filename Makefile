# Two commands do all the set-up on a fresh machine (see README.md):
#   make train   -> virtual environment, demo data, training on the demo data
#   make test    -> virtual environment, lint, whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Tests run in 2 processes on 2 cores: one BLAS/OpenMP thread each avoids oversubscription.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=$(CURDIR)

.PHONY: setup test lint format train demo-data evaluate inference export clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

setup: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadgroup -q

demo-data: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) scripts/make_demo_data.py --root data/demo

train: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m monai.bundle run training \
		--config_file "['configs/train.yaml','configs/demo.yaml']"
	PYTHONPATH=$(CURDIR) $(PY) scripts/demo_figures.py --runs runs/train --report

evaluate: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m monai.bundle run evaluating \
		--config_file "['configs/train.yaml','configs/demo.yaml','configs/evaluate.yaml']"

inference: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m monai.bundle run inference \
		--config_file "['configs/inference.yaml','configs/demo.yaml']"

export: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m monai.bundle ckpt_export network_def \
		--filepath models/model.ts --ckpt_file models/model.pt --meta_file configs/metadata.json \
		--config_file "['configs/inference.yaml','configs/demo.yaml']"

clean:
	rm -rf .pytest_cache .ruff_cache .hypothesis
