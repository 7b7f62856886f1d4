# Two commands on a fresh machine: `make run` and `make test`. Each creates .venv when
# it is missing and (re)installs the package, building the cffi extension, only when
# the build inputs changed since the last install, so repeated runs start at once.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-
CSRC   := $(wildcard src/*.c src/*.h)

# The C's warnings (build_ffi.py) are errors in every build made here, CI's too; a
# plain `pip install` keeps them warnings. `make test NGXFFI_WERROR=0` builds without.
NGXFFI_WERROR ?= 1
export NGXFFI_WERROR

# $(call apt-ensure,COMMAND,PACKAGE): install the Debian package when the command is
# missing, as benchmarks/run.py does for wrk and nginx (apt-get update only when the
# first install fails; root only).
define apt-ensure
command -v $(1) >/dev/null 2>&1 || { \
	if [ "$$(id -u)" != 0 ]; then \
		echo "missing $(1): apt-get install $(2)" >&2; exit 1; fi; \
	apt-get install -y -q $(2) >/dev/null 2>&1 \
	|| { apt-get update -q >/dev/null && apt-get install -y -q $(2) >/dev/null; }; }
endef

.PHONY: run test bench lint docs clean

run: $(STAMP)test
	$(VENV)/bin/ngxffi info
	$(VENV)/bin/ngxffi serve --listen 127.0.0.1:8080

test: $(STAMP)test
	$(PY) -m pytest

bench: $(STAMP)bench
	$(PY) benchmarks/run.py

# mypy reads the tests and benchmarks too: their dependencies come first. The C's
# format is .clang-format's (Debian 12's clang-format 14).
lint: $(STAMP)test $(STAMP)bench $(STAMP)lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@$(call apt-ensure,clang-format,clang-format)
	clang-format --dry-run --Werror src/*.c src/*.h

# The documentation site (Sphinx: guides in Markdown, API reference from the
# docstrings) in docs/_build/html; any warning fails the build.
docs: $(STAMP)docs
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

$(PY):
	$(PYTHON) -m venv $(VENV)

# One stamp per extra (test, bench, lint): installing one never hides another.
$(STAMP)%: $(PY) pyproject.toml setup.py build_ffi.py $(CSRC)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[$*]'
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info ngxffi/_ngx.* ngxffi/*.so src/*.o
