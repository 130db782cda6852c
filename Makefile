# The two commands of the README:
#   make bench   set up .venv, then benchmark the shipped checkpoints on the real test set (batch 128)
#   make test    set up .venv, then run the whole test suite
# Data: $(CIFAR_SPEED_DATA), default ../shared/cifar10 (this project's machines); elsewhere run
# `.venv/bin/cifar-speed data download` once, or point CIFAR_SPEED_DATA at your copy.
PYTHON ?= python3
VENV ?= .venv
CIFAR_SPEED_DATA ?= $(abspath ../shared/cifar10)
export CIFAR_SPEED_DATA
# `make bench` measures these shipped checkpoints, by name (all of results/checkpoints: `make bench-all`).
BENCH_MODELS ?= fast cnn
# torch / torchvision pinned to the pair this project is developed and tested with.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup bench test bench-all report clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet $(TORCH_PINS) -e '.[test,triton,int8,openvino]'
	touch $@

setup: $(VENV)/.installed

bench: setup
	$(VENV)/bin/cifar-speed bench $(BENCH_MODELS) --batch 128

test: setup
	$(VENV)/bin/python -m pytest -q

bench-all: setup
	$(VENV)/bin/cifar-speed bench

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks
