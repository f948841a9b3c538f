import numpy as np
import pytest

from policykd.env_factory import EnvSpec
from policykd.evaluate import ReturnStats, bootstrap_ci, classification_agreement, interquartile_mean, ratio_bootstrap_ci
from policykd.latency import measure_latency
from policykd.rollout import Episodes, run_episodes


def test_iqm_drops_the_outer_quartiles():
    assert interquartile_mean(np.array([0, 1, 2, 3, 4, 5, 6, 1000.0])) == pytest.approx(3.5)


def test_bootstrap_interval_brackets_the_mean():
    x = np.random.default_rng(0).normal(10, 2, size=50)
    low, high = bootstrap_ci(x)
    assert low < x.mean() < high and high - low < 2.0
    stats = ReturnStats.of(x)
    assert stats.episodes == 50 and stats.ci95_low == pytest.approx(low) and stats.to_json()["returns"] == list(x)


def test_ratio_interval_resamples_seeds_in_pairs():
    teacher = np.array([100.0, 200.0, 300.0, 400.0])
    low, high = ratio_bootstrap_ci(teacher * 0.9, teacher)
    assert low == pytest.approx(0.9) and high == pytest.approx(0.9)  # paired: every resample has ratio 0.9
    low, high = ratio_bootstrap_ci(teacher[::-1].copy(), teacher)
    assert low < 1.0 < high
    cost = -teacher  # Pendulum-like costs: the ratio is teacher / student
    low, high = ratio_bootstrap_ci(cost * 2, cost)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)


def test_one_episode_has_no_interval():
    """A bootstrap of one value resamples that value only: its [x, x] would claim a certainty one episode cannot give."""
    assert all(np.isnan(bootstrap_ci(np.array([47.0]))))
    assert all(np.isnan(ratio_bootstrap_ci(np.array([47.0]), np.array([50.0]))))
    stats = ReturnStats.of(np.array([47.0]))
    assert stats.mean == 47.0 and np.isnan(stats.ci95_low) and np.isnan(stats.ci95_high)


def test_failures_are_missed_targets_or_early_ends():
    episodes = Episodes(np.array([1.0, 2.0, 3.0]), np.array([5, 9, 9]), np.zeros((1, 2)), terminated=np.array([True, False, False]))
    assert ReturnStats.of_episodes(episodes).failures == 1
    reached = Episodes(np.array([1.0, 2.0]), np.array([5, 9]), np.zeros((1, 2)), successes=np.array([True, False]),
                       terminated=np.array([True, False]))
    assert ReturnStats.of_episodes(reached).failures == 1  # success is what counts where the env reports it
    assert ReturnStats.of_episodes(Episodes(np.array([1.0]), np.array([9]), np.zeros((1, 2)))).failures == 0


def test_classification_agreement_known_values():
    ref = np.array([0, 0, 1, 1])
    pred = np.array([0, 1, 1, 1])
    m = classification_agreement(ref, pred, 2)
    assert m["accuracy"] == 0.75
    assert m["precision"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert m["recall"] == pytest.approx((0.5 + 1.0) / 2)


def test_classification_agreement_averages_over_the_actions_taken():
    """A teacher and student that both always take action 0 of 3 agree perfectly (macro scores over every action
    counted the two never taken as 0: f1 0.333)."""
    same = np.zeros(50, dtype=np.int64)
    assert classification_agreement(same, same, 3) == {"accuracy": 1.0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    m = classification_agreement(np.array([0, 0, 2, 2]), np.array([0, 2, 2, 2]), 3)  # action 1: taken by neither
    assert m["precision"] == pytest.approx((1.0 + 2 / 3) / 2) and m["recall"] == pytest.approx((0.5 + 1.0) / 2)


def test_run_episodes_uses_the_given_seeds_reproducibly():
    spec = EnvSpec("CartPole-v1")
    push_right = lambda obs: np.ones(len(obs), dtype=np.int64)  # noqa: E731
    a = run_episodes(push_right, spec, [1, 2, 3], n_envs=2)
    b = run_episodes(push_right, spec, [1, 2, 3], n_envs=2)
    np.testing.assert_array_equal(a.returns, b.returns)
    assert len(a.returns) == 3 and a.lengths.sum() == len(a.states)
    assert (a.returns == a.lengths).all()  # CartPole: reward 1 per step


def test_latency_reports_percentiles_in_order():
    lat = measure_latency(lambda: sum(range(100)), calls=200)
    assert 0 < lat["p50"] <= lat["p99"] <= lat["max"] and lat["calls"] == 200


def test_return_ratio_keeps_its_meaning_for_negative_returns():
    from policykd.evaluate import return_ratio

    assert return_ratio(2900.0, 2950.0) == pytest.approx(2900 / 2950)
    assert return_ratio(-160.0, -150.0) == pytest.approx(150 / 160)  # worse student -> below 1
    assert return_ratio(-140.0, -150.0) > 1.0
    assert np.isnan(return_ratio(90.0, -0.4)) and np.isnan(return_ratio(-5.0, 20.0))  # opposite signs: no fraction
    # resampled means on both sides of 0 (a teacher near 0): no interval rather than one from the same-sign resamples
    assert all(np.isnan(ratio_bootstrap_ci(np.array([5.0, 6.0, 5.5]), np.array([-1.0, 2.0, 0.5]))))


def _noise_floor(teacher, seeds, error, n_envs=2):
    from policykd.evaluate import teacher_noise_floor

    reference = run_episodes(teacher.act, teacher.env_spec, seeds, n_envs=n_envs)
    floor = teacher_noise_floor(teacher, seeds, reference, n_envs=n_envs, error=error,
                                run=lambda name, act, envs: run_episodes(act, teacher.env_spec, seeds, n_envs=envs))
    return reference, floor


def test_noise_floor_of_a_box_teacher():
    """Zero error reproduces the reference run exactly; the other batch size is a real one-env-at-a-time run;
    an action error as large as the torque bound (std 2 on Pendulum's +-2) costs most of the return."""
    from pathlib import Path

    from policykd.teachers import load_teacher

    teacher = load_teacher(Path(__file__).resolve().parents[1] / "agents" / "sac-Pendulum-v1")
    seeds = [7, 8, 9]
    reference, exact = _noise_floor(teacher, seeds, error=0.0)
    assert exact["student_error"]["ratio"] == 1.0 and exact["student_error"]["kind"] == "gaussian std"
    one_at_a_time = run_episodes(teacher.act, teacher.env_spec, seeds, n_envs=1)
    assert exact["other_batch"] == {"n_envs": 1, "return_mean": float(one_at_a_time.returns.mean()),
                                    "ratio": pytest.approx(reference.returns.mean() / one_at_a_time.returns.mean())}
    _, noisy = _noise_floor(teacher, seeds, error=2.0)
    assert noisy["student_error"]["ratio"] < 0.5


def test_noise_floor_of_a_discrete_teacher():
    """For discrete actions the error is the probability of a random action: 0 changes nothing, 1 is a random policy."""
    from policykd.teachers import load_teacher
    from tests.conftest import zoo_run

    teacher = load_teacher(zoo_run("ppo", "CartPole-v1"))
    seeds = [0, 1]
    _, exact = _noise_floor(teacher, seeds, error=0.0, n_envs=1)
    assert exact["student_error"]["ratio"] == 1.0 and exact["other_batch"]["n_envs"] == 2
    _, random_policy = _noise_floor(teacher, seeds, error=1.0, n_envs=1)
    assert random_policy["student_error"]["ratio"] < 0.2  # CartPole: ~20 steps at random against the teacher's 500


def test_a_discrete_teacher_perturbed_by_an_error_disagrees_with_itself_that_often(tiny_teachers):
    """1 - accuracy is the rate of disagreement: the swapped-in action is always another one (a uniformly random one
    would be the same one 1/N of the time, understating the student's error)."""
    from policykd.evaluate import perturbed_act
    from policykd.teachers import load_teacher

    teacher = load_teacher(tiny_teachers["dqn"], env_id="CartPole-v1")
    obs = np.random.default_rng(0).normal(size=(20_000, 4)).astype(np.float32)
    perturbed = perturbed_act(teacher, 0.3, np.random.default_rng(1))(obs)
    assert np.mean(perturbed != teacher.act(obs)) == pytest.approx(0.3, abs=0.01)
