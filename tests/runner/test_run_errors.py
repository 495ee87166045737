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
