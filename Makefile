# MLProxy: `make run` starts the proxy with an embedded simulated model server; `make test` runs
# everything CI runs. Both install the Debian packages they need when missing.
SWIFT ?= swift
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEB_PACKAGES := libjansson-dev libsimdjson-dev libffi-dev libjpeg62-turbo-dev libpng-dev pkg-config curl clang-format
BENCH_PACKAGES := nginx-light wrk

CFLAGS_PLUGIN := -shared -fPIC -O2 -Wall -Wextra -Werror -I include
SAMPLE_POLICY := samples/c-policy/libpairs_policy.so
SAMPLE_FFI_POLICY := samples/ffi-policy/libpick.so

.PHONY: all deps lint format bench-deps interop-deps build release run test fuzz plugins sample-policy sample-ffi-policy simulate results bench bench-mlserver bench-shared-fate bench-codecs live-vs-sim clean

all: build

# Installs what is missing, and only that.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

bench-deps: deps
	@missing=""; for p in $(BENCH_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# Real model servers and clients from PyPI for the interop tests, in virtual environments,
# (re)installed whenever their requirements change.
interop-deps: .venv-interop/.installed .venv-kserve/.installed .venv-seldon/.installed

.venv-interop/.installed: Tests/interop/requirements.txt
	@[ -x .venv-interop/bin/pip ] || python3 -m venv .venv-interop
	.venv-interop/bin/pip install -q -r Tests/interop/requirements.txt
	@touch $@

.venv-kserve/.installed: Tests/interop/requirements-kserve.txt
	@[ -x .venv-kserve/bin/pip ] || python3 -m venv .venv-kserve
	.venv-kserve/bin/pip install -q -r Tests/interop/requirements-kserve.txt
	@touch $@

.venv-seldon/.installed: Tests/interop/requirements-seldon.txt
	@[ -x .venv-seldon/bin/pip ] || python3 -m venv .venv-seldon
	.venv-seldon/bin/pip install -q -r Tests/interop/requirements-seldon.txt
	@touch $@

# One formatter per language, line length 120: swift-format (.swift-format, from the toolchain) and
# clang-format (.clang-format). The frozen ABI 1.0 header is left as it was frozen.
SWIFT_SOURCES := Sources Tests benchmarks samples/swift-plugin Package.swift
C_SOURCES = $(shell git ls-files '*.c' '*.cpp' '*.h' '*.hpp' | grep -v '^Tests/Fixtures/abi-1\.[01]/')

lint: deps
	$(SWIFT) format lint --strict -r --configuration .swift-format $(SWIFT_SOURCES)
	clang-format --dry-run --Werror $(C_SOURCES)

format: deps
	$(SWIFT) format format -i -r --configuration .swift-format $(SWIFT_SOURCES)
	clang-format -i $(C_SOURCES)

build: deps
	$(SWIFT) build

release: deps
	$(SWIFT) build -c release

run: build
	.build/debug/mlproxy serve --config samples/quickstart.yaml

# The bundled plugins built with plain cc, as the container image ships them: SwiftPM links every
# dynamic library it builds against the Swift runtime, which a plugin does not need.
PLUGIN_OUT := .build/c-plugins
PLUGIN_CFLAGS := $(CFLAGS_PLUGIN) -std=c11 -I Plugins/shared -Wl,--no-undefined
plugins: deps
	@mkdir -p $(PLUGIN_OUT)
	for src in Plugins/json/*.cpp; do \
	  c++ -c -fPIC -O2 -std=c++17 -Wall -Wextra -Werror -I include -I Plugins/shared -I Plugins/json/include \
	    -o $(PLUGIN_OUT)/json-$$(basename $$src .cpp).o $$src || exit 1; \
	done
	cc $(PLUGIN_CFLAGS) -I Plugins/json/include -o $(PLUGIN_OUT)/libmlp_json.so Plugins/json/*.c \
	  $(PLUGIN_OUT)/json-*.o -ljansson -lsimdjson -lstdc++ -lm
	cc $(PLUGIN_CFLAGS) -I Plugins/tensor/include -o $(PLUGIN_OUT)/libmlp_tensor.so Plugins/tensor/*.c
	cc $(PLUGIN_CFLAGS) -I Plugins/image/include -o $(PLUGIN_OUT)/libmlp_image.so Plugins/image/*.c \
	  -ljansson -ljpeg -lpng16 -lm
	cc $(PLUGIN_CFLAGS) -I Plugins/policies/include -o $(PLUGIN_OUT)/libmlp_policies.so Plugins/policies/*.c \
	  -ljansson -lm

# The C sample policy, built the way a user builds one: plain cc, our header, jansson.
sample-policy: deps
	cc $(CFLAGS_PLUGIN) -o $(SAMPLE_POLICY) samples/c-policy/pairs_policy.c -ljansson

# The foreign policy sample: a plain C function, no header of ours.
sample-ffi-policy: deps
	cc -shared -fPIC -O2 -Wall -Wextra -Werror -o $(SAMPLE_FFI_POLICY) samples/ffi-policy/pick.c

test: deps interop-deps sample-policy sample-ffi-policy plugins
	$(SWIFT) build --build-tests
	$(SWIFT) test
	Tests/Fuzz/run.sh $(FUZZ_TEST_SECONDS)

# Coverage-guided fuzzing (libFuzzer with ASan and UBSan) of every codec, backend reply decoder and
# image stage, through the C ABI: FUZZ_SECONDS per target (make test runs each for FUZZ_TEST_SECONDS).
FUZZ_SECONDS ?= 60
FUZZ_TEST_SECONDS ?= 5
fuzz: deps
	Tests/Fuzz/run.sh $(FUZZ_SECONDS)

bench: bench-deps release
	benchmarks/run.py

# MLServer direct, with its own batching, and behind the proxy: the highest rate within a 100 ms SLO.
bench-mlserver: interop-deps release
	cd benchmarks && ./mlserver_bench.py

# Good requests lost against MLServer with 0, 5, 10 and 30% bad requests mixed in.
bench-shared-fate: interop-deps release
	cd benchmarks && ./shared_fate.py

# Codec throughput per core next to memcpy.
bench-codecs: release
	.build/release/mlproxy-codecbench

# The simulator against the live proxy on the same traces.
live-vs-sim: release
	benchmarks/live_vs_sim.py

# The simulator's comparison tables and plots in docs/results.md (release build, a few minutes).
results: release
	@[ -x .venv-results/bin/python ] || (python3 -m venv .venv-results && .venv-results/bin/pip install -q matplotlib)
	.venv-results/bin/python benchmarks/simulate_results.py

clean:
	rm -rf .build $(SAMPLE_POLICY) $(SAMPLE_FFI_POLICY)
