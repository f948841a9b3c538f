import gymnasium as gym
import numpy as np
import pytest

from policykd.rollout import ACTOR_STUDENT, ACTOR_TEACHER, collect
from policykd.students import Student, student_spec_for
from policykd.teachers import load_teacher
from tests.conftest import zoo_run


@pytest.fixture(scope="module")
def cartpole_teacher(tiny_teachers):
    return load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")


def test_teacher_driven_collection_labels_every_recorded_state(cartpole_teacher):
    rows = collect(cartpole_teacher, steps=301, beta=1.0, seed=0, n_envs=2)
    assert all(len(v) == 301 for v in rows.values())
    assert (rows["actor"] == ACTOR_TEACHER).all()
    dist, value = cartpole_teacher.dist_and_value(rows["obs"])
    np.testing.assert_allclose(rows["dist_logits"], dist["logits"].numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rows["value"], value.numpy(), rtol=1e-5, atol=1e-5)


def test_autoreset_transition_is_masked(cartpole_teacher):
    """After a done, the next recorded state of that episode id sequence is a fresh reset state (|x| <= 0.05)."""
    rows = collect(cartpole_teacher, steps=2000, beta=1.0, seed=1, n_envs=2, sample_actions=True)
    done = rows["terminated"] | rows["truncated"]
    assert done.sum() >= 4
    ids = rows["episode_id"]
    for episode in np.unique(ids):
        states = rows["obs"][ids == episode]
        assert np.abs(states[0]).max() <= 0.05  # every episode starts at a reset state
        ends = np.flatnonzero(done[ids == episode])
        assert len(ends) <= 1 and (len(ends) == 0 or ends[0] == len(states) - 1)  # nothing after the terminal step


def test_beta_zero_is_student_driven_and_collection_is_deterministic(cartpole_teacher):
    student = Student(student_spec_for(cartpole_teacher, hidden=(8,), activation="tanh"))
    a = collect(cartpole_teacher, steps=200, beta=0.0, seed=5, n_envs=2, student=student)
    b = collect(cartpole_teacher, steps=200, beta=0.0, seed=5, n_envs=2, student=student)
    assert (a["actor"] == ACTOR_STUDENT).all()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    mixed = collect(cartpole_teacher, steps=400, beta=0.5, seed=5, n_envs=2, student=student)
    assert 0.35 < mixed["actor"].mean() < 0.65


def test_student_needed_below_beta_one(cartpole_teacher):
    with pytest.raises(ValueError, match="student"):
        collect(cartpole_teacher, steps=10, beta=0.5, seed=0)


def test_max_episode_steps_truncates_collection_episodes(tiny_teachers):
    """No episode runs past 20 recorded states, and the truncated ones are cut at exactly 20 (Pendulum's own
    limit is 200, and it never terminates)."""
    teacher = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    rows = collect(teacher, steps=200, beta=1.0, seed=2, n_envs=2, max_episode_steps=20)
    lengths = np.bincount(rows["episode_id"])
    truncated = lengths[np.unique(rows["episode_id"][rows["truncated"]])]
    assert len(truncated) >= 6 and (truncated == 20).all()
    assert lengths.max() == 20


def test_label_every_keeps_every_kth_state_of_longer_episodes():
    """label_every=3: the same labelled budget spans about 3x the episodes; labelled states of an episode are 3
    env steps apart (CartPole's obs[0], the cart position, changes by at most ~0.1 a step), and the default
    (label_every=1) is unchanged."""
    import numpy as np

    from policykd.rollout import collect
    from policykd.teachers import load_teacher
    from tests.conftest import zoo_run

    teacher = load_teacher(zoo_run("ppo", "CartPole-v1"))
    plain = collect(teacher, steps=600, beta=1.0, seed=0, n_envs=2)
    sparse = collect(teacher, steps=600, beta=1.0, seed=0, n_envs=2, label_every=3)
    assert len(sparse["obs"]) == 600
    assert len(np.unique(sparse["episode_id"])) >= 2 * len(np.unique(plain["episode_id"])) - 1
    again = collect(teacher, steps=600, beta=1.0, seed=0, n_envs=2, label_every=3)
    np.testing.assert_array_equal(sparse["obs"], again["obs"])  # seeded
    first = sparse["episode_id"] == sparse["episode_id"][0]
    assert np.all(sparse["next_obs"][first][:-1] != sparse["obs"][first][1:])  # rows are not consecutive steps


def test_a_student_without_a_trained_std_explores_around_its_means_with_the_teachers_std(tiny_teachers):
    """loss: mse trains means only; its untrained std head (here at the log_std clamp: std e^2 before tanh) must not drive collection."""
    import torch

    from policykd.collectors import collect_options
    from policykd.config import DistillConfig

    teacher = load_teacher(tiny_teachers["sac"], env_id="Pendulum-v1")
    student = Student(student_spec_for(teacher, hidden=(8,), activation="tanh"))
    with torch.no_grad():
        for head, bias in ((student.action_head, -1.5), (student.log_std_head, 3.0)):
            head.weight.zero_()
            head.bias.fill_(bias)
    assert collect_options(DistillConfig(teacher="t.zip", loss="mse"))["student_std_from_teacher"]
    assert not collect_options(DistillConfig(teacher="t.zip"))["student_std_from_teacher"]
    own, borrowed = (collect(teacher, steps=400, beta=0.0, seed=2, n_envs=2, student=student, student_std_from_teacher=flag)
                     for flag in (False, True))
    teacher_std = np.exp(own["dist_log_std"]).mean()
    assert teacher_std < 3.0  # the teacher's spread is far narrower than the student's untrained one
    saturated = {name: float((np.abs(rows["action"]) > 1.98).mean()) for name, rows in (("own", own), ("borrowed", borrowed))}
    assert saturated["own"] > 0.5 and saturated["borrowed"] < 0.2, saturated
    pre_tanh = np.arctanh(np.clip(borrowed["action"] / 2.0, -0.999, 0.999))
    assert abs(pre_tanh.mean() + 1.5) < 0.4  # around the student's mean, not the teacher's


class _Forever(gym.Env):
    """An env registered without a time limit whose episodes never end by themselves."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(2, dtype=np.float32), 1.0, False, False, {}


def test_an_env_without_a_time_limit_is_evaluated_to_a_cap_and_said(capsys):
    """Before, evaluation on such an env waited at 0/N episodes for ever."""
    from policykd.env_factory import EnvSpec
    from policykd.rollout import UNLIMITED_EPISODE_CAP, run_episodes

    gym.register("PolicyKDTest/Forever-v0", entry_point=_Forever)
    episodes = run_episodes(lambda obs: np.zeros((len(obs), 1), dtype=np.float32), EnvSpec("PolicyKDTest/Forever-v0"), [0, 1],
                            n_envs=1)
    assert list(episodes.lengths) == [UNLIMITED_EPISODE_CAP] * 2 and list(episodes.returns) == [UNLIMITED_EPISODE_CAP] * 2
    assert "note: PolicyKDTest/Forever-v0 has no time limit (max_episode_steps); evaluation episodes stop after 10,000" in \
        capsys.readouterr().err
    assert run_episodes(lambda obs: np.zeros(len(obs), dtype=np.int64), EnvSpec("CartPole-v1"), [0]).lengths[0] < 500


def test_the_evaluation_cap_leaves_the_wrappers_time_limit_alone_and_a_timelimit_wrapper_counts(capsys):
    """A TimeFeatureWrapper read the cap (10,000) as the episode length and fed the teacher a time feature unlike
    training; a TimeLimit among the teacher's wrappers is the env's limit (a false 'no time limit' note before)."""
    from policykd.env_factory import EnvSpec, WrapperSpec
    from policykd.rollout import run_episodes

    if "PolicyKDTest/Forever-v0" not in gym.registry:
        gym.register("PolicyKDTest/Forever-v0", entry_point=_Forever)
    capped = EnvSpec("PolicyKDTest/Forever-v0", wrappers=(WrapperSpec("sb3_contrib.common.wrappers.TimeFeatureWrapper"),))
    env = capped.make(episode_cap=10_000)
    assert env.spec.max_episode_steps == 10_000 and env.env.spec.max_episode_steps is None  # the cap is the outer wrapper
    assert env.env._max_steps == 1000  # TimeFeatureWrapper's default for an env without a limit, as in training
    limited = EnvSpec("PolicyKDTest/Forever-v0", wrappers=(WrapperSpec("gymnasium.wrappers.TimeLimit", {"max_episode_steps": 7}),))
    assert limited.time_limit() == 7
    capsys.readouterr()
    episodes = run_episodes(lambda obs: np.zeros((len(obs), 1), dtype=np.float32), limited, [0], n_envs=1)
    assert list(episodes.lengths) == [7] and "no time limit" not in capsys.readouterr().err




def _episodes(returns, lengths, last, max_earlier, terminated, successes=None):
    from policykd.rollout import Episodes

    recorded = last is not None
    return Episodes(np.array(returns, dtype=np.float64), np.array(lengths), np.zeros((1, 2)), successes=successes,
                    terminated=np.array(terminated), last_rewards=np.array(last, dtype=np.float64) if recorded else None,
                    max_earlier_rewards=np.array(max_earlier, dtype=np.float64) if recorded else None)


def test_an_early_end_is_a_failure_or_a_goal_by_the_envs_own_rewards():
    """A goal: a last reward above every earlier one, or, where every reward is the same, steps that cost."""
    cases = [  # (return, length, last reward, highest earlier reward, terminated, failure)
        (-85.0, 86, 0.0, -1.0, True, False),               # Acrobot: 0 after -1s, the goal
        (-10.0 + 99.9, 101, 99.9, -0.05, True, False),     # MountainCarContinuous: +99.9 after -0.1s, the goal
        (-50.0 + 100.0, 200, 100.0, 10.0, True, False),    # LunarLander: +100 on landing
        (60.0 - 100.0, 200, -100.0, 10.0, True, True),     # LunarLander: -100 on a crash
        (-3.0 - 0.01, 50, -0.01, -0.02, True, False),      # -distance to a target, ending on arrival: the best step
        (40.0 - 1.0, 41, -1.0, 2.2, True, True),           # a Bullet walker: the alive bonus turned -1 at a fall
        (651 * 2.603 + 2.701, 652, 2.701, 4.864, True, True),  # a Hopper teacher falling forward: above its mean step,
                                                           # not above its best: a fall
        (-40.0 - 7.0, 41, -7.0, 0.2, True, True),          # below a negative mean (a thrashing random Humanoid)
        (10.0, 10, 1.0, 1.0, True, True),                  # CartPole: every reward 1, steps pay: a fall
        (-120.0, 120, -1.0, -1.0, True, False),            # MountainCar: every reward -1, steps cost: the goal
        (-60.0, 120, -1.0, 0.0, True, True),               # -1 at the end, not every reward the same: a fall
        (0.0, 30, 0.0, 0.0, True, True),                   # steps free and nothing gained at the end: a fall
        (-0.7, 7, -0.1, -0.1, True, False),                # every reward -0.1 (earlier mean -0.09999999999999999)
        (0.7, 7, 0.1, 0.1, True, True),                    # every reward 0.1 (earlier mean 0.09999999999999999)
        (5.0, 1, 5.0, -np.inf, True, True),                # one step: nothing to compare with, an early end as before
        (500.0, 500, 1.0, 1.0, False, False),              # ran to the time limit
        (-500.0, 500, -1.0, -1.0, False, False),
    ]
    returns, lengths, last, max_earlier, terminated, expected = map(list, zip(*cases))
    assert list(_episodes(returns, lengths, last, max_earlier, terminated).failures()) == expected
    # without the rewards (Episodes built by hand, or cached before they were recorded): every early end, as before
    assert list(_episodes(returns, lengths, None, None, terminated).failures()) == terminated
    # the env's own is_success wins where it reports one
    reported = np.arange(len(cases)) % 2 == 0
    assert list(_episodes(returns, lengths, last, max_earlier, terminated, successes=reported).failures()) == list(~reported)
    # never terminated: no failures at all
    assert not _episodes(returns, lengths, last, max_earlier, [False] * len(cases)).failures().any()


def _first_joint_pump(obs):
    """Acrobot: torque against the first joint's angular velocity pumps energy in; reaches the goal in ~70-140 steps."""
    return np.where(obs[:, 4] > 0, 0, 2)


@pytest.mark.parametrize(("env_id", "policy", "ends_early", "failed"), [
    ("CartPole-v1", lambda obs: np.zeros(len(obs), dtype=np.int64), True, True),  # one push: the pole falls
    ("Acrobot-v1", _first_joint_pump, True, False),
    ("MountainCar-v0", lambda obs: np.where(obs[:, 1] > 0, 2, 0), True, False),  # push along the velocity
    ("MountainCarContinuous-v0", lambda obs: np.where(obs[:, 1:2] >= 0, 1.0, -1.0).astype(np.float32), True, False),
    ("Pendulum-v1", lambda obs: np.zeros((len(obs), 1), dtype=np.float32), False, False),  # never ends early
    ("HopperBulletEnv-v0", lambda obs: np.zeros((len(obs), 3), dtype=np.float32), True, True),  # it falls
])
def test_real_envs_falls_and_goals(env_id, policy, ends_early, failed):
    """Before, every early end without info["is_success"] was a failure: an Acrobot or MountainCar policy that
    reaches the goal every time had every episode failed."""
    from policykd.env_factory import EnvSpec
    from policykd.rollout import run_episodes

    spec = EnvSpec(env_id)
    episodes = run_episodes(policy, spec, [0, 1, 2, 3], n_envs=1)
    assert episodes.successes is None  # these envs report no is_success: the rewards decide
    assert list(episodes.terminated) == [ends_early] * 4
    assert (episodes.lengths < spec.time_limit()).all() == ends_early
    assert list(episodes.failures()) == [failed] * 4, (episodes.lengths, episodes.last_rewards, episodes.max_earlier_rewards)


def test_run_episodes_records_the_last_and_the_highest_earlier_reward():
    """MountainCarContinuous: -0.1 * action**2 a step, +100 more on reaching the flag; the returns are their sum."""
    from policykd.env_factory import EnvSpec
    from policykd.rollout import run_episodes

    episodes = run_episodes(lambda obs: np.where(obs[:, 1:2] >= 0, 1.0, -1.0).astype(np.float32),
                            EnvSpec("MountainCarContinuous-v0"), [0, 1, 2], n_envs=2)  # two envs in lockstep, one padded
    assert np.allclose(episodes.last_rewards, 99.9) and np.allclose(episodes.max_earlier_rewards, -0.1)
    assert np.allclose(episodes.returns, 99.9 - 0.1 * (episodes.lengths - 1))


def test_a_hopper_teacher_falling_forward_is_still_a_failure():
    """Bullet locomotion's alive bonus turns -1 at a fall, but the forward progress of a fall can outweigh it: the
    last reward of a noisy Hopper teacher's fall is often above its mean step (never above its best)."""
    from policykd.rollout import run_episodes

    teacher = load_teacher(zoo_run("ppo", "HopperBulletEnv-v0"))
    rng = np.random.default_rng(0)

    def noisy(obs):
        return np.clip(teacher.act(obs) + 0.5 * rng.standard_normal((len(obs), 3)), -1.0, 1.0).astype(np.float32)

    episodes = run_episodes(noisy, teacher.env_spec, list(range(1000, 1008)), n_envs=1)
    assert episodes.terminated.all()
    mean_earlier = (episodes.returns - episodes.last_rewards) / (episodes.lengths - 1)
    assert (episodes.last_rewards > mean_earlier).any()  # the case "above the mean step" would call a goal
    assert episodes.failures().all()


class _Float64Observations(gym.ObservationWrapper):
    """CartPole whose observations are float64 (a Box of dtype float64, as some custom envs give)."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        space = env.observation_space
        self.observation_space = gym.spaces.Box(space.low.astype(np.float64), space.high.astype(np.float64), dtype=np.float64)

    def observation(self, observation):
        return observation.astype(np.float64)


def test_float64_observations_are_stored_as_float32_like_every_other_row(tmp_path):
    """Training crashed in its first batch (a float64 batch into float32 weights) when the buffer kept them as given."""
    import stable_baselines3 as sb3

    if "PolicyKDTestFloat64Obs-v0" not in gym.registry:
        gym.register("PolicyKDTestFloat64Obs-v0", entry_point=lambda: _Float64Observations(gym.make("CartPole-v1")),
                     max_episode_steps=50)
    sb3.PPO("MlpPolicy", "PolicyKDTestFloat64Obs-v0", n_steps=16, batch_size=16, device="cpu").save(tmp_path / "t.zip")
    rows = collect(load_teacher(tmp_path / "t.zip", env_id="PolicyKDTestFloat64Obs-v0"), steps=60, beta=1.0, seed=0, n_envs=1)
    assert rows["obs"].dtype == np.float32 and rows["next_obs"].dtype == np.float32
