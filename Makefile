# Two commands do everything on a fresh machine:
#   make run    set up (once) and run the default simulated campaign
#   make test   set up (once) and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.cryoopt-installed
CONFIG ?= configs/sim_clem.yaml
RUN_DIR ?= runs/sim_clem

export MLFLOW_DISABLE_TELEMETRY ?= true
export OMPI_ALLOW_RUN_AS_ROOT ?= 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM ?= 1

.PHONY: run test setup bench clean

run: $(STAMP)
	$(VENV)/bin/cryoopt run $(CONFIG) --dir $(RUN_DIR)

test: $(STAMP)
	$(PY) -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	@touch $(STAMP)

bench: $(STAMP)
	for b in benchmarks/*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
