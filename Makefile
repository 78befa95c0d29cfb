# minisaga — every target installs what it needs by itself.
#   make run     all four services on 127.0.0.1:7001-7004, SQLite under ./data
#                (TLS=1: mTLS everywhere, certificates under ./data/certs;
#                BASE_PORT=8001: on 8001-8004; DATA=dir: elsewhere)
#   make test    the whole suite (what .ci/run calls); installs PostgreSQL and
#                Chromium for their tests when missing and root, else those
#                tests say why they skip
#   make lint    ruff, mypy --strict, buf lint
#   make proto   regenerate generated/ from protos/
#   make docs    the documentation site into site/ (mkdocs --strict)

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUF    := node_modules/.bin/buf
DATA   ?= data
PROTOS := $(shell find protos -name '*.proto' | sort)
CODE   := service_kit payment_server inventory_server shipping_server orchestrator_server minisaga_client bench examples tests tools

.PHONY: install proto proto-check test test-stress test-random lint run bench clean postgres chromium jq screenshots docs docs-reference

install: $(STAMP)

# The stamp names the Python that made .venv and is written only once the
# install has finished. A venv made by another Python, or never finished (no
# stamp), is made anew rather than reused broken; a stamped one only gets
# pyproject.toml's changes.
PYTHON_ID := $(shell $(PYTHON) -c 'import sys; print(sys.version.split()[0], sys.executable)' 2>/dev/null)
ifeq ($(PYTHON_ID),)
  $(error PYTHON=$(PYTHON) does not run: pick a Python 3.11 or newer, e.g. make PYTHON=python3.12)
endif
ifneq ($(PYTHON_ID),$(shell cat $(STAMP) 2>/dev/null))
  $(shell rm -f $(STAMP))
endif

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	  || { echo "minisaga needs Python 3.11 or newer; $(PYTHON) is $(word 1,$(PYTHON_ID)): make PYTHON=python3.12 ..." >&2; exit 1; }
	@if [ ! -f $@ ]; then echo "creating $(VENV) with $(PYTHON_ID) and installing minisaga's dependencies (a first install takes about 1-3 minutes; later ones seconds)"; rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	echo '$(PYTHON_ID)' > $@

$(BUF): package.json package-lock.json
	@echo "installing buf and Mermaid with npm ci into node_modules/ (about a minute the first time)"
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

# protoc writes imports from the path under -I, so generated/ itself goes on
# the import path and `minisaga.payment.v1` is the generated package.
define GENERATE
	rm -rf $(1) && mkdir -p $(1)
	PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m grpc_tools.protoc -I protos \
	  --python_out=$(1) --grpc_python_out=$(1) \
	  --mypy_out=$(1) --mypy_grpc_out=$(1) $(PROTOS)
	find $(1) -mindepth 1 -type d -exec sh -c 'touch "$$0/__init__.py"' {} \;
	touch $(1)/minisaga/py.typed
endef

proto: $(STAMP)
	$(call GENERATE,generated)

# Fails when generated/ does not match protos/ (someone forgot `make proto`).
proto-check: $(STAMP)
	$(call GENERATE,$(VENV)/generated-check)
	diff -r --exclude=__pycache__ generated $(VENV)/generated-check \
	  || { echo "generated/ is stale: run 'make proto' and commit the result" >&2; exit 1; }

lint: $(STAMP) $(BUF)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)
	$(VENV)/bin/mypy
	$(BUF) lint

test: $(STAMP) proto-check postgres chromium jq docs
	@start=$$(date +%s); $(VENV)/bin/pytest -q; status=$$?; \
	echo "make test took $$(( $$(date +%s) - start )) s. For a fast subset while working:" \
	  "$(VENV)/bin/pytest -q -m 'not slow' tests/orchestrator -k sqlite (or any tests/ folder)"; \
	exit $$status

# The suite STRESS_RUNS times (default 5) with a CPU burner per core beside it:
# a test that leans on timing fails here long before it fails in CI.
STRESS_RUNS ?= 5
test-stress: $(STAMP) postgres
	$(PY) -m tests.stress --runs $(STRESS_RUNS) $(STRESS_ARGS)

# The suite once in a random order (pytest-random-order): a test that depends
# on another's leftovers fails here. The seed is printed to replay an order.
test-random: $(STAMP) postgres
	$(VENV)/bin/pytest -q --random-order-bucket=global $(PYTEST_ARGS)

# Breaks each saga rule in turn, in a temporary copy of the working tree (a
# curated list of mutations, tools/mutation_check.py), and runs the tests aimed
# at it: fails, naming it, if a mutation survives. Takes minutes, so it is not
# part of `make test`; run it before changing a rule. MUTATION_ARGS="--only
# backoff --jobs 1"; python -m tools.mutation_check --help for the rest.
.PHONY: mutation-check
mutation-check: $(STAMP) postgres
	$(PY) -m tools.mutation_check $(MUTATION_ARGS)

# The PostgreSQL server binaries the PostgreSQL tests start a throwaway server
# from (tests/pg.py). Installed when missing and we are root (CI); never fails:
# without them those tests are skipped, each saying why.
postgres:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing PostgreSQL (apt-get install postgresql) for its tests" >&2; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; } \
	    || echo "could not install PostgreSQL: its tests will be skipped" >&2; \
	else \
	  echo "no PostgreSQL server binaries (apt-get install postgresql): its tests will be skipped" >&2; \
	fi

# jq, which the documentation's commands use to pick an id out of JSON output
# (SAGA=$(minisaga place-order ... --json | jq -r .saga_id)); its tests run
# them. Installed when missing and we are root; else those tests skip, saying why.
jq:
	@if command -v jq >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing jq (apt-get install jq) for the documentation's commands" >&2; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; } \
	    || echo "could not install jq: the documentation's tests will be skipped" >&2; \
	else \
	  echo "no jq (apt-get install jq): the documentation's tests will be skipped" >&2; \
	fi

# Debian's Chromium, which the web console's browser tests drive with
# Playwright (tests/console). Installed when missing and we are root (CI);
# never fails: without it those tests are skipped, each saying why.
# (Playwright's own browser download is never used.)
chromium:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Chromium (apt-get install chromium) for the console's browser tests" >&2; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } \
	    || echo "could not install Chromium: the browser tests will be skipped" >&2; \
	else \
	  echo "no Chromium (apt-get install chromium): the browser tests will be skipped" >&2; \
	fi

# The console's screenshots in docs/assets/console/, taken by its browser test
# against a fresh in-process system (README.md and docs/console.md show them).
SCREENSHOTS := docs/assets/console
screenshots: $(STAMP) chromium
	mkdir -p $(SCREENSHOTS)
	MINISAGA_SCREENSHOTS=$(abspath $(SCREENSHOTS)) $(VENV)/bin/pytest -q \
	  tests/console/test_browser.py -k screenshots

# The documentation site (docs/, mkdocs.yml) into site/. --strict: a broken
# link or anchor fails. Mermaid comes from npm (package.json), copied next to
# the pages, so the site needs no CDN. The generated reference pages must
# match the code (make docs-reference rewrites them).
MERMAID_JS := docs/assets/javascripts/mermaid.min.js
docs: $(STAMP) $(BUF)
	$(PY) -m tools.docs_reference --check
	mkdir -p $(dir $(MERMAID_JS))
	cp node_modules/mermaid/dist/mermaid.min.js $(MERMAID_JS)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet

# Rewrites docs/reference/*.md from the servers' flags and the protos' comments.
docs-reference: $(STAMP)
	$(PY) -m tools.docs_reference

# make run TLS=1: mTLS between every pair of services, with a development CA
# and certificates under $(DATA)/certs (written by run_all when missing).
# BASE_PORT=8001: orchestrator on 8001, payment, inventory, shipping on the next
# three; PORTS=O,P,I,S each port; CONSOLE_PORT=0: no web console.
BASE_PORT    ?= 7001
CONSOLE_PORT ?= 7080
run: $(STAMP)
	@mkdir -p $(DATA)
	@$(PY) -m service_kit.run_all --data-dir $(DATA) --base-port $(BASE_PORT) \
	  $(if $(PORTS),--ports $(PORTS)) --console-port $(CONSOLE_PORT) \
	  $(if $(filter 1 yes true,$(TLS)),--tls-dir $(DATA)/certs)

# The benchmark: fresh services, the direct and in-memory baselines, the
# correctness check, sagas in flight, recovery; a Markdown table on stdout, JSON
# in bench-results/. With PostgreSQL's binaries present (make postgres installs
# them when root) it also runs the saga log on PostgreSQL, one and two replicas.
# make bench BENCH_ARGS=--quick for a smoke run (BENCH_ARGS replaces the
# defaults); python -m bench --help for the rest.
bench: $(STAMP) postgres
	@store=; if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; \
	  then store="--store postgresql"; fi; \
	  echo "$(PY) -m bench $(if $(BENCH_ARGS),$(BENCH_ARGS),$$store)"; \
	  $(PY) -m bench $(if $(BENCH_ARGS),$(BENCH_ARGS),$$store)

clean:
	rm -rf $(VENV) node_modules site .mypy_cache .pytest_cache .ruff_cache
