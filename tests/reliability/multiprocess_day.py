"""Run one day of the whole graph with Dagster's multiprocess executor (one process per step).

daily_emotion_job runs its steps in the run's own process; this job is the same selection with
Dagster's multiprocess executor, so that test_concurrency.py checks the day's lock across step
processes too. Used as a child process: ``python multiprocess_day.py DAY DAGSTER_HOME``.
Resources come from EMO_DATA_DIR, EMO_MODEL and EMO_DEVICE, read when the job is built in each
step process. Publishes the analysts' copy when the run ends. Prints ``ok`` or the failed steps, and exits 0 only if the run succeeded.
"""

import sys

import dagster as dg

from emo_assets.definitions import build_definitions, resources_from_env
from emo_assets.lib.analytics import rebuild
from emo_assets.partitions import daily_partitions

JOB = "daily_emotion_job_multiprocess"


def daily_emotion_job_multiprocess():
    job = dg.define_asset_job(
        JOB,
        selection=dg.AssetSelection.all(),
        partitions_def=daily_partitions,
        executor_def=dg.multiprocess_executor,
    )
    defs = dg.Definitions.merge(build_definitions(resources_from_env()), dg.Definitions(jobs=[job]))
    return defs.resolve_job_def(JOB)


def main(day: str, dagster_home: str) -> int:
    executor = {
        "max_concurrent": 2,
        # Step processes fork from a server that imported the project once: cheap to start.
        "start_method": {"forkserver": {"preload_modules": ["emo_assets.definitions"]}},
    }
    instance = dg.DagsterInstance.from_config(dagster_home)
    with dg.execute_job(
        dg.reconstructable(daily_emotion_job_multiprocess),
        instance=instance,
        tags={"dagster/partition": day},
        run_config={"execution": {"config": executor}},
    ) as result:
        failed = sorted(e.step_key for e in result.all_events if e.is_step_failure)
    # the run's end publishes the analysts' copy, as the run-status sensors do for a launched run
    storage = resources_from_env()["storage"]
    rebuild.publish_warehouse(storage.warehouse_path, storage.lake_dir, storage.models_dir, storage.sql_models_dir)
    print("ok" if result.success else f"failed steps: {failed}", flush=True)
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
