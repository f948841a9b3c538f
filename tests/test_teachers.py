"""Loading real rl-zoo checkpoints (skipped when ../shared is absent) and tiny SAC/TD3/TQC/DQN/QR-DQN ones."""

import shutil
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from policykd.errors import PolicyKDError
from policykd.rollout import run_episodes
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
    if algo in ("ppo", "a2c", "trpo"):  # the fused one-pass forward gives exactly SB3's distribution and value
        assert teacher._one_pass is not None and teacher._one_pass.head in ("gaussian", "gsde", "categorical")
        with torch.no_grad():
            generic, generic_value = teacher._modules_dist_and_value(teacher.obs_tensor(batch))
        assert all(torch.equal(dist[k], generic[k]) for k in generic.params) and torch.equal(value, generic_value)
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


@pytest.mark.parametrize("algo", ["sac", "td3", "tqc", "crossq", "dqn", "qrdqn"])
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
        if algo in ("sac", "crossq"):  # CrossQ's critics (batch renorm, no target nets) as in evaluation mode
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


@pytest.mark.parametrize("name", ["sac_sde", "tqc_sde", "ppo_squashed"])
def test_gsde_teachers_give_sb3s_state_dependent_distribution_and_actions(tiny_teachers, name):
    """rl-zoo trains its Bullet SAC/TQC teachers with gSDE: the std at a state comes from the actor's latent. PPO with
    squash_output (gSDE only) is a squashed Gaussian like SAC's, its deterministic action tanh(mean) scaled."""
    teacher = load_teacher(tiny_teachers[name], env_id="Pendulum-v1")
    assert infer_algo(tiny_teachers[name]) == name.split("_")[0] and teacher.family == "squashed_gaussian"
    env = teacher.make_env()
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    env.close()
    np.testing.assert_allclose(teacher.act(obs), teacher.model.predict(obs, deterministic=True)[0], atol=1e-5)
    x = teacher.obs_tensor(obs)
    with torch.no_grad():
        if name == "ppo_squashed":
            sb3_normal = teacher.policy.get_distribution(x).distribution
        else:
            mean, log_std, extra = teacher.policy.actor.get_action_dist_params(x)
            sb3_normal = teacher.policy.actor.action_dist.proba_distribution(mean, log_std, **extra).distribution
    ours = teacher.action_dist(obs)
    torch.testing.assert_close(ours["mean"], sb3_normal.mean)
    torch.testing.assert_close(ours["log_std"].exp(), sb3_normal.stddev)
    assert ours["log_std"].std(dim=0).min() > 1e-4  # the std differs from state to state
    dist, value = teacher.dist_and_value(obs)
    assert value.shape == (8,) and torch.isfinite(value).all()


def test_a_recurrent_ppo_checkpoint_is_refused_in_one_line_whatever_algo_says(tmp_path):
    """A RecurrentPPO zip looks like PPO's (and loaded as one, its LSTM ignored, before this was checked)."""
    import sb3_contrib

    path = tmp_path / "recurrent_ppo.zip"
    sb3_contrib.RecurrentPPO("MlpLstmPolicy", "Pendulum-v1", n_steps=32, batch_size=32, device="cpu",
                             policy_kwargs={"net_arch": [8], "lstm_hidden_size": 8}).save(path)
    for algo in (None, "ppo"):
        with pytest.raises(PolicyKDError, match="RecurrentPPO \\(LSTM\\) checkpoint.*policykd distils PPO") as info:
            load_teacher(path, env_id="Pendulum-v1", algo=algo)
        assert "\n" not in str(info.value)


def test_a_maskable_ppo_checkpoint_is_refused_in_one_line_whatever_algo_says(tmp_path):
    """MaskablePPO acts under the env's action masks; loaded as PPO it failed inside SB3 with a constructor error."""
    import sb3_contrib

    path = tmp_path / "maskable_ppo.zip"
    sb3_contrib.MaskablePPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, device="cpu",
                            policy_kwargs={"net_arch": [8]}).save(path)
    for algo in (None, "ppo"):
        with pytest.raises(PolicyKDError, match="MaskablePPO checkpoint: .*action masks.*policykd distils PPO") as info:
            load_teacher(path, env_id="CartPole-v1", algo=algo)
        assert "\n" not in str(info.value)


def test_a_goal_conditioned_her_teacher_is_refused_in_one_line_before_anything_is_unpickled(tmp_path, monkeypatch):
    """HER teachers observe a Dict (observation, achieved and desired goal); their zips held HER kwargs that made
    SB3's load fail with a message about a replay buffer."""
    from stable_baselines3 import DQN, HerReplayBuffer
    from stable_baselines3.common.envs import BitFlippingEnv

    path = tmp_path / "her.zip"
    DQN("MultiInputPolicy", BitFlippingEnv(n_bits=4, max_steps=4), replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={"n_sampled_goal": 2}, learning_starts=10, buffer_size=100, device="cpu").save(path)
    monkeypatch.setattr("policykd.safe_pickle.safe_load", lambda *a, **k: pytest.fail("unpickled"))
    for algo in (None, "dqn"):
        with pytest.raises(PolicyKDError, match="observes a Dict space.*one flat Box observation"):
            load_teacher(path, env_id="CartPole-v1", algo=algo)


@pytest.mark.parametrize("name", ["ars", "ars_mlp", "ars_discrete"])
def test_ars_teachers_act_as_sb3_predicts_and_have_no_value(tiny_teachers, name):
    """rl-zoo's Bullet ARS teachers are linear policies whose output SB3 clips to the bounds; ARS MLPs end in a tanh
    that SB3 scales to the bounds; on Discrete actions SB3 takes the argmax of the output."""
    teacher = load_teacher(tiny_teachers[name], env_id=tiny_teachers[f"{name}_env"])
    assert teacher.algo == "ars" and not teacher.has_value
    assert teacher.family == ("categorical" if name == "ars_discrete" else "deterministic")
    env = teacher.make_env()
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    env.close()
    if name == "ars":  # a linear policy's outputs beyond the bounds (torque +-2): clipped as SB3 does
        with torch.no_grad():
            teacher.policy.action_net[0].weight.fill_(5.0)
    np.testing.assert_allclose(teacher.act(obs), teacher.model.predict(obs, deterministic=True)[0], atol=1e-5)
    dist, value = teacher.dist_and_value(obs)
    assert torch.equal(value, torch.zeros(8))
    if name == "ars":
        assert (dist["action"].abs() == 1).any() and dist["action"].abs().max() <= 1


def test_a_student_of_an_ars_teacher_matches_its_actions_without_value_matching(tiny_teachers, tmp_path):
    from policykd.config import DistillConfig
    from policykd.distill import distill
    from policykd.tracking import Tracker

    teacher = load_teacher(tiny_teachers["ars"], env_id="Pendulum-v1")
    config = DistillConfig(teacher=str(tiny_teachers["ars"]), env_id="Pendulum-v1", labelled_steps=1000, rounds=2,
                           hidden=[32, 32], out_dir=str(tmp_path), run_name="ars", seed=0)
    result = distill(config, teacher=teacher, tracker=Tracker(None, quiet=True))
    assert result.student.card["decided"]["value_matching"] is False
    env = teacher.make_env()
    obs = np.stack([env.reset(seed=100 + s)[0] for s in range(64)])
    env.close()
    error = np.abs(result.student.act(obs) - teacher.act(obs)).mean()
    assert error < 0.05 * np.abs(teacher.act(obs)).mean() + 0.01, error


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


# -- the teacher's spaces must match the env's, and --algo must match the checkpoint ------------------

def test_action_space_mismatch_is_one_line_naming_both_spaces_and_the_right_env():
    """An SAC InvertedDoublePendulum zip with --env ReacherBulletEnv-v0: same obs shape (9,), actions (1,) vs (2,)."""
    model_zip = Path(__file__).resolve().parents[1] / "agents" / "sac-InvertedDoublePendulumBulletEnv-v0" / "model.zip"
    if not model_zip.exists():
        pytest.skip("agents/sac-InvertedDoublePendulumBulletEnv-v0 is absent")
    with pytest.raises(PolicyKDError) as info:
        load_teacher(model_zip, env_id="ReacherBulletEnv-v0")
    message = str(info.value)
    assert "\n" not in message
    assert "expects actions of shape (1,) but ReacherBulletEnv-v0 takes (2,)" in message
    assert "Box(-1, 1, (1,))" in message and "Box(-1, 1, (2,))" in message
    assert "pass --env InvertedDoublePendulumBulletEnv-v0" in message


def test_observation_shape_and_bounds_mismatches_are_reported(tiny_teachers):
    from dataclasses import replace

    from policykd.env_factory import EnvSpec, WrapperSpec
    from policykd.teachers import Teacher

    with pytest.raises(PolicyKDError, match=r"expects observations of shape \(3,\) but MountainCarContinuous-v0 gives \(2,\)"):
        load_teacher(tiny_teachers["sac"], env_id="MountainCarContinuous-v0")
    teacher = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    rescaled = EnvSpec("Pendulum-v1", wrappers=(WrapperSpec("gymnasium.wrappers.RescaleAction", {"min_action": -1.0, "max_action": 1.0}),))
    with pytest.raises(PolicyKDError, match=r"action bounds \(low\) differ.*Box\(-2, 2, \(1,\)\).*Box\(-1, 1, \(1,\)\)"):
        Teacher(replace(teacher.source, env=rescaled), teacher.model)


def test_space_comparison_rules():
    import gymnasium as gym

    from policykd.teachers import _space_mismatch, describe_space

    box = gym.spaces.Box(-1.0, 1.0, (3,))
    assert _space_mismatch("action", box, gym.spaces.Box(-1.0, 1.0, (3,), dtype=np.float64), "E") is None
    assert "2 discrete actions but E has 3" in _space_mismatch("action", gym.spaces.Discrete(2), gym.spaces.Discrete(3), "E")
    assert "is a Discrete but E's is a Box" in _space_mismatch("action", gym.spaces.Discrete(2), box, "E")
    # gym-era 'unbounded' written as float32 max equals today's inf
    big = np.finfo(np.float32).max
    old = gym.spaces.Box(np.array([-4.8, -big], dtype=np.float32), np.array([4.8, big], dtype=np.float32))
    new = gym.spaces.Box(np.array([-4.8, -np.inf], dtype=np.float32), np.array([4.8, np.inf], dtype=np.float32))
    assert _space_mismatch("observation", old, new, "E") is None
    assert _space_mismatch("observation", old, gym.spaces.Box(-1.0, 1.0, (2,)), "E")
    assert "\n" not in describe_space(gym.spaces.Box(-np.arange(40.0), np.arange(40.0), dtype=np.float64))


@pytest.mark.parametrize(("holds", "asked"), [
    ("sac", "ppo"), ("sac", "tqc"), ("tqc", "sac"), ("td3", "sac"), ("dqn", "sac"), ("dqn", "qrdqn"),
    ("qrdqn", "dqn"), ("sac", "dqn"), ("td3", "a2c"),
])
def test_wrong_algo_names_the_algorithm_the_checkpoint_holds(tiny_teachers, holds, asked):
    with pytest.raises(PolicyKDError) as info:
        load_teacher(tiny_teachers[holds], env_id=tiny_teachers[f"{holds}_env"], algo=asked)
    message = str(info.value)
    assert "\n" not in message
    assert f"holds a {holds.upper()} checkpoint" in message and f"not {asked}" in message and f"--algo {holds}" in message


def test_ddpg_and_td3_checkpoints_are_interchangeable(tiny_teachers):
    assert load_teacher(tiny_teachers["td3"], env_id="Pendulum-v1", algo="ddpg").algo == "ddpg"


@pytest.mark.parametrize(("run", "asked"), [(("ppo", "CartPole-v1"), "dqn"), (("ppo", "HopperBulletEnv-v0"), "sac"),
                                            (("a2c", "HalfCheetahBulletEnv-v0"), "ppo"), (("dqn", "CartPole-v1"), "ppo"),
                                            (("trpo", "HopperBulletEnv-v0"), "a2c")])
def test_wrong_algo_for_zoo_checkpoints(tmp_path, run, asked):
    folder = zoo_run(*run)
    model_zip = next(folder.glob("*.zip"))
    for path, kwargs in ((folder, {}), (model_zip, {"env_id": run[1]})):
        with pytest.raises(PolicyKDError, match=f"holds a {run[0].upper()} checkpoint .*not {asked}; pass --algo {run[0]}"):
            load_teacher(path, algo=asked, **kwargs)


def test_wrong_algo_for_an_agents_folder_names_the_model_card(tiny_teachers):
    agent = Path(__file__).resolve().parents[1] / "agents" / "sac-Pendulum-v1"
    if not agent.exists():
        pytest.skip("agents/sac-Pendulum-v1 is absent")
    with pytest.raises(PolicyKDError, match="model_card.json says the teacher is sac, not td3"):
        load_teacher(agent, algo="td3")
    assert load_teacher(agent, algo="sac").algo == "sac"


def test_feature_hooks_exist_only_while_features_runs(tiny_teachers):
    teacher = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")

    def hook_count() -> int:
        return sum(len(m._forward_hooks) for m in teacher.policy.modules())

    assert hook_count() == 0
    obs = np.zeros((2, 3))
    features = teacher.features(obs)
    assert len(features) == 2 and all(f.shape == (2, 32) for f in features.values())
    assert hook_count() == 0
    teacher.dist_and_value(obs)  # a plain forward records nothing
    assert teacher.features(obs).keys() == features.keys()


def test_a_student_distilled_from_a_gsde_sac_teacher_learns_its_state_dependent_std(tiny_teachers, tmp_path):
    from policykd.config import DistillConfig
    from policykd.distill import distill
    from policykd.tracking import Tracker

    teacher = load_teacher(tiny_teachers["sac_sde"], env_id="Pendulum-v1")
    config = DistillConfig(teacher=str(tiny_teachers["sac_sde"]), env_id="Pendulum-v1", labelled_steps=1000, rounds=2,
                           hidden=[32, 32], out_dir=str(tmp_path), run_name="sde", seed=0)
    student = distill(config, teacher=teacher, tracker=Tracker(None, quiet=True)).student
    env = teacher.make_env()
    obs = np.stack([env.reset(seed=100 + s)[0] for s in range(64)])
    env.close()
    with torch.no_grad():
        ours = student(torch.as_tensor(obs, dtype=torch.float32))[0]
    theirs = teacher.action_dist(obs)
    assert ours.family == "squashed_gaussian"
    best_constant_error = (theirs["log_std"] - theirs["log_std"].median(dim=0).values).abs().mean()  # 0.15
    assert (ours["log_std"] - theirs["log_std"]).abs().mean() < 0.3 * best_constant_error  # 0.016 measured
    np.testing.assert_allclose(student.act(obs), teacher.act(obs), atol=0.1)  # 0.03 measured (torque range +-2)


def test_env_given_for_an_agents_folder_is_used_not_ignored():
    agent = Path(__file__).resolve().parents[1] / "agents" / "sac-Pendulum-v1"
    if not agent.exists():
        pytest.skip("agents/sac-Pendulum-v1 is absent")
    with pytest.raises(PolicyKDError, match="expects observations of shape \\(3,\\) but CartPole-v1 gives \\(4,\\).*--env Pendulum-v1"):
        load_teacher(agent, env_id="CartPole-v1")
    assert load_teacher(agent, env_id="Pendulum-v1").env_spec.env_id == "Pendulum-v1"


def _zoo_run_with_extra_models(tmp_path: Path, tiny_teachers, *, final: bool = True) -> Path:
    """An rl-zoo SAC run folder as training leaves it: the final model, best_model.zip (a gSDE SAC here, to tell them
    apart) and a checkpoint with its own VecNormalize statistics (observation mean 0.5), beside Pendulum-v1/*.yml."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    run = tmp_path / "sac" / "Pendulum-v1_1"
    (run / "Pendulum-v1").mkdir(parents=True)
    (run / "Pendulum-v1" / "args.yml").write_text("!!python/object/apply:collections.OrderedDict\n- - - algo\n    - sac\n  - - env\n    - Pendulum-v1\n")
    (run / "Pendulum-v1" / "config.yml").write_text("normalize: false\n")
    if final:
        shutil.copy(tiny_teachers["sac"], run / "Pendulum-v1.zip")
    shutil.copy(tiny_teachers["sac_sde"], run / "best_model.zip")
    shutil.copy(tiny_teachers["sac"], run / "rl_model_300_steps.zip")
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    venv.obs_rms.mean[:] = 0.5
    venv.save(run / "rl_model_vecnormalize_300_steps.pkl")
    return run


def test_an_rl_zoo_run_with_best_model_and_checkpoints_loads_its_final_model(tmp_path, tiny_teachers):
    """`sorted(*.zip)[0]` would pick best_model.zip and read "best_model" as the env id."""
    teacher = load_teacher(_zoo_run_with_extra_models(tmp_path, tiny_teachers))
    assert (teacher.algo, teacher.env_spec.env_id, teacher.source.model_zip.name) == ("sac", "Pendulum-v1", "Pendulum-v1.zip")
    assert np.all(teacher.normalizer.mean == 0.0)


@pytest.mark.parametrize(("model", "obs_mean"), [("best_model.zip", 0.0), ("rl_model_300_steps.zip", 0.5)])
def test_a_model_inside_an_rl_zoo_run_loads_with_its_runs_env_and_statistics(tmp_path, tiny_teachers, model, obs_mean):
    """rl-zoo's --load-best / --load-checkpoint: no --env needed; a checkpoint uses the statistics saved with it."""
    run = _zoo_run_with_extra_models(tmp_path, tiny_teachers)
    teacher = load_teacher(run / model)
    assert (teacher.env_spec.env_id, teacher.source.model_zip, teacher.algo) == ("Pendulum-v1", run / model, "sac")
    assert teacher.model.use_sde == (model == "best_model.zip")
    np.testing.assert_allclose(teacher.normalizer.mean, obs_mean)
    obs = np.zeros((1, 3), dtype=np.float32)
    np.testing.assert_allclose(teacher.act(obs), teacher.sb3_predict(obs), atol=1e-5)


def test_an_rl_zoo_run_without_its_final_model_names_the_models_it_has(tmp_path, tiny_teachers):
    run = _zoo_run_with_extra_models(tmp_path, tiny_teachers, final=False)
    with pytest.raises(PolicyKDError, match=r"holds 2 models \(best_model\.zip, rl_model_300_steps\.zip\) and none is the "
                                            r"run's final one; pass the one to distil, e\.g\. .*best_model\.zip$"):
        load_teacher(run)


def test_a_hugging_face_snapshot_of_an_sb3_repository_loads_as_it_is(tmp_path, tiny_teachers):
    """huggingface_hub.snapshot_download("sb3/sac-Pendulum-v1"): the model, the yml files, vec_normalize.pkl and the
    training metrics (another zip) in one flat folder."""
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

    snapshot = tmp_path / "models--sb3--sac-Pendulum-v1"
    snapshot.mkdir()
    shutil.copy(tiny_teachers["sac"], snapshot / "sac-Pendulum-v1.zip")
    (snapshot / "args.yml").write_text("!!python/object/apply:collections.OrderedDict\n- - - algo\n    - sac\n  - - env\n    - Pendulum-v1\n")
    (snapshot / "config.yml").write_text("normalize: true\n")
    (snapshot / "env_kwargs.yml").write_text("{}\n")
    with zipfile.ZipFile(snapshot / "train_eval_metrics.zip", "w") as metrics:
        metrics.writestr("evaluations.npz", b"")
    venv = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]))
    venv.obs_rms.mean[:] = 0.25
    venv.save(snapshot / "vec_normalize.pkl")
    teacher = load_teacher(snapshot)
    assert (teacher.algo, teacher.env_spec.env_id, teacher.source.model_zip.name) == ("sac", "Pendulum-v1", "sac-Pendulum-v1.zip")
    np.testing.assert_allclose(teacher.normalizer.mean, 0.25)


@pytest.mark.parametrize("setting", ["frame_stack: 4", "vec_env_wrapper: stable_baselines3.common.vec_env.VecFrameStack"])
def test_an_rl_zoo_run_that_changes_observations_at_the_vec_env_level_is_refused_in_one_line(tmp_path, tiny_teachers, setting):
    """rl-zoo applies these to the VecEnv at test time; without them the teacher would see other observations."""
    run = _zoo_run_with_extra_models(tmp_path, tiny_teachers)
    (run / "Pendulum-v1" / "config.yml").write_text(f"normalize: false\n{setting}\n")
    key = setting.split(":")[0]
    with pytest.raises(PolicyKDError, match=rf"config\.yml sets {key}: .*which policykd does not apply.*trained without {key}$"):
        load_teacher(run)


def test_a_bare_zip_beside_another_tools_config_yml_is_still_a_bare_zip(tmp_path, tiny_teachers):
    """Only args.yml (rl-zoo's, or a Hub snapshot's) makes a folder a run: a project's own config.yml does not."""
    shutil.copy(tiny_teachers["sac"], tmp_path / "model.zip")
    (tmp_path / "config.yml").write_text("- another tool's list\n")
    teacher = load_teacher(tmp_path / "model.zip", env_id="Pendulum-v1")
    assert (teacher.algo, teacher.env_spec.env_id, teacher.source.card) == ("sac", "Pendulum-v1", {})


class _ImageEnv(gym.Env):
    """Random 40x40 RGB frames, three actions: an env SB3 trains a CnnPolicy on (transposed to channels first)."""

    observation_space = gym.spaces.Box(0, 255, (40, 40, 3), np.uint8)
    action_space = gym.spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, True, {}


def test_an_image_policy_is_refused_in_one_line_naming_what_it_is(tmp_path):
    """A CnnPolicy would get flat observations (and SB3's channels-first transpose differs from the env's space)."""
    import stable_baselines3 as sb3

    if "PolicyKDTest/Image-v0" not in gym.registry:
        gym.register("PolicyKDTest/Image-v0", entry_point=_ImageEnv, max_episode_steps=5)
    sb3.PPO("CnnPolicy", "PolicyKDTest/Image-v0", n_steps=16, batch_size=16, seed=0, device="cpu").save(tmp_path / "cnn.zip")
    with pytest.raises(PolicyKDError, match=r"cnn\.zip is an image policy \(convolutions, as SB3's CnnPolicy; observations "
                                            r"Box\(0, 255, \(3, 40, 40\)\)\): policykd reads SB3 teachers with flat observations only"):
        load_teacher(tmp_path / "cnn.zip", env_id="PolicyKDTest/Image-v0")


class _MatrixObservations(gym.ObservationWrapper):
    """CartPole whose 4 observations come as a 2x2 matrix (as highway-env's or a frame stack's do)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2, 2), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation.reshape(2, 2)


class _ColumnActions(gym.ActionWrapper):
    """Pendulum whose torque is a (1, 1) Box."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = gym.spaces.Box(-2.0, 2.0, (1, 1), np.float32)

    def action(self, action: np.ndarray) -> np.ndarray:
        assert action.shape == (1, 1), action.shape
        return action.reshape(1)


@pytest.mark.parametrize("kind,env_id,entry,shape", [
    ("observation", "PolicyKDTestMatrixObs-v0", lambda: _MatrixObservations(gym.make("CartPole-v1")), (2, 2)),
    ("action", "PolicyKDTestColumnAction-v0", lambda: _ColumnActions(gym.make("Pendulum-v1")), (1, 1)),
])
def test_a_teacher_of_non_flat_spaces_is_refused_in_one_line(tmp_path, kind, env_id, entry, shape):
    """SB3 flattens such observations and reshapes such actions itself; policykd's students take and give vectors, so
    the teacher is refused at load (training crashed on the observations, and the env got flat actions)."""
    import stable_baselines3 as sb3

    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry)
    path = tmp_path / "teacher.zip"
    (sb3.PPO if kind == "observation" else sb3.SAC)("MlpPolicy", env_id, device="cpu", policy_kwargs={"net_arch": [8]}).save(path)
    with pytest.raises(PolicyKDError, match=rf"{env_id} gives {kind}s of shape \({shape[0]}, {shape[1]}\), not one flat vector") as info:
        load_teacher(path, env_id=env_id)
    assert "\n" not in str(info.value)


class _ShiftedActions(gym.ActionWrapper):
    """CartPole whose actions are Discrete(2, start=-1): -1 and 0 push left and right."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.action_space = gym.spaces.Discrete(2, start=-1)

    def action(self, action):
        return int(action) + 1


def test_a_teacher_of_a_discrete_space_that_does_not_start_at_0_is_refused(tmp_path):
    """SB3 acts with indices 0..n-1 whatever the space's start: its actions were not the env's (1 is not in {-1, 0})."""
    import stable_baselines3 as sb3

    if "PolicyKDTestShiftedActions-v0" not in gym.registry:
        gym.register("PolicyKDTestShiftedActions-v0", entry_point=lambda: _ShiftedActions(gym.make("CartPole-v1")))
    path = tmp_path / "teacher.zip"
    sb3.PPO("MlpPolicy", "PolicyKDTestShiftedActions-v0", n_steps=16, batch_size=16, device="cpu").save(path)
    with pytest.raises(PolicyKDError, match=r"takes actions Discrete\(2, start=-1\), -1 to 0, but SB3 policies act with "
                                            r"indices 0 to 1"):
        load_teacher(path, env_id="PolicyKDTestShiftedActions-v0")


@pytest.mark.parametrize("wrapper,statistics", [("gymnasium.wrappers.NormalizeObservation", "obs_rms"),
                                                ("gymnasium.wrappers.NormalizeReward", "return_rms")])
def test_a_wrapper_with_running_statistics_is_refused_when_the_env_is_built(wrapper, statistics):
    """Its statistics are in no checkpoint file: the rebuilt env would start them from zero and drift as it steps."""
    from policykd.env_factory import EnvSpec, WrapperSpec

    with pytest.raises(PolicyKDError, match=rf"wrapper {wrapper} keeps running statistics \({statistics}\) that no "
                                            r"checkpoint file saves.*`normalize: true` \(VecNormalize"):
        EnvSpec("Pendulum-v1", wrappers=(WrapperSpec(wrapper),)).make()
    EnvSpec("Pendulum-v1", wrappers=(WrapperSpec("gymnasium.wrappers.ClipAction"),)).make().close()  # stateless: built


def _zoo_folder(run: Path, model: Path, *, env_id: str, algo: str, config: str = "") -> Path:
    """An rl-zoo run folder `run` (<env_id>_1/) holding `model` as <env_id>.zip and <env_id>/{args,config}.yml."""
    settings = run / env_id
    settings.mkdir(parents=True)
    shutil.copy(model, run / f"{env_id}.zip")
    (settings / "args.yml").write_text(f"!!python/object/apply:collections.OrderedDict\n- - - algo\n    - {algo}\n  - - env\n    - {env_id}\n")
    (settings / "config.yml").write_text(config or "!!python/object/apply:collections.OrderedDict\n- []\n")
    return run


def test_a_zip_beside_another_runs_settings_is_a_bare_zip(tmp_path, tiny_teachers):
    """A zip whose folder holds one unrelated rl-zoo settings folder is not that run's model: before, it took the run's
    algorithm, wrappers and VecNormalize statistics (a QR-DQN zip beside a TD3 run loaded 'as td3')."""
    from policykd.zoo import is_zoo_run_model

    _zoo_folder(tmp_path / "other", tiny_teachers["td3"], env_id="Pendulum-v1", algo="td3")
    shutil.copytree(tmp_path / "other" / "Pendulum-v1", tmp_path / "Pendulum-v1")  # settings beside the zip
    mine = shutil.copy(tiny_teachers["qrdqn"], tmp_path / "qrdqn_cartpole.zip")
    assert not is_zoo_run_model(Path(mine))
    teacher = load_teacher(mine, env_id="CartPole-v1")
    assert teacher.algo == "qrdqn" and teacher.env_spec.env_id == "CartPole-v1"
    for name in ("Pendulum-v1.zip", "best_model.zip", "rl_model_1000_steps.zip"):  # the run's own models still are
        assert is_zoo_run_model(Path(shutil.copy(tiny_teachers["td3"], tmp_path / name)))


def test_a_zoo_run_whose_model_is_another_algorithm_is_refused(tmp_path, tiny_teachers):
    run = _zoo_folder(tmp_path / "sac" / "Pendulum-v1_1", tiny_teachers["td3"], env_id="Pendulum-v1", algo="sac")
    with pytest.raises(PolicyKDError, match=r"the rl-zoo run says the teacher is sac \(args\.yml\), but Pendulum-v1\.zip holds a TD3 "
                                            r"checkpoint.*pass --algo td3") as info:
        load_teacher(run)
    assert "\n" not in str(info.value)
    assert load_teacher(run, algo="td3").algo == "td3"


@pytest.mark.parametrize("wrapper", ["utils.wrappers.TimeFeatureWrapper", "rl_zoo3.wrappers.TimeFeatureWrapper"])
def test_older_zoo_names_of_time_feature_wrapper_load_it_from_sb3_contrib(tmp_path, tiny_teachers, wrapper):
    """Older rl-zoo configs name the wrapper by rl-zoo's own module; the class lives in sb3_contrib."""
    import sb3_contrib

    model = tmp_path / "model.zip"
    env = sb3_contrib.common.wrappers.TimeFeatureWrapper(gym.make("Pendulum-v1"))
    sb3_contrib.TQC("MlpPolicy", env, device="cpu", policy_kwargs={"net_arch": [8]}).save(model)
    config = f"!!python/object/apply:collections.OrderedDict\n- - - env_wrapper\n    - {wrapper}\n"
    run = _zoo_folder(tmp_path / "tqc" / "Pendulum-v1_1", model, env_id="Pendulum-v1", algo="tqc", config=config)
    teacher = load_teacher(run)
    assert [w.path for w in teacher.env_spec.wrappers] == ["sb3_contrib.common.wrappers.TimeFeatureWrapper"]
    assert teacher.observation_space.shape == (4,)


def test_zoo_normalize_without_observations_needs_no_statistics(tmp_path, tiny_teachers):
    """rl-zoo writes `normalize: "{'norm_obs': False, 'norm_reward': True}"`: no observation statistics to ask for."""
    config = "!!python/object/apply:collections.OrderedDict\n- - - normalize\n    - '{''norm_obs'': False, ''norm_reward'': True}'\n"
    run = _zoo_folder(tmp_path / "sac" / "Pendulum-v1_1", tiny_teachers["sac"], env_id="Pendulum-v1", algo="sac", config=config)
    teacher = load_teacher(run)
    assert np.array_equal(teacher.normalizer.mean, np.zeros(3))
    (run / "Pendulum-v1" / "config.yml").write_text(config.replace("False", "True"))
    with pytest.raises(PolicyKDError, match=r"config\.yml says normalize: \{'norm_obs': True, 'norm_reward': True\} but "
                                            r"vecnormalize\.pkl is missing"):
        load_teacher(run)


def test_a_policy_saved_alone_is_told_to_save_the_whole_model(tmp_path):
    """policy.save() writes a torch archive (no SB3 `data`); it read 'There is no item named data', 're-download it'."""
    import stable_baselines3 as sb3

    policy = sb3.SAC("MlpPolicy", "Pendulum-v1", device="cpu", policy_kwargs={"net_arch": [8]}).policy
    for name in ("policy.zip", "policy.pth"):
        policy.save(tmp_path / name)
        with pytest.raises(PolicyKDError, match=rf"{name} is a torch (archive|file) .*save the model with model\.save\(PATH\)"):
            load_teacher(tmp_path / name, env_id="Pendulum-v1")


def test_a_checkpoint_missing_an_entry_sb3_saves_is_told_to_re_save_not_to_check_algo(tmp_path, tiny_teachers):
    """A zip whose data lost `policy_class` (an edited or partial save) read "'policy_class'; check --algo"."""
    import json

    with zipfile.ZipFile(tiny_teachers["sac"]) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(members["data"])
    del data["policy_class"]
    edited = tmp_path / "edited.zip"
    with zipfile.ZipFile(edited, "w") as archive:
        for name, raw in members.items():
            archive.writestr(name, json.dumps(data) if name == "data" else raw)
    with pytest.raises(PolicyKDError, match=r"an entry SB3 saves with every model is missing \(policy_class\); re-save it") as info:
        load_teacher(edited, env_id="Pendulum-v1", algo="sac")
    assert "--algo" not in str(info.value)


def test_a_ddpg_checkpoint_is_named_ddpg_not_td3(tmp_path):
    """SB3's DDPG saves TD3's policy class; it was recorded as td3 unless --algo ddpg was given."""
    import stable_baselines3 as sb3

    for cls, name in ((sb3.DDPG, "ddpg"), (sb3.TD3, "td3")):
        path = tmp_path / f"{name}.zip"
        cls("MlpPolicy", "Pendulum-v1", device="cpu", policy_kwargs={"net_arch": [8]}).save(path)
        assert infer_algo(path) == name
        assert load_teacher(path, env_id="Pendulum-v1").algo == name


def test_an_argmax_teachers_targets_do_not_depend_on_its_output_scale(tiny_teachers):
    """DQN's Q-values are in the reward's units: softmax(Q) was near-uniform where action gaps are small (the rl-zoo
    CartPole DQN's median gap is 0.12). The teacher's logits are divided by a scale decided from its own greedy
    rollout: the same targets for outputs x100, 0.95 on the best action at the median state, values in Q's units."""
    from policykd.teachers import ARGMAX_SCALE_STATES, argmax_logit_scale

    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    assert teacher.acts_on_argmax and teacher.identity()["logit_scale"] == teacher.logit_scale > 0
    obs = np.random.default_rng(0).normal(scale=0.05, size=(64, 4))
    before, value_before = teacher.dist_and_value(obs)
    last = teacher.policy.q_net.q_net[-1]
    with torch.no_grad():
        last.weight.mul_(100.0)
        last.bias.mul_(100.0)
    teacher.logit_scale = 1.0
    teacher.logit_scale = argmax_logit_scale(teacher)
    after, value_after = teacher.dist_and_value(obs)
    torch.testing.assert_close(after["logits"], before["logits"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(value_after, value_before * 100.0, rtol=1e-4, atol=1e-3)
    assert ARGMAX_SCALE_STATES >= 100
    assert not load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1").acts_on_argmax


def test_a_zoo_run_registers_its_env_with_its_gym_packages_and_limits_it_by_its_env_kwargs(tmp_path, tiny_teachers, monkeypatch):
    """args.yml's gym_packages are imported to register the env (as rl-zoo does); env_kwargs' max_episode_steps is the
    time limit (gym.make's own argument, not the env's)."""
    package = tmp_path / "site" / "policykd_zoo_probe_envs"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import gymnasium\ngymnasium.register('PolicyKDZooProbe-v0', "
                                         "entry_point='gymnasium.envs.classic_control:PendulumEnv', max_episode_steps=200)\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    run = _zoo_folder(tmp_path / "sac" / "PolicyKDZooProbe-v0_1", tiny_teachers["sac"], env_id="PolicyKDZooProbe-v0", algo="sac")
    (run / "PolicyKDZooProbe-v0" / "args.yml").write_text(
        "!!python/object/apply:collections.OrderedDict\n- - - algo\n    - sac\n  - - env\n    - PolicyKDZooProbe-v0\n"
        "  - - env_kwargs\n    - max_episode_steps: 9\n  - - gym_packages\n    - - policykd_zoo_probe_envs\n")
    teacher = load_teacher(run)
    assert teacher.env_spec.packages == ("policykd_zoo_probe_envs",)
    assert run_episodes(lambda obs: teacher.act(obs, deterministic=True), teacher.env_spec, [0]).lengths.tolist() == [9]
