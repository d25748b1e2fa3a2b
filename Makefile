# The two commands of the README. Both install and start whatever they need.
SHELL := /bin/bash
ENV := . scripts/env.sh &&

# Two pytest-xdist workers: much of the suite waits on containers, JVMs and Airflow's loops.
TEST_WORKERS ?= 2

.PHONY: run test setup lint hdfs-up hdfs-down cluster-up cluster-down docker-up bench clean

setup:
	scripts/setup

run: setup
	$(ENV) scripts/docker-up >/dev/null
	$(ENV) scripts/serving-image
	$(ENV) python scripts/run_daily.py $(if $(DAY),--day $(DAY)) $(if $(ROWS),--rows $(ROWS))

test: setup
	$(ENV) scripts/docker-up
	$(ENV) scripts/serving-image
	$(ENV) ruff check .
	$(ENV) python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

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

bench: setup
	$(ENV) python bench/dag_parse.py
	$(ENV) python bench/preprocess.py
	$(ENV) python bench/train_input.py
	$(ENV) python bench/publish.py
	$(ENV) python bench/serving_protocols.py

clean:
	rm -rf var
