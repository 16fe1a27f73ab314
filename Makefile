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
	cd command-svc && go build -o ../$(BIN)/command-svc ./cmd/command-svc
	cd query-svc   && go build -o ../$(BIN)/query-svc ./cmd/query-svc
	cd projections && go build -o ../$(BIN)/projector ./cmd/projector
	cd projections && go build -o ../$(BIN)/replay ./cmd/replay
	cd projections && go build -o ../$(BIN)/replicator ./cmd/replicator
	cd deploy      && go build -o ../$(BIN)/frontdoor ./cmd/frontdoor

.PHONY: up
up: ## Start the local Kafka broker (KRaft, one node, 127.0.0.1:9092); data in .data/.
	deploy/kafka.sh start --data $(KAFKA_DATA) --port $(KAFKA_PORT) --controller-port $(KAFKA_CONTROLLER_PORT)

# How many instances of each service `make run` starts (make run INSTANCES=3).
INSTANCES   ?= 2

.PHONY: run
run: up build ## Start Kafka and INSTANCES (default 2; make run INSTANCES=3) instances of each service; the API is on http://localhost:8080. Ctrl-C stops the services.
	INSTANCES="$(INSTANCES)" deploy/run.sh

# Arguments of `make replay`, e.g. make replay ARGS="snapshots -switch".
ARGS        ?= status

.PHONY: replay
replay: build ## Rebuild from the event log against the local broker: make replay ARGS="status|snapshots [-switch]|verify|switch|drop -generation N|views -query URLS".
	bin/replay $(ARGS)

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
	KAFKA_BROKERS="$(CLUSTER_BROKERS)" INSTANCES="$(INSTANCES)" deploy/run.sh

.PHONY: down-cluster
down-cluster: ## Stop the three-node cluster (its data stays in .data/).
	deploy/kafka.sh stop-cluster --data $(CLUSTER_DATA)

.PHONY: clean
clean: down down-cluster ## Stop Kafka and delete all local data, views and binaries.
	rm -rf .data $(BIN)

.PHONY: test
test: $(HELM) ## Run every test: unit, integration, end-to-end, the fault suite and brief fuzzing, on real Kafka of their own.
	PROFILES_HELM=$(CURDIR)/$(HELM) deploy/test.sh

.PHONY: test-faults
test-faults: ## Only the fault suite (three-node cluster, killed brokers and services); rewrites docs/reliability.md.
	TEST_MODULES=deploy TEST_FUZZ=0 GOTESTFLAGS="-run ^TestFault -v" deploy/test.sh

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

.PHONY: tidy
tidy: ## go mod tidy in every module.
	@for m in $(MODULES); do (cd $$m && go mod tidy) || exit 1; done
