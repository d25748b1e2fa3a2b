# The Airflow image for docker-compose.yaml: Airflow 3.3.2 + Java (spark-submit) + this project's packages.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
ENV JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
USER airflow
COPY requirements.txt constraints.txt /tmp/
# tensorflow-serving-api goes in without its `tensorflow` requirement (tensorflow-cpu provides it;
# pip has no overrides.txt).
RUN grep -v -e '^apache-airflow==' -e '^tensorflow-serving-api==' /tmp/requirements.txt > /tmp/requirements-image.txt \
 && pip install --no-cache-dir -r /tmp/requirements-image.txt -c /tmp/constraints.txt \
 && pip install --no-cache-dir --no-deps "$(grep '^tensorflow-serving-api==' /tmp/requirements.txt)"
