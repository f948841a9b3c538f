import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch
from safetensors import numpy as safetensors_numpy
from stable_baselines3.common.evaluation import evaluate_policy

from policykd.errors import InvalidObservation, PolicyKDError
from policykd.normalization import ObsNormalizer
from policykd.students import Student, StudentSpec, load_student


def _spec(family="gaussian", activation="tanh"):
    norm = ObsNormalizer(np.array([1.0, -1.0, 0.0]), np.array([4.0, 1.0, 0.25]), clip=3.0)
    return StudentSpec(obs_dim=3, action_dim=2 if family != "categorical" else 3, family=family, activation=activation,
                       action_low=(-2.0, 0.0) if family != "categorical" else (), action_high=(2.0, 1.0) if family != "categorical" else (),
                       normalizer=norm.to_json())


@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian", "categorical", "deterministic"])
def test_save_load_roundtrip_gives_identical_outputs(tmp_path, family):
    torch.manual_seed(0)
    student = Student(_spec(family))
    student.value_std.fill_(3.0)
    student.save(tmp_path / "s", card_extra={"teacher": {"sha256": "x"}})
    loaded = load_student(tmp_path / "s")
    obs = torch.randn(10, 3) * 5
    d1, v1 = student(obs)
    d2, v2 = loaded(obs)
    for k in d1.params:
        torch.testing.assert_close(d1[k], d2[k])
    torch.testing.assert_close(v1, v2)
    assert loaded.card["teacher"]["sha256"] == "x" and loaded.card["spec"]["family"] == family


def test_loading_never_unpickles(tmp_path, monkeypatch):
    Student(_spec()).save(tmp_path / "s")

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    load_student(tmp_path / "s")


def test_normalisation_and_action_scaling_live_inside():
    torch.manual_seed(0)
    student = Student(_spec("squashed_gaussian"))
    raw = torch.tensor([[3.0, -1.0, 10.0]])
    expected_input = torch.tensor([[1.0, 0.0, 3.0]])  # (3-1)/2, (-1+1)/1, clip(10/0.5, 3)
    torch.testing.assert_close(student.normalize(raw), expected_input, atol=1e-5, rtol=1e-5)
    action = student.act(np.random.default_rng(0).normal(scale=10.0, size=(100, 3)))
    assert (action[:, 0] >= -2).all() and (action[:, 0] <= 2).all()
    assert (action[:, 1] >= 0).all() and (action[:, 1] <= 1).all()


def test_gaussian_actions_are_clipped_to_bounds():
    student = Student(_spec("gaussian"))
    with torch.no_grad():
        student.action_head.bias.copy_(torch.tensor([10.0, -10.0]))
    action = student.act(np.zeros((1, 3), dtype=np.float32))
    assert isinstance(action, np.ndarray) and action.dtype == np.float32
    np.testing.assert_array_equal(action, [[2.0, 0.0]])


def test_predict_works_with_sb3_evaluate_policy():
    from stable_baselines3.common.monitor import Monitor

    env = Monitor(gym.make("CartPole-v1"))
    spec = StudentSpec(obs_dim=4, action_dim=2, family="categorical")
    student = Student(spec)
    with torch.no_grad():
        student.action_head.weight.zero_()
        student.action_head.bias.copy_(torch.tensor([0.0, 1.0]))  # always push right
    mean, _ = evaluate_policy(student, env, n_eval_episodes=2)
    assert 5 <= mean < 60  # always-right falls quickly
    single, _ = student.predict(np.zeros(4, dtype=np.float32))
    assert single.shape == () and int(single) == 1


def test_bad_student_dirs_give_clear_errors(tmp_path):
    with pytest.raises(PolicyKDError, match="is not a student"):
        load_student(tmp_path)
    Student(_spec()).save(tmp_path / "s")
    (tmp_path / "s" / "student.safetensors").write_bytes(b"garbage")
    with pytest.raises(PolicyKDError, match="safetensors"):
        load_student(tmp_path / "s")
    with pytest.raises(PolicyKDError, match="activation"):
        _spec(activation="swish")


def test_act_is_numpy_in_numpy_out_and_matches_act_torch():
    torch.manual_seed(0)
    obs = np.random.default_rng(1).normal(scale=3.0, size=(50, 3))  # float64 in: converted to float32
    for family in ("gaussian", "squashed_gaussian", "deterministic", "categorical"):
        student = Student(_spec(family)).eval()
        action = student.act(obs)
        with torch.no_grad():
            expected = student.act_torch(torch.as_tensor(obs, dtype=torch.float32)).numpy()
        assert isinstance(action, np.ndarray)
        if family == "categorical":
            assert action.dtype == np.int64 and action.shape == (50,)
        else:
            assert action.dtype == np.float32 and action.shape == (50, 2)
        np.testing.assert_array_equal(action, expected)
        np.testing.assert_array_equal(student.predict(obs)[0], expected)
        np.testing.assert_allclose(student.predict(obs[0])[0], expected[0], atol=1e-6)  # batch 1: other rounding
        np.testing.assert_allclose(student.act(obs[:1].tolist()), expected[:1], atol=1e-6)  # array-likes are accepted


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_observations_raise_in_act_and_predict(bad):
    student = Student(_spec("squashed_gaussian")).eval()
    obs = np.zeros((4, 3), dtype=np.float32)
    obs[2, 1] = bad
    with pytest.raises(InvalidObservation, match=r"observation entry \[2, 1\] is .*NaN/inf observations are refused"):
        student.act(obs)
    with pytest.raises(InvalidObservation, match=r"observation entry 1 is"):
        student.predict(obs[2])
    with pytest.raises(InvalidObservation, match="NaN/inf"):
        student.predict(obs)
    with pytest.raises(InvalidObservation):  # a float64 beyond float32's range is inf as float32
        student.act(np.full((1, 3), 1e300))
    assert issubclass(InvalidObservation, PolicyKDError) and issubclass(InvalidObservation, ValueError)


@pytest.mark.parametrize("obs, message", [
    (np.float32(1.0), r"observations have shape \(\), this student takes \[B, 3\]"),
    (np.zeros(3), r"shape \(3,\), this student takes \[B, 3\] \(one observation: pass obs\[None\]\)"),
    (np.zeros(6), r"shape \(6,\), this student takes \[B, 3\]"),
    (np.zeros((2, 6)), r"shape \(2, 6\), this student takes \[B, 3\]"),
    (np.zeros((4, 2)), r"shape \(4, 2\), this student takes \[B, 3\]"),
    (np.zeros((1, 1, 3)), r"shape \(1, 1, 3\), this student takes \[B, 3\]"),
    (np.array([["a", "b", "c"]]), "must be an array of numbers"),
    ([[1.0, 2.0], [3.0]], "must be an array of numbers"),
])
def test_act_refuses_odd_shapes_without_broadcasting(obs, message):
    student = Student(_spec()).eval()
    with pytest.raises(InvalidObservation, match=message):
        student.act(obs)


@pytest.mark.parametrize("obs, message", [
    (np.float32(1.0), r"observations have shape \(\), this student takes \[B, 3\]"),
    (np.zeros(6), r"observation has shape \(6,\), this student takes \(3,\)"),  # not two observations
    (np.zeros(2), r"observation has shape \(2,\), this student takes \(3,\)"),
    (np.zeros((2, 6)), r"observations have shape \(2, 6\)"),
])
def test_predict_refuses_odd_shapes(obs, message):
    student = Student(_spec()).eval()
    with pytest.raises(InvalidObservation, match=message):
        student.predict(obs)


def _corrupt_weights(directory, name, value):
    path = directory / "student.safetensors"
    weights = safetensors_numpy.load_file(str(path))
    weights[name].reshape(-1)[0] = value
    safetensors_numpy.save_file(weights, str(path))


@pytest.mark.parametrize("name", ["trunk.0.weight", "trunk.2.bias", "action_head.weight", "log_std_head.bias",
                                  "value_head.weight", "obs_mean", "obs_std", "action_low", "value_std"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_load_student_refuses_non_finite_weights(tmp_path, name, value):
    Student(_spec()).save(tmp_path / "s")
    _corrupt_weights(tmp_path / "s", name, value)
    with pytest.raises(PolicyKDError, match=f"student.safetensors holds non-finite weights: {name} has 1 NaN/inf") as info:
        load_student(tmp_path / "s")
    assert "\n" not in str(info.value)


def test_obs_clip_may_be_infinite_but_not_nan(tmp_path):
    student = Student(StudentSpec(obs_dim=3, action_dim=2, family="categorical"))  # no normaliser: obs_clip = inf
    assert torch.isinf(student.obs_clip)
    student.save(tmp_path / "s")
    load_student(tmp_path / "s")
    _corrupt_weights(tmp_path / "s", "obs_clip", np.nan)
    with pytest.raises(PolicyKDError, match="obs_clip is nan"):
        load_student(tmp_path / "s")


def test_spec_checks_bounds_and_family():
    with pytest.raises(PolicyKDError, match="unknown student family"):
        StudentSpec(obs_dim=3, action_dim=2, family="beta")
    with pytest.raises(PolicyKDError, match="action_low has 1 entries, it must be 2 numbers"):
        StudentSpec(obs_dim=3, action_dim=2, family="gaussian", action_low=(0.0,), action_high=(1.0, 1.0))
    with pytest.raises(PolicyKDError, match="action_high must be finite"):
        StudentSpec(obs_dim=3, action_dim=1, family="gaussian", action_low=(0.0,), action_high=(float("inf"),))
    with pytest.raises(PolicyKDError, match="obs_dim must be a positive integer"):
        StudentSpec(obs_dim=0, action_dim=2, family="categorical")


def test_activation_tables_agree():
    from policykd import config, student_format
    from policykd.c_codegen import C_ACTIVATIONS
    from policykd.students import TORCH_ACTIVATIONS

    names = set(student_format.ACTIVATION_NAMES)
    assert names == set(TORCH_ACTIVATIONS) == set(C_ACTIVATIONS)  # every trainable activation exports to C
    assert set(getattr(config, "ACTIVATION_NAMES", names)) == names
    x = torch.linspace(-6, 6, 1001)
    for name in names:
        expected = TORCH_ACTIVATIONS[name]()(x).numpy()
        np.testing.assert_allclose(student_format.ACTIVATIONS[name](x.numpy().copy()), expected, atol=1e-6)


def test_save_gives_the_student_its_card(tmp_path):
    student = Student(_spec())
    assert student.card is None
    student.save(tmp_path / "s", card_extra={"teacher": {"sha256": "x"}})
    assert student.card == load_student(tmp_path / "s").card


def test_make_env_builds_the_teachers_env_from_the_card(tmp_path):
    from policykd.env_factory import EnvSpec, WrapperSpec

    env_ = gym.make("Pendulum-v1")
    low, high = tuple(env_.action_space.low.tolist()), tuple(env_.action_space.high.tolist())
    plain = Student(StudentSpec(obs_dim=3, action_dim=1, family="squashed_gaussian", action_low=low, action_high=high))
    plain.save(tmp_path / "plain", card_extra={"teacher": {"env": EnvSpec("Pendulum-v1").to_json()}})
    # A TimeFeatureWrapper teacher: one more observation entry than gym.make gives.
    time_feature = EnvSpec("Pendulum-v1", wrappers=(WrapperSpec("sb3_contrib.common.wrappers.TimeFeatureWrapper"),))
    timed = Student(StudentSpec(obs_dim=4, action_dim=1, family="squashed_gaussian", action_low=low, action_high=high))
    timed.save(tmp_path / "timed", card_extra={"teacher": {"env": time_feature.to_json()}})
    assert plain.make_env().observation_space.shape == (3,)
    for name, obs_dim in (("plain", 3), ("timed", 4)):
        # the README's control loop
        student = load_student(tmp_path / name)
        env = student.make_env()
        assert env.observation_space.shape == (obs_dim,) == (student.spec.obs_dim,)
        raw_obs, _ = env.reset(seed=0)
        action = student.act(raw_obs[None])[0]
        assert action.shape == env.action_space.shape and env.action_space.contains(action)
        env.step(action)
        env.close()

    no_record = Student(_spec())
    with pytest.raises(PolicyKDError, match="no card yet"):
        no_record.make_env()
    no_record.save(tmp_path / "none", card_extra={"teacher": {"sha256": "x"}})
    with pytest.raises(PolicyKDError, match="has no teacher env record"):
        load_student(tmp_path / "none").make_env()
    wrong = Student(StudentSpec(obs_dim=3, action_dim=1, family="squashed_gaussian", action_low=low, action_high=high))
    wrong.save(tmp_path / "wrong", card_extra={"teacher": {"env": time_feature.to_json()}})
    with pytest.raises(PolicyKDError, match=r"gives observations of shape \(4,\), the student takes \(3,\)"):
        wrong.make_env()
