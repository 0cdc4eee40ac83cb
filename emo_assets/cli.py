"""The `emo` command: runs the same assets and library code as the Dagster UI."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import sys
from collections import Counter
from pathlib import Path

from emo_assets.cli_privacy import add_privacy_commands
from emo_assets.cli_results import add_result_commands
from emo_assets.cli_sql import add_sql_command
from emo_assets.resources import PROJECT_ROOT, SettingError

RANDOM_MODEL_WARNING = (
    "NOTE: model {model_id} has RANDOM weights. Its emotions are meaningless; it exists so the\n"
    "pipeline runs offline. For real emotions: EMO_MODEL=iic/emotion2vec_plus_large (downloaded once\n"
    "from ModelScope, then cached) or EMO_MODEL=/path/to/emotion2vec_plus_large (a local copy)."
)

DEMO_QUERIES = """\
  -- emotions of the day (each side of a two-channel call on its own row), most confident first
  SELECT f.source_path, s.channel, s.emotion, round(s.confidence, 3) AS confidence, s.model_id
  FROM emotion_scores s JOIN audio_files f USING (audio_id, date) ORDER BY s.confidence DESC;

  -- the analysts' daily summary (dbt_like_sql/daily_emotion_summary.sql)
  SELECT * FROM daily_emotion_summary ORDER BY date;

  -- what could not be processed, and why
  SELECT source_path, stage, reason FROM quarantine;

  -- the emotion arc of each voice: first and last turn, the most negative one
  SELECT audio_id[:12] AS call, channel, turns, start_emotion, end_emotion, peak_emotion, peak_start_s
  FROM call_emotion_arc ORDER BY audio_id, channel;"""


def dagster_instance(data_dir: Path):
    """The Dagster instance of `emo` commands: ``$DAGSTER_HOME``'s, else ``<data_dir>/dagster_home``."""
    import dagster as dg

    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    home = data_dir / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    return dg.DagsterInstance.from_config(str(home))


def run_day(day: str, refit_models: bool = False, allow_empty: bool = False, **overrides) -> int:
    """Materialize the whole graph for ``day`` in-process; print a summary. Returns an exit code."""
    from emo_assets.definitions import build_definitions, resources_from_env
    from emo_assets.jobs import day_run_config, day_selection
    from emo_assets.lib.files.faults import MachineFault, check_data_dir
    from emo_assets.lib.store import day_lock
    from emo_assets.lib.store.accounting import EmptyDayRefused, refuse_empty_day
    from emo_assets.partitions import validate_day
    from emo_assets.resources import run_is_active

    validate_day(day)
    resources = resources_from_env(**overrides)
    storage, emotion_model = resources["storage"], resources["emotion_model"]
    model = emotion_model.load()  # fail on a bad model setting before any file is touched
    check_data_dir(storage.root)  # a file, or a read-only folder: one line, not a traceback
    try:
        storage.check_lake()  # an object-store lake whose bucket does not answer: one line, before any write
    except MachineFault as exc:
        print(f"emo: error: {exc}", file=sys.stderr)
        return 2
    try:  # a day whose recordings are gone is not emptied by surprise
        refuse_empty_day(storage.raw_dir, storage.lake_dir, day, allow_empty=allow_empty, how="--allow-empty")
    except EmptyDayRefused as exc:
        print(f"emo: error: {exc}", file=sys.stderr)
        return 2
    print(f"emo run {day}: model {model.model_id} on {model.settings.device}, data in {storage.root}", flush=True)
    _wait_for_files_in_flight(storage, day)
    defs = build_definitions(resources)
    job = defs.resolve_job_def("daily_emotion_job")
    locks = storage.locks_dir
    try:
        # The day is locked for the whole run: a second run of the same day is refused, never mixed in.
        with day_lock.hold_day(locks, day, holder=f"emo run --date {day}"):
            # Two first runs at once would both create the instance's SQLite schema and collide.
            with day_lock.hold_day(
                storage.root / "locks", "dagster_instance", holder="emo run: opening the Dagster instance", wait_s=60
            ):
                instance = dagster_instance(storage.root)
                instance.get_runs(limit=1)  # creates the run storage while we hold the lock
            day_lock.check_lease(locks, day, None, lambda run_id: run_is_active(instance, run_id))
            result = job.execute_in_process(
                partition_key=day,
                instance=instance,
                asset_selection=day_selection(storage, refit_models),
                run_config={
                    "loggers": {"console": {"config": {"log_level": "INFO"}}},
                    **day_run_config(refit_models),
                    "ops": {
                        **day_run_config(refit_models).get("ops", {}),
                        "audio_files": {"config": {"allow_empty": allow_empty}},
                    },
                },
                raise_on_error=False,
            )
    except day_lock.DayLockedError as exc:
        print(f"emo: error: {exc}", file=sys.stderr)
        return 3
    failures = run_failures(result)
    failures += publish_after_run(storage, lambda run_id: run_is_active(instance, run_id))
    print_summary(storage, day, model, failures, run_repairs(result))
    for what, why in run_warnings(result):  # monitoring (drift): said, never a failed run
        print(f"emo: warning: {what}: {why}", file=sys.stderr)
    if failures:
        first = failures[0]
        print(f"emo: error: the run of {day} FAILED at {first[0]}: {first[1]}", file=sys.stderr)
        return 1
    return 0


def publish_after_run(storage, is_active=lambda run_id: False) -> list[tuple[str, str]]:
    """Publish the analysts' copy once, at the end of the run (failed or not: what succeeded is
    published; days other runs are still writing are left as they were). Returns the failure to
    report when the warehouse is corrupt and was not published."""
    from emo_assets.lib.analytics.rebuild import publish_warehouse
    from emo_assets.lib.store.day_lock import days_in_flight
    from emo_assets.lib.store.warehouse import WarehouseCorruptError, WarehouseLockedError

    try:
        done = publish_warehouse(
            storage.warehouse_path,
            storage.lake_dir,
            storage.models_dir,
            storage.sql_models_dir,
            in_flight=days_in_flight(storage.locks_dir, is_active),
        )
    except (WarehouseCorruptError, WarehouseLockedError) as exc:  # the analysts keep the version they had
        return [("publishing the analysts' copy", str(exc))]
    print(f"published version {done.version} of {done.read_copy.name} ({len(done.written)} file(s) written)")
    return []


def _wait_for_files_in_flight(storage, day: str) -> None:
    """An interactive run waits (bounded) for files still being written; the run defers the rest."""
    from emo_assets.lib.audio.settle import wait_for_day

    wait_for_day(storage.raw_dir, day, storage.settle_seconds, say=lambda line: print(line, flush=True))


def _reason(error) -> str:
    """The message a person needs from a step's error: the first error in the chain raised by our
    code rather than Dagster's wrapper around it, without its module path."""
    chain = []
    while error is not None:
        chain.append(error)
        error = error.cause
    ours = next((e for e in chain if not e.cls_name.startswith("Dagster")), chain[-1]) if chain else None
    if ours is None:
        return "unknown error"
    text = ours.message.strip()
    prefix, sep, rest = text.partition(": ")
    return rest.strip() if sep and prefix.split(".")[-1] == ours.cls_name else text


def run_failures(result) -> list[tuple[str, str]]:
    """(what failed, why) for every failed step and failed check of severity ERROR (steps downstream
    of a failure do not run); a WARN check is in :func:`run_warnings`."""
    failures = [
        (f"step {e.step_key}", _reason(e.step_failure_data.error)) for e in result.all_events if e.is_step_failure
    ]
    for check in result.get_asset_check_evaluations():
        if not check.passed and not _is_warning(check):
            found = {k: v.value for k, v in check.metadata.items() if v.value not in (0, [], None, "")}
            failures.append(
                (
                    f"check {check.check_name} on {check.asset_key.to_user_string()}",
                    f"did not pass: {check.description or found}",
                )
            )
    return failures


def _is_warning(check) -> bool:
    import dagster as dg

    return check.severity == dg.AssetCheckSeverity.WARN


def run_warnings(result) -> list[tuple[str, str]]:
    """(which check, its description) for every check of severity WARN that did not pass (the
    drift check): the run still succeeds."""
    return [
        (f"check {c.check_name} on {c.asset_key.to_user_string()}", c.description or "did not pass")
        for c in result.get_asset_check_evaluations()
        if not c.passed and _is_warning(c)
    ]


def run_repairs(result) -> dict[str, list[str]]:
    """table -> the audio_ids the run recomputed because their lake data failed its integrity check
    (the ``repaired_audio_ids`` of each materialization), for the tables that had any."""
    repaired = {}
    for event in result.get_asset_materialization_events():
        materialization = event.materialization
        ids = materialization.metadata.get("repaired_audio_ids")
        if ids is not None and ids.value:
            repaired[materialization.asset_key.to_user_string()] = list(ids.value)
    return repaired


def print_summary(
    storage, day: str, model, failures: list[tuple[str, str]] = (), repaired: dict[str, list[str]] | None = None
) -> None:
    import pyarrow.compute as pc

    from emo_assets.lib.store import lake
    from emo_assets.lib.store.accounting import account_day
    from emo_assets.lib.store.deferred import read_deferred
    from emo_assets.lib.store.warehouse import read_copy_path

    scores = lake.read_partition(storage.lake_dir, "emotion_scores", day)
    audio_files = lake.read_partition(storage.lake_dir, "audio_files", day)
    account = account_day(
        storage.raw_dir,
        day,
        audio_files,
        scores,
        lake.read_partition(storage.lake_dir, "quarantine", day),
        read_deferred(storage.lake_dir, day),
    )
    hours = (pc.sum(audio_files.column("duration_s")).as_py() or 0.0) / 3600 if audio_files is not None else 0.0
    # one emotion per recording: a two-channel call counts by its customer side (lake.voice_rows)
    recordings = lake.voice_rows(scores)
    top = Counter(recordings.column("emotion").to_pylist()).most_common(3) if recordings is not None else []
    print()
    for what, why in failures:  # a failed run says so first: what failed and why
        print(f"FAILED {what}: {why}")
    print(
        f"Summary for {day}" + (" (the run FAILED: counts are what was written before it stopped)" if failures else "")
    )
    print(f"  files landed     {len(account.landed)}")
    print(f"  processed        {len(account.processed)}")
    print(f"  quarantined      {len(account.quarantined)}")
    print(
        f"  deferred         {len(account.deferred)}"
        + ("  (still being written: the next run takes them)" * bool(account.deferred))
    )
    for src in account.deferred[:20]:
        print(f"    {src}")
    print(f"  unaccounted      {len(account.missing)}")
    if account.gone:  # processed or quarantined, then removed from the raw folder
        print(f"  removed from raw {len(account.gone)}  ({', '.join(account.gone[:5])})")
    if repaired:  # lake data that failed its integrity check, recomputed from the FLACs or raw files
        ids = sorted({a for table_ids in repaired.values() for a in table_ids})
        print(f"  repaired         {len(ids)}  (stored data failed its integrity check: recomputed from its source)")
        for table, table_ids in sorted(repaired.items()):
            print(f"    {table}: {', '.join(table_ids[:5])}{' ...' if len(table_ids) > 5 else ''}")
    print(f"  hours of audio   {hours:.3f}")
    print(f"  top emotions     {', '.join(f'{e} ({n})' for e, n in top) or '-'}")
    print(f"  model_id         {model.model_id}{'  (random weights)' if model.is_random else ''}")
    print(f"  warehouse        {storage.warehouse_path}  (analysts: {read_copy_path(storage.warehouse_path)})")
    if model.is_random:
        print("\n" + RANDOM_MODEL_WARNING.format(model_id=model.model_id))


def demo(data_dir: str | None) -> int:
    from emo_assets.definitions import resources_from_env
    from emo_assets.lib.audio.sample_day import CHANNELS_CONFIG, write_sample_day
    from emo_assets.lib.audio.spoken import SpeechSynthesisError
    from emo_assets.lib.model.model_dir import make_test_model
    from emo_assets.lib.store.warehouse import read_copy_path

    storage = resources_from_env(data_dir=data_dir)["storage"]
    day = dt.datetime.now(dt.UTC).date().isoformat()
    day_dir = storage.raw_dir / day
    settle_s = None  # files found there: the settle rule applies as in any run
    if day_dir.exists() and any(day_dir.iterdir()):
        print(f"{day_dir} already has files: running the day as it is")
    else:
        try:
            written = write_sample_day(day_dir, seed=0)
        except SpeechSynthesisError as exc:
            print(f"emo: error: the demo day is spoken by espeak-ng: {exc}", file=sys.stderr)
            return 2
        settle_s = 0.0  # written whole just now, by us: nothing to wait for
        uploads = [p for p in written if p != day_dir / CHANNELS_CONFIG]
        print(
            f"wrote {len(uploads)} uploads to {day_dir}: sentences spoken by espeak-ng, two-voice stereo calls "
            f"split by {CHANNELS_CONFIG}, a line with no speech and a broken upload"
        )
    model_dir = storage.models_dir / "random-tiny-seed0"
    if not (model_dir / "model.pt").exists():
        make_test_model(model_dir, size="tiny", seed=0)
        print(f"built a tiny random-weight model in {model_dir}")
    code = run_day(day, data_dir=str(storage.root), model=str(model_dir), settle_s=settle_s)
    print(f"\nTables: lake Parquet under {storage.lake_dir}, DuckDB at {storage.warehouse_path}")
    print(
        f"Try:  emo sql --data-dir {storage.root}   (SQL on {read_copy_path(storage.warehouse_path)})\n{DEMO_QUERIES}"
    )
    print("\nSee the graph and its lineage: make ui  (then open http://127.0.0.1:3000)")
    return code


def rebuild_cmd(data_dir: str | None) -> int:
    """Rebuild the warehouse from the lake for every day, then publish the analysts' copy."""
    from emo_assets.definitions import resources_from_env
    from emo_assets.lib.analytics.rebuild import rebuild_warehouse

    storage = resources_from_env(data_dir=data_dir)["storage"]
    rebuilt = rebuild_warehouse(
        storage.warehouse_path, storage.lake_dir, storage.models_dir, storage.sql_models_dir, force=True
    )
    print(f"rebuilt {storage.warehouse_path} from {storage.lake_dir} ({rebuilt.reason}): {len(rebuilt.days)} day(s)")
    for table, rows in sorted(rebuilt.rows.items()):
        print(f"  {table:<28} {rows} rows")
    for name, error in sorted(rebuilt.sql_models_skipped.items()):
        print(f"  {name:<28} NOT rebuilt: {error}")
    failures = publish_after_run(storage)
    for what, why in failures:
        print(f"emo: error: {what}: {why}", file=sys.stderr)
    return 1 if failures else 0


def publish_cmd(data_dir: str | None) -> int:
    """Publish the analysts' copy now: what a run's end does (`emo run`, or the publish_on_* sensors
    while dagster-daemon runs), for runs launched where neither did, e.g. `dagster asset materialize`."""
    from emo_assets.definitions import resources_from_env
    from emo_assets.resources import run_is_active

    storage = resources_from_env(data_dir=data_dir)["storage"]
    if not storage.warehouse_path.exists():
        print(f"emo: error: no warehouse at {storage.warehouse_path}: nothing has run there yet", file=sys.stderr)
        return 2
    has_history = os.environ.get("DAGSTER_HOME") or (storage.root / "dagster_home" / "dagster.yaml").is_file()
    instance = dagster_instance(storage.root) if has_history else None
    failures = publish_after_run(storage, lambda run_id: instance is not None and run_is_active(instance, run_id))
    for what, why in failures:
        print(f"emo: error: {what}: {why}", file=sys.stderr)
    return 1 if failures else 0


def make_test_model_cmd(directory: str, size: str, seed: int) -> int:
    from emo_assets.lib.model.model_dir import make_test_model

    path = make_test_model(Path(directory), size=size, seed=seed)
    print(f"wrote a {size} random-weight emotion2vec model (seed {seed}) to {path}")
    print("Its outputs are meaningless; use it with EMO_MODEL=" + str(path) + " for offline tests and benchmarks.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="emo", description="emo-assets: speech emotion data platform")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="materialize the whole graph for one day")
    run.add_argument("--date", required=True, help="the day, YYYY-MM-DD")
    run.add_argument(
        "--model", help="hub id or local model directory (default: EMO_MODEL or iic/emotion2vec_plus_large)"
    )
    run.add_argument("--hub", choices=["ms", "hf"], help="model hub (default: EMO_MODEL_HUB or ms)")
    run.add_argument("--device", help="auto, cpu or cuda (default: EMO_DEVICE or auto)")
    run.add_argument("--data-dir", help="data directory (default: EMO_DATA_DIR or ./data)")
    run.add_argument(
        "--segments",
        choices=["turns", "windows"],
        help="emotion_segments by speech turns (silence not scored) or fixed windows (default: EMO_SEGMENTS or turns)",
    )
    run.add_argument(
        "--refit-models",
        action="store_true",
        help="refit the cluster and satisfaction models and re-assign every day in the warehouse to them",
    )
    run.add_argument(
        "--allow-empty",
        action="store_true",
        help="run a day whose raw folder is missing or empty even though it has results (deletes them)",
    )
    run.set_defaults(
        handler=lambda a: run_day(
            a.date,
            refit_models=a.refit_models,
            allow_empty=a.allow_empty,
            model=a.model,
            hub=a.hub,
            device=a.device,
            data_dir=a.data_dir,
            segments=a.segments,
        )
    )

    demo_p = sub.add_parser("demo", help="offline demo: a day of espeak-ng speech, a tiny random model, one run")
    demo_p.add_argument("--data-dir", help="data directory (default: EMO_DATA_DIR or ./data)")
    demo_p.set_defaults(handler=lambda a: demo(a.data_dir))

    reb = sub.add_parser(
        "rebuild", help="rebuild the DuckDB warehouse from the lake for every day (it is derived state), then publish"
    )
    reb.add_argument("--data-dir", help="data directory (default: EMO_DATA_DIR or ./data)")
    reb.set_defaults(handler=lambda a: rebuild_cmd(a.data_dir))

    pub = sub.add_parser(
        "publish",
        help="publish the analysts' read copy now (as a run's end does: `emo run`, or dagster-daemon's sensors)",
    )
    pub.add_argument("--data-dir", help="data directory (default: EMO_DATA_DIR or ./data)")
    pub.set_defaults(handler=lambda a: publish_cmd(a.data_dir))

    mtm = sub.add_parser("make-test-model", help="write a random-weight emotion2vec model directory")
    mtm.add_argument("directory")
    mtm.add_argument(
        "--size",
        choices=["tiny", "base", "large"],
        default="tiny",
        help="tiny: 58 k parameters, for tests; base: emotion2vec+ base (93 M); "
        "large: emotion2vec+ large's published config (162 M)",
    )
    mtm.add_argument("--seed", type=int, default=0)
    mtm.set_defaults(handler=lambda a: make_test_model_cmd(a.directory, a.size, a.seed))

    add_result_commands(sub)
    add_privacy_commands(sub)
    add_sql_command(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from emo_assets.lib.files.faults import MachineFault
    from emo_assets.lib.model.model_dir import ModelLoadError
    from emo_assets.partitions import InvalidDayError

    try:
        return args.handler(args)
    except (ModelLoadError, InvalidDayError, SettingError, MachineFault) as exc:
        print(f"emo: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
