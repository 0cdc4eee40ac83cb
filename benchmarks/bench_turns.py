"""silero-vad's cost: find_turns on ~2 minutes of espeak-ng speech with pauses, best of 3 (BENCHMARKS.md).

Run from the repository: `PYTHONPATH=. .venv/bin/python benchmarks/bench_turns.py` (needs espeak-ng).
"""

import os
import time

import numpy as np

from emo_assets.lib.audio.turns import find_turns
from emo_assets.lib.model.scorer import ArrayReader
from tests.helpers import spoken_with_pauses


def main() -> None:
    once, _ = spoken_with_pauses()
    call = np.concatenate([once] * 8)
    find_turns(ArrayReader(once))  # load the model
    times = []
    for _ in range(3):
        start = time.perf_counter()
        turns = find_turns(ArrayReader(call))
        times.append(time.perf_counter() - start)
    seconds = len(call) / 16000
    speech = sum(t.end - t.start for t in turns) / 16000
    print(
        f"load {os.getloadavg()[0]:.1f}; {seconds:.1f} s audio, {len(turns)} turns, {speech:.1f} s speech; "
        f"wall {[round(t, 2) for t in times]} s; best {seconds / min(times):.0f}x real time"
    )


if __name__ == "__main__":
    main()
