"""`emo` commands for working with results: analyze, similar, report, export, web.

Each command gets its storage and model from ``definitions.resources_from_env`` (the EMO_* variables,
then the command's options), so it sees the same data and model as the pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _resources(args: argparse.Namespace) -> dict:
    from emo_assets.definitions import resources_from_env

    return resources_from_env(
        model=getattr(args, "model", None),
        device=getattr(args, "device", None),
        precision=getattr(args, "precision", None),
        data_dir=getattr(args, "data_dir", None),
    )


def _fail(message: str) -> int:
    print(f"emo: error: {message}", file=sys.stderr)
    return 2


def _random_note(model) -> None:
    if model.is_random:
        print(
            f"NOTE: model {model.model_id} has RANDOM weights; its emotions are meaningless (set EMO_MODEL).",
            file=sys.stderr,
        )


def analyze_cmd(args: argparse.Namespace) -> int:
    from emo_assets.lib.results.analyze import EMOJI, RESULT_JSON, analyze_files

    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        return _fail(f"no such file: {', '.join(missing)}")
    layout = None
    if args.channels:
        from emo_assets.lib.audio.channels import ChannelConfigError, parse_spec

        try:
            layout = parse_spec(args.channels)
        except ChannelConfigError as exc:
            return _fail(str(exc))
    emotion_model = _resources(args)["emotion_model"]
    model = emotion_model.load()
    _random_note(model)
    run, done, failed = analyze_files(
        model,
        [Path(f) for f in args.files],
        Path(args.out),
        args.granularity,
        not args.no_embedding,
        precision=emotion_model.precision,
        turns=(args.segments or emotion_model.segments) == "turns",
        channels=layout,
    )
    for path, folder in done:
        result = json.loads((folder / RESULT_JSON).read_text(encoding="utf-8"))
        print(f"{path}: {EMOJI[result['emotion']]} {result['emotion']} ({result['confidence']:.3f}) -> {folder}")
    for path, reason in failed:
        print(f"{path}: FAILED: {reason}", file=sys.stderr)
    if done:
        print(f"outputs in {run}")
    return 1 if failed else 0


def similar_cmd(args: argparse.Namespace) -> int:
    from emo_assets.lib.analytics import nearest, similarity
    from emo_assets.lib.store import warehouse

    resources = _resources(args)
    storage = resources["storage"]
    con = similarity.search_connection(storage.warehouse_path, storage.lake_dir)
    try:
        if warehouse.embedding_width(con) is None:
            return _fail(f"no emotion_embeddings under {storage.lake_dir}: run `emo run --date DAY` first")
        target = Path(args.target)
        if target.is_file():
            from emo_assets.lib.audio.load import AudioDecodeError, load_mono_16k
            from emo_assets.lib.results.analyze import analyze_waveform

            emotion_model = resources["emotion_model"]
            model = emotion_model.load()
            _random_note(model)
            try:
                # the embedding the lake stores: under turns, the duration-weighted mean over the speech turns
                wav = load_mono_16k(target)
                vector = analyze_waveform(model, wav, target.name, turns=emotion_model.speech_turns).embedding[0]
                neighbours = nearest.similar_to_vector(
                    storage.similarity_dir, vector, args.k, model_id=model.model_id, date_from=args.date_from
                )
            except (AudioDecodeError, ValueError) as exc:
                return _fail(f"{target}: {exc}")
            what = f"file {target} (embedded with {model.model_id}, {resources['emotion_model'].precision})"
        else:
            known = con.execute("SELECT count(*) FROM emotion_embeddings WHERE audio_id = ?", [args.target]).fetchone()[
                0
            ]
            if not known:
                return _fail(f"{args.target!r} is neither a file nor an audio_id in {storage.lake_dir}")
            try:
                neighbours = nearest.similar_to_audio(
                    con, storage.similarity_dir, args.target, args.k, date_from=args.date_from
                )
            except ValueError as exc:  # ann.AnnError: no index for the model, a bad k or day
                return _fail(str(exc))
            what = f"audio_id {args.target}"
        rows = similarity.describe(con, neighbours)
    finally:
        con.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{len(rows)} nearest recordings to {what} (cosine similarity):")
    for r in rows:
        print(
            f"{r['rank']:>3}  {r['similarity']:+.4f}  {r['date']}  {r['audio_id'][:16]}  "
            f"{r['emotion'] or '-':<10}  {r['source_path'] or ''}"
        )
    return 0


def report_cmd(args: argparse.Namespace) -> int:
    from emo_assets.lib.results.report import ReportError, write_day_report
    from emo_assets.partitions import validate_day

    validate_day(args.date)
    storage = _resources(args)["storage"]
    try:
        report = write_day_report(storage.lake_dir, storage.models_dir, storage.reports_dir, args.date)
    except ReportError as exc:
        return _fail(str(exc))
    print(f"wrote {report.html_path}")
    for png in report.pngs:
        print(f"  {png}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def export_cmd(args: argparse.Namespace) -> int:
    from emo_assets.lib.results.export import ExportError, export_day
    from emo_assets.partitions import validate_day

    validate_day(args.date)
    storage = _resources(args)["storage"]
    out = Path(args.out) if args.out else storage.root / "exports" / args.date
    try:
        paths = export_day(storage.lake_dir, args.date, out, args.format)
    except ExportError as exc:
        return _fail(str(exc))
    for path in paths:
        print(path)
    return 0


def web_cmd(args: argparse.Namespace) -> int:
    try:
        from emo_assets.web import serve
    except ImportError as exc:
        return _fail(f"the web page needs the [web] extra ({exc}); install it: pip install -e '.[web]'")
    from emo_assets.web_guard import WebSettingError

    resources = _resources(args)
    try:
        return serve(resources["storage"], resources["emotion_model"], host=args.host, port=args.port)
    except WebSettingError as exc:
        return _fail(str(exc))


def _common(p: argparse.ArgumentParser, model: bool = False) -> None:
    p.add_argument("--data-dir", help="data directory (default: EMO_DATA_DIR or ./data)")
    if model:
        p.add_argument("--model", help="hub id or local model directory (default: EMO_MODEL)")
        p.add_argument("--device", help="auto, cpu or cuda (default: EMO_DEVICE or auto)")
        p.add_argument(
            "--precision",
            help="fp32, or int8 on CPU (default: EMO_PRECISION or fp32); use the pipeline's for its vectors",
        )


def add_result_commands(sub: argparse._SubParsersAction) -> None:
    """Register the result commands on the `emo` parser (each sets ``handler``)."""
    p = sub.add_parser("analyze", help="WebUI-style outputs for recordings: result.json, embedding.npy, wav")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--granularity", choices=["utterance", "frame"], default="utterance")
    p.add_argument("--no-embedding", action="store_true", help="do not write embedding.npy")
    p.add_argument(
        "--segments",
        choices=["turns", "windows"],
        help="score speech turns (silence left out; result.json lists the turns) or the whole file in fixed "
        "windows (default: EMO_SEGMENTS or turns)",
    )
    p.add_argument(
        "--channels",
        metavar="VOICE=SIDE,...",
        help="a two-channel file's voices, e.g. agent=left,customer=right: each side analysed on its own, "
        "into a subfolder per channel (files whose sides are identical stay one recording)",
    )
    p.add_argument("--out", default="outputs", help="folder for outputs_YYYYMMDD_HHMMSS/ (default: outputs)")
    _common(p, model=True)
    p.set_defaults(handler=analyze_cmd)

    p = sub.add_parser("similar", help="the recordings nearest to an audio_id or a file (cosine similarity)")
    p.add_argument("target", metavar="AUDIO_ID_OR_FILE")
    p.add_argument("-k", type=int, default=5, help="how many neighbours (default 5)")
    p.add_argument("--date-from", help="only recordings of this day (YYYY-MM-DD) or later")
    p.add_argument("--json", action="store_true", help="print JSON")
    _common(p, model=True)
    p.set_defaults(handler=similar_cmd)

    p = sub.add_parser("report", help="an HTML page (and PNGs) of a day's emotions, clusters and timelines")
    p.add_argument("--date", required=True, help="the day, YYYY-MM-DD")
    _common(p)
    p.set_defaults(handler=report_cmd)

    p = sub.add_parser("export", help="a day's embeddings and scores as npy (+ index), parquet or csv")
    p.add_argument("--date", required=True, help="the day, YYYY-MM-DD")
    p.add_argument("--format", choices=["npy", "parquet", "csv"], default="npy")
    p.add_argument("--out", help="output folder (default: <data>/exports/<date>)")
    _common(p)
    p.set_defaults(handler=export_cmd)

    p = sub.add_parser("web", help="a small web page: upload a recording, see its emotions and neighbours")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    _common(p, model=True)
    p.set_defaults(handler=web_cmd)
