"""Daily retraining: the day's raw partition -> features -> model -> verified TF Serving release."""

from __future__ import annotations

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, task

from tfship.config import PROJECT_ROOT, SPARK_CONN_ID, Settings
from tfship_airflow.alerts import alert_on_failure
from tfship_airflow.params import with_site_defaults
from tfship_airflow.publish import PublishModelOperator
from tfship_airflow.release_view import ReleaseReportOperator
from tfship_airflow.sensors import PartitionReadySensor
from tfship_airflow.serving import CanaryServingOperator, DeployServingOperator

SETTINGS = Settings.from_env()
DAY = "{{ ti.xcom_pull(task_ids='resolve_day') }}"
SERVING_TARGETS = [{"host": host, "target_dir": path} for host, path in SETTINGS.serving_dirs.items()]
# The same host order as SERVING_TARGETS: map index i of deploy/canary follows publish_model's copy i.
SERVING_HOSTS = [{"host": host, "serving_dir": path} for host, path in SETTINGS.serving_dirs.items()]
PUBLISHED_VERSION = "{{ ti.xcom_pull(task_ids='publish_model', map_indexes=ti.map_index) }}"

# Named by its URI: one asset per storage root, so a test root never collides with production's.
FEATURES = Asset(uri=f"{SETTINGS.storage_root}/features/{SETTINGS.dataset}", extra={"partitioned_by": "dt"})

DOC = """
### tfship_daily
One run per day D (the data interval [D, D+1) in UTC, fired after D ends). A manual run
names its day with the `day` Param. Every task writes to places derived from D and content
digests only, so clearing any task and rerunning it is safe. See the README's runbook.
"""

with DAG(
    dag_id="tfship_daily",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=pendulum.datetime(*SETTINGS.schedule_start.timetuple()[:3], tz="UTC"),
    catchup=SETTINGS.catchup,
    max_active_runs=1,
    default_args={
        "retries": 2,
        "retry_delay": pendulum.duration(minutes=1),
        "retry_exponential_backoff": 2.0,
        "on_failure_callback": alert_on_failure,
    },
    params=with_site_defaults(
        {
            "day": Param(
                None,
                type=["null", "string"],
                format="date",
                title="Day D",
                description="The partition day (YYYY-MM-DD) for a manual run; scheduled runs use their data interval.",
            ),
            "raw_root": Param(
                "raw",
                type="string",
                minLength=1,
                # Relative, no '..' segment: the form refuses a path that leaves the storage root.
                pattern=r"^(?!/)(?!(.*/)?\.\.(/|$))[A-Za-z0-9_./=-]+$",
                title="Raw root",
                description="Directory under the storage root holding <dataset>/dt=D (a corrected replay, say).",
            ),
            "eval_share": Param(0.1, type="number", exclusiveMinimum=0, exclusiveMaximum=0.5, title="Eval share"),
            "train_shards": Param(4, type="integer", minimum=1, maximum=1024, title="Train TFRecord shards"),
            "max_quarantine_share": Param(
                0.05,
                type="number",
                minimum=0,
                maximum=1,
                title="Max quarantine share",
                description="validate_features fails when more than this share of the day's rows was quarantined.",
            ),
            "cv_folds": Param(3, type="integer", minimum=2, maximum=10, title="Cross-validation folds"),
            "cv_subsample": Param(0.3, type="number", exclusiveMinimum=0, maximum=1, title="CV subsample share"),
            "cv_epochs": Param(2, type="integer", minimum=1, maximum=50, title="Epochs per CV fold"),
            "cv_grid": Param(
                None,
                type=["null", "array"],
                items={
                    "type": "object",
                    "properties": {
                        "learning_rate": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                        "filters": {"type": "integer", "minimum": 1, "maximum": 256},
                        "dropout": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                    },
                    "additionalProperties": False,
                },
                title="CV grid",
                description="Configurations to compare; empty means the built-in grid.",
            ),
            "epochs": Param(8, type="integer", minimum=1, maximum=200, title="Training epochs"),
            "global_batch": Param(128, type="integer", minimum=1, maximum=65536, title="Global batch"),
            "replicas": Param(2, type="integer", minimum=1, maximum=64, title="CPU replicas when no GPU"),
            "accuracy_floor": Param(0.9, type="number", minimum=0, maximum=1, title="Accuracy floor"),
            "accuracy_tolerance": Param(0.005, type="number", minimum=0, maximum=1, title="Tolerance vs served"),
            "force_publish": Param(False, type="boolean", title="Publish even if the gate says no"),
            "keep_versions": Param(3, type="integer", minimum=1, maximum=50, title="Versions kept per host"),
            "publish_rate_bps": Param(0, type="integer", minimum=0, title="Publication rate limit (bytes/s, 0 = none)"),
            "serving_timeout_s": Param(600, type="integer", minimum=10, maximum=7200, title="Wait for AVAILABLE (s)"),
            "canary_latency_budget_ms": Param(1000, type="number", exclusiveMinimum=0, title="Canary p99 budget (ms)"),
            "canary_concurrency": Param(4, type="integer", minimum=1, maximum=64, title="Canary concurrent clients"),
        }
    ),
    doc_md=DOC,
    tags=["tfship", "training", "serving"],
) as dag:

    @task(retries=0)
    def resolve_day(**context) -> str:
        """Fix D for the whole run; refuse at once a run that cannot say its day or names a day without data."""
        from tfship_airflow.runtime import check_run_inputs

        return check_run_inputs(context).isoformat()

    day = resolve_day()

    wait_for_raw = PartitionReadySensor(
        task_id="wait_for_raw",
        day=DAY,
        raw_root="{{ params.raw_root }}",
        mode="reschedule",
        poke_interval=SETTINGS.raw_poke_interval_s,
        timeout=SETTINGS.raw_wait_timeout_s,
        retries=0,
    )

    @task
    def package_library() -> str:
        """The library as a content-addressed zip on the storage root, for the Spark executors."""
        from tfship.packaging import publish_library_zip
        from tfship.storage import storage_from_settings

        return publish_library_zip(storage_from_settings(Settings.from_env()))

    library_zip = package_library()

    preprocess = SparkSubmitOperator(
        task_id="preprocess",
        conn_id=SPARK_CONN_ID,
        application=str(PROJECT_ROOT / "include" / "jobs" / "preprocess.py"),
        py_files="{{ ti.xcom_pull(task_ids='package_library') }}",
        name="tfship-preprocess-{{ ti.xcom_pull(task_ids='resolve_day') }}",
        application_args=[
            "--day",
            DAY,
            "--storage-root",
            SETTINGS.storage_root,
            "--webhdfs-endpoints",
            ";".join(SETTINGS.webhdfs_endpoints),
            "--hdfs-user",
            SETTINGS.hdfs_user,
            "--dataset",
            SETTINGS.dataset,
            "--raw-root",
            "{{ params.raw_root }}",
            "--eval-share",
            "{{ params.eval_share }}",
            "--train-shards",
            "{{ params.train_shards }}",
        ],
        conf={"spark.ui.showConsoleProgress": "false"},
    )

    @task(outlets=[FEATURES])
    def validate_features(day: str, params=None, outlet_events=None) -> dict:
        """Refuse a day with no valid rows or too much quarantine; return its stats."""
        from tfship_airflow.features import validate_day_features

        stats, summary = validate_day_features(day, max_quarantine_share=float(params["max_quarantine_share"]))
        outlet_events[FEATURES].extra = {"day": day, **summary}
        return stats

    @task
    def cv_grid(params=None) -> list[dict]:
        """The configurations to compare (the Param, else the built-in grid)."""
        from tfship.cv import grid_from_param

        return [hparams.to_dict() for hparams in grid_from_param(params["cv_grid"])]

    @task(retries=1)
    def cross_validate(hparams: dict, day: str, params=None, **context) -> dict:
        """k-fold accuracy of one configuration on the subsample (one mapped task each)."""
        from tfship_airflow.training import cross_validate_config

        return cross_validate_config(hparams, day, params, context)

    @task
    def choose_config(results: list[dict], **context) -> dict:
        """The best configuration, with cv_results.json/png written for the candidate."""
        from tfship_airflow.training import choose_config as choose

        return choose(list(results), context)

    @task
    def train(choice: dict, day: str, params=None, **context) -> dict:
        """tf.distribute training, export and upload of the candidate (resumes after a retry)."""
        from tfship_airflow.training import run_training

        return run_training(choice, day, params, context)

    # A 'no' skips only what follows directly (publication, then deploy and canary by their rules).
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def evaluate(candidate: dict, day: str, params=None, **context) -> bool:
        """The evaluation gate; a 'no' skips publication, deployment and the canary."""
        from tfship_airflow.training import evaluation_gate

        decision = evaluation_gate(candidate, day, params, context)
        context["ti"].xcom_push(key="decision", value=decision)
        return decision["publish"]

    publish_model = PublishModelOperator.partial(
        task_id="publish_model",
        candidate="{{ ti.xcom_pull(task_ids='train')['candidate'] }}",
        day=DAY,
        keep="{{ params.keep_versions }}",
        rate_limit_bps="{{ params.publish_rate_bps }}",
        map_index_template="{{ task.host }}",
    ).expand_kwargs(SERVING_TARGETS)

    deploy_serving = DeployServingOperator.partial(
        task_id="deploy_serving",
        model=SETTINGS.model,
        version=PUBLISHED_VERSION,
        available_timeout_s="{{ params.serving_timeout_s }}",
        map_index_template="{{ task.host }}",
        retries=0,
    ).expand_kwargs(SERVING_HOSTS)

    canary_serving = CanaryServingOperator.partial(
        task_id="canary_serving",
        model=SETTINGS.model,
        version=PUBLISHED_VERSION,
        accuracy_floor="{{ params.accuracy_floor }}",
        concurrency="{{ params.canary_concurrency }}",
        latency_budget_ms="{{ params.canary_latency_budget_ms }}",
        map_index_template="{{ task.host }}",
        retries=0,
    ).expand_kwargs(SERVING_HOSTS)

    features = validate_features(day)
    day >> wait_for_raw >> preprocess >> features
    library_zip >> preprocess
    results = cross_validate.partial(day=day).expand(hparams=cv_grid())
    features >> results
    candidate = train(choose_config(results), day)
    # A teardown of resolve_day: it runs whatever happened in between and, unlike a plain all_done
    # leaf, does not turn a failed canary into a successful run; clearing any task in between
    # clears it too, so the record follows a rerun.
    report_release = ReleaseReportOperator(
        task_id="report_release",
        day=DAY,
        model=SETTINGS.model,
        hosts=list(SETTINGS.serving_dirs),
        retries=1,
    ).as_teardown(setups=day.operator)
    evaluate(candidate, day) >> publish_model >> deploy_serving >> canary_serving >> report_release
