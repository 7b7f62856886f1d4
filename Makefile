# Two commands on a fresh machine: `make run` and `make test`. Each creates .venv when
# it is missing and (re)installs the package, building the cffi extension, only when
# the build inputs changed since the last install, so repeated runs start at once.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-
CSRC   := $(wildcard src/*.c src/*.h)
# The extras a stamp installs where it needs more than its own: the suite's brings the
# frameworks its recipes run (tests/test_recipes.py), in .venv and .venv-sanitize.
EXTRAS_test := test,integration

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

# $(call copy-tree,DIR): the working tree's files (tracked and untracked, not ignored)
# copied into DIR, for a build that must not touch this tree's extension.
define copy-tree
git ls-files -co --exclude-standard | while read -r f; do [ ! -f "$$f" ] \
	|| echo "$$f"; done | tar -cf - -T - | tar -xf - -C $(1)
endef

.PHONY: run test test-matrix cpython-tests bench bench-slow lint docs sanitize fuzz clean

run: $(STAMP)test
	$(VENV)/bin/ngxffi info
	$(VENV)/bin/ngxffi serve --listen 127.0.0.1:8080

test: $(STAMP)test
	$(PY) -m pytest

# The version matrix: `make test cpython-tests` on each other CPython of MATRIX (.venv's
# own is the oldest supported, 3.11), each in a copy of the working tree under
# build/py<version> with its own .venv there, because the editable install builds the
# extension into the tree it installs. The copy is made afresh each time (its venv
# kept, the package installed again), so nothing this tree no longer has stays
# importable. Each interpreter is pyenv's newest <version>.*, else python<version>
# on PATH; one that is missing fails the target (pyenv install).
MATRIX ?= 3.13
test-matrix:
	@set -e; for v in $(MATRIX); do \
		py=$$(ls -d $$HOME/.pyenv/versions/$$v.*/bin/python$$v 2>/dev/null \
			| sort -V | tail -n 1); py=$${py:-$$(command -v python$$v)}; \
		"$$py" -c '' 2>/dev/null || { \
			echo "test-matrix: no python$$v (pyenv install $$v)" >&2; exit 1; }; \
		dir=build/py$$v; mkdir -p $$dir; \
		find $$dir -mindepth 1 -maxdepth 1 ! -name .venv -exec rm -rf {} +; \
		rm -f $$dir/.venv/.installed-*; \
		$(call copy-tree,$$dir); \
		echo "test-matrix: $$($$py --version) in $$dir"; \
		$(MAKE) -C $$dir test cpython-tests PYTHON=$$py; \
	done

# CPython's own test_selectors and test_asyncio on NgxSelector, against the same
# suites on the default EpollSelector, in the same run (tests/cpython/cpython_suites.py).
# On another Python: make test-matrix, which runs it beside the suite.
cpython-tests: $(STAMP)test
	$(PY) tests/cpython/cpython_suites.py

bench: $(STAMP)bench
	$(PY) benchmarks/run.py

# slowhttptest's slow attacks against nginx and ngxffi (installs both tools if missing)
bench-slow: $(STAMP)bench
	cd benchmarks && ../$(PY) slow_clients.py

# mypy reads the tests and benchmarks too: their dependencies come first. The C's
# format is .clang-format's (Debian 12's clang-format 14).
lint: $(STAMP)test $(STAMP)bench $(STAMP)lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	@$(call apt-ensure,clang-format,clang-format)
	clang-format --dry-run --Werror src/*.c src/*.h fuzz/*.c

# The documentation site (Sphinx: guides in Markdown, API reference from the
# docstrings) in docs/_build/html; any warning fails the build.
docs: $(STAMP)docs
	$(VENV)/bin/sphinx-build -W --keep-going -b html docs docs/_build/html

# The whole suite against an extension built with ASan and UBSan (build_ffi.py's
# NGXFFI_SANITIZE), with gcc's libasan. The build never reaches .venv or ngxffi/: the
# working tree (tracked and untracked, not ignored files) is copied to $(SAN_DIR), which
# .venv-sanitize installs (editable) and the suite runs in. Python is not instrumented,
# so libasan is preloaded, and the environment passes that on to every child the tests
# spawn (python -m ngxffi ...). detect_leaks=0: CPython does not free everything at exit,
# by design, so LeakSanitizer would report Python, not us. Each report goes to a file
# under $(SAN_DIR)/reports: a report fails the target even in a child whose exit status
# a test does not look at.
SAN_VENV := .venv-sanitize
SAN_DIR  := build/sanitize
SAN_LOG  := $(abspath $(SAN_DIR))/reports
SAN_ENV  := LD_PRELOAD=$$(gcc -print-file-name=libasan.so) \
	ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:log_path=$(SAN_LOG)/asan \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(SAN_LOG)/ubsan \
	PATH=$(abspath $(SAN_DIR))/bin:$$PATH

# The tools the suite runs that are not Python: without libasan (preloaded, curl
# hangs in its start-up on Debian 12), through a shim first in PATH.
SAN_UNSANITIZED := curl

sanitize:
	rm -rf $(SAN_DIR)/tests $(SAN_DIR)/examples  # no test the tree no longer has
	mkdir -p $(SAN_DIR)
	$(call copy-tree,$(SAN_DIR))
	test -x $(SAN_VENV)/bin/python || $(PYTHON) -m venv $(SAN_VENV)
	if [ ! -f $(SAN_VENV)/.installed ] || [ -n "$$(cd $(SAN_DIR) && find src build_ffi.py \
		setup.py pyproject.toml -newer $(abspath $(SAN_VENV))/.installed)" ]; then \
		NGXFFI_SANITIZE=1 $(SAN_VENV)/bin/pip install --quiet \
		--disable-pip-version-check -e '$(SAN_DIR)[$(EXTRAS_test)]' \
		&& touch $(SAN_VENV)/.installed; fi
	readelf -d $(SAN_DIR)/ngxffi/_ngx.*.so | grep -q 'NEEDED.*libasan' \
		|| { echo "$(SAN_DIR)/ngxffi/_ngx: not built with ASan" >&2; exit 1; }
	rm -rf $(SAN_LOG) $(SAN_DIR)/bin && mkdir -p $(SAN_LOG) $(SAN_DIR)/bin
	for t in $(SAN_UNSANITIZED); do command -v $$t >/dev/null || continue; \
		printf '#!/bin/sh\nunset LD_PRELOAD\nexec %s "$$@"\n' "$$(command -v $$t)" \
		>$(SAN_DIR)/bin/$$t && chmod +x $(SAN_DIR)/bin/$$t; done
	cd $(SAN_DIR) && $(SAN_ENV) $(abspath $(SAN_VENV))/bin/python -m pytest -p no:cacheprovider
	@if [ -n "$$(ls $(SAN_LOG))" ]; then cat $(SAN_LOG)/*; \
		echo "sanitizer reports: $$(ls $(SAN_LOG) | wc -l)" >&2; exit 1; fi
	@echo "sanitizer reports: 0"

# libFuzzer targets (fuzz/*.c, each linked with src/*.c) built by Debian's clang
# (installed when missing) with ASan and UBSan, each run FUZZ_SECONDS from its seed
# corpus fuzz/corpus/<target>; what the fuzzer adds, and any crashing input, stays
# under build/fuzz (ignored).
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build/fuzz
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/*.c))
FUZZ_CFLAGS  := -g -O1 -fsanitize=fuzzer,address,undefined \
	-fno-sanitize-recover=undefined -fno-omit-frame-pointer -fno-wrapv \
	-Wall -Wextra -Wshadow -Wconversion -Werror -Isrc

fuzz: $(addprefix $(FUZZ_DIR)/,$(FUZZ_TARGETS))
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus/$$t $(FUZZ_DIR)/artifacts; \
		echo "fuzz: $$t for $(FUZZ_SECONDS) s"; \
		$(FUZZ_DIR)/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
			-print_final_stats=1 -artifact_prefix=$(FUZZ_DIR)/artifacts/$$t- \
			$(FUZZ_DIR)/corpus/$$t fuzz/corpus/$$t 2>$(FUZZ_DIR)/$$t.log \
			|| { cat $(FUZZ_DIR)/$$t.log; exit 1; }; \
		grep -E '^(#[0-9]+[[:space:]]+DONE|Done )' \
			$(FUZZ_DIR)/$$t.log; \
	done

$(FUZZ_DIR)/%: fuzz/%.c $(CSRC) | $(FUZZ_DIR)/.clang
	clang $(FUZZ_CFLAGS) -o $@ $< $(filter %.c,$(CSRC))

# clang, and its libFuzzer runtime (libclang-rt-N-dev is only recommended by clang-N):
# an empty target must link with -fsanitize=fuzzer.
FUZZ_PROBE := int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { return 0; }
$(FUZZ_DIR)/.clang:
	@$(call apt-ensure,clang,clang)
	@mkdir -p $(FUZZ_DIR)
	@probe() { echo '$(FUZZ_PROBE)' | clang -x c -fsanitize=fuzzer,address,undefined \
		-o $(FUZZ_DIR)/.probe - 2>/dev/null; }; probe || { \
		rt=libclang-rt-$$(clang -dumpversion | cut -d. -f1)-dev; \
		if [ "$$(id -u)" != 0 ]; then echo "apt-get install $$rt" >&2; exit 1; fi; \
		apt-get install -y -q $$rt >/dev/null 2>&1 || { apt-get update -q \
		>/dev/null && apt-get install -y -q $$rt >/dev/null; }; probe; } \
		|| { echo "clang cannot link -fsanitize=fuzzer" >&2; exit 1; }
	@rm -f $(FUZZ_DIR)/.probe && touch $@

$(PY):
	$(PYTHON) -m venv $(VENV)

# One stamp per extra (test, bench, lint): installing one never hides another.
$(STAMP)%: $(PY) pyproject.toml setup.py build_ffi.py $(CSRC)
	$(PY) -m pip install --quiet --disable-pip-version-check \
		-e '.[$(or $(EXTRAS_$*),$*)]'
	@touch $@

clean:
	rm -rf $(VENV) $(SAN_VENV) build *.egg-info ngxffi/_ngx.* ngxffi/*.so src/*.o
