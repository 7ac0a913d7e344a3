# The two contract commands: `make demo` and `make test`. Each sets up .venv on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch/torchvision pinned to the builds that lie on this machine's disk (pip takes them offline);
# on another machine pip fetches the same versions.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
# Where torch comes from. Unset (the default): PyPI, the one index some machines reach; on Linux that is the
# CUDA build, whose nvidia-* and triton packages made a 6.1 GB .venv here (3.2 GB nvidia, 0.9 GB triton).
# A machine without an NVIDIA GPU needs none of them: take PyTorch's CPU wheels instead,
#   make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: test test-all demo fashion-mnist bench lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ''

# The demo: Fashion-MNIST from Debian's package when it is missing (root and apt), else the one command that
# would install it; `alexnet demo` itself also looks in torchvision's roots and downloads where the network allows.
DEMO_ARGS ?=
demo: $(STAMP)
	@$(BIN)/python -c "import sys; from alexnet.data.datasets import find_fashion_mnist as f; sys.exit(f() is None)" \
		|| $(MAKE) --no-print-directory fashion-mnist
	$(BIN)/alexnet demo $(DEMO_ARGS)

fashion-mnist:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Debian's dataset-fashion-mnist"; \
		apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
		|| { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; } \
		|| echo "could not install dataset-fashion-mnist; alexnet demo will try to download Fashion-MNIST"; \
	else \
		echo "Fashion-MNIST is not installed; to use it offline: sudo apt-get install dataset-fashion-mnist"; \
	fi

bench: $(STAMP)
	$(BIN)/python -m benchmarks pipeline
	$(BIN)/python -m benchmarks loader
	$(BIN)/python -m benchmarks model
	$(BIN)/python -m benchmarks train --batch 256 --hog

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(STAMP)
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache
