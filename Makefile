# robot_calql: two commands on a fresh machine.
#   make demo   create .venv, install everything, run the whole pipeline in the MuJoCo stand-in
#   make test   create .venv, install everything, run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU-only machines take the local CPU build of torch; a machine with nvidia-smi takes the CUDA default.
TORCH_PIN := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
# pip on this machine prints one warning per package for an empty local index; hide only those.
PIPQ := grep -v "is ignored: it is neither a file nor a directory" || true

export MUJOCO_GL ?= egl
export PYOPENGL_PLATFORM ?= egl
# keep DDS traffic of tests and demos on this machine
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
export RMW_IMPLEMENTATION ?= rmw_fastrtps_cpp

.PHONY: help venv demo test lint bench clean

help:
	@echo "make demo   install into .venv and run the full pipeline in the MuJoCo stand-in"
	@echo "make test   install into .venv and run the test suite"
	@echo "make bench  run the speed and learning benchmarks (minutes to hours; prints figures)"
	@echo "make lint   ruff"

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "[setup] installing into $(VENV) (torch: $(TORCH_PIN))"
	@$(PY) -m pip install -q --upgrade pip 2>&1 | $(PIPQ)
	@$(PY) -m pip install -q "$(TORCH_PIN)" 2>&1 | $(PIPQ)
	@$(PY) -m pip install -q -e ".[vlm,ros,dev,lerobot,urdf]" 2>&1 | $(PIPQ)
	@# the ROS 2 adapter package (ros_nodes/, Python module robot_calql_ros) on the venv's path
	@echo "$(CURDIR)/ros_nodes" > $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/robot_calql_ros.pth
	@$(PY) -c "import torch, mujoco, rclpy, transformers, robot_calql; print('[setup] ok: torch', torch.__version__, '| mujoco', mujoco.__version__)"
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/robot-calql demo

test: $(STAMP)
	$(PY) -m pytest tests -q

lint: $(STAMP)
	$(VENV)/bin/ruff check robot_calql ros_nodes tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
