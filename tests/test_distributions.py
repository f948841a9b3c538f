import pytest
import torch
from torch.distributions import Categorical, Normal
from torch.distributions import kl_divergence as torch_kl

from policykd.distributions import DistParams, kl_divergence, with_temperature


def _gaussians(batch=8, dims=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    p = DistParams("gaussian", {"mean": torch.randn(batch, dims, generator=g), "log_std": torch.randn(batch, dims, generator=g) * 0.3})
    q = DistParams("gaussian", {"mean": torch.randn(batch, dims, generator=g), "log_std": torch.randn(batch, dims, generator=g) * 0.3})
    return p, q


def test_gaussian_kl_matches_torch_and_sums_over_action_dims():
    p, q = _gaussians()
    expected = torch_kl(Normal(p["mean"], p["log_std"].exp()), Normal(q["mean"], q["log_std"].exp())).sum(-1)
    torch.testing.assert_close(kl_divergence(p, q, reduction="none"), expected)


def test_categorical_kl_matches_torch():
    g = torch.Generator().manual_seed(1)
    p = DistParams("categorical", {"logits": torch.randn(16, 4, generator=g)})
    q = DistParams("categorical", {"logits": torch.randn(16, 4, generator=g)})
    expected = torch_kl(Categorical(logits=p["logits"]), Categorical(logits=q["logits"]))
    torch.testing.assert_close(kl_divergence(p, q, reduction="none"), expected)


def test_mean_reduction_is_batch_size_invariant():
    p, q = _gaussians(batch=5)
    doubled_p = DistParams("gaussian", {k: torch.cat([v, v]) for k, v in p.params.items()})
    doubled_q = DistParams("gaussian", {k: torch.cat([v, v]) for k, v in q.params.items()})
    torch.testing.assert_close(kl_divergence(p, q), kl_divergence(doubled_p, doubled_q))
    torch.testing.assert_close(kl_divergence(doubled_p, doubled_q, reduction="sum"), 2 * kl_divergence(p, q, reduction="sum"))


def test_kl_is_zero_for_identical_and_positive_otherwise():
    p, q = _gaussians()
    assert float(kl_divergence(p, p)) == pytest.approx(0.0, abs=1e-6)
    assert float(kl_divergence(p, q)) > 0.1


def test_deterministic_family_uses_squared_action_error():
    p = DistParams("deterministic", {"action": torch.tensor([[0.5, -0.5]])})
    q = DistParams("deterministic", {"action": torch.tensor([[0.0, 0.0]])})
    assert float(kl_divergence(p, q)) == pytest.approx(0.5)


def test_temperature_for_every_family():
    logits = torch.tensor([[2.0, 0.0]])
    soft = with_temperature(DistParams("categorical", {"logits": logits}), 2.0)
    torch.testing.assert_close(soft["logits"], logits / 2)
    gauss, _ = _gaussians()
    warm = with_temperature(gauss, 2.0)
    torch.testing.assert_close(warm["mean"], gauss["mean"])
    torch.testing.assert_close(warm["log_std"].exp(), 2.0 * gauss["log_std"].exp())
    assert with_temperature(gauss, 1.0) is gauss
    with pytest.raises(ValueError, match="tau"):
        with_temperature(DistParams("categorical", {"logits": logits}), 0.0)
    with pytest.raises(ValueError, match="no spread"):
        with_temperature(DistParams("deterministic", {"action": torch.zeros(1, 1)}), 2.0)


def test_mode_and_sample_shapes_and_squashing():
    p = DistParams("squashed_gaussian", {"mean": torch.full((4, 2), 3.0), "log_std": torch.zeros(4, 2)})
    torch.testing.assert_close(p.mode(), torch.tanh(torch.full((4, 2), 3.0)))
    sample = p.sample(torch.Generator().manual_seed(0))
    assert sample.shape == (4, 2) and sample.abs().max() <= 1.0
    c = DistParams("categorical", {"logits": torch.tensor([[0.0, 5.0, 0.0]])})
    assert int(c.mode()) == 1


def test_mismatched_families_and_missing_params_are_rejected():
    p, _ = _gaussians()
    with pytest.raises(ValueError, match="cannot compare"):
        kl_divergence(p, DistParams("categorical", {"logits": torch.zeros(8, 2)}))
    with pytest.raises(ValueError, match="lacks"):
        DistParams("gaussian", {"mean": torch.zeros(1, 1)})
