# shellcheck shell=bash
# Source me: the project's environment for the venv, Airflow, Spark and the library.
PROJECT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PROJECT_ROOT
export VENV="$PROJECT_ROOT/.venv"
export PATH="$VENV/bin:$PATH"
export AIRFLOW_HOME="$PROJECT_ROOT/var/airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$PROJECT_ROOT/dags"
export AIRFLOW__CORE__PLUGINS_FOLDER="$PROJECT_ROOT/plugins"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"
export HADOOP_JARS_DIR="$PROJECT_ROOT/var/hadoop-jars"
# Spark 4 needs Java 17 or newer; prefer the machine's 17.
if [ -z "${JAVA_HOME:-}" ]; then
  for candidate in /usr/lib/jvm/java-17-openjdk-amd64 /usr/lib/jvm/java-17-openjdk-arm64; do
    [ -d "$candidate" ] && { export JAVA_HOME="$candidate"; break; }
  done
fi
export PYSPARK_PYTHON="$VENV/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
set -a
# shellcheck disable=SC1091
. "$PROJECT_ROOT/config/defaults.env"
# shellcheck disable=SC1091
[ -f "$PROJECT_ROOT/.env" ] && . "$PROJECT_ROOT/.env"
set +a
