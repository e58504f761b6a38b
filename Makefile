# egress-guard: `make policies` and `make test` are the two commands a user needs.
# Both install missing Debian/npm dependencies first (scripts/install-deps).

BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
JOBS       ?= 2
CMAKE_FLAGS ?=
SHARED     ?= ../shared
PYTHON     := /usr/bin/python3

CONFIGS := $(wildcard config/*.yaml) $(wildcard config/examples/*.yaml)
GEN     := $(BUILD)/gen/egress-gen

.PHONY: all deps build build-asan build-fuzz policies check-policies test unit-test asan-test \
        integration-test fuzz-test validate-policies bench clean

all: build

deps:
	@scripts/install-deps

build: deps
	@cmake -S . -B $(BUILD) -G Ninja -DEGRESS_WERROR=ON $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DEGRESS_WERROR=ON -DEGRESS_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS) --target egress_unit_common egress_unit_gen egress_unit_proxy

build-fuzz: deps
	@CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DEGRESS_FUZZ=ON -DEGRESS_TESTS=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_targets

# policies/<name>/ for every config/<name>.yaml, policies/examples/<name>/ for the examples.
policies: build
	@set -e; for c in $(CONFIGS); do \
	  rel=$${c#config/}; out=policies/$${rel%.yaml}; \
	  $(GEN) render --config $$c --out $$out --quiet; echo "rendered $$c -> $$out/"; \
	done
	@$(GEN) chart --config config/wikifunctions.yaml --chart charts/wikifunctions
	@echo "rendered config/wikifunctions.yaml -> charts/wikifunctions/{templates,files}/"
	@cp policies/examples/gateway/proxy.yaml charts/egress-proxy/files/proxy.yaml
	@echo "copied policies/examples/gateway/proxy.yaml -> charts/egress-proxy/files/proxy.yaml"

check-policies: build
	@set -e; for c in $(CONFIGS); do \
	  rel=$${c#config/}; out=policies/$${rel%.yaml}; \
	  $(GEN) render --check --config $$c --out $$out; \
	done
	@$(GEN) chart --check --config config/wikifunctions.yaml --chart charts/wikifunctions
	@cmp -s policies/examples/gateway/proxy.yaml charts/egress-proxy/files/proxy.yaml || \
	  { echo "charts/egress-proxy/files/proxy.yaml: out of date; run \`make policies\`"; exit 1; }
	@echo "policies/ and charts/wikifunctions are up to date"

validate-policies:
	@if [ -f $(SHARED)/tools/validate_manifests.py ]; then \
	  $(PYTHON) $(SHARED)/tools/validate_manifests.py --strict policies/*/networkpolicies.yaml policies/*/calico.yaml \
	    policies/examples/*/networkpolicies.yaml policies/examples/*/calico.yaml && echo "validate_manifests: ok"; \
	else echo "validate_manifests: SKIPPED ($(SHARED)/tools/validate_manifests.py not found)"; fi

unit-test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L unit

asan-test: build-asan
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) -L unit

integration-test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L integration

fuzz-test: build-fuzz
	@scripts/run-fuzzers $(FUZZ_BUILD)

test: build check-policies validate-policies
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)
	@$(MAKE) --no-print-directory asan-test
	@$(MAKE) --no-print-directory fuzz-test

bench: build
	@$(BUILD)/bench/bench-gen

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
