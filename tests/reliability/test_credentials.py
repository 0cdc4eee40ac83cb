"""Credentials in the environment never reach logs, run metadata or error messages (issue 14, part 4).

A real `emo run` (its Dagster instance, run storage and event log under the data directory), a
failing `emo run`, a refused `emo web` and `emo erase` run with a web token, a database URL with a
password and object-store keys in the environment; then their output and every byte under the data
directory are searched for each secret.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import DAY, REPO, write_small_day

SECRETS = {
    "EMO_WEB_TOKEN": "web-token-5f1c9a7e2b4d4e0c",
    "DAGSTER_PG_PASSWORD": "pg-password-8d2e61ab",
    "EMO_DATABASE_URL": "postgresql://emo:db-password-93be1f0c@db.internal:5432/emo",
    "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE7Q2W3E4R5",
    "AWS_SECRET_ACCESS_KEY": "s3-secret-wJalrXUtnFEMI-K7MDENG-bPxRfiCY",
}
NEEDLES = [*SECRETS.values(), "db-password-93be1f0c"]


def _emo(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "emo_assets.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def test_secrets_in_the_environment_never_reach_logs_metadata_or_errors(tmp_path, tiny_model_dir):
    data = tmp_path / "data"
    write_small_day(data / "raw" / DAY, n=2)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMO_", "DAGSTER_HOME"))}
    env.update(SECRETS, PYTHONPATH=str(REPO), EMO_SETTLE_S="0", EMO_MODEL=str(tiny_model_dir), EMO_DEVICE="cpu")
    runs = [
        _emo(["run", "--date", DAY, "--data-dir", str(data)], env),  # a day, with its Dagster instance
        _emo(["run", "--date", DAY, "--data-dir", str(data)], {**env, "EMO_THREADS": "many"}),  # a bad setting
        _emo(["run", "--date", DAY, "--data-dir", str(data), "--model", str(tmp_path / "no-model")], env),
        _emo(["web", "--host", "0.0.0.0", "--data-dir", str(data)], {**env, "EMO_WEB_TOKEN": "short"}),
        _emo(["erase", "0" * 64, "--data-dir", str(data)], env),
        _emo(["retention", "--dry-run", "--data-dir", str(data)], env),
    ]
    assert runs[0].returncode == 0, runs[0].stderr[-2000:]
    assert [r.returncode for r in runs[1:4]] == [2, 2, 2]  # refused, with a message
    assert "EMO_THREADS" in runs[1].stderr and "EMO_WEB_TOKEN" in runs[3].stderr
    output = "\n".join(r.stdout + r.stderr for r in runs)
    assert "Summary for" in output  # the day ran and printed what it did
    for secret in NEEDLES:
        assert secret not in output
    # the Dagster instance (run storage, event log with every run's metadata, compute logs) is here
    assert any(p.suffix == ".db" for p in (data / "dagster_home").rglob("*")), "no run storage under the data dir"
    for path in sorted(Path(data).rglob("*")):
        if path.is_file():
            content = path.read_bytes()
            for secret in NEEDLES:
                assert secret.encode() not in content, f"{secret[:8]}... found in {path}"
