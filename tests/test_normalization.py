import numpy as np
import pytest
from stable_baselines3.common.running_mean_std import RunningMeanStd

from policykd.normalization import ObsNormalizer


def test_matches_vecnormalize_formula_and_clips():
    rms = RunningMeanStd(shape=(3,))
    rms.update(np.random.default_rng(0).normal(2.0, 3.0, size=(500, 3)))
    norm = ObsNormalizer(rms.mean, rms.var, clip=5.0, epsilon=1e-8)
    obs = np.array([[2.0, 50.0, -50.0]])
    expected = np.clip((obs - rms.mean) / np.sqrt(rms.var + 1e-8), -5, 5)
    np.testing.assert_allclose(norm(obs), expected, rtol=1e-6)
    assert norm(obs)[0, 1] == 5.0 and norm(obs)[0, 2] == -5.0


def test_identity_and_json_roundtrip():
    ident = ObsNormalizer.identity(4)
    obs = np.array([[1.0, -2.0, 300.0, 0.5]])
    np.testing.assert_allclose(ident(obs), obs, rtol=1e-6)
    again = ObsNormalizer.from_json(ident.to_json())
    assert again.clip is None
    norm = ObsNormalizer(np.ones(2), np.full(2, 4.0), clip=10.0)
    np.testing.assert_array_equal(ObsNormalizer.from_json(norm.to_json())(obs[:, :2]), norm(obs[:, :2]))


@pytest.mark.parametrize(("mean", "var", "clip", "epsilon"), [
    ([np.nan, 0.0], [1.0, 1.0], 10.0, 1e-8),
    ([np.inf, 0.0], [1.0, 1.0], 10.0, 1e-8),
    ([0.0, 0.0], [-5.0, 1.0], 10.0, 1e-8),
    ([0.0, 0.0], [0.0, 1.0], 10.0, 0.0),
    ([0.0, 0.0], [1.0, 1.0], float("nan"), 1e-8),
    ([0.0, 0.0], [1.0, 1.0], -1.0, 1e-8),
])
def test_statistics_that_would_make_nan_observations_are_refused(mean, var, clip, epsilon):
    with pytest.raises(ValueError, match="normaliser"):
        ObsNormalizer(mean=np.array(mean), var=np.array(var), clip=clip, epsilon=epsilon)


def test_a_vecnormalize_pickle_with_nan_statistics_is_one_line(tmp_path):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    from policykd.errors import PolicyKDError
    from policykd.zoo import load_vecnormalize_stats

    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    venv.obs_rms.var[1] = np.nan
    venv.save(tmp_path / "vecnormalize.pkl")
    with pytest.raises(PolicyKDError, match=r"vecnormalize\.pkl does not hold VecNormalize statistics \(normaliser mean, var"):
        load_vecnormalize_stats(tmp_path / "vecnormalize.pkl")
