"""The exact masked forward of funasr's ``Emotion2vec``, over its own modules and weights.

``encode`` gives, for every row of a padded batch, the frame features funasr's
``extract_features`` gives for that waveform alone: each waveform is normalised over its own
samples; the conv feature extractor cannot leak (a valid frame only sees valid samples); padded
frames are zeroed before every positional convolution (what single-clip zero padding does); padded
keys are masked in attention. Faster than funasr's forward: the conv front end and positional convs
stay channels-last (no transposed copies around every LayerNorm), attention is one fused
``scaled_dot_product_attention`` with the ALiBi bias built once per forward.

Used by :mod:`emo_assets.lib.model.engine`; no dagster here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from emo_assets.lib.model.windows import min_samples


def quantize_int8(module: nn.Module, spec) -> nn.Module:
    """torch.ao dynamic int8 quantisation, in place (pass a copy): int8 weights, activations per call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(module, spec, dtype=torch.qint8, inplace=True)


# ---------------------------------------------------------------- the masked forward


def feature_lengths(n_samples: torch.Tensor, conv_spec: Sequence[tuple[int, int, int]]) -> torch.Tensor:
    """Frames the conv feature extractor makes from ``n_samples`` (funasr's formula)."""
    lengths = n_samples.clone()
    for _, kernel, stride in conv_spec:
        lengths = torch.div(lengths - kernel, stride, rounding_mode="floor") + 1
    return lengths


def _normalise(wave: torch.Tensor, lengths: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Per-row ``F.layer_norm`` over the valid samples only; padding stays zero."""
    if wave.shape[0] == 1:
        return F.layer_norm(wave, wave.shape[1:])
    n = lengths.to(wave.dtype).unsqueeze(1)
    mean = (wave * keep).sum(1, keepdim=True) / n
    var = (((wave - mean) * keep) ** 2).sum(1, keepdim=True) / n
    return (wave - mean) * torch.rsqrt(var + 1e-5) * keep


def _frontend(enc: nn.Module, wave: torch.Tensor, conv_gemms: Sequence[nn.Module] | None = None) -> torch.Tensor:
    """Conv feature extractor, ``B x S`` -> ``B x T x C``, kept channels-last throughout.

    The convolutions run as 2-D convolutions on a ``B x C x 1 x S`` channels-last tensor, so the
    per-frame LayerNorm and GELU of funasr's ``layer_norm`` extractor work on contiguous rows and no
    transposed copies are made (funasr transposes around every LayerNorm). Same weights, same math.
    With ``conv_gemms`` (int8), layers after the first run as linear layers over unfolded windows.
    """
    local = enc.local_encoder
    if enc.modality_cfg.extractor_mode != "layer_norm":
        return local(wave).transpose(1, 2)
    x = wave.view(wave.shape[0], 1, 1, -1).contiguous(memory_format=torch.channels_last)
    for i, block in enumerate(local.conv_layers):
        conv = block[0]
        if conv_gemms is not None and i > 0:
            rows = x.permute(0, 2, 3, 1)[:, 0].contiguous()  # B x T x C
            batch, frames, channels = rows.shape
            kernel, stride = conv.kernel_size[0], conv.stride[0]
            out_frames = (frames - kernel) // stride + 1
            windows = rows.as_strided((batch, out_frames, kernel * channels), (frames * channels, stride * channels, 1))
            y = conv_gemms[i - 1](windows.contiguous()).unsqueeze(1)  # B x 1 x T' x C
        else:
            x = F.conv2d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]))
            y = x.permute(0, 2, 3, 1)  # B x 1 x T x C, contiguous
        x = block[3](block[2][1](y)).permute(0, 3, 1, 2)
    return x.permute(0, 2, 3, 1)[:, 0]


def _frontend_in_chunks(
    enc: nn.Module, wave: torch.Tensor, conv_gemms: Sequence[nn.Module] | None, chunk_frames: int
) -> torch.Tensor:
    """``_frontend`` over chunks of ``chunk_frames`` output frames, concatenated.

    Frame ``t`` of the conv stack depends on samples ``[t * hop, t * hop + field)`` only, so cutting
    the input at frame boundaries (with ``field - hop`` samples of overlap) gives the same frames
    while the 512-channel activations at 3.2 kHz stay small (a 30 s window otherwise holds several
    200 MB tensors at once).
    """
    spec = enc.feature_enc_layers
    hop = math.prod(stride for _, _, stride in spec)
    field = min_samples(spec)  # the receptive field of one frame
    total = (wave.shape[1] - field) // hop + 1
    if total <= chunk_frames:
        return _frontend(enc, wave, conv_gemms)
    parts = []
    for first in range(0, total, chunk_frames):
        last = min(total, first + chunk_frames)
        parts.append(_frontend(enc, wave[:, first * hop : (last - 1) * hop + field], conv_gemms))
    return torch.cat(parts, dim=1)


def conv_front_end_gemms(module: nn.Module) -> nn.ModuleList:
    """int8 linear layers equivalent to the feature extractor's convolutions after the first.

    A ``Conv1d(C, O, k, stride)`` over channels-last windows of ``k`` frames is a linear layer with
    weight ``W.permute(0, 2, 1).reshape(O, k * C)``. The first layer (one input channel, kernel 10)
    stays a float convolution.
    """
    layers = nn.ModuleList()
    for block in module.modality_encoders["AUDIO"].local_encoder.conv_layers[1:]:
        conv = block[0]
        out, channels, kernel = conv.weight.shape
        linear = nn.Linear(kernel * channels, out, bias=conv.bias is not None)
        with torch.no_grad():
            linear.weight.copy_(conv.weight.permute(0, 2, 1).reshape(out, kernel * channels))
            if conv.bias is not None:
                linear.bias.copy_(conv.bias)
        layers.append(linear)
    return quantize_int8(layers.float().eval(), {nn.Linear})


def _positional(encoder: nn.Module, x: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """funasr's relative positional encoder on ``B x T x D``, channels-last, padding zeroed.

    Padded frames are set to zero before every convolution, which is what the zero padding of a
    single unpadded clip does at its end.
    """
    for layer in encoder:
        if isinstance(layer, nn.Sequential) and isinstance(layer[0], nn.Conv1d):
            x = _positional_conv(layer, x if keep is None else x * keep.unsqueeze(-1).to(x.dtype))
        elif isinstance(layer, nn.Sequential):
            x = _positional(layer, x, keep)
        elif type(layer).__name__ != "TransposeLast":
            x = layer(x)  # the optional pre-LayerNorm, on B x T x D
    return x


def _positional_conv(layer: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """One ``Sequential(Conv1d, SamePad, TransposeLast, LayerNorm, TransposeLast, GELU)``."""
    conv = layer[0]
    frames = x.shape[1]
    nchw = x.unsqueeze(1).permute(0, 3, 1, 2)  # B x D x 1 x T, channels-last memory
    y = F.conv2d(nchw, conv.weight.unsqueeze(2), conv.bias, padding=(0, conv.padding[0]), groups=conv.groups)
    rows = y.permute(0, 2, 3, 1)[:, 0, :frames]  # SamePad drops the extra frame of even kernels
    return layer[5](layer[3](rows))


def _alibi_bias(heads: int, frames: int, extra: int, scale: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """funasr's ALiBi bias (``slope_h * -|i - j|``, times the learned scale), zero for extra tokens.

    Built head by head into one ``1 x H x N x N`` tensor: funasr's ``get_alibi_bias`` keeps an
    ``H x T x T`` cache and pads and rescales it into two more tensors of that size (about 140 MB
    each for a 30 s window). Same values, bit for bit.
    """
    from emo_assets.lib.model.funasr_import import funasr_module

    get_alibi = funasr_module("funasr.models.emotion2vec.base").get_alibi

    slopes = -get_alibi(2, heads)[:, 0, 1]  # get_alibi gives slope_h * -|i - j|; |0 - 1| = 1
    pos = torch.arange(frames, device=device)
    distance = (pos.unsqueeze(0) - pos.unsqueeze(1)).abs().neg().float()
    bias = torch.zeros(1, heads, frames + extra, frames + extra, device=device)
    for h in range(heads):
        block = distance * slopes[h].item()
        if scale is not None:
            block = block * scale[h if scale.numel() > 1 else 0]
        bias[0, h, extra:, extra:] = block
    return bias


def _attention(attn: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``AltAttention`` (non-cosine) as one fused SDPA call with an additive bias."""
    batch, n, channels = x.shape
    qkv = attn.qkv(x).reshape(batch, n, 3, attn.num_heads, channels // attn.num_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=attn.scale)
    return attn.proj(out.transpose(1, 2).reshape(batch, n, channels))


def _block(blk: nn.Module, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """``AltBlock.forward`` in eval mode (dropouts and drop-path are identities)."""
    if blk.layer_norm_first:
        x = x + _attention(blk.attn, blk.norm1(x), bias)
        r = blk.mlp(blk.norm2(x))
        return r + r  # sic: funasr/data2vec2 add the MLP output to itself in this branch
    x = blk.norm1(x + _attention(blk.attn, x, bias))
    return blk.norm2(x + blk.mlp(x))


def encode(
    module: nn.Module,
    wave: torch.Tensor,
    lengths: torch.Tensor,
    conv_gemms: Sequence[nn.Module] | None = None,
    front_end_chunk_frames: int = 500,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame features of a (padded) batch: ``(x [B, T, D], frame_lengths [B])``.

    ``wave`` is ``B x S`` raw 16 kHz samples, row ``i`` valid up to ``lengths[i]``. Equals funasr's
    ``extract_features(F.layer_norm(w, w.shape).view(1, -1))["x"]`` for every row on its valid frames.
    """
    enc = module.modality_encoders["AUDIO"]
    cfg = enc.modality_cfg
    dtype = enc.project_features[1].weight.dtype
    padded = bool((lengths < wave.shape[1]).any())
    sample_keep = None
    if padded:
        sample_keep = torch.arange(wave.shape[1], device=wave.device) < lengths.unsqueeze(1)
    if module.cfg.get("normalize"):
        wave = _normalise(wave.float(), lengths, sample_keep) if padded else F.layer_norm(wave.float(), wave.shape[1:])
    x = _frontend_in_chunks(enc, wave.to(dtype), conv_gemms, front_end_chunk_frames)
    x = enc.project_features[2](enc.project_features[1](x))
    batch, frames, _ = x.shape
    frame_lengths = feature_lengths(lengths, enc.feature_enc_layers)
    keep = torch.arange(frames, device=x.device) < frame_lengths.unsqueeze(1) if padded else None
    x = x + _positional(enc.relative_positional_encoder, x, keep)

    extra = enc.extra_tokens.size(1) if enc.extra_tokens is not None else 0
    if extra:
        x = torch.cat([enc.extra_tokens.expand(batch, -1, -1), x], dim=1)
        if keep is not None:
            keep = F.pad(keep, (extra, 0), value=True)
    alibi, scale = None, None
    if enc.get_alibi_bias is not None:
        scale = enc.alibi_scale.clamp_min(0) if enc.alibi_scale is not None else None
        if not cfg.learned_alibi:
            shared = scale is None or scale.size(0) == 1
            alibi = _alibi_bias(
                cfg.num_alibi_heads,
                frames,
                extra,
                scale.view(-1) if shared and scale is not None else None,
                x.device,
            )
            scale = None if shared else scale
        else:
            alibi = enc.get_alibi_bias(
                batch_size=1,
                time_steps=frames,
                heads=cfg.num_alibi_heads,
                dtype=torch.float32,
                device=x.device,
            )
            alibi = F.pad(alibi, (extra, 0, extra, 0))
    key_mask = None if keep is None else ~keep[:, None, None, :]

    def layer_bias(i: int) -> torch.Tensor | None:
        bias = alibi
        if bias is not None and scale is not None:
            bias = bias * (scale[i] if scale.size(0) > 1 else scale.squeeze(0))
        if key_mask is not None:
            base = torch.zeros((), device=x.device) if bias is None else bias
            bias = torch.where(key_mask, float("-inf"), base)
        return None if bias is None else bias.to(x.dtype)

    shared = layer_bias(0) if scale is None or scale.size(0) == 1 else None
    ctx = enc.context_encoder
    if ctx.norm is not None and not ctx.layer_norm_first:
        x = ctx.norm(x)
    for i, blk in enumerate(ctx.blocks):
        x = _block(blk, x, shared if shared is not None else layer_bias(i))
    offset = len(ctx.blocks)
    for i, blk in enumerate(module.blocks):
        x = _block(blk, x, shared if shared is not None else layer_bias(offset + i))
    if ctx.norm is not None and ctx.layer_norm_first:
        x = ctx.norm(x)
    if module.norm is not None:
        x = module.norm(x)
    return x[:, extra:], frame_lengths
