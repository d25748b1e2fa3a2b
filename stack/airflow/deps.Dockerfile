# The Python environment of the stack's Airflow containers, built once per requirement set
# (the code goes on top in stack/airflow/Dockerfile, so a code change does not reinstall this).
#   PROFILE=control  api-server, scheduler, dag-processor, triggerer and the serving hosts' workers:
#                    Airflow, the providers, the release path; no TensorFlow, Spark or Java.
#   PROFILE=worker   the default queue's worker: everything in requirements.txt, and a JDK for
#                    spark-submit and the project's Hadoop jar.
# One RUN: on a copy-on-write-less storage driver (vfs) every layer is a full copy.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ARG PROFILE=control
COPY requirements.txt constraints.txt overrides.txt stack/airflow/requirements-stack.txt /tmp/requirements/
# pip and uv verify against the system's CA bundle (which holds any CA the base was given).
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt
RUN set -eu; cd /tmp/requirements; \
    packages="python3 python3-venv ca-certificates curl procps"; \
    if [ "$PROFILE" = worker ]; then packages="$packages openjdk-17-jdk-headless"; fi; \
    apt-get update -qq; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $packages >/dev/null; \
    rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man; \
    if [ "$PROFILE" = worker ]; then cp requirements.txt wanted.txt; \
    else grep -v -e '^tensorflow' -e '^pyspark' -e '^scikit-learn' requirements.txt > wanted.txt; fi; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install -q --no-cache-dir --disable-pip-version-check uv==0.13.9; \
    /opt/venv/bin/uv pip install -q --no-cache --python /opt/venv/bin/python \
      -r wanted.txt -r requirements-stack.txt -c constraints.txt --overrides overrides.txt; \
    /opt/venv/bin/pip uninstall -q -y uv; \
    rm -rf /tmp/requirements /root/.cache
ENV PATH=/opt/venv/bin:$PATH
