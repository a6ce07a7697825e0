# Two commands on a fresh machine: `make demo` (the lifecycle, unattended) and `make test`.
# Both build .venv from requirements.lock first (pinned versions of everything).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
EVIDENTLY_VENV := .venv-evidently
EVIDENTLY_STAMP := $(EVIDENTLY_VENV)/.installed

.PHONY: demo test lint lint-infra checkov-venv chromium stop bench bench-drift-peer clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.lock
	$(VENV)/bin/pip install --quiet --no-deps -e .
	touch $(STAMP)

# checkov (Bicep lint) pins packages that clash with ours: a venv of its own, from its lock.
$(CHECKOV_STAMP): requirements-checkov.lock
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/pip install --quiet -r requirements-checkov.lock
	touch $(CHECKOV_STAMP)

checkov-venv: $(CHECKOV_STAMP)

lint-infra: $(CHECKOV_STAMP)
	$(CHECKOV_VENV)/bin/checkov --config-file infra/checkov.yaml

# The browser test drives Debian's chromium with Playwright (no browser download).
chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: the browser test will skip"

demo: $(STAMP)
	$(VENV)/bin/mlops demo

test: $(STAMP) $(CHECKOV_STAMP) chromium
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy  # the packages and settings: [tool.mypy] in pyproject.toml
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile  # two workers, a file stays on one

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

# The drift benchmark's peer (Evidently) needs pandas<3, so it lives in a venv of its own.
$(EVIDENTLY_STAMP): bench/requirements-evidently.lock
	$(PYTHON) -m venv $(EVIDENTLY_VENV)
	$(EVIDENTLY_VENV)/bin/pip install --quiet --upgrade pip
	$(EVIDENTLY_VENV)/bin/pip install --quiet -r bench/requirements-evidently.lock
	touch $(EVIDENTLY_STAMP)

bench-drift-peer: $(EVIDENTLY_STAMP)

bench: $(STAMP) $(EVIDENTLY_STAMP)
	$(VENV)/bin/python -m bench.train
	$(VENV)/bin/python -m bench.serve
	$(VENV)/bin/python -m bench.drift
	$(VENV)/bin/python -m bench.explain
	$(VENV)/bin/python -m bench.fairness
	$(VENV)/bin/python -m bench.batch --peer-big

stop: $(STAMP)
	$(VENV)/bin/mlops server stop

clean:
	-$(VENV)/bin/mlops server stop
	rm -rf .mlops
