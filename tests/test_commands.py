"""The console commands pyproject.toml installs: each runs its module's main, names itself in its errors, and
gives one line with exit status 2 on bad input, like the `python -m` forms."""
import json
import pathlib
import subprocess
import sys

BIN = pathlib.Path(sys.executable).parent


def command(name, *args):
    return subprocess.run([str(BIN / name), *args], capture_output=True, text=True, timeout=300)


def test_prune_one_prunes_to_the_exact_count():
    out = command("prune-one", "--model", "mlp", "--dataset", "digits", "--algorithm", "magnitude",
                  "--log10-compression", "1", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["remaining_params"] == 1740  # 17,400 / 10


def test_every_command_gives_one_line_naming_itself_on_bad_input(tmp_path):
    for name, args in [("prune-sweep", ["--seeds", "x"]), ("prune-sweep-plots", ["--bogus"]),
                       ("prune-sweep-plots", ["--store", str(tmp_path), "--out", str(tmp_path), "--jobs", "0"]),
                       ("prune-sweep-summary", ["--bogus"]), ("prune-sweep-store", ["compact"]),
                       ("prune-one", ["--iterations", "many"])]:
        out = command(name, *args)
        assert out.returncode == 2, (name, out.stderr)
        assert out.stderr.count("\n") == 1 and out.stderr.startswith("error: ") and "Traceback" not in out.stderr
        if "see " in out.stderr:  # argparse's own errors point at the command's help
            assert f"(see {name}" in out.stderr, out.stderr


def test_analysis_commands_refuse_an_absent_store_in_one_line(tmp_path):
    for name, args in [("prune-sweep-plots", ["--out", str(tmp_path / "figures")]), ("prune-sweep-summary", [])]:
        out = command(name, "--store", str(tmp_path / "absent"), *args)
        assert out.returncode == 2 and out.stderr == f"error: store {tmp_path / 'absent'} does not exist\n"
