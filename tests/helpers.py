"""Test-only helpers: small real days, runs, tables read back canonically, and the reference
implementations the tests compare the package against. Imported as ``tests.helpers``."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pyarrow.parquet as pq

from emo_assets.assets import all_assets
from emo_assets.checks import all_checks
from emo_assets.lib import schemas
from emo_assets.lib.analytics import rebuild
from emo_assets.lib.audio.sample_day import write_encoded
from emo_assets.lib.audio.spoken import AGENT_VOICE, CUSTOMER_VOICE, SENTENCES, say, spoken_speech
from emo_assets.lib.store import publish, warehouse
from emo_assets.resources import EmotionModelResource, RayResource, StorageResource

DAY = "2026-11-20"
OTHER_DAY = "2026-11-21"
REPO = Path(__file__).resolve().parents[1]
EMO = str(REPO / ".venv" / "bin" / "emo")

# Natural key of every table: no two rows may share one. The registry's tables, plus the SQL
# model the tests hold to a key (an analyst's file declares none).
KEYS = {
    **{table.name: ", ".join(table.key) for table in schemas.TABLES.values()},
    "daily_emotion_summary": "date",
}


def write_small_day(day_dir: Path, n: int = 3, seed: int = 0, seconds: float = 1.5) -> list[Path]:
    """``n`` short WAVs of speech (espeak-ng, a speaker each) plus one file that must be quarantined."""
    paths = []
    for i in range(n):
        samples = spoken_speech(seconds, 16000, np.random.default_rng([seed, i]))
        paths.append(write_encoded(day_dir / f"call_{i:02d}.wav", samples, 16000, "wav_pcm_16"))
    (day_dir / "notes.wav").write_text("not audio at all")
    return paths


def resources(data_dir: Path, model_dir: Path) -> dict:
    return {
        "storage": StorageResource(data_dir=str(data_dir)),
        "emotion_model": EmotionModelResource(model=str(model_dir), device="cpu"),
        "ray": RayResource(),
    }


def materialize(data_dir: Path, model_dir: Path, day: str = DAY, assets=None, **kwargs):
    """A day's run, then the publish every run ends with (`emo run` and the run-status sensors call
    the same library function). A warehouse another process holds is not published, as at the end
    of `emo run` (which reports it): the analysts keep the version they had."""
    result = dg.materialize(
        [*(assets or all_assets()), *all_checks],
        partition_key=day,
        resources=resources(data_dir, model_dir),
        raise_on_error=kwargs.pop("raise_on_error", False),
        **kwargs,
    )
    try:
        publish_run(data_dir)
    except warehouse.WarehouseLockedError:
        pass  # the run's own warehouse steps failed on the same lock; its result says so
    return result


def publish_run(data_dir: Path, grace_s: float = publish.GRACE_S):
    """Publish the analysts' copy of ``data_dir`` as a run's end does."""
    storage = StorageResource(data_dir=str(data_dir))
    return rebuild.publish_warehouse(
        storage.warehouse_path, storage.lake_dir, storage.models_dir, storage.sql_models_dir, grace_s=grace_s
    )


def schedule_tick(defs: dg.Definitions, resources: dict, when: dt.datetime) -> list[dg.RunRequest]:
    """The run requests ``daily_emotion_schedule`` of ``defs`` makes when it ticks at ``when``."""
    schedule = defs.get_schedule_def("daily_emotion_schedule")
    with dg.build_schedule_context(
        scheduled_execution_time=when, resources=resources, repository_def=defs.get_repository_def()
    ) as context:
        return schedule.evaluate_tick(context).run_requests


def failed_steps(result) -> list[str]:
    return sorted(e.step_key for e in result.all_events if e.is_step_failure)


def step_failure_messages(result) -> dict[str, str]:
    """step key -> the failure's message and the messages of its causes, joined."""

    def chain(error) -> str:
        parts = []
        while error is not None:
            parts.append(error.message)
            error = error.cause
        return "\n".join(parts)

    return {e.step_key: chain(e.event_specific_data.error) for e in result.all_events if e.is_step_failure}


def warehouse_tables(data_dir: Path, read_copy: bool = True) -> dict[str, list[tuple]]:
    """Every table and view of the warehouse, rows sorted: what an analyst's queries would see."""
    if read_copy:
        con = warehouse.open_read_copy(Path(data_dir))
    else:
        con = duckdb.connect(str(Path(data_dir) / "warehouse.duckdb"), read_only=True)
    try:
        names = [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
            ).fetchall()
        ]
        return {name: con.execute(f'SELECT * FROM "{name}" ORDER BY ALL').fetchall() for name in names}
    finally:
        con.close()


def lake_tables(data_dir: Path) -> dict[str, object]:
    """Every lake Parquet file (path relative to the lake) -> its Arrow table."""
    lake = Path(data_dir) / "lake"
    return {str(p.relative_to(lake)): pq.read_table(p) for p in sorted(lake.rglob("*.parquet"))}


def portable(tables: dict[str, list[tuple]], data_dir: Path) -> dict[str, list[tuple]]:
    """Tables comparable across data directories: the directory in paths and ``ingested_at``
    (the wall-clock time a file was first seen) are masked; everything else must match exactly."""

    def cell(value):
        if isinstance(value, str):
            return value.replace(str(data_dir), "<data>")
        if isinstance(value, dt.datetime):
            return "<time>"
        return value

    return {name: [tuple(cell(v) for v in row) for row in rows] for name, rows in tables.items()}


def digest(tables: dict[str, list[tuple]]) -> str:
    return hashlib.sha256(repr(sorted(tables.items())).encode()).hexdigest()


def assert_no_duplicates(data_dir: Path) -> None:
    con = warehouse.open_read_copy(Path(data_dir))
    try:
        present = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        for table, key in KEYS.items():
            if table in schemas.TABLES and schemas.TABLES[table].opt_in and table not in present:
                continue  # switched off for this run
            total, distinct = con.execute(f'SELECT count(*), count(DISTINCT ({key})) FROM "{table}"').fetchone()
            assert total == distinct, f"{table}: {total} rows, {distinct} distinct ({key})"
    finally:
        con.close()


def leftover_temp_files(data_dir: Path) -> list[str]:
    return sorted(str(p) for p in Path(data_dir).rglob("*.tmp"))


def emo_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMO_", "DAGSTER_HOME"))}
    env["EMO_SETTLE_S"] = os.environ.get("EMO_SETTLE_S", "0")  # test days are written whole (conftest)
    env.update(extra)
    return env


def emo_run(data_dir: Path, model_dir: Path, day: str = DAY, **popen) -> subprocess.Popen:
    """`emo run` in a child process (its own Dagster instance under the data directory)."""
    return subprocess.Popen(
        [EMO, "run", "--date", day, "--data-dir", str(data_dir), "--model", str(model_dir), "--device", "cpu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=emo_env(),
        **popen,
    )


def python_child(code: str, *args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=emo_env(),
        **popen,
    )


def numpy_top_k(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force cosine top-k: (row indices, similarities), best first. The reference for tests."""
    x = np.asarray(matrix, dtype=np.float32)
    q = np.asarray(query, dtype=np.float32).reshape(-1)
    sims = (x @ q) / (np.linalg.norm(x, axis=1) * np.linalg.norm(q) + 1e-30)
    k = min(k, sims.size)
    top = np.argpartition(-sims, k - 1)[:k] if k else np.zeros(0, np.int64)
    top = top[np.argsort(-sims[top], kind="stable")]
    return top, sims[top]


def espeak(text: str, voice: str = "en-us") -> np.ndarray:
    """``text`` spoken by Debian's espeak-ng (`make test` installs it) as 16 kHz float32 mono,
    trimmed to the speech: the sentence starts at the first sample and ends at the last."""
    return say(text, voice)


def spoken(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """Exactly ``seconds`` of espeak-ng speech at ``rate`` Hz: the sentences, starting at the
    ``seed``-th, in voices picked by ``seed``, 0.3 s apart, repeated as needed and cut to length."""
    import soxr

    voices = ("en-us", "en-gb-x-rp", "en-us+f3", "en-gb-scotland")
    parts, total, i = [], 0, seed
    while total < seconds * 16000:
        speech = espeak(SENTENCES[i % len(SENTENCES)], voices[(seed + i // len(SENTENCES)) % len(voices)])
        parts += [speech, np.zeros(int(0.3 * 16000), np.float32)]
        total += len(speech) + int(0.3 * 16000)
        i += 1
    samples = np.concatenate(parts)[: int(round(seconds * 16000))]
    return samples if rate == 16000 else soxr.resample(samples, 16000, rate).astype(np.float32)


def spoken_with_pauses(
    sentences=SENTENCES, pauses_s=(1.5, 2.0), lead_s: float = 1.0, tail_s: float = 1.0, voice: str = "en-us"
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Sentences joined by silences of known length: (16 kHz samples, [(start_s, end_s)] per sentence)."""
    parts = [np.zeros(int(lead_s * 16000), np.float32)]
    spans = []
    at = len(parts[0])
    for i, text in enumerate(sentences):
        speech = espeak(text, voice)
        spans.append((at / 16000, (at + len(speech)) / 16000))
        parts.append(speech)
        at += len(speech)
        gap = pauses_s[i] if i < len(pauses_s) else tail_s
        parts.append(np.zeros(int(gap * 16000), np.float32))
        at += len(parts[-1])
    return np.concatenate(parts), spans


def stereo_conversation() -> tuple[np.ndarray, dict[str, list[tuple[float, float]]]]:
    """A stereo call: the agent speaks on the left, then the customer on the right, then the agent.
    Returns (samples (n, 2), each voice's sentence spans in seconds)."""
    script = [("agent", SENTENCES[0]), ("customer", SENTENCES[1]), ("agent", SENTENCES[2])]
    spans = {"agent": [], "customer": []}
    at = 16000  # one second of silence first
    clips = []
    for voice, text in script:
        speech = espeak(text, AGENT_VOICE if voice == "agent" else CUSTOMER_VOICE)
        clips.append((voice, at, speech))
        spans[voice].append((at / 16000, (at + len(speech)) / 16000))
        at += len(speech) + int(1.5 * 16000)
    left, right = np.zeros(at, np.float32), np.zeros(at, np.float32)
    for voice, start, speech in clips:
        (left if voice == "agent" else right)[start : start + len(speech)] = speech
    return np.stack([left, right], axis=1), spans


def assert_read_copy_without(data_dir: Path, erased: str, kept: str) -> None:
    """The analysts' copy of ``data_dir`` answers with ``kept`` and without ``erased`` in every table
    keyed by recording."""
    con = warehouse.open_read_copy(data_dir)
    try:
        for table in ("audio_files", "emotion_scores", "embedding_index"):
            ids = {r[0] for r in con.execute(f"SELECT audio_id FROM {table}").fetchall()}
            assert erased not in ids and kept in ids, table
    finally:
        con.close()


def places_naming(root: Path, audio_id: str, skip: Path | None = None) -> list[str]:
    """Every file under ``root`` (but ``skip``) whose content names ``audio_id``, by the test's own
    means: as text from its first 12 characters on (the whole id, or one cut short as a preview in
    Dagster's run history shows it), as numpy's UTF-32, as the binary digest."""
    short = audio_id[:12]
    needles = (short.encode(), audio_id.encode("utf-32-le"), bytes.fromhex(audio_id))
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or (skip is not None and path.is_relative_to(skip)):
            continue
        hit = any(n in path.read_bytes() for n in needles)
        if not hit and path.suffix == ".parquet":
            hit = short in json.dumps(pq.read_table(path).to_pylist(), default=str)
        if not hit and path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                hit = any(short in str(npz[k].tolist()) for k in npz.files)
        if not hit and path.suffix == ".duckdb":
            con = duckdb.connect(str(path), read_only=True)
            try:
                tables = con.execute("SELECT schema_name, table_name FROM duckdb_tables()").fetchall()
                hit = any(short in str(con.execute(f'SELECT * FROM "{s}"."{t}"').fetchall()) for s, t in tables)
            finally:
                con.close()
        if hit:
            found.append(str(path.relative_to(root)))
    return found
