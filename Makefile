# profiles: run `make` to see the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

MODULES     := events platform projections command-svc query-svc deploy
BIN         := bin
STATICCHECK := .cache/bin/staticcheck
STATICCHECK_VERSION := v0.8.2
# helm lints and renders deploy/helm/profiles in `make test` (deploy/helm).
HELM        := .cache/bin/helm
HELM_VERSION := v3.22.0
# An OpenTelemetry Collector (otlp receiver, file exporter) for the tracing
# test (deploy/e2e/tracing_test.go), built from deploy/otelcol.
OTELCOL     := .cache/bin/otelcol-e2e

# Where `make run` keeps its data: the views, the logs, the key of personal
# data (pii-kek) and, with AUTH_MODE=jwt, the development signing key
# (dev-auth/). deploy/run.sh reads it as RUN_DATA too.
RUN_DATA    ?= .data
export RUN_DATA

# The local broker of `make run` (tests use their own, see deploy/test.sh).
KAFKA_DATA  := .data/kafka
KAFKA_PORT  := 9092
KAFKA_CONTROLLER_PORT := 9093

.PHONY: help
help: ## Show this list.
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  make %-8s %s\n", $$1, $$2}'

.PHONY: build
# The binaries are built without cgo, as deploy/Dockerfile builds them:
# Pebble then allocates its caches in the Go heap, where GOMEMLIMIT sees
# them, not with C malloc, whose per-thread arenas kept query-svc's RSS at
# twice its caches (see BENCH.md).
build: export CGO_ENABLED=0
build: ## Build every binary into bin/.
	@mkdir -p $(BIN)
	cd command-svc && go build -o $(abspath $(BIN))/command-svc ./cmd/command-svc
	cd query-svc   && go build -o $(abspath $(BIN))/query-svc ./cmd/query-svc
	cd projections && go build -o $(abspath $(BIN))/projector ./cmd/projector
	cd projections && go build -o $(abspath $(BIN))/replay ./cmd/replay
	cd projections && go build -o $(abspath $(BIN))/replicator ./cmd/replicator
	cd deploy      && go build -o $(abspath $(BIN))/frontdoor ./cmd/frontdoor
	cd deploy      && go build -o $(abspath $(BIN))/devtoken ./cmd/devtoken

.PHONY: up
up: ## Start the local Kafka broker (KRaft, one node, 127.0.0.1:9092); data in .data/.
	deploy/kafka.sh start --data $(KAFKA_DATA) --port $(KAFKA_PORT) --controller-port $(KAFKA_CONTROLLER_PORT)

# How many instances of each service `make run` starts (make run INSTANCES=3).
INSTANCES   ?= 2

.PHONY: run
run: up build ## Start Kafka and INSTANCES (default 2; make run INSTANCES=3) instances of each service; the API is on http://localhost:8080. make run AUTH_MODE=jwt requires tokens (make token). Ctrl-C stops the services.
	INSTANCES="$(INSTANCES)" BIN_DIR="$(BIN)" deploy/run.sh

# Arguments of `make replay`, e.g. make replay ARGS="snapshots -switch".
ARGS        ?= status

# make replay reads personal data with the key make run generated
# ($(RUN_DATA)/pii-kek), unless PII_KEK or PII_KEK_FILE is set.
.PHONY: replay
replay: ## Rebuild from the event log against the local broker: make replay ARGS="status [-json]|snapshots [-switch]|verify|switch|drop -generation N|views -query URLS|topics [-json]|help".
	@mkdir -p $(BIN) && cd projections && CGO_ENABLED=0 go build -o $(abspath $(BIN))/replay ./cmd/replay
	@if [[ -z "$${PII_KEK:-}$${PII_KEK_FILE:-}" ]]; then export PII_KEK_FILE="$(RUN_DATA)/pii-kek"; fi; \
	  echo "$(BIN)/replay $(ARGS)" >&2; exec "$(BIN)/replay" $(ARGS)

# The subject and scopes of `make token` (SUB empty: a new random uid).
SUB    ?=
SCOPES ?= profiles:read profiles:write
TTL    ?= 1h

.PHONY: token
token: ## Print a bearer token for make run AUTH_MODE=jwt, signed with its development key: make token SUB=<uid> SCOPES="profiles:read profiles:write" (or profiles:admin) TTL=1h.
	@mkdir -p $(BIN) && cd deploy && CGO_ENABLED=0 go build -o $(abspath $(BIN))/devtoken ./cmd/devtoken
	@"$(BIN)/devtoken" token -dir "$(RUN_DATA)/dev-auth" -sub "$(SUB)" -scopes "$(SCOPES)" -ttl "$(TTL)"

.PHONY: down
down: ## Stop the local Kafka broker (its data stays in .data/).
	deploy/kafka.sh stop --data $(KAFKA_DATA)

# A local three-node cluster (KRaft, static quorum): brokers on 9192-9194,
# controllers on 9202-9204, data in .data/kafka-cluster. Topics created on it
# get replication factor 3 and min.insync.replicas=2.
CLUSTER_DATA    := .data/kafka-cluster
CLUSTER_BROKERS := 127.0.0.1:9192,127.0.0.1:9193,127.0.0.1:9194

.PHONY: up-cluster
up-cluster: ## Start a local three-node Kafka cluster (127.0.0.1:9192-9194, RF 3, min.insync.replicas=2); data in .data/.
	deploy/kafka.sh start-cluster --data $(CLUSTER_DATA) --base-port 9192

.PHONY: run-cluster
run-cluster: up-cluster build ## make run, on the three-node cluster of make up-cluster (the services get all three bootstrap servers).
	KAFKA_BROKERS="$(CLUSTER_BROKERS)" INSTANCES="$(INSTANCES)" BIN_DIR="$(BIN)" deploy/run.sh

.PHONY: down-cluster
down-cluster: ## Stop the three-node cluster (its data stays in .data/).
	deploy/kafka.sh stop-cluster --data $(CLUSTER_DATA)

.PHONY: clean
clean: down down-cluster ## Stop Kafka and delete all local data, views and binaries.
	rm -rf .data $(BIN)

.PHONY: test
test: $(HELM) $(OTELCOL) ## Run every test: unit, integration, end-to-end, the fault suite and brief fuzzing, on real Kafka of their own.
	PROFILES_HELM=$(CURDIR)/$(HELM) PROFILES_OTELCOL=$(CURDIR)/$(OTELCOL) deploy/test.sh

.PHONY: test-faults
test-faults: ## Only the fault suite (three-node cluster, killed brokers and services); rewrites docs/reliability.md.
	TEST_MODULES=deploy TEST_FUZZ=0 GOTESTFLAGS="-run ^TestFault -v" deploy/test.sh

# The soak: SOAK_DURATION (default 30m) of load with faults injected at
# random; writes SOAK_OUT.md and SOAK_OUT.png (default docs/soak).
# It starts from SOAK_PROFILES profiles (default 200000; 0 starts empty),
# each read once and 24000 of them changed through the front door before the
# load, so that the services' bounded caches are full before the minutes it
# measures, and runs the brokers with a heap committed at start
# (SOAK_KAFKA_HEAP_OPTS, Xms = Xmx as production brokers run), so that their
# RSS does not grow while the JVM takes the heap it was allowed.
SOAK_DURATION ?= 30m
SOAK_PROFILES ?= 200000
SOAK_KAFKA_HEAP_OPTS ?= -Xms512m -Xmx512m -XX:+AlwaysPreTouch
.PHONY: soak
soak: ## Soak test (not part of make test): load and random faults for SOAK_DURATION (30m); report and chart in docs/soak.{md,png}.
	KAFKA_HEAP_OPTS="$(SOAK_KAFKA_HEAP_OPTS)" SOAK_PROFILES=$(SOAK_PROFILES) PROFILES_SOAK=1 SOAK_DURATION=$(SOAK_DURATION) TEST_MODULES=deploy TEST_FUZZ=0 GOTESTFLAGS="-run ^TestSoak$$ -v -timeout 4h" deploy/test.sh

# How long `make fuzz` runs each fuzz target (make test: 5s each).
FUZZTIME ?= 1m

.PHONY: fuzz
fuzz: ## Run every go test -fuzz target for FUZZTIME (default 1m) each.
	FUZZTIME=$(FUZZTIME) deploy/fuzz.sh

.PHONY: bench
bench: ## Throughput and latency next to their ceilings, measured in the same run (own broker on 29392, services on 29400+, data in .data/bench); rewrites BENCH.md's results. make bench BENCH_ARGS="-size full" for 1,000,000 profiles.
	deploy/bench.sh $(BENCH_ARGS)

.PHONY: lint
lint: $(STATICCHECK) ## gofmt, go vet and staticcheck on every module.
	@bad=$$(gofmt -l $(MODULES)); if [ -n "$$bad" ]; then echo "gofmt would change:"; echo "$$bad"; exit 1; fi
	@for m in $(MODULES); do echo "vet + staticcheck: $$m"; (cd $$m && go vet ./... && ../$(STATICCHECK) ./...) || exit 1; done

$(STATICCHECK):
	GOBIN=$(CURDIR)/.cache/bin go install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

# helm from its Go module, like staticcheck (about 90 s to build).
$(HELM):
	GOBIN=$(CURDIR)/.cache/bin go install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

# The collector is a module of its own, outside go.work (about 90 s to
# build with an empty build cache, and the download of its modules the
# first time).
$(OTELCOL): deploy/otelcol/go.mod deploy/otelcol/go.sum deploy/otelcol/main.go
	cd deploy/otelcol && GOWORK=off go build -o $(CURDIR)/$(OTELCOL) .

.PHONY: tidy
tidy: ## go mod tidy in every module.
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done
