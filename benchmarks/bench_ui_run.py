"""Benchmark: a day launched the way the UI launches it, against `emo run`, on the same day.

    .venv/bin/python benchmarks/bench_ui_run.py [--recordings 20] [--repeats 2] [--json]

Builds a tiny random-weight model (`emo make-test-model`), a day of --recordings synthetic
recordings (the demo day's formats, lib/audio/sample_day.py) and, for every timed run, a fresh data
directory holding a copy of that day. Then, side by side, --repeats times each, alternating:

- `emo run --date D`: the whole day in one process (execute_in_process);
- `dagster job launch -j daily_emotion_job --tags '{"dagster/partition": D}'`: the UI's route.
  The UI, the schedule and the sensor submit a run to the instance; its run launcher (the
  DefaultRunLauncher) starts a new process, `dagster api execute_run`, that loads the code location
  and runs the job with the job's executor. `dagster job launch` goes through the same launcher.
  The benchmark's Dagster home uses the DefaultRunCoordinator, so the run is launched at once rather
  than queued for a daemon (`dagster dev` runs one; queueing adds the daemon's poll interval).

Launched run: wall time from the command's start until the instance records the run's end (the
command returns at once; the run goes on in its own process), and the run's own duration as the
UI shows it (start to end). Prints a markdown report and the ratio launched / `emo run`.
Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
DAY = "2026-11-24"
JOB = "daily_emotion_job"
DAGSTER_YAML = """\
run_coordinator:
  module: dagster.core.run_coordinator
  class: DefaultRunCoordinator
telemetry:
  enabled: false
python_logs:
  managed_python_loggers:
    - emo_assets
"""


def write_day(raw_day: Path, recordings: int) -> None:
    from emo_assets.lib.audio.sample_day import SAMPLE_DAY, synth_speech, write_encoded

    for i in range(recordings):
        rec = SAMPLE_DAY[i % len(SAMPLE_DAY)]
        samples = synth_speech(rec.seconds, rec.sample_rate, [i, 7], channels=rec.channels)
        write_encoded(raw_day / f"batch_{i // len(SAMPLE_DAY)}" / rec.name, samples, rec.sample_rate, rec.codec)


def child_env(data_dir: Path, model_dir: Path, dagster_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMO_", "DAGSTER_HOME"))}
    env.update(
        EMO_DATA_DIR=str(data_dir),
        EMO_MODEL=str(model_dir),
        EMO_DEVICE="cpu",
        EMO_SEGMENTS="windows",  # synth_speech holds no speech for a voice-activity model: fixed windows
        DAGSTER_HOME=str(dagster_home),
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    return env


def fresh_data_dir(work: Path, name: str, raw_day: Path) -> Path:
    data_dir = work / name
    shutil.copytree(raw_day, data_dir / "raw" / DAY)
    return data_dir


def run_checked(cmd: list[str], env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"{cmd[0]} failed with {proc.returncode}")


def time_emo_run(data_dir: Path, model_dir: Path, dagster_home: Path) -> dict:
    env = child_env(data_dir, model_dir, dagster_home)
    env.pop("DAGSTER_HOME")  # emo run keeps its instance in the data directory
    start = time.monotonic()
    run_checked([str(BIN / "emo"), "run", "--date", DAY], env, data_dir)
    return {"wall_s": time.monotonic() - start}


def time_launched_run(data_dir: Path, model_dir: Path, dagster_home: Path) -> dict:
    import dagster as dg

    env = child_env(data_dir, model_dir, dagster_home)
    tags = json.dumps({"dagster/partition": DAY})
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        before = {r.run_id for r in instance.get_runs()}
        start = time.monotonic()
        cmd = [str(BIN / "dagster"), "job", "launch", "-m", "emo_assets.definitions", "-j", JOB, "--tags", tags]
        run_checked(cmd, env, dagster_home)
        launched = time.monotonic() - start
        (run,) = [r for r in instance.get_runs() if r.run_id not in before]
        while True:
            record = instance.get_run_record_by_id(run.run_id)
            if record.dagster_run.is_finished:
                break
            time.sleep(0.1)
        wall = time.monotonic() - start
        if record.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
            raise SystemExit(f"launched run {run.run_id} ended {record.dagster_run.status}")
        steps_pids = {
            e.dagster_event.pid
            for e in instance.all_logs(run.run_id)
            if e.is_dagster_event and e.dagster_event.is_step_event
        }
        return {
            "wall_s": wall,
            "command_s": launched,
            "run_s": record.end_time - record.start_time,
            "step_processes": len(steps_pids),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recordings", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_ui_run_") as tmp:
        work = Path(tmp)
        model_dir = work / "model"
        run_checked([str(BIN / "emo"), "make-test-model", str(model_dir)], os.environ.copy(), work)
        raw_day = work / "day"
        write_day(raw_day, args.recordings)
        dagster_home = work / "dagster_home"
        dagster_home.mkdir()
        (dagster_home / "dagster.yaml").write_text(DAGSTER_YAML)

        rows = []
        for i in range(args.repeats):
            emo = time_emo_run(fresh_data_dir(work, f"emo_{i}", raw_day), model_dir, dagster_home)
            launched = time_launched_run(fresh_data_dir(work, f"launch_{i}", raw_day), model_dir, dagster_home)
            rows.append({"emo_run": emo, "launched": launched})
            print(f"repeat {i + 1}: emo run {emo['wall_s']:.1f} s, launched {launched['wall_s']:.1f} s", flush=True)

    emo_total = sum(r["emo_run"]["wall_s"] for r in rows)
    launch_total = sum(r["launched"]["wall_s"] for r in rows)
    report = {
        "recordings": args.recordings,
        "repeats": rows,
        "ratio": launch_total / emo_total,
        "load_1min": os.getloadavg()[0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    if args.json:
        print(json.dumps(report, indent=2))
    print(f"\n## Launched day vs `emo run`: {args.recordings} recordings, tiny model, cpu\n")
    print("| repeat | `emo run` wall s | launched wall s | launched run (UI duration) s | step processes |")
    print("|---|---|---|---|---|")
    for i, r in enumerate(rows, 1):
        e, lr = r["emo_run"], r["launched"]
        print(f"| {i} | {e['wall_s']:.1f} | {lr['wall_s']:.1f} | {lr['run_s']:.1f} | {lr['step_processes']} |")
    print(f"\nratio launched / emo run (sum of repeats): {report['ratio']:.2f}x")
    print(f"load average (1 min) at the end: {report['load_1min']:.1f} on {report['cpus']} CPUs")


if __name__ == "__main__":
    main()
