# The two commands of the README. Both install and start whatever they need.
SHELL := /bin/bash
ENV := . scripts/env.sh &&

# Two pytest-xdist workers: much of the suite waits on containers, JVMs and Airflow's loops.
TEST_WORKERS ?= 2

.PHONY: run test setup lint hdfs-up hdfs-down cluster-up cluster-down docker-up bench clean images stack-up stack-down stack-status stack-test

setup:
	scripts/setup

run: setup
	$(ENV) scripts/docker-up >/dev/null
	$(ENV) scripts/serving-image
	$(ENV) python scripts/run_daily.py $(if $(DAY),--day $(DAY)) $(if $(ROWS),--rows $(ROWS))

# The compose stack's test (tests/stack) runs after the rest, alone: it starts 15 containers and
# takes about 29 GB of disk on the vfs storage driver and 14 minutes. STACK=0 leaves it out.
STACK ?= 1

test: setup
	$(ENV) scripts/docker-up
	$(ENV) scripts/serving-image
	$(ENV) ruff check .
	$(ENV) python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --ignore=tests/stack $(PYTEST_ARGS)
ifneq ($(STACK),0)
	$(ENV) python -m pytest -v tests/stack $(patsubst --junitxml=%.xml,--junitxml=%-stack.xml,$(PYTEST_ARGS))
endif

# The compose stack end to end on its own (also the last step of make test).
stack-test: setup docker-up
	$(ENV) python -m pytest -v tests/stack $(PYTEST_ARGS)

lint: setup
	$(ENV) ruff check .

hdfs-up: setup
	scripts/hdfs-up

hdfs-down:
	scripts/hdfs-down

# HDFS and YARN (ResourceManager + NodeManager) in one JVM on loopback; prints the exports for spark-submit.
cluster-up: setup
	$(ENV) python -m harness.cluster up

cluster-down:
	$(ENV) python -m harness.cluster down

docker-up: setup
	scripts/docker-up

# The full stack (docker-compose.yaml): every image built locally and cached by content hash.
images: setup docker-up
	$(ENV) python -m stack.images

stack-up: setup docker-up
	$(ENV) scripts/stack up

# Volumes stay unless asked: make stack-down VOLUMES=1
stack-down:
	scripts/stack down $(if $(VOLUMES),--volumes)

stack-status:
	scripts/stack status

bench: setup
	$(ENV) python bench/dag_parse.py
	$(ENV) python bench/preprocess.py
	$(ENV) python bench/train_input.py
	$(ENV) python bench/publish.py
	$(ENV) python bench/serving_protocols.py

clean:
	rm -rf var
