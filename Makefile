# make run        - serve the app with gunicorn on 127.0.0.1:$(PORT), and a Celery worker for jobs beside it
# make worker     - a Celery worker for jobs only (more machines: set CELERY_BROKER_URL, DATABASE_URL, JOB_FOLDER)
# make test       - run the test suite (browser tests too when Chromium is installed)
# make train      - retrain both digit models as shipped (TRAIN_ARGS="--data DIR" offline)
# make benchmark  - measure the production server over HTTP (benchmarks/results/latest.md)
# make export     - write TensorFlow SavedModels to models/export/ for TF Serving
# Both create .venv and install the pinned requirements the first time, and
# again only when a requirements file changes (the stamp files below).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 5000
export PORT

.PHONY: run worker test train benchmark export clean

$(VENV)/.stamp-app: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.stamp-test: $(VENV)/.stamp-app requirements-test.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements-test.txt
	touch $@

run: $(VENV)/.stamp-app
	$(BIN)/gunicorn --config gunicorn.conf.py "app:create_app()"

worker: $(VENV)/.stamp-app
	$(BIN)/celery -A make_celery worker --loglevel INFO $(WORKER_ARGS)

test: $(VENV)/.stamp-test
	$(BIN)/python -m pytest

train: $(VENV)/.stamp-app
	$(BIN)/python train_mnist.py --arch dense --augment $(TRAIN_ARGS)
	$(BIN)/python train_mnist.py --arch cnn $(TRAIN_ARGS)

benchmark: $(VENV)/.stamp-app
	$(BIN)/python benchmarks/benchmark.py $(BENCHMARK_ARGS)

export: $(VENV)/.stamp-app
	$(BIN)/python scripts/export_models.py $(EXPORT_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
