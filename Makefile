# make demo : fresh machine -> .venv, install, run the default sweep (CPU-sized) on local Ray, print where results are
# make test : install, run the whole test suite (the tests start the real services they need: Ray clusters), then
#             the numeric tests again on two other CPU code paths (CODE_PATHS)
# make reproduce : every study's sweep at CPU size on local Ray, then REPRODUCTION.md (see REPRODUCTION.md for times)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# The demo: sweeps/robustness.yaml with fewer seeds and one learning rate, so it finishes in minutes on 2 cores.
DEMO_RUN := runs/robustness-demo
DEMO_SET := --set 'sweep.seed={range: [0, 8]}' --set 'sweep.train.lr=[1.0e-3]' --set 'sweep.model.kernel=[softmax, normsoftmax]'

# Debian packages of the real services the tests start and stop themselves (a one-node SLURM cluster with munge,
# a PostgreSQL server for Optuna); installing them needs root, as CI has.
DEB_PACKAGES := slurm-wlm munge postgresql

# The reproduction studies (analysis/reproduction/): launch sweeps, then the Optuna search, then the report.
STUDIES := robustness eureka_images gaussian_vs_softmax admin_depth cooccurrence

# The portability net: `make test` runs the tests marked `numeric` (their outcome rests on floating-point results)
# again on two other CPU code paths of ATen, oneDNN and MKL, the AVX2 kernels and the generic ones, so a test that
# holds only with this CPU's kernels fails on every machine, not only on some (benchmarks/measure_rounding.py
# measures the same paths).
CODE_PATHS := "ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2" \
              "ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41 MKL_ENABLE_INSTRUCTIONS=SSE4_2"

.PHONY: setup services demo test reproduce lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt examples/toylab/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: the local CPU build, so nothing pulls the multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	# The example plug-in trainer package (README "Your own trainer"): the tests run it by its entry point.
	$(BIN)/python -m pip install --quiet --no-deps -e examples/toylab
	touch $(STAMP)

demo: setup
	$(BIN)/python -m orchestrator launch sweeps/robustness.yaml --run-dir $(DEMO_RUN) $(DEMO_SET)
	$(BIN)/python -m orchestrator status $(DEMO_RUN)
	$(BIN)/python -m orchestrator analyze $(DEMO_RUN)
	@echo "results: $(DEMO_RUN)/trials.parquet, $(DEMO_RUN)/curves.parquet; report: $(DEMO_RUN)/report/index.html"

services:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing $$missing (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

test: setup services
	$(BIN)/lint-imports  # the layers and no import cycles (pyproject.toml [tool.importlinter])
	$(BIN)/python -m pytest
	for path in $(CODE_PATHS); do \
		echo "numeric tests on the code path $$path"; \
		env $$path $(BIN)/python -m pytest -m numeric -q --durations=0 --durations-min=30 || exit $$?; \
	done

reproduce: setup
	for study in $(STUDIES); do $(BIN)/python -m orchestrator launch sweeps/$$study.yaml --no-progress || exit $$?; done
	$(BIN)/python -m orchestrator search sweeps/robust_region.yaml --no-progress
	$(BIN)/python -m orchestrator reproduce-report

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache
