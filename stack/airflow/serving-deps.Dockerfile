# The Python environment of a serving host's worker (publish, deploy, canary, label moves): the
# control set (deps.Dockerfile, PROFILE=control) plus TF Serving's gRPC API. That API's modules
# import TensorFlow's protos, not its runtime, so this image gets only TensorFlow's *_pb2.py files
# (under a `tensorflow` package that is otherwise empty) and stays about 2.4 GB smaller than the
# default worker's. One RUN: on vfs every layer is a full copy.
ARG DEPS=tfship/stack-deps-control:current
FROM ${DEPS}
COPY requirements.txt constraints.txt /tmp/requirements/
RUN set -eu; cd /tmp/requirements; \
    site=$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    pip install -q --no-cache-dir --disable-pip-version-check --no-deps -c constraints.txt \
      "$(grep '^tensorflow-serving-api==' requirements.txt)"; \
    pip download -q --no-cache-dir --disable-pip-version-check --no-deps -d wheel \
      "$(grep '^tensorflow-cpu==' requirements.txt)"; \
    python -c 'import sys, zipfile; z = zipfile.ZipFile(sys.argv[1]); [z.extract(n, sys.argv[2]) for n in z.namelist() if n.startswith("tensorflow/") and n.endswith("_pb2.py")]' wheel/*.whl "$site"; \
    find "$site/tensorflow" -type d -exec touch {}/__init__.py \; ; \
    echo '"""TensorFlow proto modules only: this image runs no TensorFlow (stack/airflow/serving-deps.Dockerfile)."""' \
      > "$site/tensorflow/__init__.py"; \
    python -c 'from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc, predict_pb2, get_model_status_pb2, get_model_metadata_pb2, model_management_pb2; from tensorflow_serving.config import model_server_config_pb2; import grpc'; \
    cd /; rm -rf /tmp/requirements /root/.cache
