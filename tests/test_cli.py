import subprocess
import sys

from coworld_bench import tasks


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "coworld_bench.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_list_tasks_prints_all_ids():
    result = run_cli("list", "tasks")
    assert result.returncode == 0, result.stderr
    for task in tasks.TASKS:
        assert task.id in result.stdout
    assert "DC*/DCS" in result.stdout


def test_list_pairs_prints_paper_pairs():
    result = run_cli("list", "pairs")
    assert result.returncode == 0, result.stderr
    for names in tasks.PAPER_PAIRS.values():
        for name in names:
            assert name in result.stdout


def test_console_script_is_installed():
    result = subprocess.run(["coworld-bench", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "list" in result.stdout


def test_bad_subcommand_is_a_usage_error():
    result = run_cli("list", "nonsense")
    assert result.returncode != 0 and "tasks" in result.stderr


def test_set_takes_several_pairs_after_one_flag_and_repeats():
    from coworld_bench.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["run", "--algo", "bc", "--target", "BP", "--set", "obs=state",
                              "source_obs=state", "--set", "seed_x=1", "--preset", "smoke"])
    assert args.set == ["obs=state", "source_obs=state", "seed_x=1"]
    args = parser.parse_args(["sweep", "--algos", "bc", "--set", "a=1", "b=2"])
    assert args.set == ["a=1", "b=2"]


def test_output_piped_into_head_ends_quietly(tmp_path):
    """A reader that stops early (| head) is no error: no BrokenPipeError traceback, whether
    the pipe closes during a print or at the last flush."""
    for command in (["list", "settings", "coworld"], ["data", "list", "--root", str(tmp_path)],
                    ["list", "algos"]):
        shell = " ".join([sys.executable, "-m", "coworld_bench.cli", *command]) + " | head -c 1"
        result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True,
                                timeout=120)
        assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, \
            (command, result.stderr)


def test_list_presets_gives_each_algorithms_own_length():
    """The quick preset's length is the algorithm's: CoWorld's 996 updates (its warm-up
    and rounds), Offline DV2's 2,000; the listing says so rather than one number."""
    from coworld_bench import registry

    result = run_cli("list", "presets")
    assert result.returncode == 0, result.stderr
    quick = next(line for line in result.stdout.splitlines() if line.strip().startswith("quick:"))
    assert registry.get("coworld").make_config("quick").train_steps == 996
    assert "996 (coworld," in quick and "2,000 (" in quick and "offline-dv2" in quick
    assert "train_steps=2000" not in result.stdout
