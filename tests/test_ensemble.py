"""Ensemble distillation (policykd.ensemble): combination math on hand-made distributions, EnsembleTeacher on the
tiny SAC/TQC Pendulum teachers (and the rl-zoo PPO/A2C HalfCheetah ones when present), config keys, --resume."""

import math

import numpy as np
import pytest
import torch

from policykd.buffer import Buffer
from policykd.config import DistillConfig
from policykd.distill import distill
from policykd.distributions import DistParams
from policykd.ensemble import EnsembleTeacher, combine, ensemble_weights, load_teacher_for, reward_scale
from policykd.errors import PolicyKDError
from policykd.rollout import run_episodes
from policykd.teachers import load_teacher
from policykd.tracking import Tracker
from tests.conftest import zoo_run


def _gauss(mean, std, family="gaussian"):
    mean = torch.tensor(mean, dtype=torch.float32).reshape(1, -1)
    return DistParams(family, {"mean": mean, "log_std": torch.tensor(std, dtype=torch.float32).reshape(1, -1).log()})


def _cat(probs):
    return DistParams("categorical", {"logits": torch.tensor(probs, dtype=torch.float32).reshape(1, -1).log()})


EQUAL = torch.tensor([[0.5, 0.5]])


# -- combination math ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["mixture", "product"])
@pytest.mark.parametrize("family", ["gaussian", "squashed_gaussian"])
def test_identical_gaussian_members_give_back_the_member(mode, family):
    member = _gauss([0.3, -1.2], [0.5, 2.0], family)
    out = combine([member, member, member], torch.tensor([[0.2, 0.3, 0.5]]), mode)
    assert out.family == family
    torch.testing.assert_close(out["mean"], member["mean"])
    torch.testing.assert_close(out["log_std"], member["log_std"])


@pytest.mark.parametrize("mode", ["mixture", "product"])
def test_identical_categorical_and_deterministic_members_give_back_the_member(mode):
    member = _cat([0.1, 0.6, 0.3])
    out = combine([member, member], EQUAL, mode)
    torch.testing.assert_close(out["logits"].softmax(-1), member["logits"].softmax(-1))
    action = DistParams("deterministic", {"action": torch.tensor([[0.4, -0.9]])})
    torch.testing.assert_close(combine([action, action], EQUAL, mode)["action"], action["action"])


def test_mixture_of_two_gaussians_is_moment_matched():
    out = combine([_gauss([0.0], [1.0]), _gauss([2.0], [1.0])], EQUAL, "mixture")
    assert out["mean"].item() == pytest.approx(1.0)
    assert (2 * out["log_std"]).exp().item() == pytest.approx(2.0)  # within-variance 1 + between-variance 1
    # unequal weights: mean 0.5, var = 0.75 (1 + 0) + 0.25 (4 + 4) - 0.5^2 = 2.5
    out = combine([_gauss([0.0], [1.0]), _gauss([2.0], [2.0])], torch.tensor([[0.75, 0.25]]), "mixture")
    assert out["mean"].item() == pytest.approx(0.5)
    assert (2 * out["log_std"]).exp().item() == pytest.approx(2.5, rel=1e-5)


def test_product_of_two_gaussians_with_equal_weights_averages_the_precisions():
    out = combine([_gauss([1.0], [1.0]), _gauss([3.0], [2.0])], EQUAL, "product")
    precision = 0.5 * (1 / 1.0 + 1 / 4.0)  # documented normalisation: sum w_i / sigma_i^2 with sum w = 1
    assert (-2 * out["log_std"]).exp().item() == pytest.approx(precision, rel=1e-5)
    assert out["mean"].item() == pytest.approx((0.5 * 1.0 / 1.0 + 0.5 * 3.0 / 4.0) / precision, rel=1e-5)


def test_categorical_mixture_and_product_known_values():
    p, q = _cat([0.5, 0.5]), _cat([0.9, 0.1])
    torch.testing.assert_close(combine([p, q], EQUAL, "mixture")["logits"].softmax(-1), torch.tensor([[0.7, 0.3]]))
    # geometric pool: proportional to sqrt(0.45), sqrt(0.05) = 0.6708, 0.2236 -> 0.75, 0.25
    torch.testing.assert_close(combine([p, q], EQUAL, "product")["logits"].softmax(-1), torch.tensor([[0.75, 0.25]]))


def test_deterministic_members_give_the_weighted_mean_action():
    a = DistParams("deterministic", {"action": torch.tensor([[1.0, 0.0]])})
    b = DistParams("deterministic", {"action": torch.tensor([[0.0, -1.0]])})
    for mode in ("mixture", "product"):
        torch.testing.assert_close(combine([a, b], torch.tensor([[0.25, 0.75]]), mode)["action"], torch.tensor([[0.25, -0.75]]))


@pytest.mark.parametrize("weighting", ["uniform", "agreement", "value", "return"])
def test_weights_sum_to_one(weighting):
    dists = [DistParams("gaussian", {"mean": torch.randn(5, 3), "log_std": torch.randn(5, 3) * 0.3}) for _ in range(3)]
    w = ensemble_weights(dists, torch.randn(3, 5) * 10, weighting, torch.tensor([-150.0, -160.0, -400.0]))
    assert w.shape == (5, 3)
    torch.testing.assert_close(w.sum(-1), torch.ones(5))
    assert (w >= 0).all()


def test_agreement_puts_less_weight_on_an_outlier():
    dists = [_gauss([0.0, 0.0], [1.0, 1.0]), _gauss([0.1, -0.1], [1.0, 1.0]), _gauss([3.0, 3.0], [1.0, 1.0])]
    w = ensemble_weights(dists, None, "agreement")[0]
    assert w[2] < w[0] and w[2] < w[1]
    assert w[2] < 0.01


def test_value_weighting_favours_the_member_expecting_more_return():
    dists = [_gauss([0.0], [1.0])] * 2
    w = ensemble_weights(dists, torch.tensor([[110.0], [100.0]]), "value")[0]
    assert w[0] > w[1]
    assert w[0] / w[1] == pytest.approx(math.exp(10 / (0.1 * 105)), rel=1e-4)  # VALUE_TEMPERATURE 0.1, mean |V| 105
    # one common per-state scale: multiplying every value by the same factor changes nothing
    torch.testing.assert_close(ensemble_weights(dists, torch.tensor([[1100.0], [1000.0]]), "value")[0], w)


def test_return_weighting_is_one_weight_per_member_from_measured_returns():
    dists = [_gauss([0.0], [1.0]), _gauss([1.0], [1.0])]
    w = ensemble_weights([_gauss([0.0, 0.0], [1.0, 1.0])] * 2, None, "return", torch.tensor([102.0, 100.0]))
    assert w.shape == (1, 2)
    assert w[0, 0] / w[0, 1] == pytest.approx(math.exp(2 / (0.02 * 101)), rel=1e-4)  # RETURN_TEMPERATURE 0.02, mean |R| 101
    # negative returns (Pendulum): the higher (less negative) one still leads; 10% behind is nearly nothing
    w = ensemble_weights(dists, None, "return", torch.tensor([-200.0, -180.0]))[0]
    assert w[1] > 0.99
    with pytest.raises(ValueError, match="measured returns"):
        ensemble_weights(dists, None, "return")


# -- EnsembleTeacher on the tiny teachers ---------------------------------------------------------------------------

def _pendulum(tiny_teachers, name):
    return load_teacher(tiny_teachers[name], env_id=tiny_teachers[f"{name}_env"])


@pytest.mark.parametrize("mode", ["mixture", "product"])
def test_ensemble_teacher_labels_are_the_combined_distribution(tiny_teachers, mode):
    sac, tqc = _pendulum(tiny_teachers, "sac"), _pendulum(tiny_teachers, "tqc")
    ensemble = EnsembleTeacher([sac, tqc], mode=mode, weighting="value")
    obs = np.random.default_rng(0).uniform(-1, 1, size=(7, 3))
    dist, value = ensemble.dist_and_value(obs)
    members = [sac.dist_and_value(obs), tqc.dist_and_value(obs)]
    w = ensemble_weights([d for d, _ in members], torch.stack([v for _, v in members]).double(), "value")
    expected = combine([d for d, _ in members], w, mode)
    assert dist.family == "squashed_gaussian"
    torch.testing.assert_close(dist["mean"], expected["mean"])
    torch.testing.assert_close(value, (w.T * torch.stack([v for _, v in members])).sum(0))
    assert ensemble.act(obs).shape == (7, 1)
    identity = ensemble.identity()
    assert identity["path"] == [str(tiny_teachers["sac"]), str(tiny_teachers["tqc"])]
    assert identity["sha256"] not in {m["sha256"] for m in identity["members"]}
    assert ensemble.actor_parameter_count() == sac.actor_parameter_count() + tqc.actor_parameter_count()


def test_return_weighted_ensemble_measures_each_member_once_and_records_it(tiny_teachers, monkeypatch):
    from policykd import ensemble as ensemble_module

    sac, tqc = _pendulum(tiny_teachers, "sac"), _pendulum(tiny_teachers, "tqc")
    monkeypatch.setattr(ensemble_module, "RETURN_EPISODES", 2)
    monkeypatch.setattr(ensemble_module, "_measured_returns", {})
    ensemble = EnsembleTeacher([sac, tqc], mode="product", weighting="return")
    seeds = list(range(ensemble_module.RETURN_SEED, ensemble_module.RETURN_SEED + 2))
    expected = [float(np.mean(run_episodes(m.act, m.env_spec, seeds).returns)) for m in (sac, tqc)]
    assert ensemble.member_returns == pytest.approx(expected)
    assert ensemble.identity()["member_returns"] == ensemble.member_returns
    obs = np.random.default_rng(0).uniform(-1, 1, size=(4, 3))
    ensemble.dist_and_value(obs)
    w = ensemble.last_weights
    torch.testing.assert_close(w, ensemble_weights([sac.action_dist(obs)] * 2, None, "return", torch.tensor(expected)))
    assert torch.equal(w[0], w[-1])  # the same weights at every state
    # a second ensemble of the same teachers in this process does not measure again
    import policykd.rollout

    monkeypatch.setattr(policykd.rollout, "run_episodes", None)
    assert EnsembleTeacher([sac, tqc], weighting="return").member_returns == ensemble.member_returns


def test_mismatched_teachers_are_refused_in_one_line(tiny_teachers):
    sac = _pendulum(tiny_teachers, "sac")
    cartpole = load_teacher(tiny_teachers["qrdqn"], env_id=tiny_teachers["qrdqn_env"])
    with pytest.raises(PolicyKDError, match="same env") as e:
        EnsembleTeacher([sac, cartpole])
    assert "\n" not in str(e.value) and "CartPole-v1" in str(e.value)
    with pytest.raises(PolicyKDError, match="deterministic") as e:  # TD3 on the same env: another family
        EnsembleTeacher([sac, _pendulum(tiny_teachers, "td3")])
    assert "\n" not in str(e.value)
    with pytest.raises(PolicyKDError, match="at least 2"):
        EnsembleTeacher([sac])
    with pytest.raises(PolicyKDError, match=r"is the same file as .*list each teacher once") as e:
        EnsembleTeacher([sac, _pendulum(tiny_teachers, "tqc"), _pendulum(tiny_teachers, "sac")])
    assert "\n" not in str(e.value)


def test_ensemble_config_keys_are_validated():
    assert DistillConfig().ensemble == [] and DistillConfig().ensemble_mode == "mixture"
    with pytest.raises(PolicyKDError, match="ensemble_mode must be one of mixture, product"):
        DistillConfig(ensemble_mode="sum")
    with pytest.raises(PolicyKDError, match="ensemble_weighting"):
        DistillConfig(ensemble_weighting="confidence")
    with pytest.raises(PolicyKDError, match="config key ensemble must be a list of teacher paths"):
        DistillConfig(ensemble="teachers/a2c")
    with pytest.raises(PolicyKDError, match="config key ensemble"):
        DistillConfig(ensemble=[3])


def _config(tiny_teachers, tmp_path, **kw):
    base = dict(teacher=str(tiny_teachers["sac"]), env_id="Pendulum-v1", ensemble=[str(tiny_teachers["tqc"])],
                ensemble_mode="product", ensemble_weighting="agreement", labelled_steps=300, rounds=2, epochs_per_round=2,
                out_dir=str(tmp_path), run_name="run", seed=1, hidden=[16, 16], n_envs=1)
    base.update(kw)
    return DistillConfig(**base)


def test_short_ensemble_distill_end_to_end_and_resume_checks(tiny_teachers, tmp_path):
    config = _config(tiny_teachers, tmp_path)
    teacher = load_teacher_for(config)
    assert isinstance(teacher, EnsembleTeacher) and teacher.normalizer is teacher.members[0].normalizer
    result = distill(config, tracker=Tracker(None, quiet=True))
    assert [h.labelled_steps for h in result.history] == [150, 300]
    data = Buffer.open(tmp_path / "run" / "buffer").load()
    dist, value = teacher.dist_and_value(data["obs"])
    np.testing.assert_allclose(data["dist_mean"], dist["mean"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["dist_log_std"], dist["log_std"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(data["value"], value.numpy(), rtol=1e-5, atol=1e-5)
    single = teacher.members[0].dist_and_value(data["obs"])[0]
    assert not np.allclose(data["dist_mean"], single["mean"].numpy())  # the labels are not the first member's alone
    card = result.student.card if hasattr(result.student, "card") else None
    assert card is None or card["teacher"]["ensemble"] == "product"
    # resuming with another set of teachers is refused by the run's teacher identity
    other = _config(tiny_teachers, tmp_path, teacher=str(tiny_teachers["tqc"]), ensemble=[str(tiny_teachers["sac"])])
    with pytest.raises(PolicyKDError, match="is not the file") as e:
        distill(other, resume=True, tracker=Tracker(None, quiet=True))
    assert "\n" not in str(e.value)
    # the same ensemble resumes (nothing left to do)
    again = distill(config, resume=True, tracker=Tracker(None, quiet=True))
    assert len(again.history) == 2


def test_zoo_ppo_and_a2c_halfcheetah_values_in_reward_units():
    ppo = load_teacher(zoo_run("ppo", "HalfCheetahBulletEnv-v0"))
    a2c = load_teacher(zoo_run("a2c", "HalfCheetahBulletEnv-v0"))
    assert reward_scale(ppo) > 1 and reward_scale(a2c) > 1  # both trained with VecNormalize(norm_reward=True)
    ensemble = EnsembleTeacher([ppo, a2c], weighting="value")
    env = ensemble.make_env()
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    env.close()
    _, value = ensemble.dist_and_value(obs)
    dists, values = ensemble.members_dist_and_value(obs)
    torch.testing.assert_close(values[0].float(), ppo.value(obs) * reward_scale(ppo))
    assert value.shape == (3,) and ensemble.last_weights.shape == (3, 2)


def test_sweep_grid_over_ensemble_keys_uses_each_combination_s_ensemble(tiny_teachers, tmp_path):
    from policykd.sweep import SweepContext, combination_config

    overrides = {"teacher": str(tiny_teachers["sac"]), "env_id": "Pendulum-v1", "ensemble": [str(tiny_teachers["tqc"])],
                 "eval_episodes": 1, "n_envs": 1}
    context = SweepContext(None, overrides, tmp_path)
    assert isinstance(context.teacher, EnsembleTeacher) and context.teacher.mode == "mixture"
    same = combination_config(context.base, {"hidden": [8]}, tmp_path, "a")
    assert context.teacher_for(same)[0] is context.teacher
    product = combination_config(context.base, {"ensemble_mode": "product"}, tmp_path, "b")
    teacher, episodes = context.teacher_for(product)
    assert isinstance(teacher, EnsembleTeacher) and teacher.mode == "product" and len(episodes.returns) == 1
    assert context.teacher_for(product)[0] is teacher  # loaded once per distinct ensemble
    alone = combination_config(context.base, {"ensemble": []}, tmp_path, "c")
    assert not isinstance(context.teacher_for(alone)[0], EnsembleTeacher)
