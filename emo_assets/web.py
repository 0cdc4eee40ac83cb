"""`emo web`: a small page for the WebUI habits — upload a recording (or pick one from the lake),
see the 9 emotions with their emoji and confidence, download result.json and embedding.npy, and
see the 5 most similar recordings in the warehouse.

FastAPI with one plain HTML page, served on 127.0.0.1 by default. Needs the ``[web]`` extra.
Analysis uses the same ``lib/results/analyze.py`` code as ``emo analyze`` (an upload becomes samples
through ``load_mono_16k``, the function the pipeline's FLAC is made with, so an uploaded file that is in
the warehouse gets the warehouse's vector and is its own nearest neighbour; capped at
``EMO_WEB_MAX_UPLOAD_S`` while decoding by ``lib/audio/guard.py``, and a silent one gets no emotion); neighbours come from the
approximate similarity index (``lib/analytics/nearest.py``). Each result is written to
``<data>/web_outputs/outputs_YYYYMMDD_HHMMSS/`` like ``emo analyze`` writes it, and deleted after
``EMO_WEB_OUTPUTS_KEEP_S``. Access token, upload byte cap and output expiry: ``web_guard.py``. A
warehouse recording's day is asked of the warehouse; only that day's lake files are then read.

The model loads in a background thread when the server starts; ``/api/status`` says whether it is
ready, the page keeps its upload button disabled until then, and an upload that arrives while it loads
waits for it. A result from random weights carries a warning, plays ``processed_audio.wav`` in an
``<audio>`` player, and draws the emotion timeline (one bar per speech turn, or per window under
EMO_SEGMENTS=windows: the upload's own, the ``emotion_segments`` rows for a warehouse recording) when
the recording has several.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse, HTMLResponse

from emo_assets.lib.analytics import ann, nearest, similarity
from emo_assets.lib.analytics.arc import Turn, arc_sentence, voice_arc
from emo_assets.lib.audio.guard import RecordingTooLongError, load_mono_16k_capped, no_speech_reason
from emo_assets.lib.audio.load import AudioDecodeError
from emo_assets.lib.results import analyze
from emo_assets.lib.schemas import CUSTOMER, EMOTION_LABELS, MONO
from emo_assets.lib.store import lake, warehouse
from emo_assets.web_guard import GuardMiddleware, WebSettings, redact_access_log, sweep_outputs

SIMILAR_K = 5
DOWNLOADS = (analyze.RESULT_JSON, analyze.EMBEDDING_NPY, analyze.PROCESSED_WAV)
_RUN_NAME = re.compile(r"outputs_\d{8}_\d{6}(_\d+)?")


def create_app(storage, emotion_model, settings: WebSettings | None = None) -> FastAPI:
    """The app for ``storage`` (StorageResource) and ``emotion_model`` (EmotionModelResource), with
    the limits and access token of ``settings`` (default: :class:`WebSettings`' defaults, no token)."""
    settings = settings or WebSettings()
    model = emotion_model.load()  # described now: a bad setting fails here, before the server starts
    loading = _ModelLoading(model)
    outputs = storage.root / "web_outputs"

    async def sweep_every(seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            await asyncio.to_thread(sweep_outputs, outputs, settings.outputs_keep_s)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI):
        loading.start()
        sweep_outputs(outputs, settings.outputs_keep_s)
        sweeper = asyncio.create_task(sweep_every(max(1.0, settings.outputs_keep_s / 4)))
        try:
            yield
        finally:
            sweeper.cancel()

    app = FastAPI(title="emo-assets", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.add_middleware(GuardMiddleware, settings=settings)
    redact_access_log()

    def new_run() -> Path:
        sweep_outputs(outputs, settings.outputs_keep_s)
        return analyze.run_folder(outputs, dt.datetime.now().astimezone())

    def payload(
        run: Path,
        result: dict,
        neighbours: tuple[list[dict], str],
        turns: list[Turn],
        channel: str = MONO,
        other_voices: dict[str, list[Turn]] | None = None,
    ) -> dict:
        files = {name: f"/download/{run.name}/{name}" for name in DOWNLOADS if (run / name).exists()}
        return {
            "id": run.name,
            "result": result,
            "channel": channel,
            "segments": _segments(turns),
            "arc": _arc(turns),
            # the other sides of a two-channel call (the agent's), each with its own timeline and arc
            "other_voices": [
                {"channel": name, "segments": _segments(voice), "arc": _arc(voice)}
                for name, voice in sorted((other_voices or {}).items())
            ],
            "labels": list(EMOTION_LABELS),
            "emoji": analyze.EMOJI,
            "downloads": files,
            "similar": neighbours[0],
            "similar_note": neighbours[1],
        }

    def neighbours_of(
        audio_id: str | None = None, vector: np.ndarray | None = None, model_id: str | None = None
    ) -> tuple[list[dict], str]:
        """The most similar warehouse recordings, and why there are none when none can be compared
        (the result is shown either way)."""
        con = similarity.search_connection(storage.warehouse_path, storage.lake_dir)
        try:
            width = warehouse.embedding_width(con)
            if width is None:
                return [], "no similar recordings: the warehouse has no embeddings yet"
            if audio_id is None and vector.size != width:
                return [], (
                    f"no similar recordings: this model ({model_id}) gives {vector.size}-d embeddings and the "
                    f"warehouse holds {width}-d ones; serve the page with the warehouse's model (--model)"
                )
            try:
                if audio_id is not None:
                    found = nearest.similar_to_audio(con, storage.similarity_dir, audio_id, SIMILAR_K)
                else:
                    found = nearest.similar_to_vector(storage.similarity_dir, vector, SIMILAR_K, model_id=model_id)
            except ann.AnnError as exc:
                return [], f"no similar recordings: {exc}"
            return similarity.describe(con, found), ""
        finally:
            con.close()

    @app.get("/", response_class=HTMLResponse)
    def index() -> str:
        return PAGE

    @app.get("/api/status")
    def status() -> dict:
        return loading.status()

    @app.get("/api/recordings")
    def recordings(limit: int = 200) -> list[dict]:
        con = similarity.search_connection(storage.warehouse_path, storage.lake_dir)
        try:
            columns = warehouse.table_columns(con, "emotion_scores")
            if not columns:
                return []
            with_files = bool(warehouse.table_columns(con, "audio_files"))
            side = _SHOWN_SIDE_ORDER if "channel" in columns else ""
            rows = con.execute(
                "SELECT audio_id, CAST(date AS VARCHAR), emotion FROM emotion_scores "
                f"QUALIFY row_number() OVER (PARTITION BY audio_id ORDER BY date DESC{side}) = 1 "
                "ORDER BY date DESC, audio_id LIMIT ?",
                [limit],
            ).fetchall()
            names = {}
            if with_files and rows:
                names = dict(
                    con.execute(
                        "SELECT audio_id, min(source_path) FROM audio_files WHERE list_contains(?, audio_id) "
                        "GROUP BY audio_id",
                        [[r[0] for r in rows]],
                    ).fetchall()
                )
        finally:
            con.close()
        return [{"audio_id": a, "date": d, "emotion": e, "source_path": names.get(a, a)} for a, d, e in rows]

    @app.post("/api/analyze")
    def analyze_upload(file: UploadFile = File(...), granularity: str = Form("utterance")) -> dict:
        if granularity not in analyze.GRANULARITIES:
            raise HTTPException(400, f"granularity must be one of {', '.join(analyze.GRANULARITIES)}")
        name = Path(file.filename or "upload").name
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / (re.sub(r"[^\w.-]+", "_", name) or "upload")
            with path.open("wb") as out:  # the upload is spooled to disk by the server: copy it in blocks
                shutil.copyfileobj(file.file, out, 1 << 20)
            try:
                wav = load_mono_16k_capped(path, settings.max_upload_s)
            except RecordingTooLongError as exc:
                raise HTTPException(413, str(exc)) from exc
            except AudioDecodeError as exc:
                raise HTTPException(400, f"{name}: cannot decode this recording ({exc})") from exc
        silent = no_speech_reason(wav)
        if silent is not None:
            raise HTTPException(422, f"{name}: {silent}")
        loading.wait()
        try:
            result = analyze.analyze_waveform(
                model, wav, name, granularity, precision=emotion_model.precision, turns=emotion_model.speech_turns
            )
            # neighbours are found with the utterance embedding, the one the lake stores (under turns:
            # the duration-weighted mean over the speech turns)
            utterance = result.embedding[0]
            if granularity == "frame":
                utterance = analyze.analyze_waveform(model, wav, name, turns=emotion_model.speech_turns).embedding[0]
        except analyze.NoSpeechError as exc:
            raise HTTPException(422, str(exc)) from exc
        except analyze.AnalyzeError as exc:
            raise HTTPException(400, str(exc)) from exc
        run = new_run()
        analyze.write_analysis(result, wav, run)
        neighbours = neighbours_of(vector=np.asarray(utterance), model_id=model.model_id)
        return payload(run, result.result(), neighbours, result.arc_turns())

    @app.get("/api/recording/{audio_id}")
    def from_lake(audio_id: str) -> dict:
        found = _warehouse_analysis(storage, audio_id)
        if found is None:
            raise HTTPException(404, f"no recording {audio_id} in the warehouse of {storage.root}")
        found, day, shown, embedding = found
        if found.model_id == model.model_id:  # scored by the served model: its weights are known
            found = dataclasses.replace(found, random_weights=bool(model.is_random))
        run = new_run()
        analyze.write_analysis(found, None, run)
        voices = _lake_voices(storage.lake_dir, day, audio_id, found.model_id)
        turns = voices.pop(shown, [])
        if shown in (CUSTOMER, MONO):  # the side that stands for the call is in the similarity index
            neighbours = neighbours_of(audio_id=audio_id)
        else:  # a call with no customer side: recordings that sound like the side shown
            neighbours = neighbours_of(vector=embedding, model_id=found.model_id)
        return payload(run, found.result(), neighbours, turns, shown, voices)

    @app.get("/download/{run_id}/{name}")
    def download(run_id: str, name: str) -> FileResponse:
        if not _RUN_NAME.fullmatch(run_id) or name not in DOWNLOADS or not (outputs / run_id / name).is_file():
            raise HTTPException(404, "no such result file")
        media = {"json": "application/json", "npy": "application/octet-stream", "wav": "audio/wav"}
        return FileResponse(outputs / run_id / name, filename=name, media_type=media[name.rsplit(".", 1)[1]])

    return app


class _ModelLoading:
    """Loads ``model`` (a LazyEmotionModel) once, in a background thread started with the server."""

    def __init__(self, model) -> None:
        self.model = model
        self.ready = threading.Event()
        self.error: str | None = None
        self.started_at: float | None = None
        self.load_s: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self.started_at = time.monotonic()
            self._thread = threading.Thread(target=self._load, name="emo-web-model-load", daemon=True)
            self._thread.start()

    def _load(self) -> None:
        try:
            self.model.loaded()
            print(
                f"emo web: model {self.model.model_id} ready in {time.monotonic() - self.started_at:.1f} s", flush=True
            )
        except Exception as exc:  # reported on /api/status and to every upload, never swallowed
            self.error = f"the model {self.model.model_id} could not be loaded: {type(exc).__name__}: {exc}"
            print(f"emo web: {self.error}", flush=True)
        finally:
            self.load_s = time.monotonic() - self.started_at
            self.ready.set()

    def wait(self) -> None:
        """Block until the model has loaded; a failed load is a 503 with the reason."""
        self.start()
        self.ready.wait()
        if self.error is not None:
            raise HTTPException(503, self.error)

    def status(self) -> dict:
        state = "loading" if not self.ready.is_set() else ("failed" if self.error else "ready")
        return {
            "state": state,
            "model_id": self.model.model_id,
            "random_weights": bool(self.model.is_random),
            "load_s": None if self.load_s is None else round(self.load_s, 2),
            "error": self.error,
        }


def _segment(start_s: float, end_s: float, scores) -> dict:
    scores = [float(v) for v in scores]
    top = int(np.argmax(scores))
    return {
        "start_s": round(float(start_s), 3),
        "end_s": round(float(end_s), 3),
        "emotion": EMOTION_LABELS[top],
        "confidence": scores[top],
    }


# The side of a recording its newest day is listed by, in SQL (as _shown_channel): the one that
# stands for it (lake.voice_rows: customer, else mono; NULL is mono), else its first side.
_SHOWN_SIDE_ORDER = f", (channel IS NULL OR channel IN ('{MONO}', '{CUSTOMER}')) DESC, channel"


def _arc(turns: list[Turn]) -> dict | None:
    """The emotion arc (lib/analytics/arc.py) of a voice with turns, as the pipeline's
    call_emotion_arc has it, and its sentence (``text``), the words ``emo report`` prints."""
    arc = voice_arc(turns)
    if arc is None:
        return None
    fields = dataclasses.asdict(arc)
    return {**fields, "text": arc_sentence(fields, name=lambda e: f"{analyze.EMOJI[e]} {e}")}


def _segments(turns: list[Turn]) -> list[dict]:
    return [{**_segment(t.start_s, t.end_s, t.scores), "turn": t.turn} for t in turns]


def _lake_voices(lake_dir: Path, day: str, audio_id: str, model_id: str) -> dict[str, list[Turn]]:
    """A warehouse recording's ``emotion_segments`` rows of ``day`` (its newest), in time order, per
    channel (one ``mono`` voice, or the sides of a two-channel call; rows written before channels
    existed are mono)."""
    rows = lake.read_partition(lake_dir, "emotion_segments", day)
    if rows is None:
        return {}
    rows = rows.filter(
        pc.and_(pc.equal(rows.column("audio_id"), audio_id), pc.equal(rows.column("model_id"), model_id))
    )
    if rows.num_rows == 0:
        return {}
    rows = rows.sort_by([("start_s", "ascending")])
    voices: dict[str, list[dict]] = {}
    for r in rows.to_pylist():
        voices.setdefault(r.get("channel") or MONO, []).append(r)
    return {
        channel: [
            Turn(
                r.get("turn") if r.get("turn") is not None else i,
                r["start_s"],
                r["end_s"],
                tuple(r[e] for e in EMOTION_LABELS),
            )
            for i, r in enumerate(voice)
        ]
        for channel, voice in voices.items()
    }


# One query filtered on audio_id: DuckDB reads every day file's footer and audio_id Bloom filter
# (lake.BLOOM_FILTERS), and the rows only of the days the filter does not rule out.
NEWEST_DAY_SQL = "SELECT CAST(max(date) AS VARCHAR) FROM emotion_scores WHERE audio_id = ?"


def _newest_day(storage, audio_id: str) -> str | None:
    """The newest day ``audio_id`` has scores on, asked of the warehouse (its read copy; an in-memory
    DuckDB over the lake before the first pipeline run) with :data:`NEWEST_DAY_SQL`."""
    con = similarity.search_connection(storage.warehouse_path, storage.lake_dir)
    try:
        if not warehouse.table_columns(con, "emotion_scores"):
            return None
        row = con.execute(NEWEST_DAY_SQL, [audio_id]).fetchone()
    finally:
        con.close()
    return row[0] if row else None


def _shown_channel(channels: list[str | None]) -> str | None:
    """The side of a recording the page shows first: the one that stands for it (lake.voice_rows: the
    customer's, else mono; NULL is mono), else the first of the sides it has (a call whose config names
    only an agent)."""
    present = {c or MONO for c in channels}
    return next((c for c in (CUSTOMER, MONO) if c in present), min(present, default=None))


def _warehouse_analysis(storage, audio_id: str) -> tuple[analyze.Analysis, str, str, np.ndarray] | None:
    """A warehouse recording's newest scores and embedding, as an Analysis, its day, the channel they
    are of (:func:`_shown_channel`) and that channel's embedding: the day comes from the warehouse,
    then only that day's lake files are read."""
    day = _newest_day(storage, audio_id)
    if day is None:
        return None
    lake_dir = storage.lake_dir

    def of_day(table: str) -> pa.Table | None:
        rows = lake.read_partition(lake_dir, table, day)
        return None if rows is None else rows.filter(pc.equal(rows.column("audio_id"), audio_id))

    def of_channel(rows: pa.Table | None, channel: str) -> pa.Table | None:
        if rows is None or "channel" not in rows.column_names:
            return rows
        return rows.filter(pc.equal(pc.fill_null(rows.column("channel"), MONO), channel))

    scores, embeddings, files = of_day("emotion_scores"), of_day("emotion_embeddings"), of_day("audio_files")
    if scores is None or scores.num_rows == 0 or embeddings is None:
        return None
    channels = scores.column("channel").to_pylist() if "channel" in scores.column_names else [None]
    shown = _shown_channel(channels)
    scores, embeddings = of_channel(scores, shown), of_channel(embeddings, shown)
    if embeddings.num_rows == 0:
        return None
    row = scores.slice(0, 1).to_pylist()[0]
    name, duration = audio_id, 0.0
    if files is not None and files.num_rows:
        name = Path(files.column("source_path")[0].as_py()).name
        duration = float(files.column("duration_s")[0].as_py() or 0.0)
    found = analyze.Analysis(
        audio_name=name,
        duration_s=duration,
        emotion=row["emotion"],
        confidence=float(row["confidence"]),
        scores={label: float(row[label]) for label in EMOTION_LABELS},
        embedding=lake.embedding_matrix(embeddings)[:1],
        granularity="utterance",
        model_id=row["model_id"],
        random_weights=None,
        timestamp=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    return found, day, shown, lake.embedding_matrix(embeddings)[0]


def serve(
    storage, emotion_model, host: str = "127.0.0.1", port: int = 7860, settings: WebSettings | None = None
) -> int:
    """Serve the page; on an address other than loopback only with an access token (WebSettingError)."""
    import uvicorn

    settings = settings if settings is not None else WebSettings.from_env(os.environ)  # read at launch
    settings.check_host(host)
    print(
        f"emo web: http://{host}:{port}  (data in {storage.root}, model {emotion_model.model}, "
        f"precision {emotion_model.precision}); the model loads in the background; "
        f"uploads up to {settings.max_upload_bytes / 1024 / 1024:g} MB and {settings.max_upload_s:g} s; "
        f"results kept {settings.outputs_keep_s:g} s; access token {'required' if settings.token else 'off'}"
    )
    uvicorn.run(create_app(storage, emotion_model, settings), host=host, port=port, log_level="warning")
    return 0


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>emo-assets: speech emotion</title>
<style>
 body{font-family:sans-serif;max-width:46em;margin:2em auto;padding:0 1em}
 .bar{display:flex;align-items:center;margin:2px 0} .bar .name{width:9em} .bar .value{width:4em;text-align:right}
 .bar .track{flex:1;background:#eee;height:1.1em;margin:0 .5em} .bar .fill{background:#4a7bd0;height:100%}
 table{border-collapse:collapse} td,th{padding:2px 8px;text-align:left} #error{color:#b00}
 fieldset{margin-bottom:1em}
 #model-status{padding:.4em .7em;border-radius:4px;background:#eef3fb}
 #model-status.loading{background:#fff6d6} #model-status.failed{background:#fde2e2;color:#b00}
 .warning{background:#fde2e2;color:#900;border:1px solid #d99;padding:.4em .7em;font-weight:bold}
 #timeline svg{width:100%;height:auto;display:block} #timeline .legend span{margin-right:1em;white-space:nowrap}
 #timeline .swatch{display:inline-block;width:.8em;height:.8em;margin-right:.2em}
 #timeline rect.peak{stroke:#000;stroke-width:2} #arc{margin:.3em 0}
</style></head>
<body>
<h1>Speech emotion</h1>
<p id="model-status" class="loading" role="status">Model loading…</p>
<fieldset><legend>Upload a recording</legend>
 <form id="upload-form"><input type="file" id="file" name="file" accept="audio/*">
 <select id="granularity" name="granularity"><option>utterance</option><option>frame</option></select>
 <button type="submit" id="analyze" disabled>Analyze</button></form></fieldset>
<fieldset><legend>or pick one from the warehouse</legend>
 <select id="recording"></select> <button id="show" type="button">Show</button></fieldset>
<p id="status"></p><p id="error"></p>
<div id="result" hidden>
 <h2 id="emotion"></h2><p>confidence <span id="confidence"></span> · model <span id="model"></span></p>
 <p id="random-warning" class="warning" hidden></p>
 <div id="bars"></div>
 <p id="player-box" hidden><audio id="player" controls preload="metadata"></audio></p>
 <div id="timeline" hidden><h3>Emotion timeline</h3><div id="timeline-chart"></div><p class="legend"></p></div>
 <p id="arc"></p>
 <div id="voices"></div>
 <p><a id="download-json" download>result.json</a> · <a id="download-npy" download>embedding.npy</a>
 <span id="download-wav-box"> · <a id="download-wav" download>processed_audio.wav</a></span></p>
 <h3>Most similar recordings</h3>
 <p id="similar-note"></p>
 <table id="similar"><thead><tr><th>#</th><th>similarity</th><th>recording</th><th>emotion</th><th>date</th></tr></thead>
 <tbody></tbody></table>
</div>
<script>
const $ = (id) => document.getElementById(id);
const COLORS = {angry:"#d62728", disgusted:"#8c564b", fearful:"#9467bd", happy:"#f5b800", neutral:"#9e9e9e",
  other:"#17becf", sad:"#1f77b4", surprised:"#ff7f0e", unknown:"#444444"};
const RANDOM_WARNING = "⚠ This model has RANDOM weights: its emotions are meaningless. Set EMO_MODEL to a trained model.";
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}
function timeline(data) {
  const segs = data.segments || [];
  const box = $("timeline"), chart = $("timeline-chart"); chart.innerHTML = "";
  box.querySelector(".legend").innerHTML = "";
  box.querySelector("h3").textContent = "Emotion timeline" + (data.channel && data.channel !== "mono" ? ` (${data.channel})` : "");
  arc(data);
  voices(data);
  if (segs.length < 2) { box.hidden = true; return; }
  chart.appendChild(timelineChart(segs, data.arc, data.emoji));
  for (const e of [...new Set(segs.map((s) => s.emotion))]) {
    const span = document.createElement("span");
    span.innerHTML = '<span class="swatch"></span>'; span.firstChild.style.background = COLORS[e];
    span.appendChild(document.createTextNode(data.emoji[e] + " " + e)); box.querySelector(".legend").appendChild(span);
  }
  box.hidden = false;
}
function voices(data) {
  // the other sides of a two-channel call: a timeline and an arc each
  const box = $("voices"); box.innerHTML = "";
  for (const v of data.other_voices || []) {
    const div = document.createElement("div"); div.className = "voice"; div.dataset.channel = v.channel;
    const h = document.createElement("h3"); h.textContent = `Emotion timeline (${v.channel})`; div.appendChild(h);
    if (v.segments.length) div.appendChild(timelineChart(v.segments, v.arc, data.emoji));
    const p = document.createElement("p"); p.className = "voice-arc"; p.textContent = arcText(v.arc);
    div.appendChild(p); box.appendChild(div);
  }
}
function timelineChart(segs, a, emoji) {
  const end = Math.max(...segs.map((s) => s.end_s)), W = 600, H = 40, top = 4;
  const chartSvg = svg("svg", {viewBox: `0 0 ${W} ${H + 22}`, role: "img", "aria-label": "emotion per window"});
  segs.forEach((s, i) => {
    // overlapping windows meet half-way through their overlap, so the bars tile the recording
    const from = i ? (Math.max(segs[i - 1].end_s, s.start_s) + s.start_s) / 2 : s.start_s;
    const to = i < segs.length - 1 ? (Math.min(segs[i + 1].start_s, s.end_s) + s.end_s) / 2 : s.end_s;
    const x = (from / end) * W, w = Math.max(1, ((to - from) / end) * W);
    const rect = svg("rect", {class: "segment", x: x.toFixed(2), y: top, width: w.toFixed(2), height: H - top,
      fill: COLORS[s.emotion] || "#000", "fill-opacity": (0.35 + 0.65 * s.confidence).toFixed(2), stroke: "#fff"});
    rect.dataset.emotion = s.emotion; rect.dataset.start = s.start_s; rect.dataset.end = s.end_s;
    rect.dataset.turn = s.turn;
    if (a && s.turn === a.peak_turn) rect.classList.add("peak");
    const title = svg("title", {});
    title.textContent = `${s.start_s.toFixed(1)}–${s.end_s.toFixed(1)} s: ${emoji[s.emotion]} ${s.emotion} (${s.confidence.toFixed(3)})`;
    rect.appendChild(title); chartSvg.appendChild(rect);
  });
  const ticks = 5;
  for (let i = 0; i <= ticks; i++) {
    const t = (end * i) / ticks, x = Math.min(W - 14, Math.max(14, (t / end) * W));
    const label = svg("text", {x: x.toFixed(1), y: H + 16, "text-anchor": "middle", "font-size": 11});
    label.textContent = t.toFixed(1) + " s"; chartSvg.appendChild(label);
  }
  return chartSvg;
}
function arc(data) {
  // the emotion arc: where the voice started and ended, its most negative turn (outlined), the recovery
  const a = data.arc, el = $("arc"); el.textContent = ""; for (const k in el.dataset) delete el.dataset[k];
  if (!a) return;
  el.textContent = arcText(a);
  Object.assign(el.dataset, {start: a.start_emotion, end: a.end_emotion, peak: a.peak_emotion,
    peakStart: a.peak_start_s, recovered: String(a.recovered), calmer: String(a.ended_calmer)});
}
function arcText(a) {
  return a ? a.text : "";  // the server's words (lib/analytics/arc.py), the ones `emo report` prints
}
function pollStatus() {
  fetch("/api/status").then((r) => r.json()).then((st) => {
    const el = $("model-status");
    el.className = st.state;
    if (st.state === "loading") {
      el.textContent = "Model loading… (" + st.model_id + "): uploads wait until it is ready";
      setTimeout(pollStatus, 1000);
    } else if (st.state === "ready") {
      el.textContent = "Model ready: " + st.model_id + (st.random_weights ? " (RANDOM weights)" : "");
      $("analyze").disabled = false;
    } else {
      el.textContent = st.error;
    }
  }).catch(() => setTimeout(pollStatus, 2000));
}
pollStatus();
function show(data) {
  const r = data.result;
  $("error").textContent = ""; $("status").textContent = "";
  $("emotion").textContent = data.emoji[r.emotion] + " " + r.emotion;
  $("confidence").textContent = r.confidence.toFixed(3);
  $("model").textContent = r.model_id;
  $("random-warning").textContent = r.random_weights ? RANDOM_WARNING : "";
  $("random-warning").hidden = !r.random_weights;
  const bars = $("bars"); bars.innerHTML = "";
  for (const label of data.labels) {
    const v = r.scores[label];
    const row = document.createElement("div"); row.className = "bar"; row.dataset.label = label;
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>';
    row.querySelector(".name").textContent = data.emoji[label] + " " + label;
    row.querySelector(".fill").style.display = "block";
    row.querySelector(".fill").style.width = (100 * v).toFixed(1) + "%";
    row.querySelector(".value").textContent = v.toFixed(3);
    bars.appendChild(row);
  }
  $("download-json").href = data.downloads["result.json"];
  $("download-npy").href = data.downloads["embedding.npy"];
  const wav = data.downloads["processed_audio.wav"];
  if (wav) { $("player").src = wav; } else { $("player").removeAttribute("src"); }
  $("player-box").hidden = !wav; $("download-wav-box").hidden = !wav;
  if (wav) $("download-wav").href = wav;
  timeline(data);
  const body = $("similar").querySelector("tbody"); body.innerHTML = "";
  for (const n of data.similar) {
    const tr = document.createElement("tr");
    for (const v of [n.rank, n.similarity.toFixed(4), n.source_path || n.audio_id, n.emotion || "", n.date]) {
      const td = document.createElement("td"); td.textContent = v; tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  $("similar-note").textContent = data.similar_note;
  $("result").hidden = false;
}
async function call(promise) {
  $("status").textContent = "working..."; $("error").textContent = "";
  const resp = await promise;
  const data = await resp.json();
  if (!resp.ok) { $("status").textContent = ""; $("error").textContent = data.detail || resp.statusText; return; }
  show(data);
}
$("upload-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (!$("file").files.length) { $("error").textContent = "choose a file first"; return; }
  const form = new FormData(); form.append("file", $("file").files[0]); form.append("granularity", $("granularity").value);
  call(fetch("/api/analyze", {method: "POST", body: form}));
});
$("show").addEventListener("click", () => {
  if ($("recording").value) call(fetch("/api/recording/" + encodeURIComponent($("recording").value)));
});
fetch("/api/recordings").then((r) => r.json()).then((rows) => {
  for (const r of rows) {
    const o = document.createElement("option"); o.value = r.audio_id;
    o.textContent = r.source_path + " (" + r.date + ", " + r.emotion + ")"; $("recording").appendChild(o);
  }
});
</script>
</body></html>
"""
