"""A day's scoring on a Ray cluster (EMO_RAY_ADDRESS): the steps of :func:`~emo_assets.lib.model.scoring.score_day`,
spread out.

* **Plan** in the calling process (:func:`~emo_assets.lib.model.scoring.plan_day`): what an earlier run of
  the day already scored is kept, the rest is pending.
* **Decode** as Ray CPU tasks (``num_cpus=1`` each), a bounded number in flight: each reads one
  16 kHz FLAC where the lake keeps it, finds its speech turns (EMO_SEGMENTS=turns) with the same
  :func:`~emo_assets.lib.model.scoring.read_voice` as in-process, and puts the samples in Ray's
  object store. Only the outcome (turns, or why the recording is quarantined) comes back here.
* **Score** in a pool of long-lived model actors, one model load each (:class:`ModelActor` counts
  them). The calling process cuts the decoded voices into batches in (audio_id, channel) order,
  exactly as in-process, and keeps two batches queued per actor; an actor takes the samples from the
  object store and runs :func:`~emo_assets.lib.model.scoring.score_batch`. An actor asks for
  ``num_gpus`` (``gpus_per_actor`` > 0) or else one unit of the ``emo_model`` custom resource, which
  says how many model copies a CPU node hosts. An actor whose process dies is restarted and its
  queued batches are run again (``max_restarts`` / ``max_task_retries``); the outcome of a batch is
  recorded once, when its result arrives.
* **Assemble** here (:meth:`~emo_assets.lib.model.scoring.DayScores.assemble`): the same rows in the same
  order as in-process; the caller writes them. Ray never writes a table.

``ray`` is imported here only, inside the functions (the ``[cluster]`` extra installs it).
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from emo_assets.lib.model.scorer import ArrayReader, EmotionScorer, SpanReader
from emo_assets.lib.model.scoring import (
    FindTurns,
    OpenAudio,
    ScoringOutput,
    Unit,
    Voice,
    plan_day,
    read_voice,
    score_batch,
)
from emo_assets.lib.model.settings import ModelSettings
from emo_assets.lib.ray_cluster import RayClusterError, connected, named_address

# The custom resource a CPU node offers, one unit per model copy it can host (`ray start --resources`).
MODEL_RESOURCE = "emo_model"
# Batches queued per actor: while it scores one, the next is already there.
QUEUED_PER_ACTOR = 2
# Decode tasks in flight per CPU of the cluster: enough to keep the actors fed, few enough to bound memory.
DECODES_PER_CPU = 4
# An actor process that dies is started again this many times; its queued batches run again.
ACTOR_RESTARTS = 3


@dataclass
class RayStats:
    """What the cluster did for a day: actors, and model loads per actor process."""

    address: str
    actors: int
    batches: int = 0
    # "<actor id>/<pid>" -> model loads in that process (a restarted actor is a new process)
    loads: dict[str, int] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)
    first_scored_s: float | None = None  # seconds from the start of the call to the first batch scored


class ModelActor:
    """One model copy on the cluster: loaded on its first batch, kept for every batch after it."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.loads = 0
        self._model: EmotionScorer | None = None

    def _loaded(self) -> EmotionScorer:
        if self._model is None:
            from emo_assets.lib.model.loading import load_model

            self._model = load_model(self.settings)
            self.loads += 1
        return self._model

    def score(self, voices: Sequence[tuple[Unit, str, Sequence | None]], *samples: np.ndarray) -> tuple[list, dict]:
        """:func:`score_batch` of the voices (unit, path, turns), whose samples Ray passes in order."""
        import ray

        batch = []
        for (unit, path, turns), wave in zip(voices, samples, strict=True):
            reader = ArrayReader(wave)
            clips = [reader] if turns is None else [SpanReader(reader, t.start, t.end) for t in turns]
            batch.append(Voice(unit, path, clips, turns))
        outcomes = score_batch(self._loaded(), batch)
        context = ray.get_runtime_context()
        where = {"actor": context.get_actor_id(), "pid": os.getpid(), "node": context.get_node_id()}
        return outcomes, {**where, "loads": self.loads}


def _decode(unit: Unit, path: str, open_audio: OpenAudio, min_samples: int, find_turns: FindTurns | None):
    """A Ray task: the voice of ``path`` read whole. Returns (outcome, samples): the outcome is the
    voice's turns (``("voice", turns)``), a quarantine reason (``("reject", reason)``) or ``("silent",)``."""

    def whole(p: str) -> ArrayReader:
        reader = open_audio(p)
        return ArrayReader(reader.read(0, reader.num_samples))

    outcome = read_voice(unit, path, open_audio=whole, min_samples=min_samples, find_turns=find_turns)
    if isinstance(outcome, str):
        return ("reject", outcome), None
    if outcome is None:
        return ("silent",), None
    samples = outcome.clips[0].reader.samples if outcome.turns is not None else outcome.clips[0].samples
    return ("voice", None if outcome.turns is None else list(outcome.turns)), samples


def _actor_count(address: str, wanted: int, gpus_per_actor: float, batches: int) -> int:
    import ray

    total = ray.cluster_resources()
    if gpus_per_actor > 0:
        room, asked = int(total.get("GPU", 0) // gpus_per_actor), f"{gpus_per_actor:g} GPU(s) (EMO_RAY_GPUS_PER_ACTOR)"
    else:
        room, asked = int(total.get(MODEL_RESOURCE, 0)), f"one unit of the {MODEL_RESOURCE!r} resource"
    if room < 1:
        raise RayClusterError(
            f"{named_address(address)}: the cluster has no room for a model actor, which asks for {asked}; "
            f"start its nodes with --resources='{{\"{MODEL_RESOURCE}\": N}}' (N model copies per node) "
            "or --num-gpus, or set EMO_RAY_GPUS_PER_ACTOR to what its GPUs allow"
        )
    return max(1, min(wanted or room, room, batches))


def score_day_on_ray(
    resampled: pa.Table,
    audio_files: pa.Table,
    model: EmotionScorer,
    day: str,
    *,
    address: str,
    settings: ModelSettings,
    open_audio: OpenAudio,
    find_turns: FindTurns | None = None,
    actors: int = 0,
    gpus_per_actor: float = 0.0,
    previous_scores: pa.Table | None = None,
    previous_embeddings: pa.Table | None = None,
    previous_segments: pa.Table | None = None,
    batch_size: int = 8,
    log: Callable[[str], None] = lambda message: None,
) -> tuple[ScoringOutput, RayStats]:
    """:func:`~emo_assets.lib.model.scoring.score_day` on the Ray cluster at ``address``: the same
    output, row for row. ``settings``: the model's settings as given (each actor resolves the
    device on its node; its CPU threads are ``settings.threads``, 0 meaning one). ``actors``: model actors (0: as many as the cluster has room for).
    ``open_audio`` and ``find_turns`` run in the decode tasks, so the cluster's nodes must reach the
    lake (a shared filesystem, or the object store with credentials in the nodes' environment).
    ``log`` gets a line per batch scored. Raises RayClusterError for a cluster that cannot run it.
    """
    import ray

    started = time.monotonic()
    day_scores = plan_day(
        resampled,
        audio_files,
        model,
        day,
        turns=find_turns is not None,
        previous_scores=previous_scores,
        previous_embeddings=previous_embeddings,
        previous_segments=previous_segments,
    )
    pending = day_scores.pending
    stats = RayStats(address, actors=0)
    if not pending:
        return day_scores.assemble(), stats
    with connected(address):
        count = _actor_count(address, actors, gpus_per_actor, -(-len(pending) // batch_size))
        placement = {"num_gpus": gpus_per_actor} if gpus_per_actor > 0 else {"resources": {MODEL_RESOURCE: 1}}
        # Each actor resolves the device on its own node; CPU threads per actor: EMO_THREADS, else one.
        settings = dataclasses.replace(settings, threads=settings.threads or 1)
        actor_class = ray.remote(ModelActor).options(
            num_cpus=0, max_restarts=ACTOR_RESTARTS, max_task_retries=ACTOR_RESTARTS, **placement
        )
        pool = [actor_class.remote(settings) for _ in range(count)]
        stats.actors = count
        decode = ray.remote(_decode).options(num_cpus=1, num_returns=2)
        window = max(count * batch_size, int(ray.cluster_resources().get("CPU", 1)) * DECODES_PER_CPU)
        log(f"{day}: scoring {len(pending)} voice(s) on Ray at {address}: {count} model actor(s), {placement}")
        _run(
            day_scores,
            pending,
            pool,
            decode,
            window,
            batch_size,
            model.min_samples,
            open_audio,
            find_turns,
            stats,
            started,
            log,
        )
        for actor in pool:
            ray.kill(actor)
    return day_scores.assemble(), stats


def _run(
    day_scores, pending, pool, decode, window, batch_size, min_samples, open_audio, find_turns, stats, started, log
) -> None:
    import ray

    decodes: deque = deque()
    queued: dict = {}  # result ref -> (actor index, [(unit, turns)])
    load = [0] * len(pool)
    batch: list[tuple[Unit, str, object, ray.ObjectRef]] = []
    total = len(pending)

    def collect(block: bool) -> None:
        """Record every batch scored by now; with ``block``, wait for one first."""
        while queued:
            done, _ = ray.wait(list(queued), num_returns=1, timeout=None if block else 0)
            if not done:
                return
            index, voices = queued.pop(done[0])
            load[index] -= 1
            try:
                outcomes, where = ray.get(done[0])
            except ray.exceptions.RayActorError as exc:
                raise RayClusterError(
                    f"the Ray cluster at {named_address(stats.address)} lost a model actor for good "
                    f"(restarted {ACTOR_RESTARTS} times): {exc}"
                ) from exc
            day_scores.record(voices, outcomes)
            stats.batches += 1
            stats.loads[f"{where['actor']}/{where['pid']}"] = where["loads"]
            stats.nodes.add(where["node"])
            if stats.first_scored_s is None:
                stats.first_scored_s = time.monotonic() - started
            log(
                f"{day_scores.day}: batch {stats.batches} scored on Ray ({day_scores.inferred}/{total} voices; "
                f"actor pid {where['pid']}, {where['loads']} model load(s))"
            )
            block = False

    def send() -> None:
        while min(load) >= QUEUED_PER_ACTOR:
            collect(block=True)
        index = load.index(min(load))
        voices = [(unit, path, turns) for unit, path, turns, _ in batch]
        ref = pool[index].score.remote(voices, *[samples for *_, samples in batch])
        queued[ref] = (index, [(unit, turns) for unit, _, turns, _ in batch])
        load[index] += 1
        batch.clear()

    for unit in pending:
        decodes.append((unit, *decode.remote(unit, day_scores.paths[unit], open_audio, min_samples, find_turns)))
        if len(decodes) < window:
            continue
        _take(decodes, day_scores, batch, batch_size, send, collect)
    while decodes:
        _take(decodes, day_scores, batch, batch_size, send, collect)
    if batch:
        send()
    while queued:
        collect(block=True)


def _take(decodes, day_scores, batch, batch_size, send, collect) -> None:
    """The oldest decode's outcome (in pending order, so batches are cut as in-process)."""
    import ray

    unit, outcome_ref, samples_ref = decodes.popleft()
    outcome = ray.get(outcome_ref)
    if outcome[0] == "reject":
        day_scores.reject(unit[0], outcome[1])
    elif outcome[0] == "silent":
        day_scores.silent(unit)
    else:
        batch.append((unit, day_scores.paths[unit], outcome[1], samples_ref))
        if len(batch) >= batch_size:
            send()
    collect(block=False)
