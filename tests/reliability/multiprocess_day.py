"""Run one day of daily_emotion_job with Dagster's multiprocess executor (one process per step).

Used by test_concurrency.py as a child process: ``python multiprocess_day.py DAY DAGSTER_HOME``.
Resources come from EMO_DATA_DIR, EMO_MODEL and EMO_DEVICE, read when the job is built in each
step process. Prints ``ok`` or the failed steps, and exits 0 only if the run succeeded.
"""

import sys

import dagster as dg

from emo_assets.definitions import build_definitions, resources_from_env


def daily_emotion_job():
    return build_definitions(resources_from_env()).resolve_job_def("daily_emotion_job")


def main(day: str, dagster_home: str) -> int:
    executor = {
        "max_concurrent": 2,
        # Step processes fork from a server that imported the project once: cheap to start.
        "start_method": {"forkserver": {"preload_modules": ["emo_assets.definitions"]}},
    }
    instance = dg.DagsterInstance.from_config(dagster_home)
    with dg.execute_job(
        dg.reconstructable(daily_emotion_job),
        instance=instance,
        tags={"dagster/partition": day},
        run_config={"execution": {"config": {"multiprocess": executor}}},
    ) as result:
        failed = sorted(e.step_key for e in result.all_events if e.is_step_failure)
        print("ok" if result.success else f"failed steps: {failed}", flush=True)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
