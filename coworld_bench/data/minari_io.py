"""Benchmark datasets as Minari datasets, and Minari datasets as benchmark datasets.

Minari (https://minari.farama.org) is optional: ``pip install -e '.[minari]'``. It is
imported only when one of these functions runs.

A Minari episode of T steps holds ``observations`` with T+1 entries (the reset
first) and ``actions``, ``rewards``, ``terminations``, ``truncations`` with T
entries, ``actions[t]`` taken at ``observations[t]``. A benchmark episode file holds
T+1 rows with row t reached by ``action[t]`` (``coworld_bench.data.format``), so:

    observations  = image                  (T+1, H, W, 3) uint8, a Box image space
    actions       = action[1:]             (T, A) float32
    rewards       = reward[1:]             (T,) float32
    terminations  = is_terminal[1:]        (T,) bool
    truncations   = is_last[1:] & ~is_terminal[1:]
    infos         = {"state": state}       (T+1, S) float32, when the dataset has it

Observations are the frames alone (not a Dict with the state) so that tools that
expect a Box image space read them as they are; the low-dimensional state sits in
``infos``, one row per observation, as Minari's ``DataCollector`` records infos.
Frames are stored raw (``jpeg_encoding=False``): Minari's default JPEG is lossy.
The rest of a benchmark episode follows from these: row 0's action and reward are
zeros, ``is_first``/``is_last`` mark the first and last rows, and ``discount`` is 0
on terminal rows, else 1 (a dataset whose discount differs keeps it in
``infos["discount"]``). Export and import are thus lossless: every array of every
episode comes back with its dtype and values.

Metadata of an exported dataset: ``env_spec`` and ``eval_env_spec`` make the
benchmark env as the data sees it (``make_env``; ``dataset.recover_environment()``
works where coworld-bench is installed), ``algorithm_name`` is the behaviour,
``ref_min_score``/``ref_max_score`` are the protocol's R_random/R_ref where it
defines them (``coworld_bench.protocol.references``), and ``coworld_bench`` holds
the task, suite, quality, behaviour, seed, env options, the package version and the
benchmark manifest as JSON text, from which ``import_minari`` restores the dataset.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from coworld_bench import __version__
from coworld_bench.data.format import (
    FORMAT_VERSION, MANIFEST, DatasetError, atomic_write_json, episode_name, sha256_file,
    write_episode,
)
from coworld_bench.data.importer import RESIZE_FILTER, _resize, imported_manifest
from coworld_bench.errors import ConfigError, UserError
from coworld_bench.tasks import resolve_task

__all__ = ["export_minari", "import_minari", "default_dataset_id", "default_import_dir",
           "make_env", "ImageObservations"]

INSTALL_HINT = "pip install -e '.[minari]'"
# Metadata key of what coworld-bench records about a dataset it exported.
METADATA_KEY = "coworld_bench"
# Minari's dataset id: (namespace/)name-vN; we always give a namespace and a version.
_ID_RE = re.compile(r"^[-_\w][-_\w/]*[-_\w]/[-_\w]+-v\d+$")
# Warnings of Minari's writer about metadata a benchmark export has no value for.
_UNSET_METADATA = r"`(code_permalink|author|author_email)` is set to None|env_spec is None"


def _import_minari():
    try:
        import minari
    except ImportError as e:
        raise UserError(f"Minari is not installed: {INSTALL_HINT} ({e}).") from None
    return minari


class ImageObservations(gym.Wrapper):
    """A benchmark env as its Minari dataset stores it: the observation is the image
    frame alone, the simulator state goes to ``info["state"]``."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.observation_space = env.observation_space["image"]

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return obs["image"], {**info, "state": obs["state"]}

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs["image"], reward, terminated, truncated, {**info, "state": obs["state"]}


def make_env(task_id: str, seed: int | None = None, **options) -> gym.Env:
    """The entry point of an exported dataset's ``env_spec``: ``envs.make(task_id,
    seed, **options)`` seen through ``ImageObservations``."""
    from coworld_bench import envs

    return ImageObservations(envs.make(task_id, seed=seed, **options))


def default_dataset_id(manifest: Mapping[str, Any]) -> str:
    """``coworld-bench/<task>/<quality>[-<behaviour>][-seed<seed>]-v0``, e.g.
    ``coworld-bench/mw-drawer-close/medium-replay-scripted-seed0-v0``."""
    name = manifest["quality"]
    if manifest.get("behaviour") not in (None, manifest["quality"]):
        name += f"-{manifest['behaviour']}"
    if manifest.get("seed") is not None:
        name += f"-seed{manifest['seed']}"
    return f"coworld-bench/{manifest['task_id']}/{name}-v0"


def _check_dataset_id(dataset_id: str) -> str:
    if not _ID_RE.match(dataset_id):
        raise ConfigError(f"Minari dataset id {dataset_id!r} is not of the form "
                          "namespace/name-vN (e.g. coworld-bench/mw-drawer-close/mine-v0).")
    return dataset_id


@contextlib.contextmanager
def _datasets_root(root: str | Path | None):
    """Minari reads its datasets folder from ``MINARI_DATASETS_PATH`` at each call;
    within this block it is ``root`` (unchanged if None)."""
    if root is None:
        yield
        return
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(Path(root).expanduser().resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def _env_options(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The ``envs.make`` options the data was made with: a collection's own (its
    config's ``env``), else the recorded env description's EnvOptions fields."""
    import dataclasses

    from coworld_bench.envs import EnvOptions

    config_env = (manifest.get("config") or {}).get("env")
    if isinstance(config_env, dict):
        return dict(config_env)
    names = {f.name for f in dataclasses.fields(EnvOptions)}
    return {k: v for k, v in manifest["env"].items() if k in names}


def _env_spec(task, options: dict[str, Any]):
    from gymnasium.envs.registration import EnvSpec

    return EnvSpec(id=f"coworld-bench/{task.id}-v0", entry_point=f"{__name__}:make_env",
                   max_episode_steps=task.episode_steps,
                   kwargs={"task_id": task.id, **options})


def _references(task, references: bool | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The protocol's R_random and R_ref: computed (and cached) if True, as given if
    a mapping with ``random`` and ``reference``, none if False."""
    if references is True:
        from coworld_bench import protocol

        return dict(protocol.references(task.id))
    if not references:
        return None
    refs = dict(references)
    missing = [k for k in ("random", "reference") if k not in refs]
    if missing:
        raise ConfigError(f"references needs the keys random and reference (R_random, R_ref); "
                          f"missing {', '.join(missing)}.")
    return refs


def _derived_discount(is_terminal: np.ndarray) -> np.ndarray:
    return np.where(is_terminal, 0.0, 1.0).astype(np.float32)


def _episode_buffer(minari, rows: dict[str, np.ndarray], where: str):
    """One benchmark episode as a Minari ``EpisodeBuffer`` (the module docstring's
    mapping); refuses rows that mapping would not carry."""
    if rows["action"][0].any() or rows["reward"][0] != 0 or rows["is_terminal"][0]:
        raise DatasetError(f"{where}: row 0 must be the reset (zero action and reward, not "
                           "terminal) to be exported; a Minari episode has no place for it.")
    terminal = rows["is_terminal"][1:]
    infos = {}
    if "state" in rows:
        infos["state"] = rows["state"]
    if not np.array_equal(rows["discount"], _derived_discount(rows["is_terminal"])):
        infos["discount"] = rows["discount"]
    return minari.data_collector.EpisodeBuffer(
        observations=rows["image"], actions=rows["action"][1:], rewards=rows["reward"][1:],
        terminations=terminal, truncations=rows["is_last"][1:] & ~terminal,
        infos=infos or None)


def _description(manifest: Mapping[str, Any], task) -> str:
    env = manifest["env"]
    render = ", ".join(f"{k}={env[k]}" for k in ("image_size", "fast_render", "antialias")
                       if k in env)
    return (f"coworld-bench {task.paper_name} ({task.id}, {task.suite}): {manifest['quality']} "
            f"data of the {manifest['behaviour']} behaviour, seed {manifest['seed']}, "
            f"{manifest['episode_count']} episodes, {manifest['step_count']} steps. "
            f"Observations are RGB frames ({render}); infos['state'] holds the simulator "
            "state of each observation. Evaluate with the same render options.")


def export_minari(dataset_dir: str | Path, out: str | Path | None = None,
                  name: str | None = None, *,
                  references: bool | Mapping[str, Any] = True) -> Path:
    """Writes a benchmark dataset as a Minari dataset; returns its folder.

    Args:
      dataset_dir: a benchmark dataset (verified against its manifest first).
      out: Minari's datasets folder to write into; default ``$MINARI_DATASETS_PATH``,
        else ``~/.minari/datasets``. Load from it with that variable set to ``out``.
      name: the Minari dataset id, ``namespace/name-vN``; default
        ``default_dataset_id(manifest)``.
      references: record the protocol's R_random and R_ref as ``ref_min_score`` and
        ``ref_max_score``. True: ``protocol.references(task)`` (Meta-World's are
        measured on the simulator the first time, then cached); a mapping with
        ``random`` and ``reference``: those values; False: none.

    Returns:
      ``<datasets folder>/<id>``; ``minari.load_dataset(id)`` reads it.
    """
    from coworld_bench.data.dataset import Dataset

    minari = _import_minari()
    dataset = Dataset(dataset_dir)
    try:
        return _write(minari, dataset, out, name, references)
    finally:
        dataset.close()


def _write(minari, dataset, out, name, references) -> Path:
    """``export_minari`` of an opened dataset."""
    from minari.storage import get_dataset_path

    manifest = dataset.manifest
    task = resolve_task(manifest["task_id"])
    dataset_id = _check_dataset_id(name or default_dataset_id(manifest))
    with _datasets_root(out):
        path = Path(get_dataset_path(dataset_id))
    if path.exists():
        raise UserError(f"A Minari dataset {dataset_id} already exists at {path}; give "
                        f"another --name or delete it (minari.delete_dataset({dataset_id!r})).")
    refs = _references(task, references)
    options = _env_options(manifest)
    spec = _env_spec(task, options)
    metadata: dict[str, Any] = {
        "env_spec": spec.to_json(),
        METADATA_KEY: {
            "version": __version__, "format_version": FORMAT_VERSION, "task_id": task.id,
            "suite": task.suite, "quality": manifest["quality"],
            "behaviour": manifest["behaviour"], "seed": manifest["seed"],
            "env": manifest["env"], "env_options": options, "references": refs,
            "layout": "observations: RGB frames (T+1 per episode); infos['state']: the "
                      "simulator state per observation; actions[t] taken at observations[t]",
            "manifest": json.dumps(manifest),
        },
    }
    if refs is not None and refs.get("random") is not None and refs.get("reference") is not None:
        # How each was measured (episodes, policy) is in coworld_bench.references.
        metadata.update(ref_min_score=float(refs["random"]), ref_max_score=float(refs["reference"]))
    image_shape = dataset.image_shape
    with _datasets_root(out):
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_UNSET_METADATA)
                written = minari.create_dataset_from_buffers(
                    dataset_id, [], eval_env=spec, algorithm_name=manifest["behaviour"],
                    observation_space=gym.spaces.Box(0, 255, image_shape, np.uint8),
                    action_space=gym.spaces.Box(-1.0, 1.0, (dataset.action_dim,), np.float32),
                    description=_description(manifest, task),
                    requirements=[f"coworld-bench=={__version__}"], jpeg_encoding=False)
            written.storage.update_metadata(metadata)
            for index, entry in enumerate(manifest["episodes"]):
                rows = dataset.load_episode(index)
                written.update_dataset_from_buffer(
                    [_episode_buffer(minari, rows, str(dataset.directory / entry["file"]))])
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)  # no half-written dataset under the id
            raise
    return path


# Import --------------------------------------------------------------------------

def _open(minari, source: str | Path):
    """A Minari dataset from its folder (or that folder's ``data``), else by id under
    Minari's datasets folder; returns (dataset, how to name it)."""
    path = Path(source).expanduser()
    if path.exists():
        data = path / "data" if (path / "data" / "metadata.json").exists() else path
        if not (data / "metadata.json").exists():
            raise DatasetError(f"{path}: not a Minari dataset (no data/metadata.json).")
        return minari.MinariDataset(data), str(path)
    try:
        return minari.load_dataset(str(source)), str(source)
    except FileNotFoundError:
        root = os.environ.get("MINARI_DATASETS_PATH", "~/.minari/datasets")
        raise DatasetError(f"{source}: no such Minari dataset folder, nor a dataset id under "
                           f"{root} (Minari's datasets folder: set MINARI_DATASETS_PATH, or "
                           "give the dataset's folder).") from None


def _exported(metadata: Mapping[str, Any]) -> dict[str, Any] | None:
    ours = metadata.get(METADATA_KEY)
    return ours if isinstance(ours, dict) and "manifest" in ours else None


def _task_for(ours: dict | None, task_id: str | None, source: str):
    if ours is None:
        if task_id is None:
            raise ConfigError(f"{source} was not exported by coworld-bench, so its task is "
                              "unknown: name it with --task (task_id=...).")
        return resolve_task(task_id)
    task = resolve_task(ours["task_id"])
    if task_id is not None and resolve_task(task_id).id != task.id:
        raise ConfigError(f"{source} holds {task.id} data, not {resolve_task(task_id).id}; "
                          "leave --task out for a dataset coworld-bench exported.")
    return task


def default_import_dir(source: str | Path, task_id: str | None = None) -> Path:
    """Where ``data import --format minari`` writes without ``--out``: the data
    root's ``<task>/minari-<dataset name>``."""
    from coworld_bench.data.dataset import default_root

    minari = _import_minari()
    dataset, label = _open(minari, source)
    task = _task_for(_exported(dataset.storage.metadata), task_id, label)
    name = dataset.spec.dataset_name
    return default_root() / task.id / f"minari-{name}"


def _frames(observations, where: str) -> tuple[np.ndarray, dict[str, np.ndarray], list[str]]:
    """The RGB frames of an episode's observations (a Box image, or a Dict with
    ``image`` or ``pixels``), the Dict's ``state`` and the keys left out."""
    extra: dict[str, np.ndarray] = {}
    dropped: list[str] = []
    if isinstance(observations, dict):
        key = next((k for k in ("image", "pixels") if k in observations), None)
        if key is None:
            raise DatasetError(f"{where}: observations hold {', '.join(sorted(observations))}; "
                               "a visual dataset needs RGB frames under 'image' or 'pixels'.")
        if "state" in observations:
            extra["state"] = np.asarray(observations["state"])
        dropped = [f"observations/{k}" for k in sorted(observations) if k not in (key, "state")]
        observations = observations[key]
    frames = np.asarray(observations)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise DatasetError(f"{where}: observations of shape {frames.shape} and dtype "
                           f"{frames.dtype}; a visual dataset needs uint8 RGB frames "
                           "(T+1, H, W, 3).")
    return frames, extra, dropped


def _episode_rows(episode, image_size: int | None, where: str) -> tuple[dict, list[str]]:
    """A Minari episode as benchmark rows (the module docstring's mapping)."""
    image, extra, dropped = _frames(episode.observations, where)
    steps = len(episode.rewards)
    if len(image) != steps + 1:
        raise DatasetError(f"{where}: {len(image)} observations for {steps} steps; Minari "
                           "episodes hold one observation more than steps.")
    actions = np.asarray(episode.actions, dtype=np.float32)
    if actions.ndim == 1:
        actions = actions[:, None]
    infos = episode.infos or {}
    for key in ("state", "discount"):
        value = infos.get(key)
        if isinstance(value, np.ndarray) and len(value) == steps + 1 and value.dtype.kind in "fiub":
            extra.setdefault(key, value)
    dropped += [f"infos/{k}" for k in sorted(infos) if k not in extra]
    is_terminal = np.concatenate([[False], np.asarray(episode.terminations, bool)])
    rows = {
        "image": image if image_size is None else _resize(image, image_size),
        "action": np.concatenate([np.zeros((1, actions.shape[1]), np.float32), actions]),
        "reward": np.concatenate([[0.0], np.asarray(episode.rewards)]).astype(np.float32),
        "discount": np.asarray(extra.get("discount", _derived_discount(is_terminal)), np.float32),
        "is_first": np.arange(steps + 1) == 0,
        "is_last": np.arange(steps + 1) == steps,
        "is_terminal": is_terminal,
    }
    if "state" in extra:
        rows["state"] = np.asarray(extra["state"], np.float32)
    return rows, dropped


def _imported_manifest(original: dict | None, task, source: str, dataset, image_size: int | None,
                       entries: list[dict], dropped: set[str]) -> dict[str, Any]:
    """A dataset we exported gets its own manifest back (with the new files and
    checksums, and where it came from); any other gets ``import_dataset``'s fields."""
    steps = int(sum(e["steps"] for e in entries))
    if original is not None:
        manifest = copy.deepcopy(original)
        manifest.update(format_version=FORMAT_VERSION, created_by=f"coworld-bench {__version__}",
                        status="complete", episodes=entries, episode_count=len(entries),
                        step_count=steps,
                        imported={"from": source, "format": "minari", "dataset_id": dataset.id,
                                  "exported_created_by": original.get("created_by")})
        return manifest
    metadata = dataset.storage.metadata
    return imported_manifest(
        task.id, entries,
        {"imported_from": source, "format": "minari", "image_size": image_size,
         "resize_filter": RESIZE_FILTER, "dropped_keys": sorted(dropped),
         "minari_dataset_id": dataset.id, "minari_algorithm": metadata.get("algorithm_name"),
         "minari_ref_scores": [metadata.get("ref_min_score"), metadata.get("ref_max_score")]},
        {"image_size": image_size})


def import_minari(source: str | Path, out: str | Path, task_id: str | None = None,
                  image_size: int | None = None) -> dict[str, Any]:
    """Reads a Minari dataset into a new benchmark dataset folder ``out``; returns
    its manifest.

    Args:
      source: a Minari dataset id (under ``$MINARI_DATASETS_PATH`` or
        ``~/.minari/datasets``) or a dataset folder.
      out: the benchmark dataset folder to write (must not hold one).
      task_id: the task of the data; read from the metadata of a dataset
        coworld-bench exported (then it may be left out), needed for any other.
      image_size: resize frames to this size (PIL BOX); default: kept as they are
        for a dataset we exported, 64 for any other.

    A dataset coworld-bench exported comes back as it was: the same arrays and the
    same manifest (task, quality, behaviour, seed, env options, episode returns),
    with new checksums and an ``imported`` record. Any other gets quality
    ``imported``, behaviour ``unknown`` and no seed, as ``import_dataset`` writes.
    """
    minari = _import_minari()
    out = Path(out)
    dataset, label = _open(minari, source)
    ours = _exported(dataset.storage.metadata)
    task = _task_for(ours, task_id, label)
    original = json.loads(ours["manifest"]) if ours is not None else None
    if original is None and image_size is None:
        image_size = 64
    if original is not None and image_size not in (None, original["env"].get("image_size")):
        raise ConfigError(f"{label} holds {original['env'].get('image_size')}px frames as "
                          "coworld-bench exported them; import it as it is (no image size).")
    if original is not None and len(original["episodes"]) != dataset.total_episodes:
        raise DatasetError(f"{label}: {dataset.total_episodes} episodes, but its coworld-bench "
                           f"manifest lists {len(original['episodes'])}; it was changed after "
                           "export.")
    if (out / MANIFEST).exists():
        raise DatasetError(f"{out} already holds a dataset; choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    entries, dropped_all = [], set()
    for index, episode in enumerate(dataset.iterate_episodes()):
        where = f"{label} (episode {episode.id})"
        rows, dropped = _episode_rows(episode, image_size, where)
        steps = len(rows["reward"]) - 1
        name = episode_name(index, steps)
        write_episode(out / name, rows)
        dropped_all.update(dropped)
        entry = {"index": index, "file": name, "steps": steps,
                 "return": float(rows["reward"][1:].sum()), "success": None}
        if original is not None:
            recorded = original["episodes"][index]
            if recorded["steps"] != steps or not np.isclose(
                    recorded["return"], entry["return"], rtol=1e-5, atol=1e-3):
                raise DatasetError(f"{where}: {steps} steps and return {entry['return']:.3f}, "
                                   f"its manifest says {recorded['steps']} and "
                                   f"{recorded['return']:.3f}; it was changed after export.")
            entry = {**recorded, "index": index, "file": name}
        entry.update(origin=where, sha256=sha256_file(out / name))
        entries.append(entry)
    if not entries:
        raise DatasetError(f"{label}: the Minari dataset holds no episodes.")
    manifest = _imported_manifest(original, task, label, dataset, image_size, entries, dropped_all)
    atomic_write_json(out / MANIFEST, manifest)
    return manifest
