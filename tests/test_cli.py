import json
import os
import re
import stat
import threading

import pytest
from typer.testing import CliRunner

from policykd.buffer import Buffer
from policykd.cli import app, main
from tests.conftest import zoo_run

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", [[], ["teacher"], ["teacher", "train"], ["teacher", "eval"], ["collect"], ["distill"], ["eval"]])
def test_help_is_available(command):
    result = _invoke(*command, "--help")
    assert result.exit_code == 0
    assert "Usage" in result.output


@pytest.mark.parametrize("argv,message", [
    (["distill", "agents/sac-Pendulum-v1", "--steps", "10abc"], r"Invalid value for '--steps'.*see `policykd distill --help`"),
    (["distill", "--bogus"], r"No such option: --bogus.*see `policykd distill --help`"),
    (["teacher", "eval", "x.zip", "--episodes", "0"], r"'--episodes'.*greater than or equal to 1.*`policykd teacher eval --help`"),
    (["export"], r"Missing argument 'student'; see `policykd export --help`"),
    (["distil"], r"No such command 'distil'"),
    (["eval", "t.zip", "s", "--seed", "-1"], r"'--seed'.*greater than or equal to 0"),
    (["teacher", "eval", "t.zip", "--seed", "-3"], r"'--seed'.*greater than or equal to 0"),
    (["teacher", "eval", "t.zip", "--n-envs", "100000"], r"'--n-envs'.*less than or equal to 256"),
    (["eval", "t.zip", "s", "--latency", "--rate", "-5"], r"'--rate'.*positive number of Hz"),
    (["embedded", "s", "--rate", "nan"], r"'--rate'.*positive number of Hz"),
    (["export", "s", "--out", ""], r"Invalid value for '--out': is an empty path; give a file or folder name"),
    (["collect", "t.zip", "--out", " "], r"Invalid value for '--out': is an empty path"),
    (["report", ""], r"Invalid value for 'run_dir': is an empty path"),
    (["bench", "s", "--plot", "latency.png/"], r"'--plot': 'latency\.png/' ends with a separator, which names a folder"),
    (["eval", "t.zip", "s", "--json", "out.json/"], r"'--json': 'out\.json/' ends with a separator"),
])
def test_usage_errors_of_the_command_are_one_line_and_exit_2(argv, message, capsys):
    """The command (policykd.cli:main, which the console script policykd.entry:main runs) reports what click would box
    as one `error:` line."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err and err.startswith("error: "), err
    assert re.search(message, err), err


def test_an_env_whose_package_is_missing_is_one_line_naming_it(tiny_teachers, capsys):
    """A registered env whose module cannot be imported (as LunarLander without Box2D, Ant without MuJoCo)."""
    import gymnasium as gym

    env_id = "PolicyKDTestMissingPackage-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point="policykd_test_package_that_is_not_installed:Env")
    with pytest.raises(SystemExit) as exit_info:
        main(["teacher", "eval", str(tiny_teachers["dqn"]), "--env", env_id, "--episodes", "1"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "\n" not in err, err
    assert re.search(rf"env '{env_id}' needs a package that is not installed: .*policykd_test_package_that_is_not_installed", err), err


def test_an_unexpected_error_is_one_line_calling_itself_a_bug_and_the_traceback_is_on_request(tiny_teachers, capsys,
                                                                                               monkeypatch):
    from policykd.env_factory import EnvSpec

    def broken_make(self, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(EnvSpec, "make", broken_make)
    argv = ["teacher", "eval", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "--episodes", "1"]
    monkeypatch.delenv("POLICYKD_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 1 and "\n" not in err and "Traceback" not in err, err
    assert re.search(r"^error: unexpected RuntimeError: boom \(at test_cli\.py:\d+\); this is a policykd bug: rerun with "
                     r"POLICYKD_TRACEBACK=1", err), err
    monkeypatch.setenv("POLICYKD_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="boom"):
        main(argv)


def test_the_command_without_arguments_shows_its_help_and_help_exits_0(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "distill" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code in (0, 2) and "Usage" in "".join(capsys.readouterr())  # 2 since click 8.2


@pytest.mark.parametrize("command", [["collect"], ["distill"], ["sweep"]])
def test_help_shows_the_ray_extra_to_install(command, monkeypatch):
    """Rich reads "[ray]" as a style tag and drops it unless escaped; the help must name the extra in full."""
    monkeypatch.setenv("COLUMNS", "400")
    result = _invoke(*command, "--help")
    assert 'pip install "policykd[ray]"' in result.output


def test_errors_print_paths_with_brackets_as_they_are(tmp_path):
    """Rich markup would read "[/y]" as a closing tag (MarkupError, a traceback) and "[ray]" as a style (dropped)."""
    teacher = tmp_path / "runs[/y]" / "x[ray].zip"
    teacher.parent.mkdir(parents=True)
    teacher.write_text("not a zip")
    result = _invoke("teacher", "eval", teacher, "--env", "Pendulum-v1")
    assert result.exit_code == 2
    assert str(teacher) in result.output.replace("\n", "") and "Traceback" not in result.output


def test_bad_input_is_one_line_without_traceback(tmp_path):
    result = _invoke("teacher", "eval", tmp_path / "missing.zip")
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output
    result = _invoke("distill", "--config", tmp_path / "nope.yaml")
    assert result.exit_code == 2 and "does not exist" in result.output


def test_teacher_eval_writes_json(tmp_path):
    path = zoo_run("ppo", "CartPole-v1")
    result = _invoke("teacher", "eval", path, "--episodes", 2, "--json", tmp_path / "t.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "t.json").read_text())
    assert report["returns"] == [500.0, 500.0] and report["teacher"]["algo"] == "ppo"


def test_json_output_through_a_link_or_a_pipe_keeps_the_link_and_the_pipe(tmp_path):
    """--json /dev/stdout is a link to a pipe or terminal: written through, never replaced by a file."""
    path = zoo_run("ppo", "CartPole-v1")
    target = tmp_path / "records" / "t.json"
    target.parent.mkdir()
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    assert _invoke("teacher", "eval", path, "--episodes", 1, "--json", link).exit_code == 0
    assert link.is_symlink() and json.loads(target.read_text())["returns"] == [500.0]
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(pipe.read_bytes()))
    reader.start()
    result = _invoke("teacher", "eval", path, "--episodes", 1, "--json", pipe)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(pipe.stat().st_mode) and json.loads(received[0])["returns"] == [500.0]


def test_collect_distill_eval_end_to_end(tmp_path, tiny_teachers):
    teacher = tiny_teachers["dqn"]
    result = _invoke("collect", teacher, "--env", "CartPole-v1", "--out", tmp_path / "buf", "--steps", 300)
    assert result.exit_code == 0, result.output
    assert Buffer.open(tmp_path / "buf").rows == 300

    config = tmp_path / "recipe.yaml"
    config.write_text("labelled_steps: 400\nrounds: 2\nepochs_per_round: 2\nhidden: [16, 16]\neval_episodes: 2\nlatency_calls: 50\n")
    result = _invoke("distill", teacher, "--env", "CartPole-v1", "-c", config, "--out-dir", tmp_path, "--run-name", "r", "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "return ratio" in result.output and "latency" in result.output
    report = json.loads((tmp_path / "r" / "eval.json").read_text())
    assert report["teacher"]["episodes"] == 2 and set(report["latency_us"]) == {"teacher_torch", "teacher_sb3_predict", "student_torch"}

    result = _invoke("eval", teacher, tmp_path / "r" / "student", "--env", "CartPole-v1", "--episodes", 2,
                     "--latency-calls", 20, "--noise-floor", "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    again = json.loads((tmp_path / "e.json").read_text())
    assert again["student"]["returns"] == report["student"]["returns"]  # same seeds, deterministic
    floor = again["teacher_noise_floor"]
    assert "teacher's noise floor" in result.output and floor["other_batch"]["n_envs"] == 1
    assert floor["student_error"]["error"] == pytest.approx(1 - again["agreement"]["accuracy"])
    assert "note:" not in result.output
    result = _invoke("eval", teacher, tmp_path / "r" / "student", "--env", "CartPole-v0", "--episodes", 1, "--latency-calls", 10)
    assert result.exit_code == 0, result.output  # same spaces, another task: evaluated, and said
    assert f"note: {tmp_path / 'r' / 'student'} was distilled on CartPole-v1; evaluating it on CartPole-v0" in result.output

    result = _invoke("collect", teacher, "--env", "CartPole-v1", "--out", tmp_path / "buf2", "--beta", 0.5)
    assert result.exit_code == 2 and "--student" in result.output


def test_export_and_bench_commands(tmp_path, tiny_teachers):
    teacher = tiny_teachers["dqn"]
    config = tmp_path / "recipe.yaml"
    config.write_text("labelled_steps: 200\nrounds: 1\nepochs_per_round: 1\nhidden: [8]\n")
    assert _invoke("distill", teacher, "--env", "CartPole-v1", "-c", config, "--out-dir", tmp_path, "--run-name", "r", "--no-eval").exit_code == 0
    student = tmp_path / "r" / "student"
    result = _invoke("export", student, "--format", "onnx", "--out", tmp_path / "onnx")
    assert result.exit_code == 0 and (tmp_path / "onnx" / "student.onnx").exists()
    result = _invoke("export", student, "--format", "tflite")
    assert result.exit_code == 2 and "unknown export format" in result.output
    result = _invoke("bench", student, "--backends", "torch,numpy,,torch", "--calls", 100, "--json", tmp_path / "lat.json", "--plot", tmp_path / "lat.png")
    assert result.exit_code == 0, result.output
    lat = json.loads((tmp_path / "lat.json").read_text())["latency_us"]
    assert set(lat) == {"teacher_torch", "sb3_predict", "torch", "numpy"}
    assert result.output.count("│ torch ") == 1  # a backend named twice is timed once (a row each before)
    assert all(v["calls"] == 100 and v["p50"] <= v["p99"] for v in lat.values())
    assert (tmp_path / "lat.png").read_bytes()[:4] == b"\x89PNG"
    result = _invoke("bench", student, "--backends", "gpu", "--teacher", "none", "--calls", 100)
    assert result.exit_code == 2 and "unknown backends" in result.output


def test_eval_refuses_missing_runtimes_and_toolchains_before_evaluating(tmp_path, tiny_teachers, monkeypatch):
    """No C compiler: `--backend c` and `--latency` stop before the evaluation; an explicit --target without its
    toolchain too, while the default targets are skipped with a note."""
    import shutil

    import policykd.backends
    import policykd.embedded

    teacher = tiny_teachers["dqn"]
    config = tmp_path / "recipe.yaml"
    config.write_text("labelled_steps: 200\nrounds: 1\nepochs_per_round: 1\nhidden: [8, 8]\n")
    assert _invoke("distill", teacher, "--env", "CartPole-v1", "-c", config, "--out-dir", tmp_path, "--run-name", "r", "--no-eval").exit_code == 0
    student = tmp_path / "r" / "student"
    real_which = shutil.which
    monkeypatch.setattr(policykd.backends.shutil, "which", lambda name: None if name == "cc" else real_which(name))
    for extra in (["--backend", "c-int8"], ["--latency"]):
        result = _invoke("eval", teacher, student, "--env", "CartPole-v1", "--episodes", 1, *extra)
        assert result.exit_code == 2 and "`cc` not found on PATH" in result.output, result.output
        assert "teacher" not in result.output.lower().split("error")[0]  # no comparison was printed first
    monkeypatch.undo()
    monkeypatch.setattr(policykd.embedded.shutil, "which", lambda name: None if name.startswith(("arm-", "qemu-system")) else real_which(name))
    result = _invoke("eval", teacher, student, "--env", "CartPole-v1", "--episodes", 1, "--latency", "--target", "cortex-m4")
    assert result.exit_code == 2 and "target cortex-m4 needs arm-none-eabi-gcc" in result.output, result.output
    result = _invoke("eval", teacher, student, "--env", "CartPole-v1", "--episodes", 1, "--latency", "--latency-calls", 10,
                     "--json", tmp_path / "e.json")
    assert "note: skipping target cortex-m4" in result.output, result.output
    if result.exit_code == 0:  # aarch64 (when installed) still runs
        assert "cortex-m4" not in {t["target"] for t in json.loads((tmp_path / "e.json").read_text())["embedded"]}


def test_eval_latency_reports_backends_and_targets(tmp_path, tiny_teachers):
    from policykd.embedded import load_target, missing_tools

    if missing_tools(load_target("cortex-m4")):
        pytest.skip("cortex-m4 toolchain not installed (scripts/install-toolchains.sh)")
    teacher = tiny_teachers["dqn"]
    config = tmp_path / "recipe.yaml"
    config.write_text("labelled_steps: 200\nrounds: 1\nepochs_per_round: 1\nhidden: [8, 8]\n")
    assert _invoke("distill", teacher, "--env", "CartPole-v1", "-c", config, "--out-dir", tmp_path, "--run-name", "r", "--no-eval").exit_code == 0
    result = _invoke("eval", teacher, tmp_path / "r" / "student", "--env", "CartPole-v1", "--episodes", 2, "--latency",
                     "--latency-calls", 100, "--target", "cortex-m4", "--rate", 50, "--json", tmp_path / "e.json")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "e.json").read_text())
    assert set(report["backends_latency_us"]) >= {"sb3_predict", "torch", "numpy", "onnx", "c"}
    (m4,) = report["embedded"]
    assert m4["target"] == "cortex-m4" and m4["fits_rate"] is True and m4["outputs_equal_host"] is True


def test_shipped_default_recipe_names_a_shipped_teacher():
    """README's main command: configs/distill/default.yaml distils the racecar teacher in agents/ and films it."""
    from pathlib import Path

    from policykd.config import load_config
    from policykd.teachers import load_teacher

    root = Path(__file__).resolve().parents[1]
    config = load_config(root / "configs" / "distill" / "default.yaml", {})
    teacher = load_teacher(root / config.teacher)
    assert teacher.env_spec.env_id == "PolicyKD/RacecarTrack-v0"
    assert config.rollout_steps > 0 and config.hidden == [64, 64]


def test_version_names_policykd_and_the_packages_it_runs_on():
    import torch

    import policykd

    result = _invoke("--version")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"policykd {policykd.__version__} (python ") and f"torch {torch.__version__}" in result.output


def test_an_output_policykd_wrote_is_replaced_by_the_next_run_and_carries_its_mark(tiny_teachers, tmp_path):
    """--json and --plot refuse files policykd did not write (tests/test_bad_inputs.py); their own are rewritten."""
    from matplotlib.figure import Figure

    from policykd.artifacts import check_replaceable_output
    from policykd.plots import save

    out = tmp_path / "teacher.json"
    argv = ["teacher", "eval", tiny_teachers["dqn"], "--env", "CartPole-v1", "--episodes", "2", "--json", out]
    for seed in ("0", "5"):
        result = _invoke(*argv, "--seed", seed)
        assert result.exit_code == 0, result.output
        record = json.loads(out.read_text())
        assert record["written_by"] == "policykd teacher eval" and record["seeds"] == [int(seed), int(seed) + 1]
    for suffix in ("png", "svg", "pdf"):
        figure = save(Figure(), tmp_path / f"plot.{suffix}")
        check_replaceable_output(figure, "image")  # its own mark: replaceable


def test_eval_says_when_the_teacher_is_not_the_one_the_student_was_distilled_from(tmp_path, tiny_teachers):
    config = tmp_path / "recipe.yaml"
    config.write_text("labelled_steps: 200\nrounds: 1\nepochs_per_round: 1\nhidden: [8, 8]\n")
    assert _invoke("distill", tiny_teachers["dqn"], "--env", "CartPole-v1", "-c", config, "--out-dir", tmp_path, "--run-name", "r",
                   "--no-eval").exit_code == 0
    student = tmp_path / "r" / "student"
    own = _invoke("eval", tiny_teachers["dqn"], student, "--env", "CartPole-v1", "--episodes", 2, "--latency-calls", 10)
    peer = _invoke("eval", tiny_teachers["qrdqn"], student, "--env", "CartPole-v1", "--episodes", 2, "--latency-calls", 10)
    assert own.exit_code == 0 and peer.exit_code == 0, own.output + peer.output
    assert "distilled from another teacher" not in own.output
    assert re.search(r"note: .* was distilled from another teacher \(.*, sha256 [0-9a-f]{12}\)", " ".join(peer.output.split()))


def test_policykd_warnings_are_one_note_line_once(capsys):
    """A warning policykd raises (a stray buffer chunk) is `note: ...` once, not Python's two lines per call site."""
    import os

    from policykd.cli import _policykd_warnings_as_notes

    others = []
    show = _policykd_warnings_as_notes(lambda *args: others.append(args))
    here = os.path.join("x", "policykd", "buffer.py")
    for lineno in (56, 73):
        show(UserWarning("buf: ignoring chunks not committed"), UserWarning, here, lineno)
    show(UserWarning("from elsewhere"), UserWarning, os.path.join("x", "gymnasium", "core.py"), 1)
    assert capsys.readouterr().err.strip().splitlines() == ["note: buf: ignoring chunks not committed"]
    assert len(others) == 1  # other packages' warnings are shown as Python shows them


def test_small_returns_keep_their_digits_in_the_tables():
    """MountainCarContinuous returns of -0.0073 and -0.0056 both read -0.0 beside a ratio of 1.3."""
    from policykd.cli import _return_text

    assert [_return_text(x) for x in (-0.0073, -0.0056, 21.375, 0.0, 1500.25, -250.0)] == [
        "-0.0073", "-0.0056", "21.38", "0.0", "1500.2", "-250.0"]


def test_an_undefined_ratio_is_null_in_strict_json_and_n_a_in_the_report(tmp_path, tiny_teachers):
    """One evaluation episode: no interval; eval.json stays strict JSON (null, not NaN) and report reads it."""
    config = tmp_path / "recipe.yaml"
    config.write_text("labelled_steps: 300\nrounds: 1\nepochs_per_round: 1\nhidden: [8, 8]\neval_episodes: 1\nlatency_calls: 20\n")
    result = _invoke("distill", tiny_teachers["dqn"], "--env", "CartPole-v1", "-c", config, "--out-dir", tmp_path, "--run-name", "r")
    assert result.exit_code == 0, result.output
    text = (tmp_path / "r" / "eval.json").read_text()
    record = json.loads(text, parse_constant=lambda name: pytest.fail(f"eval.json holds {name}"))
    assert record["ratio_ci95"] == [None, None] and record["versions"]["policykd"]
    assert _invoke("report", tmp_path / "r").exit_code == 0


def test_os_errors_name_the_users_file_and_say_what_to_do(tmp_path):
    import errno

    from policykd.cli import _os_error_line

    full = _os_error_line(OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "buffer" / ".metadata.json.rcu5yo46.tmp")))
    assert full.startswith(f"the disk is full writing {tmp_path / 'buffer' / 'metadata.json'}; free space") and "--resume" in full
    afile = tmp_path / "out"
    afile.write_text("mine")
    assert _os_error_line(FileExistsError(errno.EEXIST, "File exists", str(afile))) == \
        f"{afile} is a file where a folder is needed; choose another path (nothing was changed)"
    assert _os_error_line(PermissionError(errno.EACCES, "Permission denied", "/ro/x")).startswith("cannot use /ro/x: Permission denied")


def test_ctrl_c_while_the_command_loads_is_one_line_not_a_traceback():
    """SIGINT during the imports of policykd.cli (torch) printed a 23-frame traceback."""
    import signal
    import subprocess
    import sys
    import time

    process = subprocess.Popen([sys.executable, "-m", "policykd.entry", "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)  # the imports take longer than this
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert "Traceback" not in out + err
    if process.returncode != 0:  # interrupted while loading (not after --help printed)
        assert process.returncode == 130 and err.strip() == "interrupted: nothing was written yet"
