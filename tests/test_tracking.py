"""W&B (offline) and TensorBoard receive what a distillation run logs; read back and compared with the run's files."""

import json

import pytest
from typer.testing import CliRunner

from policykd.cli import app
from tests.wandb_reader import read_run


@pytest.fixture(scope="module")
def tracked_run(tiny_teachers, tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    config = root / "recipe.yaml"
    config.write_text("labelled_steps: 300\nrounds: 3\nepochs_per_round: 2\nhidden: [8, 8]\neval_episodes: 2\nlatency_calls: 20\n")
    result = CliRunner().invoke(app, ["distill", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "-c", str(config),
                                      "--out-dir", str(root), "--run-name", "r", "--wandb", "--tensorboard"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return root / "r", result.output


def test_wandb_offline_run_holds_config_history_and_evaluation(tracked_run):
    run_dir, output = tracked_run
    assert "wandb sync" in output  # tells the user how to upload the offline run
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    run = read_run(run_file)
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    logged = [h for h in run["history"] if "distill/kl" in h]
    assert [h["_step"] for h in logged] == [h["step"] for h in history] == [100, 200, 300]
    assert [h["distill/kl"] for h in logged] == pytest.approx([h["distill/kl"] for h in history])
    report = json.loads((run_dir / "eval.json").read_text())
    assert run["summary"]["eval/ratio"] == pytest.approx(report["ratio"])
    assert run["summary"]["eval/student_return_mean"] == pytest.approx(report["student"]["mean"])
    assert run["config"].get("labelled_steps") == 300 and run["config"].get("hidden") == [8, 8], run["config"]
    assert "student-r" in run["artifacts"]  # the student folder, as an artifact
    assert any("evalcomparison" in name for name in run["artifacts"])  # the teacher-vs-student table


def test_tensorboard_scalars_match_history(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tracked_run
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    kl = events.Scalars("distill/kl")
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert [e.step for e in kl] == [100, 200, 300]
    assert [e.value for e in kl] == pytest.approx([h["distill/kl"] for h in history], rel=1e-6)


def test_report_has_tables_plots_config_and_versions(tracked_run):
    run_dir, _ = tracked_run
    result = CliRunner().invoke(app, ["report", str(run_dir)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = (run_dir / "report.md").read_text()
    ratio = json.loads((run_dir / "eval.json").read_text())["ratio"]
    assert f"Return ratio: **{ratio:.3f}**" in text
    assert "| round | labelled steps |" in text and '"labelled_steps": 300' in text and "torch " in text
    for png in ("distillation_curve.png", "latency.png"):
        assert f"(plots/{png})" in text
        assert (run_dir / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_replaces_its_own_report_but_never_a_users(tracked_run):
    run_dir, _ = tracked_run
    path = run_dir / "report.md"
    assert CliRunner().invoke(app, ["report", str(run_dir)]).exit_code == 0
    first = path.read_bytes()
    assert CliRunner().invoke(app, ["report", str(run_dir)]).exit_code == 0  # its own, unedited: rewritten
    assert path.read_bytes() == first
    path.write_bytes(first + b"\nmy notes on this run\n")  # edited by the user: kept
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == 2 and "was not written by `policykd report` or was edited" in result.output
    assert path.read_bytes().endswith(b"my notes on this run\n")
    path.unlink()


def test_report_on_a_non_run_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "not a finished distillation run" in result.output


def test_sweep_runs_the_grid_and_marks_the_pareto_front(tmp_path, tiny_teachers):
    from policykd.sweep import pareto_front

    assert pareto_front([(1, 0.5), (2, 0.9), (3, 0.8), (1, 0.4)]) == [0, 1]
    config = tmp_path / "base.yaml"
    config.write_text("labelled_steps: 200\nrounds: 1\nepochs_per_round: 1\neval_episodes: 2\n")
    result = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "-c", str(config),
                                      "--grid", "hidden=[8]|[16,16]", "--grid", "data_mode=teacher|dagger", "--out", str(tmp_path / "s")],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "sweep: 4 combinations" in result.output and "0 already done" in result.output  # progress, a line per round
    assert [line.split(":")[0] for line in result.output.splitlines() if "round 1 done" in line] == [
        f"sweep [{i}/4] {name}" for i, name in enumerate(["sweep000__hidden=[8]__data_mode=\"teacher\"", "sweep001__hidden=[8]__data_mode=\"dagger\"",
                                                          "sweep002__hidden=[16,16]__data_mode=\"teacher\"", "sweep003__hidden=[16,16]__data_mode=\"dagger\""], 1)]
    runs = json.loads((tmp_path / "s" / "results.json").read_text())["runs"]
    assert sorted((r["param/hidden"], r["param/data_mode"]) for r in runs) == sorted(
        [([8], "teacher"), ([8], "dagger"), ([16, 16], "teacher"), ([16, 16], "dagger")])
    assert {r["student_params"] for r in runs} == {4 * 8 + 8 + 8 * 2 + 2, 4 * 16 + 16 + 16 * 16 + 16 + 16 * 2 + 2}
    table = (tmp_path / "s" / "results.md").read_text()
    assert table.count("\n") == 2 + 4 and "params" in table
    assert (tmp_path / "s" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    bad = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "--grid", "hidden"])
    assert bad.exit_code == 2 and "KEY=V1|V2" in bad.output
    # the same folder with another base recipe: refused, not reported with the first sweep's rows
    before = (tmp_path / "s" / "results.json").read_bytes()
    other = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "-c", str(config), "--seed", "4",
                                     "--grid", "hidden=[8]|[16,16]", "--out", str(tmp_path / "s")])
    assert other.exit_code == 2 and "holds a sweep of another base recipe (seed)" in other.output
    assert (tmp_path / "s" / "results.json").read_bytes() == before
    # the sweep's own outputs are replaced on a rerun; a results.md or pareto.png it did not write, or that was edited, is not
    again = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "-c", str(config),
                                     "--grid", "hidden=[8]|[16,16]", "--grid", "data_mode=teacher|dagger", "--out", str(tmp_path / "s")])
    assert again.exit_code == 0, again.output
    assert "sweep: 4 combinations" in again.output and "4 already done" in again.output and "distilling" not in again.output
    (tmp_path / "s" / "results.md").write_text(table + "my notes on these runs\n")
    edited = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "-c", str(config),
                                      "--grid", "hidden=[8]|[16,16]", "--grid", "data_mode=teacher|dagger", "--out", str(tmp_path / "s")])
    assert edited.exit_code == 2 and "results.md was not written by a sweep here or was edited since" in edited.output
    assert (tmp_path / "s" / "results.md").read_text().endswith("my notes on these runs\n")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "pareto.png").write_bytes(b"my own figure")
    foreign = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "-c", str(config),
                                       "--grid", "hidden=[8]|[16,16]", "--out", str(mine)])
    assert foreign.exit_code == 2 and "pareto.png was not written by a sweep here" in foreign.output
    assert sorted(p.name for p in mine.iterdir()) == ["pareto.png"] and (mine / "pareto.png").read_bytes() == b"my own figure"


def test_wandb_sweep_definition_and_offline_refusal(tmp_path, tiny_teachers, monkeypatch):
    from policykd.sweep import wandb_sweep_config

    grid = {"hidden": [[8], [16, 16]], "kl_direction": ["forward", "reverse"]}
    assert wandb_sweep_config(grid, name="s") == {
        "name": "s", "method": "grid", "metric": {"name": "ratio", "goal": "maximize"},
        "parameters": {"hidden": {"values": [[8], [16, 16]]}, "kl_direction": {"values": ["forward", "reverse"]}}}
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key
    result = CliRunner().invoke(app, ["sweep", str(tiny_teachers["dqn"]), "--env", "CartPole-v1", "--grid", "hidden=[8]",
                                      "--wandb-sweep", "--out", str(tmp_path / "s")])
    assert result.exit_code == 2 and "wandb login" in result.output and "drop --wandb-sweep" in result.output
    assert not (tmp_path / "s" / "results.json").exists()


def test_wandb_sweep_run_logs_its_combination(tmp_path, tiny_teachers):
    """The function the W&B agent calls for each run, here in an offline run whose config stands in for the
    sweep controller's choice; the offline run file is read back."""
    from policykd.sweep import SweepContext, wandb_sweep_run

    config = tmp_path / "base.yaml"
    config.write_text("labelled_steps: 200\nrounds: 1\nepochs_per_round: 1\neval_episodes: 2\n")
    context = SweepContext(config, {"teacher": str(tiny_teachers["dqn"]), "env_id": "CartPole-v1"}, tmp_path / "s")
    row = wandb_sweep_run(context, {"hidden": [[8], [16]]}, project="policykd-test", defaults={"hidden": [16]},
                          mode="offline")
    assert row["param/hidden"] == [16] and row["student_params"] == 4 * 16 + 16 + 16 * 2 + 2
    (run_file,) = (tmp_path / "s").glob("wandb/offline-run-*/run-*.wandb")
    run = read_run(run_file)
    assert run["config"].get("hidden") == [16], run
    assert run["summary"]["ratio"] == pytest.approx(row["ratio"])
    assert json.loads((tmp_path / "s" / "results.json").read_text())["runs"][0]["name"] == row["name"]


def test_wandb_reader_waits_for_the_exit_record(tmp_path):
    """A run file W&B is still writing (no exit record yet) is not read as if complete."""
    from tests.wandb_reader import read_run

    run_file = tmp_path / "run-x.wandb"
    run_file.write_bytes(b":W&B\x00\x00\x00")
    with pytest.raises(TimeoutError, match="no exit record"):
        read_run(run_file, timeout_s=0.3)


# Progress and console output when not writing to a terminal (CI, a log file, `| tee`).

class _FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Lines:
    """A thread-safe write() target collecting progress lines."""

    def __init__(self) -> None:
        import threading

        self.lines: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, text: str) -> None:
        with self._lock:
            self.lines.append(text)

    def snapshot(self) -> list[str]:
        with self._lock:
            return list(self.lines)

    def wait_for(self, line: str, timeout_s: float = 10.0) -> list[str]:
        """The lines so far, once `line` is among them (or timeout_s passed)."""
        import time

        deadline = time.monotonic() + timeout_s
        while line not in self.snapshot() and time.monotonic() < deadline:
            time.sleep(0.005)
        return self.snapshot()


def test_progress_line_format():
    from policykd.tracking import format_duration, format_progress, progress_unit

    label = "round 2/5: collecting (beta=0.50)"
    assert format_progress(label, 4_000, 10_000, 5.0, unit="steps") == (
        "round 2/5: collecting (beta=0.50): 4,000/10,000 steps (40%), 800 steps/s, elapsed 5.0 s, ETA 7.5 s")
    assert format_progress(label, 10_000, 10_000, 12.0, unit="steps", final=True) == (
        "round 2/5: collecting (beta=0.50): 10,000/10,000 steps (100%), 833 steps/s, done in 12 s")
    assert format_progress("evaluating student (20 episodes)", 0, 20, 30.0, unit="episodes") == (
        "evaluating student (20 episodes): 0/20 episodes (0%), elapsed 30 s, ETA unknown (none done yet)")
    assert format_progress("evaluating student (20 episodes)", 4, 20, 200.0, unit="episodes") == (
        "evaluating student (20 episodes): 4/20 episodes (20%), 50 s/episode, elapsed 3 min 20 s, ETA 13 min 20 s")
    assert format_progress("evaluating x", 1, 20, 125.0, unit="episodes").split(", ")[1] == "2 min 05 s/episode"
    assert format_progress("round 1/2: training", 3, 4, 1.5, unit="epochs") == (
        "round 1/2: training: 3/4 epochs (75%), 2 epochs/s, elapsed 1.5 s, ETA 0.5 s")
    assert format_progress("x", 1, 2, 1.0) == "x: 1/2 (50%), 1/s, elapsed 1.0 s, ETA 1.0 s"
    assert format_progress("x", 1, 2, 4.0) == "x: 1/2 (50%), 4 s each, elapsed 4.0 s, ETA 4.0 s"
    assert format_progress("x", 0, 0, 1.0, final=True) == "x: 0/0 (100%), done in 1.0 s"
    assert [format_duration(s) for s in (0.04, 7.0, 65.0, 7_440.0)] == ["0.0 s", "7.0 s", "1 min 05 s", "2 h 04 min"]
    assert progress_unit("round 1/3: collecting (beta=1.00)") == "steps"
    assert progress_unit("evaluating HopperBulletEnv-v0") == "episodes"
    assert progress_unit("round 1/3: training") == "epochs"
    assert progress_unit("something else") == ""


def test_plain_progress_prints_while_nothing_advances_and_stops_at_exit():
    """A line every interval even without advance() (episodes end rarely); nothing after the block; a final line."""
    import time

    from policykd.tracking import PlainProgress

    clock, lines = _FakeClock(), _Lines()
    with PlainProgress("evaluating teacher (4 episodes)", 4, unit="episodes", write=lines, interval_s=0.01,
                       clock=clock) as advance:
        clock.now += 20.0
        waiting = "evaluating teacher (4 episodes): 0/4 episodes (0%), elapsed 20 s, ETA unknown (none done yet)"
        assert waiting in lines.wait_for(waiting)
        advance(2)
        clock.now += 20.0
        halfway = "evaluating teacher (4 episodes): 2/4 episodes (50%), 20 s/episode, elapsed 40 s, ETA 40 s"
        assert halfway in lines.wait_for(halfway)
        advance(2)
    final = lines.snapshot()
    assert final[-1] == "evaluating teacher (4 episodes): 4/4 episodes (100%), 10 s/episode, done in 40 s"
    time.sleep(0.1)  # ten intervals: the thread has stopped, nothing more comes
    assert lines.snapshot() == final


def test_plain_progress_marks_a_block_that_raised():
    from policykd.tracking import PlainProgress

    clock, lines = _FakeClock(), _Lines()
    with pytest.raises(KeyboardInterrupt):
        with PlainProgress("round 1/2: collecting (beta=1.00)", 100, unit="steps", write=lines, interval_s=60.0,
                           clock=clock) as advance:
            advance(10)
            clock.now += 1.0
            raise KeyboardInterrupt
    assert lines.snapshot() == ["round 1/2: collecting (beta=1.00): 10/100 steps (10%), 10 steps/s, elapsed 1.0 s, "
                                "ETA 9.0 s (stopped: KeyboardInterrupt)"]


def test_tracker_progress_is_plain_lines_when_not_a_terminal():
    import io

    from policykd.tracking import Tracker, make_console

    buffer = io.StringIO()  # not a terminal, like a pipe or a log file
    clock = _FakeClock()
    tracker = Tracker(console=make_console(file=buffer), progress_interval_s=60.0, clock=clock)
    with tracker.progress("round 1/3: collecting (beta=1.00)", 300) as advance:
        advance(300)
        clock.now += 2.0
    assert buffer.getvalue() == "round 1/3: collecting (beta=1.00): 300/300 steps (100%), 150 steps/s, done in 2.0 s\n"
    quiet = io.StringIO()
    with Tracker(console=make_console(file=quiet), quiet=True).progress("collecting", 10) as advance:
        advance(10)
    assert quiet.getvalue() == ""


def test_console_does_not_wrap_paths_when_not_a_terminal():
    import io

    from policykd.tracking import make_console

    path = "/home/ci/runs/" + "a-long-run-name-" * 8 + "/student/student.int8.onnx"
    piped = io.StringIO()
    make_console(file=piped, width=80).print(f"wrote {path} ({12345:,} bytes)")
    assert piped.getvalue() == f"wrote {path} (12,345 bytes)\n"

    class FakeTerminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = FakeTerminal()
    make_console(file=terminal, width=80, color_system=None).print(f"wrote {path}")
    assert max(len(line) for line in terminal.getvalue().splitlines()) <= 80  # a terminal still wraps
    assert make_console(stderr=True).stderr and not make_console().stderr


def test_piped_tables_are_not_cropped_and_keep_their_layout():
    import io

    from rich.table import Table

    from policykd.tracking import PIPED_WIDTH, make_console

    path = "../shared/teachers/rl-zoo/ppo/HalfCheetahBulletEnv-v0_1/" + "x" * 60
    table = Table(title="ppo teacher on HalfCheetahBulletEnv-v0")
    table.add_column("policy")
    table.add_column("mean")
    table.add_row(path, "2944.4")
    piped = io.StringIO()
    console = make_console(file=piped)
    assert console.width >= PIPED_WIDTH  # rich alone would lay it out in 80 columns
    console.print(table)
    lines = piped.getvalue().splitlines()
    assert any(path in line for line in lines)  # whole, not cropped to "../shared/teachers/r…"
    assert lines[0].startswith(" ") and lines[0].strip() == "ppo teacher on HalfCheetahBulletEnv-v0"  # centred title


def test_an_unreachable_wandb_logs_offline_instead_of_failing_the_run(tmp_path, monkeypatch, capsys):
    """An API key but no network (a robot lab, a firewall): wandb.init fails after its timeout; the run goes on offline."""
    import wandb

    from policykd.tracking import WandbSink

    real_init, modes = wandb.init, []

    def init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("Timed out while retrying: dial tcp: no such host")
        return real_init(**kwargs)

    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setattr(wandb, "init", init)
    sink = WandbSink(tmp_path, project="policykd-test", name="offline-fallback", config={"seed": 0})
    sink.log({"distill/loss": 1.0}, step=1)
    sink.run.finish()
    assert modes == ["online", "offline"] and sink.offline
    assert "W&B could not be reached or refused the API key (Timed out while retrying" in capsys.readouterr().err
    assert list((tmp_path / "wandb").glob("offline-run-*"))
