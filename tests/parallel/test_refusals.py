"""World sizes a job's batch does not allow are refused in one line, exit 2, before any rank
starts; so are incomplete rendezvous."""

import pytest

from cli.main import main
from tests.parallel.runs import blocked_spec_json, run_local, write_spec


def refusal(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("blocks", "world", "allowed"), [(4, 3, "1, 2, 4"), (4, 8, "1, 2, 4"), (1, 2, "1")]
)
def test_world_sizes_the_batch_does_not_allow_are_refused(capsys, tmp_path, blocks, world, allowed):
    spec_path = write_spec(tmp_path, blocked_spec_json("mlp", 2, blocks))
    out = tmp_path / "run"
    line = refusal(
        capsys, ["job", "run-local", str(spec_path), "--out", str(out), "--world-size", str(world)]
    )
    assert line.endswith(f"the world size must be one of {allowed}")
    assert f"{world} ranks cannot train this job" in line
    assert not out.exists()  # refused before anything ran


@pytest.mark.parametrize(
    ("options", "environ", "message"),
    [
        (["--world-size", "2", "--rank", "1"], {}, "--rendezvous and --rank go together"),
        (["--world-size", "2", "--rendezvous", "tcp://127.0.0.1:1"], {}, "go together"),
        (["--world-size", "2", "--rendezvous", "tcp://h:1", "--rank", "2"], {}, "between 0 and 1"),
        (["--world-size", "0"], {}, "at least 1"),
        (
            ["--world-size", "4"],
            {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "RANK": "0", "WORLD_SIZE": "2"},
            "WORLD_SIZE is 2 but --world-size is 4",
        ),
        (
            [],
            {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1", "RANK": "0", "WORLD_SIZE": "3"},
            "3 ranks cannot train this job",
        ),
    ],
)
def test_incomplete_or_contradictory_rendezvous_is_refused(
    capsys, monkeypatch, tmp_path, options, environ, message
):
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    spec_path = write_spec(tmp_path, blocked_spec_json("mlp", 2, 2))
    argv = ["job", "run-local", str(spec_path), "--out", str(tmp_path / "run"), *options]
    assert message in refusal(capsys, argv)


def test_the_installed_command_exits_2_with_one_line(tmp_path):
    spec_path = write_spec(tmp_path, blocked_spec_json("cnn", 2, 2))
    done = run_local(spec_path, tmp_path / "run", "--world-size", "4", timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "must be one of 1, 2" in done.stderr


def test_the_solver_refuses_a_world_size_below_one(capsys, tmp_path):
    argv = ["solver", "run", "--key", str(tmp_path / "k"), "--coordinator", "http://127.0.0.1:9"]
    argv += ["--store", str(tmp_path / "s"), "--price", "1", "--stake", "1", "--world-size", "0"]
    assert "world_size: must be at least 1" in refusal(capsys, argv)
