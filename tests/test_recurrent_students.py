"""Recurrent (GRU) students: a state carried from step to step and reset at every episode start, in torch, numpy,
ONNX, TorchScript and C; trained by truncated backprop through time on the buffer's episodes; acting in DAgger
collection and evaluation with one state per env."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policykd import runtime
from policykd.config import DistillConfig
from policykd.distill import distill, validation_loss
from policykd.errors import InvalidObservation, PolicyKDError
from policykd.evaluate import compare
from policykd.export import export_with_parity
from policykd.recurrent import EpisodeSequences
from policykd.rollout import collect
from policykd.students import Student, StudentSpec, load_student
from policykd.teachers import load_teacher

PENDULUM_TEACHER = Path(__file__).resolve().parents[1] / "agents" / "sac-Pendulum-v1"


def gru_spec(family: str = "gaussian", gru: int = 6) -> StudentSpec:
    bounded = family != "categorical"
    return StudentSpec(obs_dim=5, action_dim=2 if bounded else 3, family=family, hidden=(12,), activation="tanh",
                       action_low=(-1.0, -2.0) if bounded else (), action_high=(1.0, 2.0) if bounded else (), gru=gru)


def saved(tmp_path: Path, spec: StudentSpec) -> Path:
    torch.manual_seed(0)
    return Student(spec).save(tmp_path / f"gru-{spec.family}")


def episode(n: int = 30, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 5)).astype(np.float32)


def test_unroll_is_step_after_step_and_forward_asks_for_the_state():
    student = Student(gru_spec())
    obs = torch.from_numpy(episode(12).reshape(4, 3, 5))
    dist, value, final = student.unroll(obs, student.initial_state(3))
    state = student.initial_state(3)
    for t in range(4):
        step_dist, step_value, state = student.step(obs[t], state)
        torch.testing.assert_close(dist["mean"][3 * t : 3 * t + 3], step_dist["mean"])
        torch.testing.assert_close(value[3 * t : 3 * t + 3], step_value)
    torch.testing.assert_close(final, state)
    with pytest.raises(PolicyKDError, match="a recurrent student needs its state"):
        student(obs[0])


def test_act_carries_the_state_until_reset(tmp_path):
    student = load_student(saved(tmp_path, gru_spec()))
    obs = episode(5)
    first = np.stack([student.act(o[None])[0] for o in obs])
    assert not np.allclose(first[1:], np.stack([student.act(o[None])[0] for o in obs[1:]]))  # no reset: the state moved on
    student.reset()
    np.testing.assert_array_equal(np.stack([student.act(o[None])[0] for o in obs]), first)
    with pytest.raises(InvalidObservation, match="state holds 1 episodes, the batch has 2; call reset"):
        student.act(obs[:2])
    action, state = student.predict(obs[0])  # SB3-style: the state passed in and out
    np.testing.assert_allclose(action, first[0], atol=1e-6)
    action, _ = student.predict(obs[1], state=state)
    np.testing.assert_allclose(action, first[1], atol=1e-6)
    action, _ = student.predict(obs[1], state=state, episode_start=np.array([True]))
    np.testing.assert_allclose(action, student.predict(obs[1])[0], atol=1e-6)
    for bad_state, message in ((np.full(6, np.nan), "state holds NaN/inf"), (np.zeros(5), r"state must be \[6\], got shape \[5\]")):
        with pytest.raises(InvalidObservation, match=message):  # a NaN state used to give NaN actions, a wrong size a torch error
            student.predict(obs[1], state=bad_state)
    with pytest.raises(InvalidObservation, match=r"episode_start must be \[2\] bools, got shape \[1\]"):
        student.predict(obs[:2], state=np.zeros((2, 6)), episode_start=np.array([True]))


@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian", "categorical"])
def test_numpy_and_c_runtimes_carry_the_same_state_as_torch(tmp_path, family):
    directory = saved(tmp_path, gru_spec(family))
    student, policy = load_student(directory), runtime.load(directory)
    export_with_parity(directory, tmp_path / "c", "c", observations=50)
    c_policy = runtime.load_c(directory, tmp_path / "c")
    header = (tmp_path / "c" / "policykd_student.h").read_text()
    assert "#define POLICYKD_STATE_DIM 6" in header and "void policykd_reset(void);" in header
    for seed in (1, 2):  # two episodes, each from a reset
        obs = episode(25, seed)
        student.reset()
        policy.reset()
        c_policy.reset()
        expected = np.stack([student.act(o[None])[0] for o in obs])
        for name, run in (("numpy", policy), ("c", c_policy)):
            actual = np.array([run(o) for o in obs])
            if family == "categorical":
                np.testing.assert_array_equal(actual, expected, err_msg=name)
            else:
                np.testing.assert_allclose(actual, expected, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("export_format", ["onnx", "torchscript", "safetensors"])
def test_float_exports_of_a_recurrent_student_pass_parity_over_an_episode(tmp_path, export_format):
    directory = saved(tmp_path, gru_spec())
    _, parity = export_with_parity(directory, tmp_path / export_format, export_format, observations=200)
    assert parity["passed"] is True and parity["max_abs_diff"] <= 1e-5 and "one episode" in parity["sequence"]


@pytest.mark.parametrize("export_format", ["c-int16", "c-int8", "onnx-int8"])
def test_quantised_exports_refuse_a_recurrent_student_in_one_line(tmp_path, export_format):
    directory = saved(tmp_path, gru_spec())
    with pytest.raises(PolicyKDError, match=f"is a recurrent student and {export_format} export supports MLP students only"):
        export_with_parity(directory, tmp_path / "out", export_format)


def test_a_card_with_a_bad_gru_size_is_refused(tmp_path):
    directory = saved(tmp_path, gru_spec())
    card = json.loads((directory / "student.json").read_text())
    card["spec"]["gru"] = -3
    (directory / "student.json").write_text(json.dumps(card))
    with pytest.raises(PolicyKDError, match="spec.gru must be the size of a GRU state"):
        runtime.load(directory)


def test_an_mlp_students_card_has_no_conv_or_gru_key(tmp_path):
    spec = StudentSpec(obs_dim=3, action_dim=2, family="categorical", hidden=(4,))
    card = json.loads((Student(spec).save(tmp_path / "mlp") / "student.json").read_text())
    assert "gru" not in card["spec"] and "conv" not in card["spec"]  # readable by policykd from before them


def test_episode_chunks_start_where_the_episode_prefix_leaves_the_state():
    student = Student(gru_spec())
    # two interleaved episodes (ids 7 and 3) of 9 and 5 steps, in collection order
    episode_id = np.array([7, 3] * 5 + [7] * 4)
    obs = torch.from_numpy(episode(len(episode_id), 4))
    sequences = EpisodeSequences(obs, episode_id, length=4)
    rows_7 = np.flatnonzero(episode_id == 7)
    assert len(sequences) == 3 + 2 and sequences.rows[sequences.position == 0].shape[0] == 2
    sequences.refresh(student)
    with torch.no_grad():
        _, _, after_8 = student.unroll(obs[rows_7[:8]][:, None], student.initial_state(1))
        third = int(torch.nonzero(sequences.rows[:, 0] == int(rows_7[8])).item())
        torch.testing.assert_close(sequences.start_states[third], after_8[0])
        rows, dist, _ = sequences.forward(student, torch.arange(len(sequences)))
        assert sorted(rows.tolist()) == list(range(len(episode_id)))  # every row once, no padding
        full, _, _ = student.unroll(obs[rows_7][:, None], student.initial_state(1))
    position = {int(r): i for i, r in enumerate(rows)}
    torch.testing.assert_close(dist["mean"][[position[int(r)] for r in rows_7]], full["mean"])


def test_recurrent_config_needs_every_step_labelled():
    with pytest.raises(PolicyKDError, match="a recurrent student \\(gru: 16\\) trains on whole episodes, every step labelled; set label_every: 1"):
        DistillConfig(teacher="x", gru=16)
    with pytest.raises(PolicyKDError, match="cannot yet train quantisation-aware"):
        DistillConfig(teacher="x", gru=16, label_every=1, quantise_aware_rounds=1)


def test_dagger_collection_steps_the_students_state_through_each_episode():
    teacher = load_teacher(PENDULUM_TEACHER)
    torch.manual_seed(0)
    student = Student(StudentSpec(obs_dim=3, action_dim=1, family="squashed_gaussian", hidden=(8,), action_low=(-2.0,),
                                  action_high=(2.0,), gru=4))
    data = collect(teacher, steps=450, beta=0.0, seed=3, n_envs=1, student=student, sample_actions=False,
                   max_episode_steps=200)
    assert len(np.unique(data["episode_id"])) == 3  # two whole episodes and the start of a third: the state was reset
    for episode_id in np.unique(data["episode_id"]):
        rows = np.flatnonzero(data["episode_id"] == episode_id)
        with torch.no_grad():
            dist, _, _ = student.unroll(torch.as_tensor(data["obs"][rows])[:, None], student.initial_state(1))
        expected = student.strategy.to_env_action(dist.mode(), student.action_low, student.action_high).numpy()
        np.testing.assert_allclose(data["action"][rows], expected, atol=1e-5)


def test_a_recurrent_student_is_distilled_deterministically_and_evaluated_from_a_reset_each_episode(tmp_path):
    config = dict(teacher=str(PENDULUM_TEACHER), labelled_steps=1200, rounds=2, epochs_per_round=3, gru=16, label_every=1,
                  hidden=[32], out_dir=str(tmp_path), tbptt_steps=16)
    first = distill(DistillConfig(**config, run_name="a"))
    second = distill(DistillConfig(**config, run_name="b"))
    for (name, a), b in zip(first.student.state_dict().items(), second.student.state_dict().values()):
        assert torch.equal(a, b), name
    card = json.loads((first.run_dir / "student" / "student.json").read_text())
    assert card["spec"]["gru"] == 16
    untrained = Student(first.student.spec)
    untrained.load_state_dict({k: v for k, v in first.student.state_dict().items() if k.startswith(("obs_", "action_", "value_"))},
                              strict=False)
    from policykd.buffer import Buffer

    data = Buffer.open(first.run_dir / "buffer").load()
    assert validation_loss(first.student, data, "squashed_gaussian", tbptt_steps=16) < validation_loss(untrained, data, "squashed_gaussian")
    teacher = load_teacher(PENDULUM_TEACHER)
    reports = [compare(teacher, first.student, episodes=2, latency_calls=10) for _ in range(2)]
    np.testing.assert_array_equal(reports[0].student.to_json()["returns"], reports[1].student.to_json()["returns"])
    assert reports[0].agreement == {"states": 0}


def test_closed_loop_backends_refuse_a_recurrent_student_in_one_line(tmp_path):
    from policykd.backends import act_function

    directory = saved(tmp_path, gru_spec())
    with pytest.raises(PolicyKDError, match="is a recurrent student: --backend runs feed-forward students only"):
        act_function(directory, "c", tmp_path / "work")
