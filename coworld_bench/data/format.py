"""On-disk format of an offline dataset (SPEC section 3).

A dataset is a directory:

    manifest.json            what the data is and how it was made (see Manifest)
    ep000000-500.npz         one file per episode, ``ep<index>-<steps>.npz``
    ...

Each episode file is an ``.npz`` archive in the DreamerV2 / V-D4RL layout, with
T+1 rows for an episode of T steps:

    image        (T+1, H, W, 3) uint8
    action       (T+1, A)       float32   action[t] led to image[t]; row 0 is zeros
    reward       (T+1,)         float32   reward[t] came with image[t]; row 0 is 0
    discount     (T+1,)         float32   0 after a terminal step, else 1
    is_first     (T+1,)         bool      True on row 0 only
    is_last      (T+1,)         bool      True on row T only
    is_terminal  (T+1,)         bool      True where the episode really ended
    state        (T+1, S)       float32   optional: low-dimensional simulator state

Files are written uncompressed (``np.savez``) so each array sits contiguously in
the archive and any rows of it can be read by offset without loading the rest;
``np.load(path, allow_pickle=False)`` reads them like any other ``.npz``. Every
write goes to a temporary file first and is renamed into place, so a file either
exists whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from coworld_bench.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
REQUIRED_KEYS = ("image", "action", "reward", "discount", "is_first", "is_last", "is_terminal")
OPTIONAL_KEYS = ("state",)
DTYPES = {
    "image": np.uint8, "action": np.float32, "reward": np.float32, "discount": np.float32,
    "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_, "state": np.float32,
}


class DatasetError(UserError):
    """A dataset or episode file that is missing, corrupt or inconsistent."""


_UMASK = os.umask(0)
os.umask(_UMASK)


def episode_name(index: int, steps: int) -> str:
    return f"ep{index:06d}-{steps}.npz"


def atomic_write_bytes(path: Path, write) -> None:
    """Calls ``write(file)`` on a temporary file beside ``path``, then renames it in."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files private; data files are not
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.errno is not None and e.filename is None:
            # A write into the open file (a full disk): name the file it was for.
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    data = (json.dumps(obj, indent=1, sort_keys=False) + "\n").encode()
    atomic_write_bytes(path, lambda f: f.write(data))


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _validate_layout(shapes: dict[str, tuple], dtypes: dict[str, np.dtype], where: str) -> int:
    """Keys, dtypes and shapes of an episode; returns the number of steps T."""
    missing = [k for k in REQUIRED_KEYS if k not in shapes]
    if missing:
        raise DatasetError(f"{where}: missing key(s) {', '.join(missing)}; an episode needs "
                           f"{', '.join(REQUIRED_KEYS)}.")
    unknown = sorted(set(shapes) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
    if unknown:
        raise DatasetError(f"{where}: unexpected key(s) {', '.join(unknown)}.")
    image = shapes["image"]
    if len(image) != 4 or image[-1] != 3:
        raise DatasetError(f"{where}: 'image' has shape {image}, expected (T+1, H, W, 3).")
    rows = image[0]
    if rows < 2:
        raise DatasetError(f"{where}: an episode needs at least 2 rows (reset + one step).")
    ndim = {"action": 2, "state": 2, "reward": 1, "discount": 1, "is_first": 1, "is_last": 1,
            "is_terminal": 1}
    for key, shape in shapes.items():
        if shape[:1] != (rows,):
            raise DatasetError(f"{where}: {key!r} has shape {shape} but 'image' has {rows} rows.")
        if key in ndim and len(shape) != ndim[key]:
            raise DatasetError(f"{where}: {key!r} has shape {shape}, expected "
                               f"{'(T+1,)' if ndim[key] == 1 else '(T+1, N)'}.")
        if dtypes[key] != DTYPES[key]:
            raise DatasetError(f"{where}: {key!r} has dtype {dtypes[key]}, expected "
                               f"{np.dtype(DTYPES[key])}.")
    return rows - 1


def _validate_flags(is_first: np.ndarray, is_last: np.ndarray, where: str) -> None:
    if not is_first[0] or is_first[1:].any():
        raise DatasetError(f"{where}: 'is_first' must be True on row 0 only.")
    if not is_last[-1] or is_last[:-1].any():
        raise DatasetError(f"{where}: 'is_last' must be True on the final row only.")


FLOAT_KEYS = ("action", "reward", "discount", "state")


def _validate_finite(read, keys, where: str) -> None:
    """Every value of the float arrays is finite: a NaN reward or action would train a
    learner to NaN, found only when the simulator refused its actions."""
    for key in FLOAT_KEYS:
        if key not in keys:
            continue
        values = read(key)
        finite = np.isfinite(values)
        if not finite.all():
            row = int(np.argwhere(~finite)[0][0])
            bad = values.reshape(len(values), -1)[row][~finite.reshape(len(values), -1)[row]][0]
            raise DatasetError(f"{where}: {key!r} holds a non-finite value ({bad}) at row {row} "
                               f"({int((~finite).sum())} in all); a learner would train to NaN "
                               "on it. Collect or import the episode again from finite data.")


def validate_episode_arrays(arrays: dict[str, np.ndarray], where: str) -> int:
    """Checks keys, dtypes, shapes, flags and that every float value is finite; returns
    the number of steps T."""
    steps = _validate_layout({k: v.shape for k, v in arrays.items()},
                             {k: v.dtype for k, v in arrays.items()}, where)
    _validate_flags(arrays["is_first"], arrays["is_last"], where)
    _validate_finite(arrays.__getitem__, arrays, where)
    return steps


def write_episode(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Validates and atomically writes one uncompressed episode file."""
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    validate_episode_arrays(arrays, str(path))
    atomic_write_bytes(path, lambda f: np.savez(f, **arrays))


class EpisodeFile:
    """Random access to the arrays of one uncompressed episode file.

    Reads go through ``os.pread`` of exactly the requested rows, so the process
    never holds more of a dataset than the samples it asked for.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.arrays: dict[str, tuple[int, np.dtype, tuple[int, ...]]] = {}
        try:
            with zipfile.ZipFile(self.path) as zf, open(self.path, "rb") as raw:
                for info in zf.infolist():
                    if not info.filename.endswith(".npy"):
                        raise DatasetError(f"{self.path}: unexpected member {info.filename!r}.")
                    if info.compress_type != zipfile.ZIP_STORED:
                        raise DatasetError(f"{self.path}: member {info.filename!r} is compressed; "
                                           "import the file with `coworld-bench data import`.")
                    raw.seek(info.header_offset)
                    header = raw.read(30)
                    name_len, extra_len = struct.unpack("<HH", header[26:30])
                    start = info.header_offset + 30 + name_len + extra_len
                    raw.seek(start)
                    version = np.lib.format.read_magic(raw)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, fortran, dtype = read_header(raw)
                    if fortran:
                        raise DatasetError(f"{self.path}: {info.filename!r} is Fortran-ordered.")
                    if dtype.hasobject:
                        raise DatasetError(f"{self.path}: {info.filename!r} holds Python objects.")
                    offset = raw.tell()
                    size = int(np.prod(shape)) * dtype.itemsize
                    if offset + size > os.path.getsize(self.path):
                        raise DatasetError(f"{self.path}: {info.filename!r} is truncated.")
                    self.arrays[info.filename[:-4]] = (offset, dtype, tuple(shape))
        except (zipfile.BadZipFile, OSError, ValueError, struct.error, EOFError) as e:
            raise DatasetError(f"{self.path}: not a readable episode file ({e}).") from None
        self._fd = None

    @property
    def steps(self) -> int:
        return self.arrays["image"][2][0] - 1

    def shape(self, key: str) -> tuple[int, ...]:
        return self.arrays[key][2]

    def read(self, key: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        offset, dtype, shape = self.arrays[key]
        stop = shape[0] if stop is None else stop
        row = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
        count = stop - start
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY)
        out = np.empty((count, *shape[1:]), dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        n = os.preadv(self._fd, [view], offset + start * row) if count else 0
        if n != count * row:
            raise DatasetError(f"{self.path}: short read of {key!r} rows {start}:{stop}.")
        return out

    def read_all(self) -> dict[str, np.ndarray]:
        return {key: self.read(key) for key in self.arrays}

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __getstate__(self):  # file descriptors do not cross processes
        state = self.__dict__.copy()
        state["_fd"] = None
        return state

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


def check_episode_file(path: Path, expected: dict | None = None, checksum: bool = True) -> int:
    """Checks one file against the format (and its manifest entry); returns T."""
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: listed in the manifest but missing.")
    if expected is not None and checksum:
        digest = sha256_file(path)
        if digest != expected["sha256"]:
            raise DatasetError(f"{path}: checksum mismatch (sha256 {digest[:12]}..., manifest "
                               f"says {expected['sha256'][:12]}...); the file was changed or "
                               "damaged after it was written.")
    episode = EpisodeFile(path)
    try:
        steps = _validate_layout({k: v[2] for k, v in episode.arrays.items()},
                                 {k: v[1] for k, v in episode.arrays.items()}, str(path))
        _validate_flags(episode.read("is_first"), episode.read("is_last"), str(path))
        _validate_finite(episode.read, episode.arrays, str(path))
    finally:
        episode.close()
    if expected is not None and steps != expected["steps"]:
        raise DatasetError(f"{path}: has {steps} steps, the manifest says {expected['steps']}.")
    return steps
