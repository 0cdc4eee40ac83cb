"""`emo` commands for personal data: erase recordings, enforce retention.

``emo erase AUDIO_ID... [--path SOURCE...]`` removes recordings everywhere (lib/privacy/erase.py);
``emo retention [--dry-run]`` deletes what is older than the retention settings
(lib/privacy/retention.py). Both print counts and places, never the erased identifiers.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _storage(args: argparse.Namespace):
    from emo_assets.definitions import resources_from_env

    return resources_from_env(data_dir=args.data_dir)["storage"]


def _dagster_homes(root: Path) -> list[Path | None]:
    """The Dagster instances whose run history may name the data directory's recordings:
    ``$DAGSTER_HOME``'s (None) and the data directory's own ``dagster_home/`` (`emo run`'s and
    `make ui`'s when DAGSTER_HOME is unset), each once."""
    homes: list[Path | None] = []
    env = os.environ.get("DAGSTER_HOME")
    if env:
        homes.append(None)
    local = root / "dagster_home"
    if (local / "dagster.yaml").is_file() and not (env and Path(env).resolve() == local.resolve()):
        homes.append(local)
    return homes


def _scrub_instance(instance, found) -> dict[str, int]:
    """Rewrite one instance's history (lib/privacy/run_history.py): the event log (a SQLite instance
    keeps a file per run besides its index), the run and schedule storage, the local compute logs."""
    from emo_assets.lib.privacy import run_history

    events = instance.event_log_storage
    opened = [events.index_connection()]
    with events.index_connection() as conn:
        per_run_files = conn.dialect.name == "sqlite"
    if per_run_files:
        opened += [events.run_connection(run_id) for run_id in instance.get_run_ids()]
    opened += [instance.run_storage.connect(), instance.schedule_storage.connect()]
    counts: dict[str, int] = {}
    for connection in opened:
        with connection as conn:
            changed = run_history.scrub_database(conn, found)
            engine = conn.engine
        run_history.compact(engine, set(changed))
        counts["run_history_records"] = counts.get("run_history_records", 0) + sum(changed.values())
    logs = instance.compute_log_manager
    if type(logs).__name__ == "LocalComputeLogManager":
        folder = Path(logs.inst_data.config_dict["base_dir"]) if logs.inst_data else Path(instance.storage_directory())
        counts["compute_log_files"] = run_history.scrub_text_files(folder, found)
    else:  # logs kept elsewhere (a cloud bucket): said, not claimed
        counts[f"compute_logs_not_rewritten:{type(logs).__name__}"] = 1
    return counts


def _run_history(root: Path):
    """What erases recordings from the Dagster run histories of :func:`_dagster_homes`; None when
    there is none."""
    homes = _dagster_homes(root)
    if not homes:
        return None

    def scrub(ids: list[str], sources: list[str]) -> dict[str, int]:
        import dagster as dg
        import sqlalchemy as sa

        from emo_assets.lib.privacy import run_history

        found = run_history.needles(ids, sources)
        if found is None:
            return {}
        counts: dict[str, int] = {}
        for home in homes:
            try:
                instance = dg.DagsterInstance.get() if home is None else dg.DagsterInstance.from_config(str(home))
                for what, n in _scrub_instance(instance, found).items():
                    counts[what] = counts.get(what, 0) + n
            except (sa.exc.SQLAlchemyError, OSError) as exc:
                raise run_history.RunHistoryError(
                    f"Dagster's run history ({home or '$DAGSTER_HOME'}) could not be rewritten: {type(exc).__name__}: {exc}"
                ) from exc
        return counts

    return scrub


def erase_cmd(args: argparse.Namespace) -> int:
    from emo_assets.lib.privacy.erase import ErasureError, check_audio_ids, erase, ids_of_sources
    from emo_assets.lib.privacy.run_history import RunHistoryError
    from emo_assets.lib.store.day_lock import DayLockedError
    from emo_assets.lib.store.warehouse import WarehouseLockedError

    storage = _storage(args)
    try:
        ids = check_audio_ids(args.audio_ids) + ids_of_sources(storage, args.path or [])
        if not ids:
            raise ErasureError("nothing to erase: give AUDIO_ID arguments or --path SOURCE")
        done = erase(storage, sorted(set(ids)), history=_run_history(storage.root))
    except (ErasureError, DayLockedError) as exc:
        print(f"emo: error: {exc}", file=sys.stderr)
        return 2
    except RunHistoryError as exc:  # before any file was erased: the same command finishes the job
        print(f"emo: error: the erasure stopped at Dagster's run history, before any file: {exc}", file=sys.stderr)
        return 1
    except WarehouseLockedError as exc:  # the files before it are erased; a second run finishes the job
        print(
            f"emo: error: the erasure stopped at the warehouse: {exc} Then run the same `emo erase` again.",
            file=sys.stderr,
        )
        return 1
    print(f"erased {len(set(ids))} recording(s) from {storage.root}")
    for what, n in sorted(done.removed.items()):
        print(f"  {what:60s} {n}")
    if not done.removed:
        print("  nothing held them; tombstoned, so they are deleted if they ever land")
    print(f"  logged (ids hashed) in {storage.root / 'erasure'}")
    if done.leftovers:
        print(f"emo: error: {len(done.leftovers)} file(s) still hold an erased id:", file=sys.stderr)
        for path in done.leftovers:
            print(f"  {path}", file=sys.stderr)
        return 1
    return 0


def retention_cmd(args: argparse.Namespace) -> int:
    import datetime as dt

    from emo_assets.lib.privacy import retention
    from emo_assets.lib.privacy.erase import ErasureError

    storage = _storage(args)
    policy = retention.policy_of(storage)
    today = dt.date.fromisoformat(args.today) if args.today else dt.datetime.now(dt.UTC).date()
    try:
        expired = retention.plan(storage, policy, today)
    except ErasureError as exc:
        print(f"emo: error: {exc}", file=sys.stderr)
        return 2
    kept = {k: v for k, v in vars(policy).items()}
    print(f"retention on {today} (days kept: {kept}; None: for ever), data in {storage.root}")
    for item in expired:
        for path in item.paths:
            print(f"  {'would delete' if args.dry_run else 'delete'} {item.kind:6s} {item.day}  {path}")
    if not expired:
        print("  nothing is past its retention")
    if args.dry_run:
        return 0
    counts = retention.apply(storage, expired)
    print(f"deleted: {counts or 'nothing'}")
    return 0


def add_privacy_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("erase", help="erase recordings everywhere (raw, FLAC, lake, warehouse, indexes, outputs)")
    p.add_argument("audio_ids", nargs="*", metavar="AUDIO_ID", help="the recordings' audio_id (sha256 of the file)")
    p.add_argument(
        "--path", action="append", metavar="SOURCE", help="a recording by source_path (DAY/name) or file; repeatable"
    )
    p.add_argument("--data-dir", help="data directory (default: EMO_DATA_DIR or ./data)")
    p.set_defaults(handler=erase_cmd)

    p = sub.add_parser("retention", help="delete raw audio, FLACs and table days past EMO_KEEP_*_DAYS")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.add_argument("--today", help="the day to count from, YYYY-MM-DD (default: today, UTC)")
    p.add_argument("--data-dir", help="data directory (default: EMO_DATA_DIR or ./data)")
    p.set_defaults(handler=retention_cmd)
