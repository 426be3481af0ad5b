# The two set-up commands of the README: `make serve` and `make test`. Both create (or reuse)
# the virtual environment themselves through scripts/venv.sh; nothing is installed by hand.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
VENV := $(shell scripts/venv.sh)
PACKAGES := operator runtime scheduler kvcache kernels

.PHONY: serve test unit lint typecheck e2e venv

venv:
	@scripts/venv.sh >/dev/null

# The built-in model on the CPU with its reasoning split out; ARGS adds or overrides flags
# (the last occurrence of a flag wins), e.g. make serve ARGS="--port 9000 --api-key sk-local".
serve:
	@venv=$(VENV); exec "$$venv/bin/llmservice" serve builtin:tiny-reasoner --device cpu \
		--reasoning-parser deepseek_r1 $(ARGS)

test: lint typecheck unit e2e

lint:
	@venv=$(VENV); "$$venv/bin/ruff" check . && "$$venv/bin/ruff" format --check .

# mypy names modules after their folders; the link tree under build/ gives it the import names
# (`llmservice.kvcache`, ...) that pyproject.toml's package-dir mapping gives Python.
typecheck:
	@venv=$(VENV); rm -rf build/typecheck; mkdir -p build/typecheck/llmservice; \
	ln -s "$(CURDIR)/llmservice/__init__.py" build/typecheck/llmservice/__init__.py; \
	for p in $(PACKAGES); do ln -s "$(CURDIR)/$$p" build/typecheck/llmservice/$$p; done; \
	cd build/typecheck && "$$venv/bin/mypy" --config-file "$(CURDIR)/pyproject.toml" -p llmservice

# pytest exits 5 when it collects nothing (e.g. every test deselected); that is not a failure here.
unit:
	@venv=$(VENV); "$$venv/bin/pytest" tests -q -p no:cacheprovider $(PYTEST_ARGS) || [ $$? -eq 5 ]

# End-to-end tests of the operator, chart and CRD on a real local control plane (e2e/README.md).
# The build step is separate so the first run's one-time build of the pinned Kubernetes binaries
# (cached in ~/.cache/llmservice/k8s/) does not count against the tests' timeouts.
e2e:
	@venv=$(VENV); "$$venv/bin/python" e2e/cluster build >/dev/null; \
	"$$venv/bin/pytest" e2e -q -p no:cacheprovider $(PYTEST_ARGS) || [ $$? -eq 5 ]
