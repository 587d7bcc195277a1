"""Atomic run-directory files and training checkpoints.

Every file of a run directory is written to a temporary file in the same directory, flushed
to disk and renamed over the target, so a crash leaves either the old or the new file, never
a torn one. Checkpoints contain only tensors and plain Python values, so they load with
``torch.load(..., weights_only=True)``. Random-number-generator states are converted to that
form: the NumPy Mersenne Twister key becomes an int64 tensor.

Example:
    >>> import tempfile, pathlib
    >>> from bqsam.train.checkpoint import write_json_atomic, read_json
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "summary.json"
    >>> write_json_atomic(path, {"epoch": 1})
    >>> read_json(path)
    {'epoch': 1}
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..atomic import write_bytes_atomic, write_text_atomic

__all__ = [
    "CHECKPOINT_NAME",
    "write_bytes_atomic",
    "write_text_atomic",
    "write_json_atomic",
    "write_metrics_atomic",
    "read_json",
    "read_metrics",
    "save_checkpoint",
    "load_checkpoint",
    "capture_rng_state",
    "restore_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"


# ------------------------------------------------------------------ atomic writes
# write_bytes_atomic and write_text_atomic come from bqsam.atomic and are re-exported here.


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable: {value!r}")


def _json_safe(value: Any) -> Any:
    # JSON has no NaN or infinity; write them as null so that every reader can parse the file.
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def write_json_atomic(path: str | os.PathLike, value: Any) -> None:
    """Write ``value`` as indented JSON atomically; NaN and infinity become ``null``."""
    text = json.dumps(_json_safe(value), indent=2, sort_keys=False, default=_json_default)
    write_text_atomic(path, text + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file written by :func:`write_json_atomic`."""
    with open(path, encoding="utf-8") as stream:
        return json.load(stream)


def write_metrics_atomic(
    directory: str | os.PathLike, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]
) -> None:
    """Write ``metrics.jsonl`` (one JSON object per row) and ``metrics.csv`` atomically."""
    directory = Path(directory)
    lines = [json.dumps(_json_safe(dict(row)), default=_json_default) for row in rows]
    write_text_atomic(directory / "metrics.jsonl", "".join(line + "\n" for line in lines))

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({name: _format_csv(row.get(name)) for name in columns})
    write_text_atomic(directory / "metrics.csv", buffer.getvalue())


def _format_csv(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float
    return "" if value is None else value


def read_metrics(directory: str | os.PathLike) -> list[dict[str, Any]]:
    """Read the rows of ``metrics.jsonl`` in a run directory (empty list when absent)."""
    path = Path(directory) / "metrics.jsonl"
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for line in stream if line.strip()]


# ------------------------------------------------------------------ RNG states
def capture_rng_state() -> dict[str, Any]:
    """Return the Python, NumPy, torch CPU and CUDA generator states as weights-only values."""
    version, python_state, gauss_next = random.getstate()
    numpy_state = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
        "numpy": {
            "name": numpy_state[0],
            "keys": torch.from_numpy(numpy_state[1].astype(np.int64)),
            "pos": int(numpy_state[2]),
            "has_gauss": int(numpy_state[3]),
            "cached_gaussian": float(numpy_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generator states captured by :func:`capture_rng_state`."""
    python = state["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    cuda_states = state.get("cuda") or []
    if cuda_states and torch.cuda.is_available():
        # A checkpoint from a machine with more GPUs restores the first ones only.
        count = min(len(cuda_states), torch.cuda.device_count())
        torch.cuda.set_rng_state_all(list(cuda_states)[:count])


# ------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | os.PathLike, payload: Mapping[str, Any]) -> None:
    """Save ``payload`` (tensors and plain values only) with ``torch.save``, atomically."""
    buffer = io.BytesIO()
    torch.save(dict(payload), buffer)
    write_bytes_atomic(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: when the file is not a readable weights-only checkpoint.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or unsafe files
        raise ValueError(
            f"{path} is not a readable bqsam checkpoint ({type(error).__name__}: {error}); "
            "it may be truncated or from another program"
        ) from error
    if not isinstance(payload, dict) or "model" not in payload:
        raise ValueError(f"{path} is not a bqsam checkpoint: expected a dict with a 'model' entry")
    return payload

