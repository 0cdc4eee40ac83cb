"""funasr's own ``AutoModel``: the reference our engine is compared with, in tests and benchmarks.

Light on purpose (no dagster, no emo_assets): benchmarks/bench_inference.py imports it into processes
whose memory it measures.
"""

from __future__ import annotations

from pathlib import Path


def funasr_auto_model(model_dir: str | Path, ncpu: int | None = None):
    """funasr's ``AutoModel`` on ``model_dir`` on the CPU: offline (no update check), quiet (no
    progress bar, errors only). funasr sets torch's thread count to ``ncpu`` for the whole process;
    ``None`` keeps the count this process has (funasr's own default would be 4)."""
    import torch
    from funasr import AutoModel

    return AutoModel(
        model=str(model_dir),
        device="cpu",
        ncpu=torch.get_num_threads() if ncpu is None else ncpu,
        disable_update=True,
        disable_pbar=True,
        log_level="ERROR",
    )
