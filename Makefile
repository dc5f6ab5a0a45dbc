# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
DEMO_ARGS ?=

.PHONY: demo test unit bench bench-tiers bench-tags bench-campaigns bench-replay bench-latency bench-analysis fuzz lint schema charts clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# Only for its CDNOW data set, which a test fits the models on (its own code is not used).
	$(BIN)/python -m pip install --quiet --no-deps 'lifetimes==0.11.3'
	rm -f $(VENV)/.installed-* && touch $@

demo: $(STAMP)  ## sample shop through the embedded pipeline, summary, /metrics until Ctrl-C
	$(BIN)/memberflow demo $(DEMO_ARGS)

# Integration tests mostly wait on consumer-group joins: run them six at a time, an idle test
# process taking tests from busy ones (each test process starts its own broker and
# PostgreSQL). TEST_JOBS=1 runs them one by one.
TEST_JOBS ?= 6

test: $(STAMP)  ## unit + integration tests against a real broker and PostgreSQL
	MEMBERFLOW_REQUIRE_INTEGRATION=1 $(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist worksteal

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

bench: $(STAMP)  ## throughput and memory figures (printed, never asserted)
	$(BIN)/python benchmarks/pipeline.py

bench-replay: $(STAMP)  ## 1M events rebuilt from the archive: rate, memory per worker, bytes per event
	$(BIN)/python benchmarks/replay.py

bench-latency: $(STAMP)  ## event time -> state committed at 2,000 events/s for 60 s into `up`
	$(BIN)/python benchmarks/latency.py

bench-tiers: $(STAMP)  ## customer ABC, level evaluation, policy re-evaluation
	$(BIN)/python benchmarks/tiers.py

bench-analysis: $(STAMP)  ## every customer-analysis report on a shop of 1M members
	$(BIN)/python benchmarks/analysis.py

bench-tags: $(STAMP)  ## rule evaluations, one rule over 1M members, the tagging worker
	$(BIN)/python benchmarks/tags.py

fuzz: $(STAMP)  ## 10^5 hostile inputs against the embedded stack; counts printed, exit 1 on a breach
	$(BIN)/python benchmarks/fuzz.py

bench-campaigns: $(STAMP)  ## attribution with 1M sends and 100k clicks outstanding
	$(BIN)/python benchmarks/campaigns.py

lint: $(STAMP)
	$(BIN)/ruff check shared services memberflow tests benchmarks
	$(BIN)/mypy

charts: $(STAMP)  ## redraw docs/charts/ (the README's report charts) from the sample shop
	$(BIN)/python docs/draw_charts.py

schema: $(STAMP)  ## regenerate the published JSON Schemas of inbound and outbound events
	$(BIN)/memberflow schema --out docs/event.schema.json
	$(BIN)/memberflow schema --outbound --out docs/member-event.schema.json

clean:
	rm -rf $(VENV) .memberflow
