"""Whole-process speed as a user meets it: `emo analyze` against a funasr `AutoModel.generate` loop.

Every measurement is a fresh interpreter under `/usr/bin/time` (start-up, imports, loading the model,
int8's quantising or cache, scoring, writing outputs), on the same random-weight model, back to back:

- 16 real-speech clips (espeak-ng sentences, about 148 s in all): funasr, ours fp32, ours int8;
- one 10 s clip of the same speech: the same three.

Each round runs the systems in a rotated order; the table gives the median of the rounds and the
ratio of medians against funasr. int8's cache (``<model>/.emo-cache``) is written once before timing,
as a user's first int8 start does. The embeddings of ours fp32 and funasr are compared at the end.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_whole_process.py            # --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_inference import ensure_model  # noqa: E402
from common import cpu_model  # noqa: E402

SENTENCES = (
    "Hello, thank you for calling, how can I help you today?",
    "My order arrived broken and nobody answered my emails.",
    "I am sorry to hear that. Let me look at it right away.",
    "I have been waiting for two weeks and I am really upset.",
    "Could you please give me the order number from the receipt?",
    "It is four seven one nine, and it was paid by card.",
    "Thank you. I can see the parcel was damaged on the way.",
    "We will send a new one tomorrow, free of charge, of course.",
    "That is good news, thank you so much for your help.",
    "Is there anything else I can do for you today?",
    "No, that is all. Have a nice evening.",
    "You too, goodbye, and sorry again for the trouble.",
)
RATE = 16000


def speak(text: str, voice: str, tmp: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng at 16 kHz (float32 mono), trimmed to the speech."""
    import soundfile as sf

    from emo_assets.lib.audio.load import to_mono_16k

    wav = tmp / "s.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wav), text], check=True)
    samples, rate = sf.read(wav, dtype="float32")
    samples = to_mono_16k(samples, rate)
    loud = np.flatnonzero(np.abs(samples) > 0.01)
    return samples[loud[0] : loud[-1] + 1]


def make_clips(out: Path, count: int = 16, seconds: float = 9.25) -> list[Path]:
    """``count`` clips of ``seconds`` each: sentences with 0.4 s pauses, cycling voices, cut to length."""
    import soundfile as sf

    if shutil.which("espeak-ng") is None:
        raise SystemExit("espeak-ng is not installed: `make test` (or apt-get install espeak-ng) installs it")
    out.mkdir(parents=True, exist_ok=True)
    voices = ("en-us", "en-gb", "en-us+f3", "en-gb+m3")
    paths = []
    with tempfile.TemporaryDirectory() as tmp:
        spoken = {}
        for i in range(count + 1):
            parts, total, j = [], 0, i
            while total < seconds * RATE:
                key = (SENTENCES[j % len(SENTENCES)], voices[i % len(voices)])
                if key not in spoken:
                    spoken[key] = speak(*key, Path(tmp))
                parts += [spoken[key], np.zeros(int(0.4 * RATE), np.float32)]
                total += len(parts[-2]) + len(parts[-1])
                j += 1
            clip = np.concatenate(parts)
            name = "clip10.wav" if i == count else f"clip{i:02d}.wav"
            length = int((10.0 if i == count else seconds) * RATE)
            path = out / name
            sf.write(path, clip[:length], RATE, subtype="PCM_16")
            paths.append(path)
    return paths


FUNASR_LOOP = """
import sys, numpy as np
from funasr import AutoModel
model_dir, out, files = sys.argv[1], sys.argv[2], sys.argv[3:]
m = AutoModel(model=model_dir, device="cpu", ncpu=2, disable_update=True, disable_pbar=True, log_level="ERROR")
embs = {}
for f in files:
    r = m.generate(f, granularity="utterance", extract_embedding=True)[0]
    embs[f] = np.asarray(r["feats"], dtype=np.float32).reshape(-1)
np.savez(out, **{str(i): embs[f] for i, f in enumerate(files)})
"""


def timed(name: str, cmd: list[str], cwd: Path, env: dict, log: Path) -> dict:
    """Run ``cmd`` under /usr/bin/time; wall seconds and peak RSS (MB), or raise with its stderr."""
    err = log / f"{name}.err"
    with open(err, "w") as e:
        done = subprocess.run(
            ["/usr/bin/time", "-f", "TIME wall_s=%e peak_rss_kb=%M", *cmd], cwd=cwd, env=env, stdout=e, stderr=e
        )
    text = err.read_text()
    if done.returncode != 0:
        raise SystemExit(f"{name} failed (exit {done.returncode}); see {err}:\n{text[-2000:]}")
    last = [line for line in text.splitlines() if line.startswith("TIME ")][-1]
    fields = dict(kv.split("=") for kv in last.split()[1:])
    return {"wall_s": float(fields["wall_s"]), "peak_rss_mb": int(fields["peak_rss_kb"]) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/emo-bench/large"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/emo-bench/whole"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=HERE / "bench_whole_process.json")
    args = parser.parse_args()

    model = ensure_model(args.model_dir)
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    log = work / "logs"
    log.mkdir(parents=True)
    paths = make_clips(work / "clips")
    clips16, clip10 = [str(p) for p in paths[:-1]], [str(paths[-1])]
    repo = HERE.parent
    py = sys.executable
    env = dict(os.environ, PYTHONPATH=str(repo), EMO_DEVICE="cpu")

    def ours(precision: str, files: list[str], out: Path) -> list[str]:
        return [py, "-m", "emo_assets.cli", "analyze", *files, "--model", str(model), "--precision", precision,
                "--out", str(out)]  # fmt: skip

    def funasr(files: list[str], out: Path) -> list[str]:
        return [py, "-c", FUNASR_LOOP, str(model), str(out), *files]

    # int8's first start quantises and writes the cache; a user pays that once, not per run.
    shutil.rmtree(model / ".emo-cache", ignore_errors=True)
    timed("int8_cache_write", ours("int8", clip10, work / "warm"), repo, env, log)

    systems = {
        "funasr": lambda files, out: funasr(files, out / "emb.npz"),
        "ours_fp32": lambda files, out: ours("fp32", files, out),
        "ours_int8": lambda files, out: ours("int8", files, out),
    }
    results: dict[str, dict[str, list[dict]]] = {}
    loads = [os.getloadavg()[0]]
    for r in range(args.rounds):
        order = list(systems)[r % 3 :] + list(systems)[: r % 3]
        for case, files in (("16 clips", clips16), ("one 10 s clip", clip10)):
            for name in order:
                out = work / f"out_{case[:3].strip()}_{name}_{r}"
                out.mkdir(parents=True)
                m = timed(f"{case[:3].strip()}_{name}_{r}", systems[name](files, out), repo, env, log)
                results.setdefault(case, {}).setdefault(name, []).append(m)
                print(f"round {r} {case:14s} {name:10s} {m['wall_s']:7.1f} s {m['peak_rss_mb']:7.0f} MB", flush=True)
        loads.append(os.getloadavg()[0])

    # Parity: ours fp32 embedding.npy per clip against funasr's, last round.
    last = args.rounds - 1
    fun = np.load(work / f"out_16_funasr_{last}" / "emb.npz")
    diffs = []
    for i, f in enumerate(clips16):
        [emb] = (work / f"out_16_ours_fp32_{last}").glob(f"outputs_*/{Path(f).stem}*/embedding.npy")
        diffs.append(float(np.abs(np.load(emb).reshape(-1) - fun[str(i)]).max()))

    audio_s = sum(len(__import__("soundfile").read(f)[0]) for f in clips16) / RATE
    summary = {
        "command": " ".join(sys.argv),
        "machine": {"cpu": cpu_model(), "nproc": len(os.sched_getaffinity(0))},
        "loadavg_1min_per_round": loads,
        "audio_s_16_clips": audio_s,
        "parity_max_abs_embedding_fp32_vs_funasr": max(diffs),
        "results": results,
    }
    args.json.write_text(json.dumps(summary, indent=2))
    print(f"\n16 clips: {audio_s:.1f} s of audio; load average per round {', '.join(f'{x:.2f}' for x in loads)}")
    print("| case | system | median wall | ratio vs funasr | runs | peak RSS |\n|---|---|---|---|---|---|")
    for case, by in results.items():
        base = statistics.median(m["wall_s"] for m in by["funasr"])
        for name, ms in by.items():
            med = statistics.median(m["wall_s"] for m in ms)
            runs = ", ".join(f"{m['wall_s']:.1f}" for m in ms)
            rss = max(m["peak_rss_mb"] for m in ms)
            print(f"| {case} | {name} | {med:.1f} s | {base / med:.2f}x | {runs} | {rss:.0f} MB |")
    print(f"parity: max abs embedding, ours fp32 vs funasr over the 16 clips: {max(diffs):.1e}")


if __name__ == "__main__":
    main()
