# Each target sets everything up on first use (a .venv with charrnn installed), then runs.
#   make train ARGS="model=gru trainer.max_steps=500"     any Hydra overrides
#   make test                                              the whole test suite, PYTEST_WORKERS processes
PYTHON ?= python3
VENV ?= .venv
ARGS ?=
# One pytest worker more than the cores: the SLURM and sweep tests spend much of their time waiting on
# jobs (2 cores, whole suite with SLURM: -n 3 406 s, -n 4 494 s; -n 2 453 s one commit earlier).
# worksteal: a worker that runs out of tests takes the rest of another's queue (the slow tests come first,
# tests/conftest.py), so no worker idles while another still has a queue (-n 3: 341 s, worksteal 304 s).
PYTEST_WORKERS ?= $(shell echo $$(( $$(getconf _NPROCESSORS_ONLN) + 1 )))

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
