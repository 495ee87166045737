"""Bad input: a non-zero exit, a message listing the valid choices, no run directory."""

import pytest

CASES = [
    (["--algo", "nope", "--target", "DC"], ["Unknown algorithm 'nope'", "bc"]),
    (["--algo", "bc", "--target", "XX"], ["Unknown task 'XX'", "mw-drawer-close"]),
    (["--algo", "bc", "--target", "DC", "--preset", "huge"], ["Unknown preset", "smoke", "quick", "paper"]),
    (["--algo", "bc", "--target", "DC", "--set", "lr_typo=1"], ["no setting 'lr_typo'", "batch_size", "lr"]),
    (["--algo", "bc", "--target", "DC", "--set", "batch_size=big"], ["batch_size", "int"]),
    (["--algo", "bc", "--pair", "BP-DC"], ["takes no --pair", "--target DC"]),
    # Range and choice checks, before anything is written (issue: they used to fail late).
    (["--algo", "bc", "--target", "DC", "--set", "eval_episodes=0"], ["eval_episodes=0", ">= 1"]),
    (["--algo", "bc", "--target", "DC", "--set", "train_steps=-5"], ["train_steps=-5", ">= 1"]),
    (["--algo", "bc", "--target", "DC", "--set", "batch_size=0"], ["batch_size=0", ">= 1"]),
    (["--algo", "bc", "--target", "DC", "--set", "lr=nan"], ["lr=nan", ">= 0"]),
    (["--algo", "offline-dv2", "--target", "DC", "--set", "latent=foo"],
     ["latent='foo'", "discrete | continuous"]),
    (["--algo", "coworld", "--pair", "BP-DC", "--set", "k=1.5"], ["k=1.5", "[0, 1]"]),
    (["--algo", "coworld", "--pair", "BP-DC", "--set", "constraint=min"], ["brute_force"]),
    (["--algo", "bc", "--target", "DC", "--set", "fast_render=maybe"], ["fast_render", "bool"]),
    (["--algo", "coworld-multisource", "--pair", "BP-DC"],
     ["several online sources", "--target DC"]),
    (["--algo", "bc"], ["needs --target"]),
    (["--algo", "bc", "--target", "WW", "--set", "dataset_behaviour=scripted",
      "--set", "dataset_quality=medium-replay"], ["Meta-World tasks only"]),
    # Seeds are 32-bit, checked before config.json is written (they were numpy tracebacks).
    (["--algo", "bc", "--target", "DC", "--seed", "-1"], ["--seed -1 is out of range", "4294967295"]),
    (["--algo", "bc", "--target", "DC", "--seed", "4294967296"], ["--seed 4294967296 is out of range"]),
    (["--algo", "bc", "--target", "DC", "--set", "dataset_seed=99999999999"],
     ["dataset_seed=99999999999 is out of range", "[0, 4.29497e+09]"]),
    (["--algo", "bc", "--target", "DC", "--eval-workers", "0"], ["--eval-workers 0 is out of range"]),
    (["--algo", "bc", "--target", "DC", "--eval-workers", "-1"], ["--eval-workers -1 is out of range"]),
    (["--algo", "bc", "--target", "DC", "--eval-workers", "1000"], ["--eval-workers 1000", "four per core"]),
    (["--algo", "offline-dv2", "--target", "DC", "--compile", "nosuch"],
     ["--compile 'nosuch' is not a torch.compile backend", "inductor", "off"]),
    (["--algo", "bc", "--target", "DC", "--compile", "nosuch"], ["--compile 'nosuch'"]),
    (["--algo", "coworld", "--pair", "DC-DC"], ["same task as source and target"]),
]


@pytest.mark.parametrize("args,fragments", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_run_input(args, fragments, cli, tmp_path):
    preset = [] if "--preset" in args else ["--preset", "smoke"]
    result = cli("run", *args, *preset, "--out", tmp_path / "runs")
    assert result.returncode != 0
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_pair_code(cli, tmp_path):
    result = cli("run", "--algo", "bc", "--pair", "BP-QQ", "--out", tmp_path / "runs")
    assert result.returncode != 0
    assert "Unknown task 'QQ'" in result.stderr and "DC*" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_other_commands_check_their_ranges(cli, tmp_path):
    """eval's episodes, sweep's and data collect's seeds: refused on one line, nothing made."""
    result = cli("eval", tmp_path / "no-run", "--episodes", "-3")
    assert result.returncode == 2 and "--episodes -3: evaluate at least 1 episode" in result.stderr
    result = cli("sweep", "--algos", "bc", "--pairs", "DC", "--seeds", "0,-1", "--preset", "smoke",
                 "--out", tmp_path / "sweep")
    assert result.returncode == 2 and "--seeds: seed -1 is out of range" in result.stderr
    result = cli("data", "collect", "--task", "DC", "--quality", "random", "--seed", "-1",
                 "--out", tmp_path / "data")
    assert result.returncode == 2 and "--seed -1 is out of range" in result.stderr
    assert sorted(tmp_path.iterdir()) == []


def test_a_pair_across_suites_the_paper_never_pairs_warns(cli, tmp_path):
    """A DMC source for a Meta-World target runs (padded actions) but says it is no pair of
    the paper; a Meta-World source for a RoboDesk target is one, and says nothing."""
    result = cli("run", "--algo", "coworld", "--pair", "WW-DC", "--out", tmp_path / "runs")
    assert "warning: dmc source dmc-walker-walk for a metaworld target mw-drawer-close" \
        in result.stderr, result.stderr
    result = cli("run", "--algo", "coworld", "--pair", "BP-PG", "--out", tmp_path / "runs")
    assert "warning" not in result.stderr
