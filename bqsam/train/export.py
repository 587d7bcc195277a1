"""Export of the deployed one-bit model: 8 weights per byte plus one scale per tensor.

A binarized tensor ``w`` is deployed as ``q(w) = alpha sgn(w)`` with ``alpha = ||w||_1 / d``,
so it is stored as its sign bits (``numpy.packbits`` of ``w >= 0``, flattened in C order)
and the float32 scalar ``alpha``: ``ceil(d / 8) + 4`` bytes instead of ``4 d``, close to a
32-fold reduction. Every other tensor of the state dict (first and last layer, biases,
BatchNorm parameters and statistics) is stored unchanged.

The file is a NumPy ``.npz`` archive, readable without pickle (``allow_pickle=False``):

    meta                  JSON text: format, model name, number of classes, tensor shapes
    bits/<name>           uint8, packed sign bits of a binarized tensor
    alpha/<name>          float32 scalar, its scale
    float/<name>          any other state-dict entry, in its own dtype

:func:`load_exported` rebuilds the network and sets each binarized tensor to
``alpha * (2 bit - 1)``, which equals the ``q(w)`` that the trainer evaluated bit for bit.

Example (needs a run directory)::

    from bqsam.train.export import export_run, load_exported
    report = export_run("runs/bqsam-s0")
    print(report["binarized_ratio"])  # about 32
    model = load_exported("runs/bqsam-s0/model-binary.npz")
"""

from __future__ import annotations

import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..quantizers import scale_factor, sgn
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, write_bytes_atomic

__all__ = [
    "EXPORT_FORMAT",
    "DEFAULT_EXPORT_NAME",
    "export_checkpoint",
    "export_run",
    "load_exported",
    "read_exported_state",
    "format_size_report",
]

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "bqsam-binary-export-1"
DEFAULT_EXPORT_NAME = "model-binary.npz"


def _pack(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Return (packed sign bits, float32 alpha) of one binarized tensor."""
    weight = weight.detach().to("cpu", torch.float32).contiguous()
    bits = (sgn(weight) > 0).numpy().reshape(-1)
    alpha = scale_factor(weight).numpy().astype(np.float32)
    return np.packbits(bits), alpha.reshape(())


def _unpack(bits: np.ndarray, alpha: np.ndarray, shape: list[int]) -> torch.Tensor:
    count = int(np.prod(shape)) if shape else 1
    signs = np.unpackbits(bits, count=count).astype(np.float32) * 2.0 - 1.0
    # alpha * sgn(w) in float32, the same product that bqsam.quantizers.binarize computes.
    return torch.from_numpy(alpha.astype(np.float32)) * torch.from_numpy(signs.reshape(shape))


def export_checkpoint(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike) -> dict[str, Any]:
    """Write the deployed model of a training checkpoint to ``out_path`` and return the size report."""
    payload = load_checkpoint(checkpoint_path)
    state: dict[str, torch.Tensor] = payload["model"]
    binarized = list(payload.get("binarized", []))
    missing = [name for name in binarized if name not in state]
    if missing:
        raise ValueError(f"{checkpoint_path}: binarized tensors {missing} are not in the model state")
    config = payload.get("config", {})

    arrays: dict[str, np.ndarray] = {}
    shapes: dict[str, list[int]] = {}
    binarized_count = 0
    packed_bytes = 0
    float_bytes = 0
    for name, tensor in state.items():
        if name in binarized:
            bits, alpha = _pack(tensor)
            arrays[f"bits/{name}"] = bits
            arrays[f"alpha/{name}"] = alpha
            shapes[name] = list(tensor.shape)
            binarized_count += tensor.numel()
            packed_bytes += bits.nbytes + alpha.nbytes
        else:
            value = tensor.detach().cpu().contiguous().numpy()
            arrays[f"float/{name}"] = value
            float_bytes += value.nbytes

    meta = {
        "format": EXPORT_FORMAT,
        "model": config.get("model"),
        "dataset": config.get("dataset"),
        "num_classes": payload.get("num_classes"),
        "epoch": payload.get("epoch"),
        "method": config.get("method"),
        "binarized": binarized,
        "shapes": shapes,
        "order": list(state),
    }
    arrays["meta"] = np.array(json.dumps(meta))
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes_atomic(out_path, buffer.getvalue())

    float32_bytes = 4 * binarized_count
    report = {
        "path": str(out_path),
        "file_bytes": os.path.getsize(out_path),
        "binarized_tensors": len(binarized),
        "binarized_weights": binarized_count,
        "binarized_packed_bytes": packed_bytes,
        "binarized_float32_bytes": float32_bytes,
        "binarized_ratio": float32_bytes / packed_bytes if packed_bytes else None,
        "float_tensor_bytes": float_bytes,
        "model_float32_bytes": float32_bytes + float_bytes,
        "model_exported_bytes": packed_bytes + float_bytes,
    }
    logger.info("exported %s: %d binarized weights in %d bytes", out_path, binarized_count, packed_bytes)
    return report


def export_run(run_dir: str | os.PathLike, out_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Export the checkpoint of a run directory (default output ``RUN_DIR/model-binary.npz``)."""
    run_dir = Path(run_dir)
    checkpoint = run_dir / CHECKPOINT_NAME
    if not checkpoint.exists():
        raise FileNotFoundError(
            f"no {CHECKPOINT_NAME} in {run_dir}; run `bqsam train --out {run_dir}` first"
        )
    return export_checkpoint(checkpoint, out_path or run_dir / DEFAULT_EXPORT_NAME)


def read_exported_state(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Return (meta, state dict of the deployed model) from an exported ``.npz`` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"exported model not found: {path}")
    try:
        archive = np.load(path, allow_pickle=False)
        meta = json.loads(str(archive["meta"]))
    except (ValueError, KeyError, OSError) as error:
        raise ValueError(f"{path} is not a bqsam binary export ({error})") from error
    if meta.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}; expected {EXPORT_FORMAT!r}")

    state: dict[str, torch.Tensor] = {}
    for name in meta["order"]:
        if name in meta["shapes"]:
            state[name] = _unpack(archive[f"bits/{name}"], archive[f"alpha/{name}"], meta["shapes"][name])
        else:
            state[name] = torch.from_numpy(np.array(archive[f"float/{name}"]))
    return meta, state


def load_exported(path: str | os.PathLike, model: nn.Module | None = None) -> nn.Module:
    """Return the deployed network stored by :func:`export_checkpoint`, in eval mode.

    The network is rebuilt from the stored model name unless ``model`` (an untrained
    instance of the same architecture) is given.
    """
    meta, state = read_exported_state(path)
    if model is None:
        from .models import build_model

        if meta.get("model") is None or meta.get("num_classes") is None:
            raise ValueError(f"{path} names no model; pass model= with the network to load into")
        model = build_model(meta["model"], num_classes=int(meta["num_classes"]))
    model.load_state_dict(state)
    return model.eval()


def format_size_report(report: dict[str, Any]) -> str:
    """Return the size report as a few human-readable lines."""
    ratio = report["binarized_ratio"]
    lines = [
        f"exported: {report['path']} ({report['file_bytes']:,} bytes on disk)",
        f"binarized layers: {report['binarized_tensors']} tensors, {report['binarized_weights']:,} weights",
        f"  packed 1-bit + alpha: {report['binarized_packed_bytes']:,} bytes",
        f"  float32:              {report['binarized_float32_bytes']:,} bytes"
        + (f" ({ratio:.1f}x larger)" if ratio else ""),
        f"full-precision tensors (first/last layer, biases, BatchNorm): {report['float_tensor_bytes']:,} bytes",
        f"whole model: {report['model_exported_bytes']:,} bytes exported vs "
        f"{report['model_float32_bytes']:,} bytes in float32",
    ]
    return "\n".join(lines)
