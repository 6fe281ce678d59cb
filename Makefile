# From Noise to Digits. The two commands a newcomer needs:
#   make course   run every notebook, write the HTML course to build/course/
#   make test     unit tests + every notebook under nbval
# Each builds its Python environment first (in $(VENV), once; about 2 minutes).

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The environment is rebuilt when the pinned dependencies change.
ENV_KEY := $(shell grep -E '^ *"[A-Za-z0-9_.-]+==' pyproject.toml | sha256sum | cut -c1-12)
ENV_STAMP := $(VENV)/.course-env-$(ENV_KEY)
# pip prints a warning per package for this machine's local mirrors; keep the log readable.
# (Only grep's status is ignored: with pipefail a failing pip still stops make.)
QUIET_PIP := { grep -v 'is ignored: it is neither a file nor a directory' || true; }
FORCE ?=

.PHONY: help env test course student lab bench clean

help:
	@echo "make course   execute every notebook and write the HTML course to build/course/"
	@echo "make test     unit tests + nbval on every notebook"
	@echo "make student  student handouts (solutions stubbed) in build/student/"
	@echo "make lab      open JupyterLab on the notebooks"
	@echo "make bench    measure the shipped models (bench/results/, README tables)"

$(ENV_STAMP):
	@echo "Building the course environment in $(VENV) (first time only: ~2 minutes, ~6 GB)"
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -e . 2>&1 | $(QUIET_PIP)
	touch $@

# A cached environment may have been built for another checkout: point it at this one.
# (-I: ignore the current folder, so we see what a kernel started elsewhere would import.)
env: $(ENV_STAMP)
	@$(PY) -I -c "import course_lib, course_tools, pathlib as p, sys; here = p.Path('$(CURDIR)').resolve(); sys.exit(any(p.Path(m.__file__).parent != here / m.__name__ for m in (course_lib, course_tools)))" 2>/dev/null \
	  || ($(PY) -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP))

# --durations: CI must finish in 20 minutes on 2 cores; the log names the slowest tests to trim first.
test: env
	$(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider --durations=15

course: env
	@$(PY) -m course_tools.build course $(if $(FORCE),--force)

student: env
	$(PY) -m course_tools.build student $(if $(FORCE),--force)

lab: env
	$(PY) -m jupyter lab notebooks

bench: env
	$(PY) bench/ddpm_bench.py
	$(PY) bench/parameterisation_bench.py
	$(PY) bench/vae_bench.py
	$(PY) bench/clip_bench.py
	$(PY) bench/ldm_bench.py
	$(PY) bench/guidance_bench.py
	$(PY) bench/flow_bench.py
	$(PY) bench/time_sampling_bench.py

clean:
	rm -rf build
