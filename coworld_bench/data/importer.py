"""Importing datasets made elsewhere into the coworld-bench format.

Accepted sources:

- a folder of ``.npz`` episodes written by DreamerV2-family code, CoWorld's
  official code or V-D4RL's 64px release: keys ``image``, ``action``, ``reward``,
  ``discount`` and, where present, ``is_first``/``is_last``/``is_terminal``
  (derived when absent: first row, last row, ``discount == 0``). Other keys are
  dropped and listed in the manifest.
- a V-D4RL 84px ``.hdf5`` file: ``observation`` (N, 3, 84, 84), ``action``,
  ``reward``, ``discount``, ``step_type`` (0 = first, 2 = last). Episodes are split
  at ``step_type == 0``; frames are resized to the target size with PIL's BOX
  filter (the mean over each source pixel's footprint, i.e. area averaging).

Every imported episode is validated, written atomically in the uncompressed
format, and checksummed. A bad source file stops the import with its path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from coworld_bench import __version__
from coworld_bench.data.format import (
    DTYPES, FORMAT_VERSION, MANIFEST, OPTIONAL_KEYS, REQUIRED_KEYS, DatasetError,
    atomic_write_json, episode_name, sha256_file, validate_episode_arrays, write_episode,
)
from coworld_bench.errors import ConfigError
from coworld_bench.tasks import resolve_task

RESIZE_FILTER = "PIL BOX (area average)"


def _complete_flags(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    rows = len(arrays["reward"])
    if "discount" not in arrays:
        arrays["discount"] = np.ones(rows, np.float32)
    if "is_first" not in arrays:
        arrays["is_first"] = np.arange(rows) == 0
    if "is_last" not in arrays:
        arrays["is_last"] = np.arange(rows) == rows - 1
    if "is_terminal" not in arrays:
        arrays["is_terminal"] = np.asarray(arrays["discount"]) == 0
    return arrays


def _normalise(arrays: dict[str, np.ndarray], where: str) -> tuple[dict, list[str]]:
    known = set(REQUIRED_KEYS) | set(OPTIONAL_KEYS)
    dropped = sorted(set(arrays) - known)
    arrays = {k: v for k, v in arrays.items() if k in known}
    for key in ("image", "action", "reward"):
        if key not in arrays:
            raise DatasetError(f"{where}: missing key {key!r} (found {', '.join(sorted(arrays))}).")
    arrays = _complete_flags(arrays)
    out = {}
    for key, value in arrays.items():
        value = np.asarray(value)
        if key == "image" and value.dtype != np.uint8:
            raise DatasetError(f"{where}: 'image' has dtype {value.dtype}, expected uint8.")
        out[key] = value.astype(DTYPES[key], copy=False)
    if out["action"].ndim == 1:
        out["action"] = out["action"][:, None]
    validate_episode_arrays(out, where)
    return out, dropped


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    if images.shape[1:3] == (size, size):
        return images
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BOX))
                     for f in images])


def read_npz_folder(source: Path, size: int) -> Iterator[tuple[str, dict, list[str]]]:
    files = sorted(source.rglob("*.npz"))
    if not files:
        raise DatasetError(f"{source}: no .npz episode files found.")
    for path in files:
        try:
            with np.load(path, allow_pickle=False) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as e:  # zip, pickle and header errors alike
            raise DatasetError(f"{path}: cannot be read as an episode ({e}).") from None
        arrays, dropped = _normalise(arrays, str(path))
        arrays["image"] = _resize(arrays["image"], size)
        yield str(path), arrays, dropped


def read_vd4rl_hdf5(source: Path, size: int) -> Iterator[tuple[str, dict, list[str]]]:
    import h5py

    files = [source] if source.is_file() else sorted(source.rglob("*.hdf5"))
    if not files:
        raise DatasetError(f"{source}: no .hdf5 files found.")
    for path in files:
        try:
            with h5py.File(path, "r") as f:
                data = {k: f[k][()] for k in ("observation", "action", "reward", "discount",
                                              "step_type")}
        except KeyError as e:
            raise DatasetError(f"{path}: missing dataset {e}; V-D4RL hdf5 files hold "
                               "observation, action, reward, discount, step_type.") from None
        except OSError as e:
            raise DatasetError(f"{path}: cannot be read as hdf5 ({e}).") from None
        starts = np.flatnonzero(data["step_type"] == 0)
        if len(starts) == 0 or starts[0] != 0:
            raise DatasetError(f"{path}: step_type does not start an episode at row 0.")
        bounds = list(starts) + [len(data["step_type"])]
        for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            images = np.ascontiguousarray(data["observation"][a:b].transpose(0, 2, 3, 1))
            discount = data["discount"][a:b].astype(np.float32)
            last = data["step_type"][b - 1] == 2
            arrays = {
                "image": _resize(images, size),
                "action": data["action"][a:b],
                "reward": np.nan_to_num(data["reward"][a:b]),
                "discount": discount,
                "is_terminal": (np.arange(b - a) == b - a - 1) & last & (discount == 0),
            }
            where = f"{path} (episode {k}, rows {a}:{b})"
            arrays, dropped = _normalise(arrays, where)
            yield where, arrays, dropped


def import_dataset(source: str | Path, out: str | Path, task_id: str, fmt: str = "auto",
                   image_size: int = 64, env: dict[str, Any] | None = None) -> dict[str, Any]:
    """Imports episodes from ``source`` into a new dataset directory ``out``."""
    source, out = Path(source), Path(out)
    task = resolve_task(task_id)
    if not source.exists():
        raise DatasetError(f"{source}: no such file or folder.")
    if fmt == "auto":
        is_h5 = source.suffix in (".hdf5", ".h5") or (source.is_dir() and any(source.rglob("*.hdf5")))
        fmt = "hdf5" if is_h5 else "npz"
    readers = {"npz": read_npz_folder, "hdf5": read_vd4rl_hdf5}
    if fmt not in readers:
        raise ConfigError(f"Unknown import format {fmt!r}; valid formats: auto, npz, hdf5.")
    if (out / MANIFEST).exists():
        raise DatasetError(f"{out} already holds a dataset; choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    entries, dropped_all = [], set()
    for index, (origin, arrays, dropped) in enumerate(readers[fmt](source, image_size)):
        steps = len(arrays["reward"]) - 1
        name = episode_name(index, steps)
        write_episode(out / name, arrays)
        dropped_all.update(dropped)
        entries.append({"index": index, "file": name, "steps": steps,
                        "return": float(arrays["reward"][1:].sum()),
                        "success": None, "origin": origin, "sha256": sha256_file(out / name)})
    manifest = imported_manifest(
        task.id, entries, {"imported_from": str(source), "format": fmt,
                           "image_size": image_size, "resize_filter": RESIZE_FILTER,
                           "dropped_keys": sorted(dropped_all)},
        {"image_size": image_size, **(env or {})})
    atomic_write_json(out / MANIFEST, manifest)
    return manifest


def imported_manifest(task_id: str, entries: list[dict[str, Any]], config: dict[str, Any],
                      env: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a dataset imported from elsewhere: quality "imported", behaviour
    unknown, no seed, ``config`` saying where it came from, ``env`` what is known of
    its rendering, and the episodes' entries with their returns summarised."""
    returns = np.array([e["return"] for e in entries])
    return {
        "format_version": FORMAT_VERSION,
        "task_id": task_id,
        "quality": "imported",
        "behaviour": "unknown",
        "config": config,
        "env": {"task_id": task_id, **env,
                "note": "imported: rendering settings are those of the source data"},
        "seed": None,
        "created_by": f"coworld-bench {__version__}",
        "status": "complete",
        "stop_reason": "imported",
        "episodes": entries,
        "episode_count": len(entries),
        "step_count": int(sum(e["steps"] for e in entries)),
        "returns": {"mean": float(returns.mean()), "std": float(returns.std()),
                    "min": float(returns.min()), "max": float(returns.max()),
                    "success_rate": None},
    }
