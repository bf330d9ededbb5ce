# lrm_ros: two commands do everything on a fresh machine (see README.md):
#   make demo   set up, then run the simulated pipeline on the embedded defaults
#   make test   set up, then run the test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.lrm_ros
# vLLM's CPU build, in a venv of its own (it needs transformers<5.20): the `vllm` reward
# backend's tests and benchmark start a real server from it
VLLM_VENV ?= .venv-vllm

.PHONY: setup setup-vllm demo test bench demos clean
setup: $(STAMP)/package

# Dependencies (pinned; torch is the CPU wheel) and the software Vulkan SAPIEN needs.
$(STAMP)/deps: requirements/*.txt scripts/setup.sh scripts/setup_vulkan.sh
	bash scripts/setup.sh deps $(VENV)
	@mkdir -p $(STAMP) && touch $@

# The package itself: rosidl messages + Python modules, built by setup.py through CMake.
PKG_SOURCES := $(shell find lrm_ros msg config launch -type f -not -name '*.pyc' 2>/dev/null) \
               setup.py CMakeLists.txt package.xml
$(STAMP)/package: $(STAMP)/deps $(PKG_SOURCES)
	bash scripts/setup.sh package $(VENV)
	@touch $@

setup-vllm: $(VLLM_VENV)/.lrm_ros_vllm

$(VLLM_VENV)/.lrm_ros_vllm: scripts/setup_vllm.sh
	bash scripts/setup_vllm.sh $(VLLM_VENV)
	@touch $@

demo: setup
	$(VENV)/bin/lrm-ros demo

test: setup setup-vllm
	LRM_ROS_VLLM_VENV=$(abspath $(VLLM_VENV)) bash scripts/run_tests.sh $(VENV)

bench: setup
	$(PY) bench/bench_bridge.py

demos: setup
	$(VENV)/bin/lrm-ros demos

clean:
	rm -rf build $(VENV) $(VLLM_VENV) out
