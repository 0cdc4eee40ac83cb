"""Benchmark: funasr AutoModel.generate against our engine (EmotionModel), in one run, same clips.

    .venv/bin/python benchmarks/bench_inference.py [--model-dir DIR] [--clips 40] [--long-s 600]

Builds the emotion2vec+ large random model (make_test_model size "large": the published plus_large
config, 162 M parameters; cached in --model-dir, rebuilt if the cached config differs),
makes a fixed set of clips (seeded; 1-15 s) and one long recording, then:

1. in this process, for groups of 8 clips, runs funasr generate (ncpu = the cores available, and funasr's
   default ncpu=4), our engine in fp32 (per-clip policy), our engine with masked padded batches
   (for information: the CPU policy choice), and int8 - in a rotating order per group so load
   from other processes hits every system alike; reports x real-time,
   ratios against funasr and parity (ours vs funasr; int8 vs our fp32);
2. in a subprocess per precision, the long recording through our engine (30 s windows): x real-time
   and peak RSS, the peak counter reset after loading so the model load is reported apart;
3. funasr generate on the long recording, in a subprocess with an 8 GB address-space limit (its
   whole-file attention needs far more; the limit makes it fail cleanly instead of swapping).

Prints a markdown report and writes JSON (--json). Not a timed test. ``--only-long --window-s 15``
repeats step 2 with another window; ``--profile`` prints a single-thread op profile of one 8 s clip.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/funasr_reference.py

from common import cpu_model  # this script's folder is on sys.path

from tests.funasr_reference import funasr_auto_model

SR = 16_000
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# ---------------------------------------------------------------- inputs


def synth_clip(seconds: float, seed: int) -> np.ndarray:
    """Speech-like test signal: voiced harmonics with a gliding pitch, syllable envelope, noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    t = np.arange(n) / SR
    f0 = rng.uniform(90, 260) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.2, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t + rng.uniform(0, 6)), 0, None) ** 2
    wave = 0.3 * voiced * envelope + rng.normal(0, 0.01 + 0.02 * rng.random(), n)
    return wave.astype(np.float32)


def make_clips(count: int) -> list[np.ndarray]:
    rng = np.random.default_rng(2024)
    return [synth_clip(float(rng.uniform(1.0, 15.0)), seed=i) for i in range(count)]


def make_long(seconds: float) -> np.ndarray:
    parts, total, i = [], 0.0, 0
    while total < seconds:
        length = min(7.0 + (i % 5) * 3.0, seconds - total)
        parts.append(synth_clip(length, seed=1000 + i))
        total += length
        i += 1
    return np.concatenate(parts)[: int(seconds * SR)]


def ensure_model(model_dir: Path) -> Path:
    """The large random model in ``model_dir``, (re)built unless its config is today's large config.

    A directory cached by an older version (e.g. the former 24-block "large") is rebuilt, so a
    benchmark never measures a stale architecture.
    """
    from emo_assets.lib.model.model_dir import make_test_model, model_config, read_config

    try:
        current = (model_dir / "model.pt").is_file() and read_config(model_dir) == model_config("large")
    except Exception:  # missing or unreadable config.yaml: rebuild
        current = False
    if not current:
        print(f"building the large random model in {model_dir} ...", flush=True)
        make_test_model(model_dir, size="large", seed=0)
    return model_dir


# ---------------------------------------------------------------- measurements


def rss_mb() -> dict[str, float]:
    """Current and peak resident set size of this process (MB), from /proc/self/status."""
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"]), "peak_rss_mb": round(fields["VmHWM"])}


def reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def short_clips(
    model_dir: Path, clips: list[np.ndarray], threads: int, group_size: int = 8, skip: tuple[str, ...] = ()
) -> dict:
    import torch

    from emo_assets.lib.model.engine import EmotionModel
    from emo_assets.lib.model.settings import ModelSettings, torch_threads

    auto = funasr_auto_model(model_dir, threads)
    torch.set_num_threads(threads)  # funasr sets ncpu itself; make it explicit
    module = auto.model
    engines = {
        "ours_fp32": EmotionModel(module, ModelSettings(device="cpu", threads=threads)),
        "ours_masked": EmotionModel(
            module, ModelSettings(device="cpu", batch_policy="masked", max_batch_s=8 * 8, threads=threads)
        ),
        "ours_int8": EmotionModel(module, ModelSettings(device="cpu", precision="int8", threads=threads)),
    }

    def funasr_all(group):
        out = []
        for clip in group:  # generate scores one recording per call
            res = auto.generate(clip, granularity="utterance", extract_embedding=True)[0]
            out.append((np.asarray(res["feats"]), np.asarray(res["scores"], dtype=np.float32)))
        return out

    def funasr_default_threads(group):
        # AutoModel's default ncpu is 4 whatever the machine; this is funasr as shipped.
        with torch_threads(4):
            return funasr_all(group)

    def engine_all(name):
        def run(group):
            return [(o.embedding, o.scores) for o in engines[name].infer(group)]

        return run

    systems = {
        "funasr": funasr_all,
        "funasr_ncpu4_default": funasr_default_threads,
        **{name: engine_all(name) for name in engines},
    }
    systems = {name: run for name, run in systems.items() if name not in skip}
    warm = [synth_clip(2.0, seed=99)]
    for run in systems.values():
        run(warm)
    # Groups of clips, systems in a rotating order per group: load from other processes and the
    # cost of switching thread settings between systems hit every system alike.
    groups = [clips[i : i + group_size] for i in range(0, len(clips), group_size)]
    seconds = {name: 0.0 for name in systems}
    cpu_seconds = {name: 0.0 for name in systems}
    per_group = []
    outputs = {name: [] for name in systems}
    names = list(systems)
    for g, group in enumerate(groups):
        order = names[g % len(names) :] + names[: g % len(names)]
        row = {}
        for name in order:
            start, cpu_start = time.perf_counter(), time.process_time()
            outputs[name].extend(systems[name](group))
            row[name] = time.perf_counter() - start
            seconds[name] += row[name]
            cpu_seconds[name] += time.process_time() - cpu_start
        per_group.append({k: round(v, 2) for k, v in row.items()})
        print(f"  group {g + 1}/{len(groups)} seconds: {json.dumps(per_group[-1])}", flush=True)

    audio_s = sum(len(c) for c in clips) / SR
    ref = outputs["funasr"]
    report = {"audio_s": round(audio_s, 1), "systems": {}}
    for name, secs in seconds.items():
        ratios = [g["funasr"] / g[name] for g in per_group]
        report["systems"][name] = {
            "seconds": round(secs, 1),
            "x_realtime": round(audio_s / secs, 2),
            "ratio_vs_funasr": round(seconds["funasr"] / secs, 2),
            "median_group_ratio": round(float(np.median(ratios)), 2),
            "cpu_s_per_audio_s": round(cpu_seconds[name] / audio_s, 3),
            "cpu_ratio_vs_funasr": round(cpu_seconds["funasr"] / cpu_seconds[name], 2),
        }
    report["per_group_seconds"] = per_group

    def parity(outs, against):
        emb = max(float(np.abs(a[0] - b[0]).max()) for a, b in zip(outs, against, strict=True))
        sc = max(float(np.abs(a[1] - b[1]).max()) for a, b in zip(outs, against, strict=True))
        top = sum(int(np.argmax(a[1]) == np.argmax(b[1])) for a, b in zip(outs, against, strict=True))
        cos = min(cosine(a[0], b[0]) for a, b in zip(outs, against, strict=True))
        return {"max_abs_embedding": emb, "max_abs_score": sc, "top1_agree": f"{top}/{len(outs)}", "min_cosine": cos}

    report["parity_vs_funasr"] = {
        name: parity(outputs[name], ref) for name in ("ours_fp32", "ours_masked") if name in systems
    }
    if "ours_int8" in systems:
        report["int8_vs_fp32"] = parity(outputs["ours_int8"], outputs["ours_fp32"])
    report["process"] = rss_mb()
    return report


def long_child(model_dir: Path, seconds: float, precision: str, threads: int, window_s: float = 30.0) -> dict:
    """Run in a subprocess: the long recording through our engine; peak RSS apart from loading."""
    import gc

    from emo_assets.lib.model.engine import EmotionModel
    from emo_assets.lib.model.settings import ModelSettings

    wave = make_long(seconds)
    auto = funasr_auto_model(model_dir, threads)
    settings = ModelSettings(device="cpu", precision=precision, threads=threads, window_s=window_s)
    engine = EmotionModel(auto.model, settings)
    del auto
    gc.collect()
    engine.infer([synth_clip(2.0, seed=99)])
    short = make_clips(16)[::2]  # 8 of the short clips: the same-process reference rate
    short_s = sum(len(c) for c in short) / SR
    after_load = rss_mb()
    reset_peak_rss()

    def timed(call):
        start, cpu_start = time.perf_counter(), time.process_time()
        result = call()
        return result, time.perf_counter() - start, time.process_time() - cpu_start

    # Short clips just before and just after the long recording: the same-process reference.
    _, before_s, before_cpu = timed(lambda: engine.infer(short[:4]))
    out, elapsed, cpu = timed(lambda: engine.infer([wave])[0])
    _, after_s, after_cpu = timed(lambda: engine.infer(short[4:]))
    short_elapsed, short_cpu = before_s + after_s, before_cpu + after_cpu
    return {
        "precision": precision,
        "audio_s": seconds,
        "window_s_setting": window_s,
        "windows": len(out.segments),
        "window_s": round(out.segments[0].end_s - out.segments[0].start_s, 2),
        "seconds": round(elapsed, 1),
        "x_realtime": round(seconds / elapsed, 2),
        "cpu_s_per_audio_s": round(cpu / seconds, 3),
        "short_clips_x_realtime": round(short_s / short_elapsed, 2),
        "short_clips_cpu_s_per_audio_s": round(short_cpu / short_s, 3),
        "long_vs_short_rate": round((seconds / elapsed) / (short_s / short_elapsed), 2),
        "long_vs_short_cpu_rate": round((short_cpu / short_s) / (cpu / seconds), 2),
        "rss_after_load_mb": after_load["rss_mb"],
        "peak_rss_during_inference_mb": rss_mb()["peak_rss_mb"],
        "peak_rss_including_load_mb": max(after_load["peak_rss_mb"], rss_mb()["peak_rss_mb"]),
    }


def funasr_long_child(model_dir: Path, seconds: float, threads: int) -> dict:
    limit = 8 * 1024**3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    wave = make_long(seconds)
    auto = funasr_auto_model(model_dir, threads)
    start = time.perf_counter()
    try:
        auto.generate(wave, granularity="utterance")
        return {"ok": True, "seconds": round(time.perf_counter() - start, 1)}
    except Exception as exc:  # the point of this run is to record how it fails
        return {
            "ok": False,
            "after_s": round(time.perf_counter() - start, 1),
            "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
        }


def profile_forwards(model_dir: Path) -> None:
    """Single-thread op profile of one 8 s clip: funasr's forward, ours fp32, ours int8."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from emo_assets.lib.model.engine import EmotionModel
    from emo_assets.lib.model.masked_forward import encode
    from emo_assets.lib.model.settings import ModelSettings

    module = funasr_auto_model(model_dir, 1).model
    torch.set_num_threads(1)
    wave = torch.from_numpy(synth_clip(8.0, seed=7))
    lengths = torch.tensor([len(wave)])
    int8 = EmotionModel(module, ModelSettings(device="cpu", precision="int8", threads=1))

    def funasr_forward():
        with torch.no_grad():
            source = torch.nn.functional.layer_norm(wave, wave.shape).view(1, -1)
            return module.extract_features(source, padding_mask=None)["x"]

    def ours(mod, gemms=None):
        def run():
            with torch.inference_mode():
                return encode(mod, wave.view(1, -1), lengths, gemms)[0]

        return run

    products = {"aten::addmm", "aten::mkldnn_convolution", "aten::bmm", "aten::mm", "quantized::linear_dynamic"}
    for name, run in [
        ("funasr", funasr_forward),
        ("ours_fp32", ours(module)),
        ("ours_int8", ours(int8.module, int8.conv_gemms)),
    ]:
        run()
        best = None
        for _ in range(3):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            events = prof.key_averages()
            total = sum(e.self_cpu_time_total for e in events) / 1e6
            if best is None or total < best[0]:
                best = (total, events)
        total, events = best
        matmul = sum(e.self_cpu_time_total for e in events if e.key in products) / 1e6
        top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:8]
        print(
            f"{name}: {total:.3f} s for 8 s of audio = {8 / total:.2f}x real-time per core; "
            f"matmul+conv {matmul:.3f} s ({100 * matmul / total:.0f}%)"
        )
        print("   " + "; ".join(f"{e.key} {e.self_cpu_time_total / 1e6:.3f}s/{e.count}" for e in top))


def run_child(args: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {"ok": False, "returncode": proc.returncode, "stderr_tail": proc.stderr[-800:]}


# ---------------------------------------------------------------- report


def machine() -> dict:
    import funasr
    import torch

    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu": cpu_model(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1),
        "torch": torch.__version__,
        "funasr": funasr.__version__,
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
    }


def markdown(result: dict) -> str:
    s = result["short"]
    lines = [
        f"Short clips: {len(result['clip_seconds'])} clips, {s['audio_s']} s of audio "
        f"({min(result['clip_seconds']):.1f}-{max(result['clip_seconds']):.1f} s each)",
        "",
        "| system | seconds | x real-time | ratio vs funasr | median per-group ratio "
        "| CPU s per audio s | CPU-time ratio vs funasr |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, row in s["systems"].items():
        lines.append(
            f"| {name} | {row['seconds']} | {row['x_realtime']} | {row['ratio_vs_funasr']} "
            f"| {row['median_group_ratio']} | {row['cpu_s_per_audio_s']} "
            f"| {row['cpu_ratio_vs_funasr']} |"
        )
    lines += ["", "| parity | max abs embedding | max abs score | top-1 agree | min cosine |", "|---|---|---|---|---|"]
    int8 = {"int8 vs ours_fp32": s["int8_vs_fp32"]} if "int8_vs_fp32" in s else {}
    for name, p in {**s["parity_vs_funasr"], **int8}.items():
        lines.append(
            f"| {name} | {p['max_abs_embedding']:.2e} | {p['max_abs_score']:.2e} | "
            f"{p['top1_agree']} | {p['min_cosine']:.6f} |"
        )
    lines += ["", f"Main process RSS: {s['process']}", "", "Long recording:", ""]
    lines += [f"- {json.dumps(row)}" for row in result["long"]]
    lines += [f"- funasr generate on the long recording: {json.dumps(result['funasr_long'])}"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/emo-bench/large"))
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--long-s", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--json", type=Path, default=HERE / "bench_inference.json")
    parser.add_argument("--skip-funasr-long", action="store_true")
    parser.add_argument("--skip-long", action="store_true", help="short clips only")
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument(
        "--skip-systems",
        nargs="*",
        default=[],
        choices=["funasr_ncpu4_default", "ours_masked", "ours_int8"],
        help="leave systems out of the short-clip comparison (a busy machine)",
    )
    parser.add_argument("--window-s", type=float, default=30.0, help="engine window for the long recording")
    parser.add_argument("--only-long", action="store_true", help="long recording only")
    parser.add_argument("--profile", action="store_true", help="single-thread op profile only")
    parser.add_argument("--child", choices=["long", "funasr-long"], help=argparse.SUPPRESS)
    parser.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "long":
        print(json.dumps(long_child(args.model_dir, args.long_s, args.precision, args.threads, args.window_s)))
        return
    if args.child == "funasr-long":
        print(json.dumps(funasr_long_child(args.model_dir, args.long_s, args.threads)))
        return

    result = {"machine": machine(), "command": " ".join([Path(sys.executable).name, *sys.argv])}
    ensure_model(args.model_dir)
    if args.profile:
        profile_forwards(args.model_dir)
        return
    common = [
        "--model-dir",
        str(args.model_dir),
        "--long-s",
        str(args.long_s),
        "--threads",
        str(args.threads),
        "--window-s",
        str(args.window_s),
    ]
    if args.only_long:
        for precision in ("fp32", "int8"):
            print(json.dumps(run_child(["--child", "long", "--precision", precision, *common])), flush=True)
        return
    clips = make_clips(args.clips)
    result["clip_seconds"] = [round(len(c) / SR, 2) for c in clips]
    print(f"short clips: {len(clips)} clips, {sum(result['clip_seconds']):.0f} s", flush=True)
    result["short"] = short_clips(args.model_dir, clips, args.threads, args.group_size, tuple(args.skip_systems))
    print(json.dumps(result["short"]["systems"]), flush=True)
    result["long"] = []
    for precision in () if args.skip_long else ("fp32", "int8"):
        print(f"long recording ({args.long_s:.0f} s), {precision} ...", flush=True)
        result["long"].append(run_child(["--child", "long", "--precision", precision, *common]))
        print(json.dumps(result["long"][-1]), flush=True)
    result["funasr_long"] = (
        {"skipped": True} if args.skip_funasr_long or args.skip_long else run_child(["--child", "funasr-long", *common])
    )
    result["machine"]["loadavg_end"] = os.getloadavg()
    args.json.write_text(json.dumps(result, indent=1))
    print(markdown(result))


if __name__ == "__main__":
    main()
