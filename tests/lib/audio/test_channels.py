"""channels.toml: which voice is on which side of a two-channel call."""

import numpy as np
import pytest

from emo_assets.lib.audio.channels import (
    ChannelConfigError,
    ChannelLayout,
    flac_name,
    layout_for,
    parse_config,
    sides_identical,
)
from emo_assets.lib.audio.raw_scan import scan_day


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[channels]\nagent = "left"\ncustomer = "right"\n', ("agent", "customer")),
        ('[channels]\ncustomer = "left"\nagent = "right"\n', ("customer", "agent")),
        ('[channels]\ncustomer = "right"\n', ("left", "customer")),
    ],
)
def test_a_config_names_each_side(text, names):
    assert parse_config(text, "d/channels.toml") == ChannelLayout(names, "d/channels.toml")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[channels\n", "not valid TOML"),
        ('agent = "left"\n', "one [channels] table"),
        ("[channels]\n", "one [channels] table"),
        ('[channels]\ncaller = "left"\n', "unknown voice 'caller'"),
        ('[channels]\nagent = "middle"\n', "is not a side"),
        ('[channels]\nagent = "left"\ncustomer = "left"\n', "both on the left side"),
    ],
)
def test_a_bad_config_says_what_is_wrong_and_where(text, says):
    with pytest.raises(ChannelConfigError, match="d/channels.toml") as err:
        parse_config(text, "d/channels.toml")
    assert says in str(err.value)


def test_the_nearest_config_applies_and_is_not_an_upload(tmp_path):
    day = tmp_path / "2026-11-20"
    (day / "sales" / "eu").mkdir(parents=True)
    (day / "channels.toml").write_text('[channels]\nagent = "left"\ncustomer = "right"\n')
    (day / "sales" / "channels.toml").write_text('[channels]\nagent = "right"\ncustomer = "left"\n')
    assert layout_for(tmp_path, "2026-11-20/a.wav").names == ("agent", "customer")
    assert layout_for(tmp_path, "2026-11-20/sales/eu/b.wav").names == ("customer", "agent")
    assert layout_for(tmp_path, "2026-11-21/c.wav") is None
    files, refused = scan_day(tmp_path, "2026-11-20")
    assert files == [] and refused == []  # configuration: neither processed nor refused


def test_identical_sides_are_one_voice():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.1, 1000).astype(np.float32)
    assert sides_identical([np.stack([x, x]), np.stack([x[:10], x[:10]])])
    assert not sides_identical([np.stack([x, x]), np.stack([x[:10], x[:10] + 0.01])])
    assert not sides_identical([x[None, :]])


def test_flac_names():
    assert flac_name("ab", "mono") == "ab.flac" and flac_name("ab", "customer") == "ab.customer.flac"


def test_files_under_a_bad_config_are_quarantined_by_the_resample_stage(tmp_path):
    import datetime as dt

    import soundfile as sf

    from emo_assets.lib.audio.ingest import ingest_day
    from emo_assets.lib.audio.resample import resample_day

    day = tmp_path / "raw" / "2026-11-20"
    (day / "bad").mkdir(parents=True)
    rng = np.random.default_rng(1)
    sf.write(day / "bad" / "call.wav", rng.normal(0, 0.1, (16000, 2)).astype(np.float32), 16000)
    sf.write(day / "fine.wav", rng.normal(0, 0.1, (16000, 2)).astype(np.float32), 16000)
    (day / "bad" / "channels.toml").write_text('[channels]\ncaller = "left"\n')
    (day / "channels.toml").write_text('[channels]\ncustomer = "left"\n')
    landed = ingest_day(tmp_path / "raw", "2026-11-20", dt.datetime.now(dt.UTC)).rows
    out = resample_day(landed, tmp_path / "raw", tmp_path / "resampled", "2026-11-20", workers=1)
    (reject,) = out.rejects.to_pylist()
    assert reject["source_path"] == "2026-11-20/bad/call.wav" and reject["stage"] == "resampled_audio"
    assert reject["reason"].startswith("2026-11-20/bad/channels.toml: unknown voice 'caller'")
    assert sorted(out.rows.column("channel").to_pylist()) == ["customer", "right"]  # the unnamed side keeps its place
