"""Approximate nearest neighbours over the embeddings: one faiss index per ``model_id``, stored by day.

Layout under the similarity root (``data/similarity``)::

    <model_id, URL-quoted>/model.json              model_id, width, the index settings
    <model_id, URL-quoted>/trained.faiss           the trained, empty IVF-SQ8 index (coarse centroids, SQ ranges)
    <model_id, URL-quoted>/days/date=YYYY-MM-DD.npz one file per day: audio_ids + that day's index shard

Why this shape:
- **IVF with 8-bit scalar codes** (faiss ``IndexIVFScalarQuantizer``, inner product on L2-normalised
  vectors = cosine): 1 byte per dimension, so 10 million 1024-d embeddings take ~10 GB instead of
  40 GB, codes are residuals to the list centroid so the 8-bit error stays far below the gaps between
  neighbours, and a query scans only ``nprobe`` of ``nlist`` lists.
- **Trained once, then only encoded.** Until a model has ``train_min`` vectors its day files hold the
  exact float32 vectors and search is exact (a flat index). The write that reaches ``train_min`` trains
  the IVF on those vectors and re-encodes them (a one-time cost of ``train_min`` vectors); from then on a
  day is encoded with the trained centroids and nothing older is touched.
- **A day is one file.** Adding a day writes ``date=D.npz`` (temporary file, then rename); re-running the
  day replaces that file as a whole, so its old vectors are gone and nothing is duplicated; removing a
  day deletes it. Adding a day costs that day, in compute and in bytes written.
- **Search** loads ``trained.faiss`` and merges every day's shard into one in-memory index
  (``merge_from``: the codes are moved, not re-encoded). Ids are ``day ordinal << 24 | row``, so a
  ``date_from`` filter is one id range applied inside the scan.

Pure functions and one class, no dagster.
"""

from __future__ import annotations

import datetime as dt
import json
import urllib.parse
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from emo_assets.lib.files.atomic import atomic_path, atomic_write, remove_stale_temps
from emo_assets.lib.files.flock import exclusive_flock

ROW_BITS = 24  # rows per day below 16.7 million
MAX_ID = (1 << 62) - 1
MODEL_JSON = "model.json"
TRAINED = "trained.faiss"
DAYS = "days"
LOCK = ".lock"


class AnnError(ValueError):
    """Bad input to the similarity index: a query or day it cannot use (the message says why and what to do)."""


class NoIndexError(AnnError):
    """There is no similarity index for the model asked for."""


@dataclass(frozen=True)
class AnnSettings:
    """How the index is built and searched. ``train_min`` vectors train the IVF (at least 39 per list)."""

    nlist: int = 4096
    train_min: int = 160_000
    nprobe: int = 32

    def __post_init__(self) -> None:
        if self.nlist < 1 or self.nprobe < 1:
            raise AnnError(f"nlist and nprobe must be at least 1 (got nlist={self.nlist}, nprobe={self.nprobe})")
        if self.train_min < self.nlist:
            raise AnnError(f"train_min ({self.train_min}) must be at least nlist ({self.nlist})")


@dataclass(frozen=True)
class Hit:
    audio_id: str
    date: dt.date
    similarity: float  # cosine, from the 8-bit codes once the index is trained


@dataclass(frozen=True)
class DayWritten:
    path: Path
    rows: int
    trained: bool  # the day was encoded with the trained IVF (False: still exact float32)
    trained_now: bool  # this write trained the IVF


def model_dir(root: Path, model_id: str) -> Path:
    return Path(root) / urllib.parse.quote(model_id, safe="")


def day_path(root: Path, model_id: str, day: str) -> Path:
    return model_dir(root, model_id) / DAYS / f"date={day}.npz"


def indexed_models(root: Path) -> list[str]:
    """Every model_id with an index under ``root``."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(urllib.parse.unquote(p.name) for p in root.iterdir() if (p / MODEL_JSON).is_file())


def indexed_days(root: Path, model_id: str) -> list[str]:
    folder = model_dir(root, model_id) / DAYS
    return sorted(p.name.removeprefix("date=").removesuffix(".npz") for p in folder.glob("date=*.npz"))


def normalised(vectors: np.ndarray, what: str = "vectors") -> np.ndarray:
    """float32 rows scaled to unit length (a zero row stays zero); NaN or Inf is refused."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise AnnError(f"{what} must be a 2-D array [rows, width], got shape {x.shape}")
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise AnnError(f"{what}: {bad} row(s) hold NaN or Inf; the similarity index takes finite embeddings only")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _day_ordinal(day: str | dt.date) -> int:
    try:
        return (day if isinstance(day, dt.date) else dt.date.fromisoformat(str(day))).toordinal()
    except ValueError:
        raise AnnError(f"{day!r} is not a day (YYYY-MM-DD)") from None


def day_ids(day: str | dt.date, rows: int) -> np.ndarray:
    if rows >= 1 << ROW_BITS:
        raise AnnError(f"{rows} rows for {day}: a day holds at most {(1 << ROW_BITS) - 1} rows in the index")
    return (np.int64(_day_ordinal(day)) << ROW_BITS) + np.arange(rows, dtype=np.int64)


def _faiss():
    import faiss  # heavy: imported where it is used

    return faiss


def new_ivf(width: int, settings: AnnSettings):
    """An untrained IVF-SQ8 index over inner products (cosine on unit vectors)."""
    faiss = _faiss()
    quantizer = faiss.IndexFlatIP(width)
    index = faiss.IndexIVFScalarQuantizer(
        quantizer, width, settings.nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
    )
    index.own_fields = True
    quantizer.this.disown()
    return index


def train_ivf(vectors: np.ndarray, settings: AnnSettings):
    """The IVF-SQ8 index trained on ``vectors`` (unit rows), empty."""
    x = normalised(vectors)
    if len(x) < settings.nlist:
        raise AnnError(f"{len(x)} vectors cannot train {settings.nlist} lists: at least nlist vectors are needed")
    index = new_ivf(x.shape[1], settings)
    index.train(x)
    return index


def _clone(index):
    return _faiss().clone_index(index)


class AnnIndex:
    """One model's vectors in memory: trained IVF-SQ8 (or exact flat before training), ids by day."""

    def __init__(self, width: int, trained=None, settings: AnnSettings | None = None):
        faiss = _faiss()
        self.width = int(width)
        self.settings = settings or AnnSettings()
        if trained is not None:
            if trained.d != self.width:
                raise AnnError(f"trained index is {trained.d}-wide, not {self.width}")
            self.index = _clone(trained)
        else:
            self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(self.width))
        self.trained = trained is not None
        self._audio_ids: dict[int, np.ndarray] = {}  # day ordinal -> audio_id per row

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def days(self) -> list[str]:
        return [dt.date.fromordinal(o).isoformat() for o in sorted(self._audio_ids)]

    def add_day(self, day: str, audio_ids: Iterable[str], vectors: np.ndarray) -> None:
        """Add (or replace) one day's vectors: the day's old vectors are removed first."""
        ids = np.asarray(list(audio_ids), dtype=object)
        x = _check_day(ids, vectors, self.width, day)
        self.remove_day(day)
        self.index.add_with_ids(x, day_ids(day, len(x)))
        self._audio_ids[_day_ordinal(day)] = ids.astype(str)

    def merge_shard(self, day: str, audio_ids: np.ndarray, shard) -> None:
        """Move an encoded day shard (same trained index) into this index."""
        self.remove_day(day)
        self.index.merge_from(shard, 0)
        self._audio_ids[_day_ordinal(day)] = np.asarray(audio_ids).astype(str)

    def remove_day(self, day: str) -> int:
        """Remove a day's vectors; returns how many were removed."""
        faiss = _faiss()
        o = _day_ordinal(day)
        if o not in self._audio_ids:
            return 0
        del self._audio_ids[o]
        return int(self.index.remove_ids(faiss.IDSelectorRange(o << ROW_BITS, (o + 1) << ROW_BITS)))

    def search(
        self,
        vector: np.ndarray,
        k: int,
        date_from: str | None = None,
        exclude: str | None = None,
        nprobe: int | None = None,
    ) -> list[Hit]:
        """The ``k`` nearest recordings to ``vector``: one hit per audio_id (its newest day), ``exclude`` left out."""
        faiss = _faiss()
        if not isinstance(k, int | np.integer) or k < 1:
            raise AnnError(f"k must be a whole number of at least 1, got {k!r}")
        q = np.asarray(vector, dtype=np.float32)
        if q.ndim != 1 and not (q.ndim == 2 and q.shape[0] == 1):
            raise AnnError(f"the query must be one vector, got shape {q.shape}")
        q = q.reshape(1, -1)
        if q.shape[1] != self.width:
            raise AnnError(
                f"the query has {q.shape[1]} values but this index holds {self.width}-wide embeddings; "
                "embed the query with the model the index was built for"
            )
        if not np.isfinite(q).all():
            raise AnnError("the query vector holds NaN or Inf")
        if not np.linalg.norm(q) > 0:
            raise AnnError("the query vector is all zeros: it has no direction to compare")
        if self.size == 0:
            raise AnnError("the similarity index is empty: no day has been indexed for this model")
        q = normalised(q, "the query")
        low = (_day_ordinal(date_from) << ROW_BITS) if date_from else 0
        selector = faiss.IDSelectorRange(low, MAX_ID)
        if self.trained:
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe or self.settings.nprobe)
        else:
            params = faiss.SearchParameters(sel=selector)
        fetch = k + 1
        while True:
            fetch = min(fetch * 2, self.size)
            sims, ids = self.index.search(q, fetch, params=params)
            hits = self._hits(sims[0], ids[0], exclude)
            if len(hits) >= k or fetch >= self.size or (ids[0] < 0).any():
                return hits[:k]

    def _hits(self, sims: np.ndarray, ids: np.ndarray, exclude: str | None) -> list[Hit]:
        best: dict[str, Hit] = {}
        for sim, i in zip(sims.tolist(), ids.tolist()):
            if i < 0:
                break
            o, row = i >> ROW_BITS, i & ((1 << ROW_BITS) - 1)
            audio_id = str(self._audio_ids[o][row])
            if audio_id == exclude:
                continue
            day = dt.date.fromordinal(o)
            seen = best.get(audio_id)
            if seen is None or day > seen.date:  # one hit per recording, its newest day
                best[audio_id] = Hit(audio_id, day, float(sim))
        return sorted(best.values(), key=lambda h: (-h.similarity, h.audio_id))


def _check_day(audio_ids: np.ndarray, vectors: np.ndarray, width: int | None, day: str) -> np.ndarray:
    _day_ordinal(day)
    x = normalised(vectors, f"embeddings of {day}")
    if width is not None and x.shape[1] != width:
        raise AnnError(f"embeddings of {day} are {x.shape[1]}-wide but this index holds {width}-wide embeddings")
    if len(audio_ids) != len(x):
        raise AnnError(f"{day}: {len(audio_ids)} audio_ids for {len(x)} embeddings")
    day_ids(day, len(x))
    return x


# ---- on disk ----------------------------------------------------------------------------------------


def _read_model_json(root: Path, model_id: str) -> dict | None:
    path = model_dir(root, model_id) / MODEL_JSON
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path.parent, path.name)
    with atomic_write(path) as f:
        write(f)


def _save_day(path: Path, audio_ids: np.ndarray, *, vectors: np.ndarray | None = None, shard=None) -> None:
    arrays = {"audio_id": np.asarray(audio_ids).astype(str)}
    if shard is not None:
        arrays["shard"] = _faiss().serialize_index(shard)
    else:
        arrays["vectors"] = np.asarray(vectors, dtype=np.float32)
    _write_bytes(path, lambda f: np.savez(f, **arrays))


def _encode(trained, day: str, x: np.ndarray):
    shard = _clone(trained)
    shard.add_with_ids(x, day_ids(day, len(x)))
    return shard


def write_day(
    root: Path,
    model_id: str,
    day: str,
    audio_ids: Iterable[str],
    vectors: np.ndarray,
    settings: AnnSettings | None = None,
    lock_wait_s: float = 600.0,
) -> DayWritten:
    """Replace ``day`` in ``model_id``'s index with these rows (creating the index on first use).

    Costs the day: the day's vectors are encoded and written as one file; other days are not read,
    except once, when the model first reaches ``settings.train_min`` vectors and the IVF is trained.
    """
    settings = settings or AnnSettings()
    ids = np.asarray(list(audio_ids), dtype=object).astype(str)
    x = np.asarray(vectors, dtype=np.float32)
    folder = model_dir(root, model_id)
    folder.mkdir(parents=True, exist_ok=True)

    def refused() -> Exception:
        return TimeoutError(f"another writer holds {folder / LOCK} for over {lock_wait_s:.0f} s; retry the run")

    with exclusive_flock(folder / LOCK, lock_wait_s, 0.2, refused):
        meta = _read_model_json(root, model_id)
        width = None if meta is None else int(meta["width"])
        x = _check_day(ids, x, width, day)
        if meta is None:
            meta = {"model_id": model_id, "width": int(x.shape[1]), "settings": asdict(settings)}
            _write_bytes(folder / MODEL_JSON, lambda f: f.write(json.dumps(meta, indent=2).encode()))
        settings = AnnSettings(**meta["settings"])
        path = day_path(root, model_id, day)
        trained_path = folder / TRAINED
        if trained_path.is_file():
            trained = _faiss().read_index(str(trained_path))
            _save_day(path, ids, shard=_encode(trained, day, x))
            return DayWritten(path, len(x), trained=True, trained_now=False)
        _save_day(path, ids, vectors=x)
        flat_days = indexed_days(root, model_id)
        total = sum(_rows_of(day_path(root, model_id, d)) for d in flat_days)
        if total < settings.train_min:
            return DayWritten(path, len(x), trained=False, trained_now=False)
        # The one-time switch to the IVF: train on every exact vector so far, then encode each day.
        loaded = {d: _load_day(day_path(root, model_id, d)) for d in flat_days}
        trained = train_ivf(np.concatenate([v for _, v, _ in loaded.values()]), settings)
        with atomic_path(trained_path) as tmp:
            _faiss().write_index(trained, str(tmp))
        for d, (day_ids_, vecs, _) in loaded.items():
            _save_day(day_path(root, model_id, d), day_ids_, shard=_encode(trained, d, vecs))
        return DayWritten(path, len(x), trained=True, trained_now=True)


def remove_day(root: Path, model_id: str, day: str) -> bool:
    """Remove ``day`` from ``model_id``'s index; False if it was not there."""
    path = day_path(root, model_id, day)
    if not path.exists():
        return False
    path.unlink()
    return True


def _rows_of(path: Path) -> int:
    with np.load(path, allow_pickle=False) as npz:
        return len(npz["audio_id"])


def _load_day(path: Path) -> tuple[np.ndarray, np.ndarray | None, object]:
    """(audio_ids, exact vectors or None, encoded shard or None) of one day file."""
    with np.load(path, allow_pickle=False) as npz:
        ids = npz["audio_id"]
        if "shard" in npz.files:
            return ids, None, _faiss().deserialize_index(npz["shard"])
        return ids, npz["vectors"], None


def load_index(root: Path, model_id: str, settings: AnnSettings | None = None) -> AnnIndex:
    """``model_id``'s index with every day merged in memory. ``settings`` overrides the search settings."""
    meta = _read_model_json(root, model_id)
    if meta is None:
        known = indexed_models(root)
        raise NoIndexError(
            f"no similarity index for model {model_id!r} under {root} "
            f"(indexed models: {', '.join(known) if known else 'none'}); "
            "materialize the similarity_index asset for its days (emo run --date DAY)"
        )
    stored = AnnSettings(**meta["settings"])
    settings = settings or stored
    trained_path = model_dir(root, model_id) / TRAINED
    trained = _faiss().read_index(str(trained_path)) if trained_path.is_file() else None
    index = AnnIndex(int(meta["width"]), trained, settings)
    for day in indexed_days(root, model_id):
        try:
            ids, vectors, shard = _load_day(day_path(root, model_id, day))
        except FileNotFoundError:
            continue  # removed while we listed: the day is gone
        if shard is not None:
            if trained is None:
                raise AnnError(f"{day_path(root, model_id, day)} is encoded but {trained_path} is missing")
            index.merge_shard(day, ids, shard)
        else:
            index.add_day(day, ids, vectors)
    return index
