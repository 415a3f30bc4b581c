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

.PHONY: run test setup bench bench-update serve clean

run: $(STAMP)
	$(VENV)/bin/cryoopt run $(CONFIG) --dir $(RUN_DIR)

test: $(STAMP)
	$(PY) -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh
	@touch $(STAMP)

# benchmarks write to benchmarks/results/local/ (untracked); bench-update rewrites the tracked results
bench: $(STAMP)
	for b in benchmarks/[!_]*.py; do $(PY) $$b || exit 1; done

bench-update: $(STAMP)
	for b in benchmarks/[!_]*.py; do CRYOOPT_BENCH_OUT=benchmarks/results $(PY) $$b || exit 1; done

serve: $(STAMP)
	$(VENV)/bin/cryoopt serve $(RUN_DIR)

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
