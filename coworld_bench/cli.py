"""The ``coworld-bench`` command line."""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
from pathlib import Path

import numpy as np

from coworld_bench import tasks as tasks_lib
from coworld_bench.errors import UserError
from coworld_bench.textual import table as _table


def list_tasks() -> str:
    rows = [[t.id, "/".join(t.codes), t.suite, t.sim_task, t.action_dim, t.action_repeat,
             t.episode_steps, t.paper_name] for t in tasks_lib.TASKS]
    return _table(rows, ["id", "codes", "suite", "simulator task", "action dim",
                         "action repeat", "episode steps", "paper name"])


def list_pairs() -> str:
    out = []
    for group, names in tasks_lib.PAPER_PAIRS.items():
        rows = []
        for name in names:
            pair = tasks_lib.resolve_pair(name)
            rows.append([pair.paper_name, pair.name, pair.source.id, pair.target.id,
                         pair.action_dim])
        out.append(f"Paper pairs, {group}:")
        out.append(_table(rows, ["pair", "shell name", "source (online)", "target (offline)",
                                 "action dim"]))
        out.append("")
    matrix = tasks_lib.metaworld_transfer_pairs()
    out.append(f"Meta-World transfer matrix: all {len(matrix)} ordered pairs of "
               f"{', '.join(t.code for t in tasks_lib.TASKS if t.suite == 'metaworld')}.")
    out.append("Any SOURCE-TARGET of task codes is a valid pair; full ids go through "
               "--source ID --target ID.")
    return "\n".join(out)


def list_algos() -> str:
    from coworld_bench import registry

    rows = []
    for name in registry.names():
        try:
            cls = registry.get(name)
            rows.append([name, cls.display_name(), cls.family, cls.learns_from_text(),
                         "yes" if cls.has_value else "no", cls.description])
        except Exception as e:  # a broken third-party plugin must not hide the others
            rows.append([name, "", "", "unavailable", "", f"failed to load: {e}"])
    return _table(rows, ["algorithm", "paper name", "family", "learns from", "critic",
                         "description"])


def _plain(value) -> str:
    if value is None:
        return "paper"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def list_settings(algo: str, preset: str, pair: str | None, target: str | None) -> str:
    """Every setting of ``algo``: its value at ``preset`` (for the tasks, when given),
    the config default, the valid values, the paper's value per suite and its meaning."""
    from coworld_bench import registry
    from coworld_bench.algorithm import field_docs, setting_checks

    cls = registry.get(algo)
    config = cls.make_config(preset)
    where = f"preset {preset}"
    if pair or target:
        if pair:
            resolved = tasks_lib.resolve_pair(pair)
            source, task = (resolved.source if cls.needs_source else None), resolved.target
        else:
            source, task = None, tasks_lib.resolve_task(target)
        config = cls.for_tasks(config, source, task)
        where += f", target {task.id} ({task.suite})"
    docs, checks = field_docs(cls.Config), setting_checks(cls.Config)
    defaults = cls.Config()
    rows = []
    for f in dataclasses.fields(config):
        paper = [f"{suite} {_plain(values[f.name])}" for suite, values in cls.paper.items()
                 if f.name in values]
        check = checks.get(f.name)
        rows.append([f.name, _plain(getattr(config, f.name)), _plain(getattr(defaults, f.name)),
                     str(check) if check else "", ", ".join(paper), docs.get(f.name, "")])
    header = f"{cls.name} ({cls.display_name()}), {where}. 'paper' = the paper's value for the " \
             "target's suite (give --pair or --target to resolve it)."
    return header + "\n" + _table(rows, ["setting", "value", "default", "valid",
                                         "paper by suite", "meaning"])


def list_presets() -> str:
    from coworld_bench.algorithm import BASE_PRESETS

    about = {"smoke": "tests: seconds, tiny random dataset",
             "quick": "minutes on a 2-core CPU: small model, scripted Meta-World data",
             "paper": "the paper's hyperparameters; needs a GPU to finish in days (the default)"}
    from coworld_bench import registry

    rows = [[name, about[name], ", ".join(f"{k}={v}" for k, v in values.items()
                                          if k != "train_steps") or
             "(each algorithm's defaults)"] for name, values in BASE_PRESETS.items()]
    lengths = []
    for name in BASE_PRESETS:  # each algorithm's own length: presets set it per algorithm
        by_length: dict[int, list[str]] = {}
        for algo in registry.names():
            try:
                steps = registry.get(algo).make_config(name).train_steps
            except Exception:  # noqa: BLE001 - a plugin that cannot build: not listed here
                continue
            by_length.setdefault(steps, []).append(algo)
        lengths.append(f"{name}: " + "; ".join(
            f"{'by suite' if steps is None else format(steps, ',')} ({', '.join(algos)})"
            for steps, algos in sorted(by_length.items(), key=lambda kv: (kv[0] is None,
                                                                          kv[0] or 0))))
    return (_table(rows, ["preset", "for", "runner settings"])
            + "\n\nUpdates (train_steps) per algorithm:\n" + "\n".join(f"  {x}" for x in lengths))


def _cmd_list(args) -> int:
    if args.what == "settings":
        if not args.algo:
            raise UserError("list settings needs an algorithm: coworld-bench list settings ALGO "
                            "[--preset P] [--pair S-T | --target T].")
        print(list_settings(args.algo, args.preset, args.pair, args.target))
        return 0
    if args.algo:
        raise UserError(f"list {args.what} takes no algorithm.")
    if args.what == "protocol":
        print(list_protocol(args.references))
        return 0
    print({"tasks": list_tasks, "pairs": list_pairs, "algos": list_algos,
           "presets": list_presets}[args.what]())
    return 0


def list_protocol(with_references: bool = False) -> str:
    """The evaluation protocol's text and hash; with ``--references``, every task's
    R_random and R_ref (computed on first use, then read from the data root's cache)."""
    from coworld_bench import protocol

    out = [protocol.protocol_text().rstrip(), "",
           f"Protocol hash: {protocol.protocol_hash()} (recorded in every result.json)."]
    if with_references:
        rows = []
        for task in tasks_lib.TASKS:
            refs = protocol.references(task.id)
            fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
            rows.append([task.code, task.id, fmt(refs["random"]), fmt(refs["reference"]),
                         refs["how"]])
        out += ["", _table(rows, ["code", "task", "R_random", "R_ref", "from"])]
    return "\n".join(out)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return str(path)


def _cmd_status(args) -> int:
    from coworld_bench.status import run_states

    root = Path(args.runs_dir)
    if not root.exists():
        raise UserError(f"{root} does not exist: give the --out folder of your runs "
                        "(default: ./runs).")
    states = run_states(root)
    if not states:
        print(f"No runs under {root}.")
        return 0
    rows = [[s.name, s.algo, s.seed, s.preset, s.progress, s.last_eval, s.state,
             _relative(s.path, root)] for s in states]
    print(_table(rows, ["pair/target", "algorithm", "seed", "preset", "step / total",
                        "last eval", "state", "run directory"]))
    for s in states:
        if s.why:
            print(f"  {s.path}: {s.why}")
    return 0


def _cmd_run(args) -> int:
    from coworld_bench import runner

    request = runner.RunRequest(
        algo=args.algo, pair=args.pair, source=args.source, target=args.target, seed=args.seed,
        preset=args.preset, overrides=runner.parse_overrides(args.set), device=args.device,
        out=args.out, force=args.force, progress=not args.quiet, yes=args.yes,
        eval_workers=args.eval_workers, compile=args.compile, logger=args.logger)
    run = runner.prepare(request)
    run.execute()
    return 0


def _cmd_eval(args) -> int:
    from coworld_bench import runner

    if args.episodes is not None and args.episodes < 1:
        raise UserError(f"--episodes {args.episodes}: evaluate at least 1 episode.")
    runner.check_eval_workers(args.eval_workers)
    run = runner.Run.from_dir(args.run_dir, device=args.device)
    run.request.eval_workers = args.eval_workers
    result = run.evaluate_checkpoint(args.episodes)
    print(f"{args.run_dir} at step {result['step']}: return {result['mean']:.1f} ± "
          f"{result['std']:.1f} over {len(result['returns'])} episodes "
          f"(success {np.mean(result['success']):.2f}); returns "
          + ", ".join(f"{r:.1f}" for r in result["returns"]))
    print("These episodes start from held-out seeds, never those of the run's own "
          "evaluations, so the score differs from the run's final one by the episodes' "
          "spread; the run's final score is in its result.json.")
    return 0


def _env_from_args(args) -> dict:
    env = {}
    if getattr(args, "fast_render", False):
        env["fast_render"] = True
    if getattr(args, "no_antialias", False):
        env["antialias"] = False
    return env


def _print_manifest(directory, manifest) -> None:
    r = manifest["returns"]
    print(f"{directory}")
    print(f"  task      {manifest['task_id']}   quality {manifest['quality']}   "
          f"behaviour {manifest['behaviour']}   seed {manifest['seed']}")
    print(f"  episodes  {manifest['episode_count']}   steps {manifest['step_count']}   "
          f"status {manifest['status']} ({manifest.get('stop_reason')})")
    print(f"  return    mean {r['mean']:.1f} ± {r['std']:.1f}  [min {r['min']:.1f}, "
          f"max {r['max']:.1f}]" + (f"   success {r['success_rate']:.2f}"
                                    if r.get("success_rate") is not None else ""))
    if r.get("random_return") is not None or r.get("reference_return") is not None:
        scale = "   ".join(f"{name} {r[key]:.1f}" for name, key in (
            ("R_random", "random_return"), ("R_ref", "reference_return"))
            if r.get(key) is not None)
        print(f"  scale     {scale}   (normalised (R - R_random) / (R_ref - R_random))")
    if r.get("normalised") is not None:
        n = r["normalised"]
        print(f"  normalised mean {n['mean']:.2f}  [min {n['min']:.2f}, max {n['max']:.2f}]")
    if manifest.get("threshold") is not None:
        level = manifest.get("normalised_threshold")
        print(f"  threshold {manifest['threshold']:.1f}"
              + (f" (normalised {level:.2f})" if level is not None else ""))
    env = manifest["env"]
    print("  env       " + ", ".join(f"{k}={v}" for k, v in env.items()))


def _cmd_data(args) -> int:
    from pathlib import Path

    from coworld_bench import data
    from coworld_bench.data import collection as collect_lib
    from coworld_bench.data import recipes

    if args.data_command == "collect":
        if args.seed is not None:
            from coworld_bench.seeding import check_seed

            check_seed(args.seed, "--seed")
        if args.recipe:
            if args.task or args.quality:
                raise UserError("Give --recipe or --task/--quality, not both.")
            card, config = recipes.load_recipe(args.recipe, behaviour=args.behaviour,
                                               episodes=_budget(args, None))
            config.env.update(_env_from_args(args))
            if args.seed is not None:
                config.seed = args.seed
            out = Path(args.out) if args.out else data.default_root() / card["name"]
        else:
            if not (args.task and args.quality):
                raise UserError("data collect needs --recipe CARD or both --task and --quality.")
            task_id = tasks_lib.resolve_task(args.task).id
            config = collect_lib.CollectConfig(
                task_id=task_id, quality=args.quality, behaviour=args.behaviour,
                episodes=_budget(args, task_id) or 10, seed=args.seed or 0,
                env=_env_from_args(args))
            out = Path(args.out) if args.out else (
                data.default_root() / task_id / f"{config.quality}-{config.behaviour}-seed{config.seed}")
        print(f"Collecting {config.task_id} {config.quality} ({config.behaviour}, "
              f"{config.episodes} episodes at most) into {out}")
        workers = args.workers or min(os.cpu_count() or 1, config.episodes)
        manifest = collect_lib.collect(config, out, workers=workers, progress=not args.quiet)
        _print_manifest(out, manifest)
        return 0
    if args.data_command == "import":
        if args.format == "minari":
            from coworld_bench.data import minari_io

            out = Path(args.out) if args.out else minari_io.default_import_dir(args.source,
                                                                                args.task)
            manifest = minari_io.import_minari(args.source, out, args.task,
                                               image_size=args.image_size)
            _print_manifest(out, manifest)
            return 0
        if not args.task:
            raise UserError(f"data import --format {args.format} needs --task: the task the "
                            "episodes come from (only a Minari dataset exported by "
                            "coworld-bench records its own).")
        out = Path(args.out) if args.out else data.default_root() / tasks_lib.resolve_task(
            args.task).id / f"imported-{Path(args.source).stem}"
        manifest = data.import_dataset(args.source, out, args.task, fmt=args.format,
                                       image_size=args.image_size or 64)
        _print_manifest(out, manifest)
        return 0
    if args.data_command == "export":
        from coworld_bench.data import minari_io

        name = args.name or minari_io.default_dataset_id(data.read_manifest(Path(args.dir)))
        path = minari_io.export_minari(args.dir, args.out, name,
                                       references=not args.no_references)
        root = path.parents[len(Path(name).parts) - 1]
        print(f"Wrote Minari dataset {name} to {path}")
        print(f"  load it: MINARI_DATASETS_PATH={root} python -c \"import minari; "
              f"print(minari.load_dataset('{name}'))\"")
        return 0
    if args.data_command == "verify":
        manifest = data.verify_dataset(Path(args.dir), checksum=True)
        print(f"OK {args.dir}: {manifest['episode_count']} episodes, {manifest['step_count']} "
              "steps, every file matches the manifest.")
        return 0
    if args.data_command == "info":
        _print_manifest(args.dir, data.read_manifest(Path(args.dir)))
        return 0
    if args.data_command == "list":
        root = Path(args.root) if args.root else data.default_root()
        found = sorted(p.parent for p in root.rglob("manifest.json")) if root.exists() else []
        if not found:
            print(f"No datasets under {root}.")
        for directory in found:
            try:
                m = data.read_manifest(directory)
                print(f"{str(directory.relative_to(root)):<60} {m['task_id']:<26} "
                      f"{m['quality']:<14} {m['episode_count']:>5} ep {m['step_count']:>8} steps "
                      f"{m['status']}")
            except data.DatasetError as e:
                print(f"{directory}: unreadable ({e})")
        print("\nShipped dataset cards (coworld-bench data collect --recipe NAME):")
        for card in sorted(recipes.CARD_DIR.glob("*.yaml")):
            print(f"  {card.stem}")
        return 0
    raise AssertionError(args.data_command)


def _budget(args, task_id):
    from coworld_bench.data import collection as collect_lib

    if args.episodes and args.steps:
        raise UserError("Give --episodes or --steps, not both.")
    if args.steps:
        task_id = task_id or collect_lib.resolve_task(args.task).id if args.task else task_id
        if task_id is None:
            from coworld_bench.data import recipes
            task_id = recipes.read_card(args.recipe)["task"]
        return collect_lib.budget_from_steps(task_id, args.steps)
    return args.episodes


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coworld-bench",
        description="Offline visual RL with online auxiliary simulators: CoWorld and its "
                    "baselines on Meta-World, RoboDesk and DeepMind Control.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list tasks, pairs, algorithms, presets, settings or the "
                                    "evaluation protocol",
                       description="List the benchmark's tasks, source-target pairs, registered "
                                   "algorithms, presets, or an algorithm's settings "
                                   "(list settings ALGO [--preset P] [--pair S-T | --target T]).")
    p.add_argument("what", choices=["tasks", "pairs", "algos", "presets", "settings", "protocol"])
    p.add_argument("algo", nargs="?", help="the algorithm (list settings)")
    p.add_argument("--preset", default="paper", help="preset of the values (default: paper)")
    p.add_argument("--pair", help="resolve the paper's per-suite values for this pair")
    p.add_argument("--target", help="resolve them for this target (offline algorithms)")
    p.add_argument("--references", action="store_true",
                   help="list protocol: also every task's R_random and R_ref (computed once, "
                        "cached under the data root)")
    p.set_defaults(func=_cmd_list)

    st = sub.add_parser("status", help="a table of the runs in a folder",
                        description="Every run directory under RUNS_DIR: algorithm, pair or "
                                    "target, seed, preset, progress, last evaluation and state "
                                    "(running, unfinished, finished, broken).")
    st.add_argument("runs_dir", nargs="?", default="runs", help="default: ./runs")
    st.set_defaults(func=_cmd_status)

    from coworld_bench.data.collection import BEHAVIOURS, QUALITIES

    p = sub.add_parser("data", help="collect, import, verify and inspect offline datasets",
                       description="Offline datasets (one .npz per episode + manifest.json).")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    c = dsub.add_parser("collect", help="collect a dataset from a real simulator",
                        description="Collect a dataset: --recipe CARD, or --task and --quality. "
                                    "Re-running the same command resumes an interrupted run.")
    c.add_argument("--recipe", help="dataset card: a .yaml path or a name in datasets/")
    c.add_argument("--task", help="task id or code")
    c.add_argument("--quality", choices=QUALITIES)
    c.add_argument("--behaviour", choices=BEHAVIOURS,
                   help="behaviour policy (default: the card's, or dreamerv2 / random)")
    c.add_argument("--episodes", type=int, help="episode budget")
    c.add_argument("--steps", type=int, help="step budget (rounded up to whole episodes)")
    c.add_argument("--workers", type=int,
                   help="simulator processes (default: one per core); the data do not depend "
                        "on it")
    c.add_argument("--seed", type=int)
    c.add_argument("--fast-render", action="store_true",
                   help="shadows/reflections off (recorded; evaluation must match)")
    c.add_argument("--no-antialias", action="store_true",
                   help="one sample per pixel, not 4 (recorded; evaluation must match)")
    c.add_argument("--out", help="dataset directory (default: under the data root)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    i = dsub.add_parser("import", help="import dreamer-style npz episodes, V-D4RL hdf5 or a "
                                       "Minari dataset",
                        description="Import episodes made elsewhere into the coworld-bench format.")
    i.add_argument("source", help="folder of .npz episodes, a .hdf5 file / folder, or (--format "
                                  "minari) a Minari dataset id or folder")
    i.add_argument("--task", help="the task the episodes come from (optional for a Minari "
                                  "dataset exported by coworld-bench)")
    i.add_argument("--format", default="auto", choices=["auto", "npz", "hdf5", "minari"],
                   help="auto (default) tells npz from hdf5; minari reads a Minari dataset "
                        "(by id under $MINARI_DATASETS_PATH or ~/.minari/datasets, or its folder)")
    i.add_argument("--image-size", type=int,
                   help="resize frames to this size (default: 64; a Minari dataset exported by "
                        "coworld-bench keeps its own)")
    i.add_argument("--out", help="dataset directory (default: under the data root)")
    x = dsub.add_parser("export", help="export a dataset to another format (Minari)",
                        description="Write a dataset as a Minari dataset, losslessly: frames "
                                    "as observations, the state in infos, the manifest and the "
                                    "protocol's reference scores in the metadata "
                                    "(docs/datasets.md).")
    x.add_argument("dir", help="the dataset directory")
    x.add_argument("--format", default="minari", choices=["minari"])
    x.add_argument("--name", help="Minari dataset id, namespace/name-vN (default: "
                                  "coworld-bench/<task>/<quality>[-<behaviour>]-seed<seed>-v0)")
    x.add_argument("--out", help="Minari datasets folder to write into (default: "
                                 "$MINARI_DATASETS_PATH, else ~/.minari/datasets)")
    x.add_argument("--no-references", action="store_true",
                   help="leave ref_min_score/ref_max_score out (Meta-World's are measured on "
                        "the simulator the first time, then cached under the data root)")
    v = dsub.add_parser("verify", help="check every file of a dataset against its manifest")
    v.add_argument("dir")
    n = dsub.add_parser("info", help="summarise a dataset")
    n.add_argument("dir")
    li = dsub.add_parser("list", help="list datasets under the data root and the shipped cards")
    li.add_argument("--root", help="data root (default: $COWORLD_BENCH_DATA or the user cache)")
    p.set_defaults(func=_cmd_data)

    r = sub.add_parser("run", help="train and evaluate an algorithm",
                       description="Train an algorithm on a pair (online source, offline target) "
                                   "or, for offline algorithms, a target; evaluate it; write a run "
                                   "directory. Re-running the same command resumes it.")
    r.add_argument("--algo", required=True, help="algorithm name (coworld-bench list algos)")
    r.add_argument("--pair", help="SOURCE-TARGET of task codes, e.g. BP-DC")
    r.add_argument("--source", help="source task id or code (with --target)")
    r.add_argument("--target", help="target task id or code")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--preset", default="paper", help="smoke, quick or paper (default: paper)")
    r.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", default=[],
                   help="override config values (several after one --set, or repeated)")
    r.add_argument("--device", default="auto", help="auto, cpu or cuda")
    r.add_argument("--out", default="runs", help="root of run directories (default: ./runs)")
    r.add_argument("--force", action="store_true", help="discard an existing run and start again")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--yes", action="store_true",
                   help="start the paper preset on a CPU anyway (it takes days to weeks)")
    r.add_argument("--eval-workers", type=int, metavar="N",
                   help="evaluation episodes side by side in N simulator processes (default: "
                        "one per episode up to twice the cores; 1: one after another). Results do "
                        "not depend on it.")
    r.add_argument("--compile", default="auto", metavar="BACKEND",
                   help="torch.compile the world model's and imagination's loops: auto "
                        "(default: inductor on CUDA, off on a CPU), off, or a backend name; "
                        "a failed compilation falls back to eager with a warning")
    from coworld_bench.logging_backends import LOGGERS, WANDB_INSTALL

    r.add_argument("--logger", default="tensorboard", choices=LOGGERS,
                   help="tensorboard (default): TensorBoard events in the run's tb/ only; "
                        "wandb: also a Weights & Biases run with the same scalars, the config "
                        "and the final result, resumed with the run (WANDB_MODE=offline "
                        f"writes it under the run's wandb/ for `wandb sync`; {WANDB_INSTALL})")
    r.set_defaults(func=_cmd_run)

    e = sub.add_parser("eval", help="evaluate a run's latest checkpoint",
                       description="Evaluate a run directory's latest checkpoint with the "
                                   "benchmark protocol (deterministic policy).")
    e.add_argument("run_dir")
    e.add_argument("--episodes", type=int, help="episodes (default: the run's eval_episodes)")
    e.add_argument("--eval-workers", type=int, metavar="N",
                   help="episodes side by side in N simulator processes (default: one per "
                        "episode up to twice the cores; 1: one after another)")
    e.add_argument("--device", default="auto")
    e.set_defaults(func=_cmd_eval)

    sw = sub.add_parser(
        "sweep", help="run a grid of runs (the paper's tables) here or on a SLURM cluster",
        description="Expand algorithms x pairs (or a named grid of the paper) x seeds x grid "
                    "points into runs, each exactly `coworld-bench run`, and run them: "
                    "--jobs at a time on this machine (GPUs handed out through "
                    "CUDA_VISIBLE_DEVICES), or as a SLURM job array through submitit "
                    "(requeued on preemption/timeout, resumed from the checkpoint). Re-running "
                    "the same command runs only what is missing or failed. "
                    "`coworld-bench sweep status DIR` prints the state of every job. Named "
                    "grids: " + ", ".join(_named_grid_names()) + ".")
    sw.add_argument("action", nargs="?", choices=["status"],
                    help="status DIR: the sweep's jobs, their progress and states")
    sw.add_argument("sweep_dir", nargs="?", metavar="DIR", help="the sweep folder (status)")
    sw.add_argument("--algos", help="comma-separated algorithms (coworld-bench list algos); "
                                    "with a named grid: only these of its algorithms")
    sw.add_argument("--pairs", help="comma-separated pairs S-T and/or targets T (offline "
                                    "algorithms run once per target), or named grids "
                                    "(paper:table2, matrix:mw, ...)")
    sw.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default: 0,1,2)")
    sw.add_argument("--preset", default="paper", help="smoke, quick or paper (default: paper)")
    sw.add_argument("--set", action="extend", nargs="+", metavar="KEY=VALUE", default=[],
                    help="settings of every run (several after one --set, or repeated)")
    sw.add_argument("--grid", action="append", metavar="KEY=V1,V2", default=[],
                    help="a swept setting (repeatable: the product of all); the value "
                         "'default' is the run without it; each point runs in DIR/KEY=V/")
    sw.add_argument("--executor", default="local", choices=["local", "slurm", "submitit-local"],
                    help="local: a process pool here (default); slurm: a SLURM job array "
                         "through submitit; submitit-local: submitit's local executor (the "
                         "cluster code path on this machine)")
    sw.add_argument("--jobs", type=int,
                    help="runs at a time (local: default one per GPU group, else 1; slurm: "
                         "the array's parallelism, default 256)")
    sw.add_argument("--gpus-per-job", type=int, default=1, help="GPUs per run (default 1)")
    sw.add_argument("--cpus-per-job", type=int,
                    help="CPU cores per SLURM job (default 8; also its OMP_NUM_THREADS)")
    sw.add_argument("--slurm-partition", help="SLURM partition")
    sw.add_argument("--slurm-time", default="24:00:00",
                    help="time limit per SLURM job; a run that needs longer is requeued and "
                         "resumes (default 24:00:00)")
    sw.add_argument("--slurm-mem", help="memory per SLURM job, e.g. 64G")
    sw.add_argument("--slurm-account", help="SLURM account")
    sw.add_argument("--slurm-setup", action="append", default=[], metavar="COMMAND",
                    help="a shell line run before each SLURM job, e.g. 'source venv/bin/activate'"
                         " (repeatable)")
    sw.add_argument("--max-requeues", type=int, default=20,
                    help="timeouts after which a SLURM job is not requeued again (default 20)")
    sw.add_argument("--no-wait", action="store_true",
                    help="slurm: submit and exit (re-run the command to follow the jobs)")
    sw.add_argument("--out", help="the sweep folder (default: sweeps/<named grid>, else "
                                  "sweeps/sweep)")
    sw.add_argument("--dry-run", action="store_true",
                    help="print the jobs and the estimated GPU-hours; run nothing")
    sw.add_argument("--yes", action="store_true",
                    help="start the paper preset on a CPU anyway (passed on to every run)")
    sw.add_argument("--logger", default="tensorboard", choices=LOGGERS,
                    help="passed on to every run: wandb adds a Weights & Biases run beside "
                         "TensorBoard (default: tensorboard only)")
    sw.set_defaults(func=_cmd_sweep)

    rp = sub.add_parser("report", help="tables, aggregates, figures and the reproduction report",
                        description="Build every artefact of the paper (result tables with "
                                    "rliable aggregates, transfer matrix, value estimation, "
                                    "ablations, sensitivity, training curves, latent embeddings, "
                                    "training time, reproduction.md) from a folder of runs.")
    rp.add_argument("runs_dir", nargs="?",
                    help="folder searched for run directories (e.g. ./runs)")
    rp.add_argument("--out", help="output folder (default: results/<name of RUNS_DIR>)")
    rp.add_argument("--seeds", type=int,
                    help="seeds expected per cell (default: the most any cell of the table has)")
    rp.add_argument("--bootstrap-reps", type=int, default=2000,
                    help="bootstrap resamples for the confidence intervals (default: 2000)")
    rp.add_argument("--embedding", default="tsne", choices=["tsne", "pca"],
                    help="projection of the latent-embedding figure (default: tsne)")
    rp.add_argument("--paper", help="folder of the paper's CSVs (default: results/paper)")
    rp.add_argument("--copy-runs", action="store_true",
                    help="copy the files the report reads of every run (no checkpoints or "
                         "replays) into OUT/runs and report from that copy, so that the "
                         "report can be checked and remade without the run folders")
    rp.add_argument("--check", metavar="REPORT_DIR",
                    help="make nothing: recompute every number of an existing report's tables "
                         "and value-estimation files from the run directories it names, and "
                         "exit 1 if any differs")
    rp.set_defaults(func=_cmd_report)
    b = sub.add_parser("bench", help="measure what an update, the sampler, collection and "
                                     "evaluation cost on this machine",
                       description="Seconds, FLOPs, achieved GFLOP/s against this machine's "
                                   "matrix-product peak, aten operator calls and host "
                                   "synchronisations per update of each algorithm family; "
                                   "sampler, collection and evaluation rates; peak memory.")
    b.add_argument("--algos", nargs="+", metavar="ALGO",
                   help="families to measure (default: coworld offline-dv2 drq-bc)")
    b.add_argument("--config", default="quick", choices=["smoke", "quick", "authors", "paper"],
                   help="model sizes: the quick presets (default), the smoke presets, the "
                        "authors' CoWorld model at batch 16 x 50, or the paper presets")
    b.add_argument("--updates", type=int, help="timed updates per family (default 3, or 2 "
                                               "for authors/paper)")
    b.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    b.add_argument("--compile", default="auto", metavar="BACKEND",
                   help="torch.compile backend of the updates' sequential loops, as in run "
                        "(auto: inductor on CUDA, off on a CPU; off; inductor; aot_eager)")
    b.add_argument("--json", metavar="FILE", help="also write every figure to FILE")
    b.add_argument("--quiet", action="store_true", help="print the table only")
    b.set_defaults(func=_cmd_bench)
    return parser


def _cmd_bench(args) -> int:
    from coworld_bench import bench

    return bench.main(args)


def _named_grid_names() -> list[str]:
    from coworld_bench.sweep import NAMED_GRIDS

    return list(NAMED_GRIDS)


def _cmd_sweep(args) -> int:
    from coworld_bench import sweep

    if args.action == "status":
        if not args.sweep_dir:
            raise UserError("sweep status needs the sweep folder: coworld-bench sweep status DIR.")
        print(sweep.status_text(Path(args.sweep_dir)))
        return 0
    if args.sweep_dir:
        raise UserError(f"Unexpected argument {args.sweep_dir!r}: a sweep is given by its "
                        "options (--algos, --pairs, ...); `sweep status DIR` shows one.")
    if not args.pairs:
        raise UserError("sweep needs --pairs: pairs S-T, targets T, or a named grid ("
                        + ", ".join(_named_grid_names()) + ").")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--seeds expects comma-separated integers, got {args.seeds!r}.") from None
    from coworld_bench.seeding import check_seed

    for seed in seeds:
        check_seed(seed, "--seeds: seed")
    pairs = [p.strip() for p in args.pairs.split(",") if p.strip()]
    named = [p for p in pairs if ":" in p]
    out = args.out or str(Path("sweeps") / (named[0].replace(":", "-") if len(named) == 1
                                            else "sweep"))
    request = sweep.SweepRequest(
        algos=[a.strip() for a in args.algos.split(",") if a.strip()] if args.algos else None,
        pairs=pairs, seeds=seeds, preset=args.preset, settings=args.set, grid=args.grid,
        out=out, executor=args.executor, jobs=args.jobs, gpus_per_job=args.gpus_per_job,
        cpus_per_job=args.cpus_per_job or (8 if args.executor == "slurm" else None),
        slurm_partition=args.slurm_partition,
        slurm_time=args.slurm_time, slurm_mem=args.slurm_mem, slurm_account=args.slurm_account,
        slurm_setup=args.slurm_setup, max_requeues=args.max_requeues, yes=args.yes,
        wait=not args.no_wait, logger=args.logger)
    jobs = sweep.expand(request)
    if args.dry_run:
        sweep.check_settings(request, jobs, log=lambda line: print(line, file=sys.stderr))
        print(sweep.dry_run_text(request, jobs, Path(out)))
        return 0
    return sweep.run_sweep(request, jobs, log=lambda line: print(line, flush=True))


def _cmd_report(args) -> int:
    from coworld_bench.report import ReportError, build_report

    if args.check:
        from coworld_bench.report import check_report

        checked, problems = check_report(args.check)
        for problem in problems:
            print(f"coworld-bench: differs: {problem}", file=sys.stderr)
        print(f"{args.check}: {checked} numbers recomputed from the run directories; "
              f"{len(problems)} differ.")
        return 1 if problems or not checked else 0
    if args.runs_dir is None:
        print("coworld-bench: error: give the folder of runs to report (coworld-bench report "
              "RUNS_DIR), or --check REPORT_DIR.", file=sys.stderr)
        return 2
    runs_dir = Path(args.runs_dir)
    out = Path(args.out) if args.out else Path("results") / runs_dir.resolve().name
    try:
        report = build_report(runs_dir, out, seeds=args.seeds, reps=args.bootstrap_reps,
                              embedding=args.embedding, paper_dir=args.paper,
                              log=lambda line: print(line, flush=True), copy=args.copy_runs)
    except ReportError as e:
        print(f"coworld-bench: error: {e}", file=sys.stderr)
        return 2
    for problem in report.problems:
        print(f"coworld-bench: warning: left out {problem}", file=sys.stderr)
    print(f"Report of {len(report.records)} runs written to {report.out} "
          f"({len(report.files)} files; see {report.out / 'README.md'}).")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from coworld_bench.runner import RunInterrupted

    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe is met here, not in Python's flush at exit
        return status
    except RunInterrupted as e:
        print(f"coworld-bench: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("coworld-bench: interrupted; re-run the same command to resume (datasets and "
              "runs resume from what they wrote).", file=sys.stderr)
        return 130
    except UserError as e:  # the project's own user errors: one line; bugs keep their traceback
        print(f"coworld-bench: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # Output piped into a reader that stopped (| head): nothing more to say, and
        # Python's own flush at exit must not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:
        if e.errno not in _STORAGE_ERRORS:
            raise
        what = f"{e.filename}: " if e.filename else ""
        print(f"coworld-bench: error: {what}{e.strerror}. {_STORAGE_ERRORS[e.errno]} Nothing "
              "unfinished was kept: re-run the same command to resume from what was written.",
              file=sys.stderr)
        return 2


# File-system states the user fixes (not bugs): one line naming the path, and the fix.
_STORAGE_ERRORS = {
    errno.ENOSPC: "Free space there (or write elsewhere: --out, $COWORLD_BENCH_DATA).",
    errno.EDQUOT: "The disk quota is used up: free space (or write elsewhere: --out, "
                  "$COWORLD_BENCH_DATA).",
    errno.EROFS: "That file system is mounted read-only: write elsewhere (--out, "
                 "$COWORLD_BENCH_DATA) or remount it writable.",
    errno.EACCES: "Permission denied: write elsewhere (--out, $COWORLD_BENCH_DATA) or give "
                  "this user write access.",
}


if __name__ == "__main__":
    sys.exit(main())
