"""Model settings: checked when made, resolved to this machine once, errors that name the setting."""

from __future__ import annotations

import pytest
import torch

from emo_assets.lib.model.model_dir import ModelLoadError
from emo_assets.lib.model.settings import ModelSettingError, ModelSettings, cpu_threads, resolve_device


@pytest.mark.parametrize(
    "device, cuda, expected",
    [("auto", False, "cpu"), ("auto", True, "cuda"), ("cpu", True, "cpu"), ("cuda:1", True, "cuda:1")],
)
def test_resolve_device(device, cuda, expected):
    assert str(resolve_device(device, cuda_devices=2 if cuda else 0)) == expected


def test_resolve_device_refuses_missing_cuda():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda", cuda_devices=0)


@pytest.mark.parametrize("device", ["cpu", "auto"])
def test_half_precision_is_refused_on_the_cpu(device):
    """One behaviour: half precision is float16 on CUDA; on the CPU it is refused, never bfloat16."""
    with pytest.raises(ModelSettingError, match=r"EMO_HALF.*needs a CUDA device"):
        ModelSettings(device=device, half=True).resolved(cuda_devices=0)


@pytest.mark.parametrize(
    "policy, device, expected",
    [("auto", "cpu", "per_clip"), ("auto", "cuda", "masked"), ("masked", "cpu", "masked")],
)
def test_resolve_batch_policy(policy, device, expected):
    assert ModelSettings(device=device, batch_policy=policy).resolved(cuda_devices=1).batch_policy == expected
    with pytest.raises(ValueError, match="batch_policy"):
        ModelSettings(device=device, batch_policy="greedy")


@pytest.mark.parametrize(("setting", "expected"), [("auto", "cpu"), ("cpu", "cpu"), (" CPU ", "cpu")])
def test_resolve_device_without_cuda(monkeypatch, setting: str, expected: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device(setting) == expected


@pytest.mark.parametrize("setting", ["cuda", "cuda:0"])
def test_resolve_device_cuda_missing(monkeypatch, setting: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="EMO_DEVICE=.*CUDA is not available"):
        resolve_device(setting)


@pytest.mark.parametrize("setting", ["gpu", "cuda:x", "mps", ""])
def test_resolve_device_rejects_unknown_values(setting: str) -> None:
    with pytest.raises(ModelLoadError, match="EMO_DEVICE=.*allowed values: auto, cpu, cuda, cuda:N"):
        resolve_device(setting)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"window_s": 0.0}, "EMO_WINDOW_S"),
        ({"window_s": 10.0, "window_overlap_s": 5.0}, "window_overlap_s"),
        ({"threads": -1}, "threads"),
        ({"precision": "fp16"}, "EMO_PRECISION='fp16' is not one of fp32, int8"),
        ({"precision": "int8", "device": "cuda"}, "EMO_PRECISION=int8 quantises for the CPU"),
        ({"device": "gpu"}, "EMO_DEVICE='gpu'.*allowed values: auto, cpu, cuda, cuda:N"),
        ({"hub": "github"}, "EMO_MODEL_HUB='github'.*ms .*hf"),
    ],
)
def test_bad_settings_name_the_setting_and_the_accepted_values(settings, named):
    with pytest.raises(ModelSettingError, match=named):
        ModelSettings(**settings)


def test_resolving_decides_device_threads_and_batch_policy_once():
    settings = ModelSettings(device="auto").resolved(cuda_devices=0)
    assert (settings.device, settings.threads, settings.batch_policy) == ("cpu", cpu_threads(), "per_clip")
    assert settings.resolved() == settings
    assert ModelSettings(device="auto", threads=1).resolved(cuda_devices=2).device == "cuda"


def test_int8_on_an_auto_device_that_turns_out_to_be_cuda_is_refused():
    with pytest.raises(ModelSettingError, match="EMO_PRECISION=int8"):
        ModelSettings(device="auto", precision="int8").resolved(cuda_devices=1)
