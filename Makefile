# Each target sets everything up on first use (a .venv with charrnn installed), then runs.
#   make train ARGS="model=gru trainer.max_steps=500"     any Hydra overrides
#   make test                                              the whole test suite, PYTEST_WORKERS processes
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
# One pytest worker per core, and worksteal: a worker that runs out of tests takes the rest of another's
# queue (slow tests first, tests/conftest.py). Whole suite with SLURM on 2 cores, worksteal, one tree (2aceb7a),
# back to back: -n 3 318.8 s (CPUs 95 % busy, 606 core-s), -n 2 320.9 s (91 %, 587 core-s): no gain from a third.
PYTEST_WORKERS ?= $(shell getconf _NPROCESSORS_ONLN)

.PHONY: train test clean

# Any new or changed file under src/ or conf/ reinstalls (a few seconds): the editable install links
# each file (editable_mode=strict, so that Hydra's plugin scan sees hydra_plugins/), new ones included.
$(VENV)/.installed: pyproject.toml scripts/setup_env.sh $(shell find src/charrnn src/hydra_plugins conf -name '*.py' -o -name '*.yaml')
	PYTHON=$(PYTHON) bash scripts/setup_env.sh $(VENV) test
	touch $@

train: $(VENV)/.installed
	$(VENV)/bin/charrnn-train $(ARGS)

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -n $(PYTEST_WORKERS) --dist worksteal $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
