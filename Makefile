# The bridge's commands. `make setup` once, then `make demo`, `make dev` or `make test`.
PYTHON ?= python3
VENV := .venv
AIRFLOW_VENV := .venv-airflow
AIRFLOW_VERSION := 3.3.2
INFRA_VENV := .venv-infra
WORKER_VENV := .venv-worker
# The Functions Python worker's library half (private APIs: exact pins, tests/worker/driver.py),
# the FunctionRpc protobuf messages it is driven with, and the offline v2 app linter.
WORKER_RUNTIME := azure-functions-runtime==1.3.0 azure-functions-runtime-v1==1.2.0
WORKER_DEPS := azurefunctions-extensions-base==1.2.0 protobuf==5.29.6 grpcio==1.70.0
DOCTOR := azure-functions-doctor==0.23.1
BRIDGE := $(VENV)/bin/bridge

.PHONY: setup demo dev test unit lint schema bench chaos clean

setup: $(VENV)/.installed $(AIRFLOW_VENV)/.installed node_modules/.installed $(INFRA_VENV)/.installed \
	$(WORKER_VENV)/.installed

# The bridge (Function App side), its tests and the local stack's Python parts.
$(VENV)/.installed: pyproject.toml requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -e ".[dev,airflow]"
	touch $@

# Airflow 3 in its own environment: its pins clash with the Function App's. It gets the bridge's
# Airflow side (the operator) installed, as an Airflow image would.
$(AIRFLOW_VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --upgrade pip
	$(AIRFLOW_VENV)/bin/pip install --quiet "apache-airflow[postgres,fab]==$(AIRFLOW_VERSION)" \
		"apache-airflow-client==$(AIRFLOW_VERSION)" -e ".[airflow]"
	touch $@

# The offline infrastructure checks (pycep-parser, checkov): their pins clash with the bridge's.
$(INFRA_VENV)/.installed:
	$(PYTHON) -m venv $(INFRA_VENV)
	$(INFRA_VENV)/bin/pip install --quiet pycep-parser==0.5.1 checkov==3.3.30
	touch $@

# The real Python worker (tests/worker) and azure-functions-doctor (make lint), next to the
# Function App's own requirements as Azure installs them. The runtime declares Python >= 3.13 but
# runs on 3.11; azure-functions-runtime-v1 is there only for the generated FunctionRpc messages its
# wheel ships (tests/protos): the proxy worker that holds them in Azure is not on PyPI.
$(WORKER_VENV)/.installed: requirements.txt Makefile
	$(PYTHON) -m venv $(WORKER_VENV)
	$(WORKER_VENV)/bin/pip install --quiet --upgrade pip
	$(WORKER_VENV)/bin/pip install --quiet -r requirements.txt $(WORKER_DEPS) $(DOCTOR)
	$(WORKER_VENV)/bin/pip install --quiet --no-deps --ignore-requires-python $(WORKER_RUNTIME)
	touch $@

# Azurite, the Azure Storage emulator: Table storage for the ledger, blobs for dead letters.
node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(BRIDGE) demo $(if $(KEEP),--keep) $(if $(CLOUDEVENTS),--cloudevents) $(if $(AZURE),--azure $(AZURE)) \
		$(if $(LIFECYCLE),--lifecycle) $(if $(AIRFLOW_AUTH),--airflow-auth $(AIRFLOW_AUTH))

dev: setup
	$(BRIDGE) dev $(if $(DAGS),--dags $(DAGS)) $(if $(AZURE),--azure $(AZURE)) \
		$(if $(AIRFLOW_AUTH),--airflow-auth $(AIRFLOW_AUTH))

test: setup lint
	$(VENV)/bin/python -m pytest

unit: $(VENV)/.installed
	$(VENV)/bin/python -m pytest tests/unit

lint: $(VENV)/.installed $(WORKER_VENV)/.installed
	$(VENV)/bin/ruff check bridge function_app.py tests examples bench
	$(VENV)/bin/ruff format --check bridge function_app.py bench
	$(VENV)/bin/mypy
	$(WORKER_VENV)/bin/python tests/worker/doctor.py

# Speed, cost and memory, each against a baseline measured in the same run, never in timed tests:
# about 18 minutes (QUICK=1: every benchmark scaled down, about 4), then the ledger at scale on its
# own Azurite and emulator (about 10 minutes; QUICK=1 about 1). See docs/benchmarks.md.
bench: setup
	$(VENV)/bin/python -m bench.run $(if $(QUICK),--quick)
	$(VENV)/bin/python -m bench.ledger $(if $(QUICK),--quick)

# Faults against two or more bridge processes sharing one ledger and one Airflow: a report of
# doubled, lost and misrouted effects per scenario (bench/results/chaos.json).
chaos: setup
	$(VENV)/bin/python bench/chaos.py $(if $(QUICK),--quick)

schema: $(VENV)/.installed
	$(BRIDGE) schema --write

clean:
	rm -rf .stack .pytest_cache .mypy_cache .ruff_cache
