import pytest
import torch

from policykd.distributions import DistParams
from policykd.losses import LossConfig, bounded_means, distillation_loss


def _batch(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = DistParams("gaussian", {"mean": torch.randn(n, 2, generator=g), "log_std": torch.zeros(n, 2)})
    s = DistParams("gaussian", {"mean": torch.randn(n, 2, generator=g), "log_std": torch.zeros(n, 2)})
    return t, torch.randn(n, generator=g), s, torch.randn(n, generator=g)


def test_loss_combines_kl_and_scaled_value_error():
    t, vt, s, vs = _batch(32)
    terms = distillation_loss(t, vt, s, vs, value_std=2.0, config=LossConfig(lambda_v=0.5))
    expected_kl = (0.5 * (t["mean"] - s["mean"]) ** 2).sum(-1).mean()  # unit stds
    torch.testing.assert_close(terms["kl"], expected_kl)
    torch.testing.assert_close(terms["value_mse"], (((vs - vt) / 2.0) ** 2).mean())
    torch.testing.assert_close(terms["loss"], terms["kl"] + 0.5 * terms["value_mse"])


def test_loss_is_batch_size_invariant():
    t, vt, s, vs = _batch(10)
    small = distillation_loss(t, vt, s, vs, value_std=1.0, config=LossConfig())
    cat = lambda d: DistParams(d.family, {k: torch.cat([v, v, v]) for k, v in d.params.items()})  # noqa: E731
    big = distillation_loss(cat(t), vt.repeat(3), cat(s), vs.repeat(3), value_std=1.0, config=LossConfig())
    for key in small:
        torch.testing.assert_close(small[key], big[key])


def test_reverse_kl_differs_from_forward_when_stds_differ():
    t = DistParams("gaussian", {"mean": torch.zeros(4, 1), "log_std": torch.full((4, 1), -1.0)})
    s = DistParams("gaussian", {"mean": torch.ones(4, 1), "log_std": torch.zeros(4, 1)})
    v = torch.zeros(4)
    fwd = distillation_loss(t, v, s, v, value_std=1.0, config=LossConfig(kl_direction="forward"))["kl"]
    rev = distillation_loss(t, v, s, v, value_std=1.0, config=LossConfig(kl_direction="reverse"))["kl"]
    assert float(fwd) != pytest.approx(float(rev))


def test_bad_loss_config_is_rejected():
    with pytest.raises(ValueError, match="kl_direction"):
        LossConfig(kl_direction="sideways")
    with pytest.raises(ValueError, match="lambda_v"):
        LossConfig(lambda_v=-1)


def test_bounded_means_compare_saturated_means_as_the_bound():
    low, high = torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 1.0])
    log_std = torch.zeros(3, 2)
    teacher = DistParams("gaussian", {"mean": torch.tensor([[3.0, 0.5], [-2.0, 0.0], [0.2, 5.0]]), "log_std": log_std})
    student = DistParams("gaussian", {"mean": torch.tensor([[1.5, 0.5], [0.0, 0.0], [0.2, 0.9]]), "log_std": log_std})
    bounded_t, bounded_s = bounded_means(teacher, student, low, high)
    torch.testing.assert_close(bounded_t["mean"], torch.tensor([[1.0, 0.5], [-1.0, 0.0], [0.2, 1.0]]))
    # same side as the saturated teacher: clipped (no cost); inside while the teacher saturates: pulled to the bound
    torch.testing.assert_close(bounded_s["mean"], torch.tensor([[1.0, 0.5], [0.0, 0.0], [0.2, 0.9]]))
    per_state = distillation_loss(teacher, torch.zeros(3), student, torch.zeros(3), value_std=1.0, config=LossConfig(lambda_v=0.0),
                                  action_bounds=(low, high))["kl"]
    # KL with unit stds is half the squared mean gap: 0 + 0.5 * 1^2 + 0.5 * 0.1^2, averaged over 3 states
    assert per_state.item() == pytest.approx((0.0 + 0.5 + 0.005) / 3)
    unbounded = distillation_loss(teacher, torch.zeros(3), student, torch.zeros(3), value_std=1.0, config=LossConfig(lambda_v=0.0))["kl"]
    assert unbounded.item() == pytest.approx((0.5 * 1.5**2 + 0.5 * 2.0**2 + 0.5 * 4.1**2) / 3)
