# make test  -- create .venv if missing, install timenet editable with its test
#               extras, rebuild the C core, run the tests.
# make demo  -- the end-to-end job on the embedded demo data.
# make bench -- the benchmarks (print figures; never part of the tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.timenet-installed

.PHONY: test demo bench build clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q setuptools wheel "numpy>=1.25" "scipy-openblas32>=0.3.27"
	$(PY) -m pip install -q --no-build-isolation -e ".[test,demo]"
	touch $(STAMP)

build: $(STAMP)
	$(PY) setup.py -q build_ext --inplace

test: build
	$(PY) -m pytest -q tests

demo: build
	$(PY) -m timenet.cli demo --out demo_out

BENCHES := kernels metrics scoring flow tpn

bench: build
	for b in $(BENCHES); do echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py || exit 1; done
	test ! -d demo_out/run || $(PY) benchmarks/scoring_fallback.py --run demo_out/run --data demo_out/data

clean:
	rm -rf build timenet/_core*.so *.egg-info
