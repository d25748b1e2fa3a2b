"""Daily retraining: the day's raw partition -> features -> model -> verified TF Serving release."""

from __future__ import annotations

import pendulum
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, Param, task

from tfship.config import PROJECT_ROOT, SPARK_CONN_ID, Settings
from tfship.jvm import build_hadoop_jar, hadoop_jar_path
from tfship_airflow.alerts import alert_on_failure
from tfship_airflow.infra_validate import InfraValidateOperator
from tfship_airflow.params import with_site_defaults
from tfship_airflow.publish import SUPERSEDED_KEY, PublishModelOperator
from tfship_airflow.report import ReleaseReportOperator
from tfship_airflow.rollout import HOST_RELEASE_KEY, ReleaseHostOperator
from tfship_airflow.sensors import PartitionReadySensor
from tfship_airflow.serving import serving_kwargs

SETTINGS = Settings.from_env()
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
    # Params reach operators as numbers, not strings (each operator's numeric fields are typed).
    render_template_as_native_obj=True,
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
            "drift_window_days": Param(
                7,
                type="integer",
                minimum=1,
                maximum=90,
                title="Drift window (days)",
                description="check_drift compares D with the days of this window before it that have features.",
            ),
            "drift_max_js": Param(
                0.1,
                type="number",
                minimum=0,
                maximum=1,
                title="Drift limit: Jensen–Shannon divergence",
                description="A numeric feature whose histogram diverges more than this from the window's has moved.",
            ),
            "drift_max_label_linf": Param(
                0.05,
                type="number",
                minimum=0,
                maximum=1,
                title="Drift limit: label share (L-infinity)",
                description="The label distribution moved when one class's share changed by more than this.",
            ),
            "drift_action": Param(
                "hold",
                type="string",
                enum=["hold", "fail"],
                title="On drift",
                description="hold: train and evaluate but publish nothing, and alert; fail: stop the run, and alert.",
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
            "train_workers": Param(
                1,
                type="integer",
                minimum=1,
                maximum=256,
                title="Training hosts",
                description="1 trains on the Airflow worker; N > 1 trains on N Spark executors as one barrier stage",
            ),
            "accuracy_floor": Param(0.9, type="number", minimum=0, maximum=1, title="Accuracy floor"),
            "accuracy_tolerance": Param(0.005, type="number", minimum=0, maximum=1, title="Tolerance vs served"),
            "force_publish": Param(False, type="boolean", title="Publish even if the gate says no"),
            "keep_versions": Param(3, type="integer", minimum=1, maximum=50, title="Versions kept per host"),
            "publish_rate_bps": Param(0, type="integer", minimum=0, title="Publication rate limit (bytes/s, 0 = none)"),
            "publish_streams": Param(4, type="integer", minimum=1, maximum=16, title="Files read at once"),
            "publish_space_margin_mb": Param(
                64,
                type="integer",
                minimum=0,
                title="Free space to keep on a serving host (MB)",
                description="A host with less room than the model plus this margin is refused before any byte moves.",
            ),
            "infra_timeout_s": Param(
                300, type="integer", minimum=10, maximum=3600, title="Infra validation: wait for AVAILABLE (s)"
            ),
            "serving_timeout_s": Param(600, type="integer", minimum=10, maximum=7200, title="Wait for AVAILABLE (s)"),
            "canary_latency_budget_ms": Param(1000, type="number", exclusiveMinimum=0, title="Canary p99 budget (ms)"),
            "canary_concurrency": Param(4, type="integer", minimum=1, maximum=64, title="Canary concurrent clients"),
            "canary_protocol": Param("rest", type="string", enum=["rest", "grpc"], title="Canary protocol"),
        },
        SETTINGS.param_defaults,
    ),
    doc_md=DOC,
    tags=["tfship", "training", "serving"],
) as dag:

    @task(retries=0, multiple_outputs=True)
    def resolve_day(**context) -> dict[str, str]:
        """Fix D and the raw root for the run; refuse at once a run without a day, or a manual day without data."""
        from tfship_airflow.runtime import check_run_inputs

        return check_run_inputs(SETTINGS, context).to_dict()

    run_inputs = resolve_day()
    day = run_inputs["day"]

    wait_for_raw = PartitionReadySensor(
        task_id="wait_for_raw",
        day=day,
        dataset=SETTINGS.dataset,
        storage=SETTINGS.storage,
        raw_root=run_inputs["raw_root"],
        mode="reschedule",
        poke_interval=SETTINGS.raw_poke_interval_s,
        timeout=SETTINGS.raw_wait_timeout_s,
        retries=0,
    )

    @task(multiple_outputs=False)
    def package_library() -> str:
        """The library as a content-addressed zip on the storage root, for the Spark executors."""
        from tfship.packaging import publish_library_zip

        return publish_library_zip(SETTINGS.storage.open())

    library_zip = package_library()

    # Arguments as --name=value: a whole-string template stays a string under native rendering.
    preprocess = SparkSubmitOperator(
        task_id="preprocess",
        conn_id=SPARK_CONN_ID,
        application=str(PROJECT_ROOT / "include" / "jobs" / "preprocess.py"),
        py_files=library_zip,
        # The executors write through Hadoop's client with the project's OutputFormat; the jar is
        # built on the worker that submits, if that worker has not built it yet.
        jars=str(hadoop_jar_path()),
        pre_execute=lambda context: build_hadoop_jar(),
        name="tfship-preprocess-{{ run_id }}",
        application_args=[
            "--day",
            day,
            "--raw-root",
            run_inputs["raw_root"],
            f"--storage-root={SETTINGS.storage_root}",
            f"--webhdfs-endpoints={';'.join(SETTINGS.webhdfs_endpoints)}",
            f"--hdfs-user={SETTINGS.hdfs_user}",
            f"--dataset={SETTINGS.dataset}",
            "--eval-share={{ params.eval_share }}",
            "--train-shards={{ params.train_shards }}",
        ],
        conf={"spark.ui.showConsoleProgress": "false"},
    )

    @task(outlets=[FEATURES], multiple_outputs=False)
    def validate_features(day: str, params=None, outlet_events=None) -> dict:
        """Refuse a day with no valid rows or too much quarantine; return its stats."""
        from tfship_airflow.features import validate_day_features

        stats, summary = validate_day_features(SETTINGS, day, max_quarantine_share=params["max_quarantine_share"])
        outlet_events[FEATURES].extra = {"day": day, **summary}
        return stats

    @task(multiple_outputs=False)
    def check_drift(day: str, params=None, **context) -> dict:
        """D's feature and label distributions against the trailing window; on drift alert, then hold or fail."""
        from tfship_airflow.drift import check_day_drift

        return check_day_drift(SETTINGS, day, params, context)

    @task
    def cv_grid(params=None) -> list[dict]:
        """The configurations to compare (the Param, else the built-in grid)."""
        from tfship.training.cv import grid_from_param

        return [hparams.to_dict() for hparams in grid_from_param(params["cv_grid"])]

    @task(retries=1, multiple_outputs=False)
    def cross_validate(hparams: dict, day: str, params=None, **context) -> dict:
        """k-fold accuracy of one configuration on the subsample (one mapped task each)."""
        from tfship_airflow.training import cross_validate_config

        return cross_validate_config(SETTINGS, hparams, day, params, context)

    @task(multiple_outputs=False)
    def choose_config(results: list[dict], **context) -> dict:
        """The best configuration, with cv_results.json/png written for the candidate."""
        from tfship_airflow.training import choose_config as choose

        return choose(SETTINGS, list(results), context)

    # Each key is handed on too: publication needs only the candidate's path.
    @task(multiple_outputs=True)
    def train(choice: dict, day: str, params=None, **context) -> dict:
        """tf.distribute training, export and upload of the candidate (resumes after a retry)."""
        from tfship_airflow.training import run_training

        return run_training(SETTINGS, choice, day, params, context)

    # A 'no' skips only what follows directly (infra validation, then publication and release by their rules).
    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def evaluate(candidate: dict, day: str, drift: dict | None = None, params=None, **context) -> bool:
        """The evaluation gate (a drift hold included); a 'no' skips infra validation, publication and what follows."""
        from tfship_airflow.training import evaluation_gate

        decision = evaluation_gate(SETTINGS, candidate, day, params, context, drift)
        context["ti"].xcom_push(key="decision", value=decision)
        return decision["publish"]

    features = validate_features(day)
    drift = check_drift(day)
    wait_for_raw >> preprocess >> features >> drift
    results = cross_validate.partial(day=day).expand(hparams=cv_grid())
    drift >> results
    trained = train(choose_config(results), day)
    gate = evaluate(trained, day, drift)

    # The candidate in a throwaway TF Serving (own container, own ports) before any host sees it.
    infra_validate = InfraValidateOperator(
        task_id="infra_validate",
        candidate=trained["candidate"],
        day=day,
        model=SETTINGS.model,
        storage=SETTINGS.storage,
        work_dir=SETTINGS.local_work_dir,
        available_timeout_s="{{ params.infra_timeout_s }}",
        retries=1,
    )

    # One copy per serving host; host h's deploy and canary take what host h's copy upstream handed on.
    publish_model = PublishModelOperator.partial(
        task_id="publish_model",
        candidate=trained["candidate"],
        day=day,
        storage=SETTINGS.storage,
        keep="{{ params.keep_versions }}",
        rate_limit_bps="{{ params.publish_rate_bps }}",
        streams="{{ params.publish_streams }}",
        space_margin_bytes="{{ params.publish_space_margin_mb * 1024 * 1024 }}",
        map_index_template="{{ task.host }}",
    ).expand_kwargs([host.to_kwargs() for host in SETTINGS.serving_hosts])

    # Host by host (TFSHIP_ROLLOUT_BATCH at a time), each drained, loaded beside its stable version,
    # checked through the canary label, promoted or reverted; a failure stops the hosts after it.
    release_host = ReleaseHostOperator.partial(
        task_id="release_host",
        model=SETTINGS.model,
        hosts=SETTINGS.serving_hosts,
        balancer_dir=SETTINGS.balancer_dir,
        balancer_reload=SETTINGS.balancer_reload,
        batch_size=SETTINGS.rollout_batch,
        max_active_tis_per_dagrun=SETTINGS.rollout_batch,
        available_timeout_s="{{ params.serving_timeout_s }}",
        canary_protocol="{{ params.canary_protocol }}",
        accuracy_floor="{{ params.accuracy_floor }}",
        concurrency="{{ params.canary_concurrency }}",
        latency_budget_ms="{{ params.canary_latency_budget_ms }}",
        map_index_template="{{ task.host }}",
        retries=0,
    ).expand_kwargs(publish_model.output.map(serving_kwargs))

    gate >> infra_validate >> publish_model
    # A teardown of resolve_day: it runs whatever happened in between and, unlike a plain all_done
    # leaf, does not turn a failed canary into a successful run; clearing any task in between
    # clears it too, so the record follows a rerun.
    ReleaseReportOperator(
        task_id="report_release",
        day=day,
        model=SETTINGS.model,
        hosts=SETTINGS.serving_hosts,
        storage=SETTINGS.storage,
        candidate=trained,
        decision=gate["decision"],
        publications=publish_model.output,
        host_releases=[release_host.output, release_host.output[HOST_RELEASE_KEY]],
        holds=[publish_model.output[SUPERSEDED_KEY]],
        drift=drift,
        infra=infra_validate.output,
        retries=1,
    ).as_teardown(setups=run_inputs.operator)
