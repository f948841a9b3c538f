"""Loading real rl-zoo checkpoints (skipped when ../shared is absent) and tiny SAC/TD3/TQC/DQN/QR-DQN ones."""

import shutil
import zipfile

import numpy as np
import pytest
import torch

from policykd.errors import PolicyKDError
from policykd.teachers import infer_algo, load_teacher
from tests.conftest import zoo_run

ZOO_RUNS = [
    ("ppo", "HalfCheetahBulletEnv-v0", "gaussian", 27),
    ("a2c", "HalfCheetahBulletEnv-v0", "gaussian", 27),
    ("ppo", "HopperBulletEnv-v0", "gaussian", 16),
    ("ppo", "ReacherBulletEnv-v0", "gaussian", 10),
    ("trpo", "HopperBulletEnv-v0", "gaussian", 15),
    ("ppo", "CartPole-v1", "categorical", 4),
    ("dqn", "CartPole-v1", "categorical", 4),
    ("ppo", "Pendulum-v1", "gaussian", 3),
]


@pytest.mark.parametrize(("algo", "env_id", "family", "obs_dim"), ZOO_RUNS)
def test_zoo_teacher_matches_sb3_predict(algo, env_id, family, obs_dim):
    teacher = load_teacher(zoo_run(algo, env_id))
    assert teacher.family == family and teacher.obs_dim == obs_dim
    env = teacher.make_env()
    obs, _ = env.reset(seed=3)
    batch = [obs]
    for _ in range(15):
        obs, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            obs, _ = env.reset()
        batch.append(obs)
    env.close()
    batch = np.stack(batch)
    np.testing.assert_allclose(teacher.act(batch), teacher.sb3_predict(batch), atol=1e-6)
    dist, value = teacher.dist_and_value(batch)
    assert value.shape == (16,) and torch.isfinite(value).all()
    features = teacher.features(batch)
    assert len(features) == 2 and all(f.shape[0] == 16 and f.dim() == 2 for f in features.values())


def test_zoo_bullet_teacher_uses_timefeature_normaliser_and_gsde_std():
    teacher = load_teacher(zoo_run("ppo", "HalfCheetahBulletEnv-v0"))
    assert [w.path for w in teacher.env_spec.wrappers] == ["sb3_contrib.common.wrappers.TimeFeatureWrapper"]
    assert teacher.normalizer.clip == 10.0 and teacher.normalizer.mean.shape == (27,)
    obs = np.zeros((2, 27))
    x = teacher.obs_tensor(obs)
    dist = teacher.policy.get_distribution(x).distribution
    ours = teacher.action_dist(obs)
    torch.testing.assert_close(ours["log_std"].exp(), dist.stddev.detach())
    # gSDE: the std depends on the state
    other = teacher.action_dist(np.ones((1, 27)))
    assert not torch.allclose(ours["log_std"][0], other["log_std"][0])


@pytest.mark.parametrize("algo", ["sac", "td3", "tqc", "dqn", "qrdqn"])
def test_tiny_offpolicy_teachers(tiny_teachers, algo):
    path, env_id = tiny_teachers[algo], tiny_teachers[f"{algo}_env"]
    assert infer_algo(path) == algo
    teacher = load_teacher(path, env_id=env_id)
    env = teacher.make_env()
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    env.close()
    np.testing.assert_allclose(teacher.act(obs), teacher.model.predict(obs, deterministic=True)[0], atol=1e-5)
    dist, value = teacher.dist_and_value(obs)
    x = torch.as_tensor(obs, dtype=torch.float32)
    with torch.no_grad():
        if algo == "sac":
            q = torch.cat(teacher.policy.critic(x, torch.tanh(dist["mean"])), dim=1).min(dim=1).values
            torch.testing.assert_close(value, q)
        elif algo == "td3":
            assert dist.family == "deterministic"
            q = torch.cat(teacher.policy.critic(x, teacher.policy.actor(x)), dim=1).min(dim=1).values
            torch.testing.assert_close(value, q)
        elif algo == "dqn":
            torch.testing.assert_close(value, teacher.policy.q_net(x).max(dim=1).values)
        assert value.shape == (8,)
    assert teacher.features(obs)


def test_bad_teacher_inputs_give_one_line_errors(tmp_path, tiny_teachers):
    with pytest.raises(PolicyKDError, match="does not exist"):
        load_teacher(tmp_path / "missing.zip", env_id="CartPole-v1")
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(b"not a zip at all")
    with pytest.raises(PolicyKDError, match="not a readable SB3 checkpoint"):
        load_teacher(corrupt, env_id="CartPole-v1")
    with pytest.raises(PolicyKDError, match="unknown algorithm"):
        load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1", algo="ppo2")
    with pytest.raises(PolicyKDError, match="unknown env id 'CartPol-v1'.*CartPole-v1"):
        load_teacher(tiny_teachers["dqn"], env_id="CartPol-v1")
    with pytest.raises(PolicyKDError, match="pass --env"):
        load_teacher(tiny_teachers["dqn"])
    with pytest.raises(PolicyKDError, match="expects observations of shape"):
        load_teacher(tiny_teachers["dqn"], env_id="Acrobot-v1")
    truncated = tmp_path / "trunc.zip"
    data = open(tiny_teachers["dqn"], "rb").read()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(PolicyKDError):
        load_teacher(truncated, env_id="CartPole-v1")


def test_zoo_folder_missing_vecnormalize_is_reported(tmp_path):
    src = zoo_run("ppo", "HopperBulletEnv-v0")
    dst = tmp_path / "HopperBulletEnv-v0_1"
    shutil.copytree(src, dst)
    (dst / "HopperBulletEnv-v0" / "vecnormalize.pkl").unlink()
    with pytest.raises(PolicyKDError, match="vecnormalize.pkl is missing"):
        load_teacher(dst)


def test_zoo_zip_without_member_data_is_reported(tmp_path):
    bad = tmp_path / "x.zip"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("other", "1")
    with pytest.raises(PolicyKDError, match="not a readable SB3 checkpoint"):
        load_teacher(bad, env_id="CartPole-v1")
