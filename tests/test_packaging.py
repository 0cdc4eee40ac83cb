"""The analysts' SQL models ship with the package: an installed wheel finds them."""

import importlib.resources
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from emo_assets.lib.store.sql_models import discover_sql_models
from emo_assets.resources import PACKAGED_SQL_DIR, StorageResource

REPO = Path(__file__).resolve().parents[1]
SQL_MODELS = {"cluster_profiles", "daily_emotion_summary"}


def test_sql_models_are_package_data_and_the_default_folder():
    packaged = Path(str(importlib.resources.files("emo_assets").joinpath("dbt_like_sql")))
    assert packaged == PACKAGED_SQL_DIR
    assert StorageResource().sql_models_dir == packaged.resolve()
    assert {m.name for m in discover_sql_models(packaged)} >= SQL_MODELS
    # the documented folder at the top of the repository is the same folder
    assert (REPO / "dbt_like_sql").resolve() == packaged.resolve()


def test_an_installed_wheel_finds_its_sql_models(tmp_path):
    source = tmp_path / "source"  # a copy, so that the build leaves nothing in the repository
    shutil.copytree(REPO / "emo_assets", source / "emo_assets", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", tmp_path, source],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("emo_assets-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"emo_assets/dbt_like_sql/{m}.sql" for m in SQL_MODELS} <= set(names)
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
    )
    code = (
        "from emo_assets.resources import PACKAGED_SQL_DIR;"
        "from emo_assets.lib.store.sql_models import discover_sql_models;"
        "print(PACKAGED_SQL_DIR); print(*sorted(m.name for m in discover_sql_models(PACKAGED_SQL_DIR)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    ).stdout.splitlines()
    assert Path(out[0]).is_relative_to(site)
    assert set(out[1].split()) >= SQL_MODELS
