"""Student views (policykd.views): a privileged teacher, a student that sees only its sensors."""

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from policykd.buffer import Buffer
from policykd.cli import app
from policykd.config import DistillConfig
from policykd.env_factory import EnvSpec
from policykd.errors import PolicyKDError
from policykd.pipeline import distill_and_evaluate
from policykd.views import INFO_KEY, StudentViewWrapper

RACECAR_TEACHER = Path(__file__).resolve().parents[1] / "agents" / "sac-RacecarTrack-v0"


def test_rays_view_is_the_observation_without_centreline_knowledge_plus_the_last_action():
    env = EnvSpec("PolicyKD/RacecarTrack-v0").with_view("rays").make()
    try:
        obs, info = env.reset(seed=5)
        assert info[INFO_KEY].shape == (15,) and env.student_observation_space.contains(info[INFO_KEY])
        np.testing.assert_array_equal(info[INFO_KEY], np.concatenate([obs[:2], [0.0, 0.0], obs[5:]]).astype(np.float32))
        obs, _, _, _, info = env.step(np.array([0.5, -0.25], dtype=np.float32))
        np.testing.assert_array_equal(info[INFO_KEY], np.concatenate([obs[:2], [0.5, -0.25], obs[5:]]).astype(np.float32))
        assert obs.shape == (16,)  # the teacher keeps its own observation
    finally:
        env.close()


def test_a_view_the_env_does_not_offer_is_one_line():
    env = EnvSpec("Pendulum-v1").make()
    with pytest.raises(PolicyKDError, match=r"env Pendulum-v1 has no student view 'rays' \(it offers: none\)"):
        StudentViewWrapper(env, "rays")
    racecar = EnvSpec("PolicyKD/RacecarTrack-v0").make()
    try:
        with pytest.raises(PolicyKDError, match=r"no student view 'sonar' \(it offers: camera, rays\)"):
            StudentViewWrapper(racecar, "sonar")
    finally:
        racecar.close()


def test_hints_need_the_teachers_inputs():
    with pytest.raises(PolicyKDError, match="student_view 'rays' gives the student other inputs"):
        DistillConfig(teacher="x", student_view="rays", hint_weight=1.0)


def test_a_sensor_only_student_is_distilled_stored_and_evaluated_on_its_view(tmp_path):
    config = DistillConfig(teacher=str(RACECAR_TEACHER), student_view="rays", labelled_steps=400, rounds=2, epochs_per_round=2,
                           out_dir=str(tmp_path), run_name="rays", eval_episodes=2, latency_calls=10, hidden=[16, 16])
    result = distill_and_evaluate(config, quiet=True)
    buffer = Buffer.open(result.run_dir / "buffer")
    data = buffer.load()
    assert buffer.metadata["student_view"] == "rays" and buffer.metadata["student_observation_space"]["shape"] == [15]
    assert data["student_obs"].shape == (400, 15) and data["obs"].shape == (400, 16)  # both views of every step
    np.testing.assert_array_equal(data["student_obs"][:, :2], data["obs"][:, :2])  # speed, yaw rate: seen by both
    np.testing.assert_array_equal(data["student_obs"][:, 4:], data["obs"][:, 5:])  # the rays
    card = json.loads((result.student_dir / "student.json").read_text())
    assert card["student_view"]["name"] == "rays" and card["spec"]["obs_dim"] == 15
    student = result.distillation.student
    assert student.obs_std.min() >= 1e-3 and float(student.obs_clip) == 10.0 and student.obs_mean.abs().sum() > 0  # its own normaliser
    assert result.report.agreement["states"] > 0 and np.isfinite(result.report.agreement["kl"])

    from policykd import runtime  # on the robot: the student's own view as the env's observation, no torch

    env, policy = runtime.make_env(result.student_dir), runtime.load(result.student_dir)
    try:
        obs, _ = env.reset(seed=0)
        assert obs.shape == (15,) and policy(obs).shape == (2,)
    finally:
        env.close()

    runner = CliRunner()
    ok = runner.invoke(app, ["eval", str(RACECAR_TEACHER), str(result.student_dir), "--episodes", "1", "--latency-calls", "10"])
    assert ok.exit_code == 0, ok.output
    wrong = runner.invoke(app, ["eval", str(RACECAR_TEACHER.parent / "sac-RacecarObstacles-v0"), str(result.student_dir),
                                "--episodes", "1"])
    assert wrong.exit_code == 2 and "its 'rays' view of the teacher's env has 25" in wrong.output


def test_camera_view_is_an_image_from_the_car_and_its_speed():
    env = EnvSpec("PolicyKD/RacecarTrack-v0").with_view("camera").make()
    try:
        obs, info = env.reset(seed=3)
        first = info[INFO_KEY]
        assert first.shape == (48 * 64 * 3 + 1,) and env.student_observation_space.contains(first)
        image = first[:-1].reshape(48, 64, 3)
        assert image.std() > 0.05  # a scene, not a blank frame: road, barriers, sky
        for _ in range(10):
            obs, _, _, _, info = env.step(np.array([0.8, 0.8], dtype=np.float32))
        assert info[INFO_KEY][-1] == obs[0]  # the speed, as the teacher sees it
        assert np.abs(info[INFO_KEY][:-1] - first[:-1]).mean() > 0.01  # the car moved and turned: the view changed
    finally:
        env.close()


def test_a_stacked_view_holds_the_last_k_frames_oldest_first():
    env = EnvSpec("PolicyKD/RacecarTrack-v0").with_view("rays*3").make()
    single = EnvSpec("PolicyKD/RacecarTrack-v0").with_view("rays").make()
    try:
        _, info = env.reset(seed=2)
        _, one = single.reset(seed=2)
        assert info[INFO_KEY].shape == (45,) and env.student_observation_space.shape == (45,)
        np.testing.assert_array_equal(info[INFO_KEY], np.tile(one[INFO_KEY], 3))  # after a reset: the first view 3 times
        frames = [one[INFO_KEY]]
        for action in ([0.3, 0.5], [-0.2, 0.7]):
            _, _, _, _, info = env.step(np.array(action, dtype=np.float32))
            _, _, _, _, one = single.step(np.array(action, dtype=np.float32))
            frames.append(one[INFO_KEY])
        np.testing.assert_array_equal(info[INFO_KEY], np.concatenate(frames))
    finally:
        env.close()
        single.close()
    with pytest.raises(PolicyKDError, match=r"write NAME or NAME\*k with k frames from 1 to 64"):
        DistillConfig(teacher="x", student_view="rays*0")


@pytest.mark.parametrize("view", ["rays", "rays*2", "camera"])
def test_the_sensor_only_env_passes_check_env_and_replays_from_a_seed(view):
    from gymnasium.utils.env_checker import check_env

    from policykd.views import StudentViewObservation

    env = StudentViewObservation(EnvSpec("PolicyKD/RacecarTrack-v0").make(), view)
    try:
        check_env(env, skip_render_check=True)
        runs = []
        for _ in range(2):
            obs, _ = env.reset(seed=11)
            seen = [obs]
            for _ in range(5):
                seen.append(env.step(np.array([0.2, 0.6], dtype=np.float32))[0])
            runs.append(np.stack(seen))
        np.testing.assert_array_equal(runs[0], runs[1])
    finally:
        env.close()


@pytest.mark.parametrize(("student_view", "message"), [
    ("rays", r"student_view must be \{\"name\": VIEW\}"),
    ({"name": 7}, r"student_view must be \{\"name\": VIEW\}"),
    ({"name": "os:system"}, "an import path; policykd does not import code a card names"),
])
def test_a_card_with_a_bad_or_importing_view_is_refused_in_one_line(tmp_path, student_view, message):
    from policykd import runtime
    from policykd.students import Student, StudentSpec

    student = Student(StudentSpec(obs_dim=3, action_dim=1, family="gaussian", hidden=(4,), action_low=(-2.0,), action_high=(2.0,)))
    student.save(tmp_path / "s", card_extra={"teacher": {"env": {"env_id": "Pendulum-v1"}}})
    card = json.loads((tmp_path / "s" / "student.json").read_text())
    card["student_view"] = student_view
    (tmp_path / "s" / "student.json").write_text(json.dumps(card))
    with pytest.raises(PolicyKDError, match=message):
        runtime.make_env(tmp_path / "s")
