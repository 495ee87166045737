"""The ``coworld-bench`` command line."""

from __future__ import annotations

import argparse
import sys

from coworld_bench import tasks as tasks_lib


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


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


def _cmd_list(args) -> int:
    print({"tasks": list_tasks, "pairs": list_pairs}[args.what]())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coworld-bench",
        description="Offline visual RL with online auxiliary simulators: CoWorld and its "
                    "baselines on Meta-World, RoboDesk and DeepMind Control.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("list", help="list tasks or pairs",
                       description="List the benchmark's tasks or source-target pairs.")
    p.add_argument("what", choices=["tasks", "pairs"])
    p.set_defaults(func=_cmd_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (tasks_lib.UnknownTaskError, ValueError, TypeError) as e:
        print(f"coworld-bench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
