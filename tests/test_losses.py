import math

import pytest
import torch

from policykd.config import DistillConfig
from policykd.distributions import DistParams, kl_divergence
from policykd.errors import PolicyKDError
from policykd.losses import BC_ENTROPY_WEIGHT, LossConfig, action_term, bounded_means, distillation_loss


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
    fwd = distillation_loss(t, v, s, v, value_std=1.0, config=LossConfig(kl_direction="forward"))
    rev = distillation_loss(t, v, s, v, value_std=1.0, config=LossConfig(kl_direction="reverse"))
    assert float(fwd["loss"]) != pytest.approx(float(rev["loss"]))
    assert float(fwd["kl"]) == pytest.approx(float(rev["kl"]))  # the logged KL is always KL(T || S), whatever the loss


def test_bad_loss_config_is_rejected():
    with pytest.raises(ValueError, match="kl_direction"):
        LossConfig(kl_direction="sideways")
    with pytest.raises(ValueError, match="lambda_v"):
        LossConfig(lambda_v=-1)
    with pytest.raises(ValueError, match="loss must be one of kl, bc, mse"):
        LossConfig(loss="l1")


def _gaussian(mean, log_std, family="gaussian"):
    return DistParams(family, {"mean": torch.tensor(mean), "log_std": torch.tensor(log_std)})


def test_gaussian_temperature_scales_the_teachers_std():
    t, s = _gaussian([[0.0]], [[0.0]]), _gaussian([[0.0]], [[math.log(2.0)]])
    v = torch.zeros(1)
    at_one = distillation_loss(t, v, s, v, value_std=1.0, config=LossConfig(lambda_v=0.0))["loss"]
    at_two = distillation_loss(t, v, s, v, value_std=1.0, config=LossConfig(lambda_v=0.0, tau=2.0))["loss"]
    assert at_one.item() > 0.1 and at_two.item() == pytest.approx(0.0, abs=1e-7)  # teacher std 1 * 2 = student's 2


def test_categorical_temperature_softens_both_and_keeps_the_gradient_scale():
    t = DistParams("categorical", {"logits": torch.tensor([[4.0, 0.0, -2.0]])})
    logits = torch.tensor([[0.5, 0.2, 0.1]], requires_grad=True)
    v = torch.zeros(1)
    config = LossConfig(lambda_v=0.0, tau=3.0)
    loss = distillation_loss(t, v, DistParams("categorical", {"logits": logits}), v, value_std=1.0, config=config)["loss"]
    expected = 9.0 * kl_divergence(DistParams("categorical", {"logits": t["logits"] / 3}),
                                   DistParams("categorical", {"logits": logits.detach() / 3}))
    assert loss.item() == pytest.approx(expected.item())
    loss.backward()
    # d/dz of tau^2 KL(softmax(t/tau) || softmax(z/tau)) = tau * (softmax(z/tau) - softmax(t/tau)) (Hinton et al.)
    grad = 3.0 * (torch.softmax(logits.detach() / 3, -1) - torch.softmax(t["logits"] / 3, -1))
    torch.testing.assert_close(logits.grad, grad)


def test_a_deterministic_teacher_has_no_temperature():
    t = DistParams("deterministic", {"action": torch.zeros(2, 1)})
    with pytest.raises(ValueError, match="no spread for a temperature"):
        distillation_loss(t, torch.zeros(2), t, torch.zeros(2), value_std=1.0, config=LossConfig(tau=2.0))


def test_behaviour_cloning_is_the_nll_of_the_teachers_mode():
    t, s = _gaussian([[1.0, 0.0]], [[0.3, -1.0]]), _gaussian([[0.0, 0.0]], [[0.0, 0.0]])
    v = torch.zeros(1)
    bc = distillation_loss(t, v, s, v, value_std=1.0, config=LossConfig(lambda_v=0.0, loss="bc"))["loss"]
    # -log N(1 | 0, 1) - log N(0 | 0, 1), minus imitation's entropy bonus: the teacher's std plays no part
    assert bc.item() == pytest.approx(0.5 + math.log(2 * math.pi) - BC_ENTROPY_WEIGHT * math.log(2 * math.pi * math.e))
    teacher = DistParams("categorical", {"logits": torch.tensor([[0.1, 2.0, 0.3], [5.0, 0.0, 0.0]])})
    student = DistParams("categorical", {"logits": torch.zeros(2, 3)})
    ce = distillation_loss(teacher, torch.zeros(2), student, torch.zeros(2), value_std=1.0, config=LossConfig(lambda_v=0.0, loss="bc"))
    assert ce["loss"].item() == pytest.approx(math.log(3.0) * (1 - BC_ENTROPY_WEIGHT))


def test_behaviour_cloning_gives_a_gaussian_student_one_std_per_action_dimension():
    """As imitation's BC policies (state-independent std): a std that is tiny on one state and wide on another is
    judged as their geometric mean on both, so the NLL cannot collapse it onto the states it fits best."""
    t = _gaussian([[0.0], [1.0]], [[0.0], [0.0]])
    v = torch.zeros(2)
    per_state = distillation_loss(t, v, _gaussian([[0.0], [0.0]], [[-20.0], [0.0]]), v, value_std=1.0,
                                  config=LossConfig(lambda_v=0.0, loss="bc"))["loss"]
    shared = distillation_loss(t, v, _gaussian([[0.0], [0.0]], [[-10.0], [-10.0]]), v, value_std=1.0,
                               config=LossConfig(lambda_v=0.0, loss="bc"))["loss"]
    assert per_state.item() == pytest.approx(shared.item())
    assert per_state.item() > 1e7  # the second state's error of 1 at std e^-10


def test_mse_compares_action_means_in_action_space():
    t = _gaussian([[10.0]], [[0.0]], family="squashed_gaussian")
    s = _gaussian([[0.0]], [[-3.0]], family="squashed_gaussian")
    mse = distillation_loss(t, torch.zeros(1), s, torch.zeros(1), value_std=1.0, config=LossConfig(lambda_v=0.0, loss="mse"))
    assert mse["loss"].item() == pytest.approx(math.tanh(10.0) ** 2)  # tanh(10) - tanh(0), not 10 - 0
    shifted = DistParams("categorical", {"logits": torch.tensor([[1.0, 2.0]])})
    same = DistParams("categorical", {"logits": torch.tensor([[11.0, 12.0]])})
    assert distillation_loss(shifted, torch.zeros(1), same, torch.zeros(1), value_std=1.0,
                             config=LossConfig(lambda_v=0.0, loss="mse"))["loss"].item() == pytest.approx(0.0)


@pytest.mark.parametrize("loss", ["kl", "bc", "mse"])
def test_every_loss_is_batch_size_invariant(loss):
    gen = torch.Generator().manual_seed(0)
    t = _gaussian(torch.randn(5, 2, generator=gen).tolist(), torch.randn(5, 2, generator=gen).tolist())
    s = _gaussian(torch.randn(5, 2, generator=gen).tolist(), torch.randn(5, 2, generator=gen).tolist())
    twice = lambda d: DistParams(d.family, {k: torch.cat([v, v]) for k, v in d.params.items()})  # noqa: E731
    config = LossConfig(loss=loss, tau=1.5)
    one = distillation_loss(t, torch.zeros(5), s, torch.zeros(5), value_std=1.0, config=config)
    two = distillation_loss(twice(t), torch.zeros(10), twice(s), torch.zeros(10), value_std=1.0, config=config)
    for key in one:
        torch.testing.assert_close(one[key], two[key])


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


def test_kl_with_one_mean_scale_per_dimension_weighs_every_states_mean_error_alike():
    from policykd.distributions import gaussian_kl

    mean_t, log_std_t = torch.zeros(2, 1), torch.log(torch.tensor([[0.05], [0.5]]))  # a sure and an unsure state
    teacher = DistParams("gaussian", {"mean": mean_t, "log_std": log_std_t})
    same_log_std = torch.full((2, 1), -1.0)
    constant = DistParams("gaussian", {"mean": torch.full((2, 1), 0.1), "log_std": same_log_std})
    torch.testing.assert_close(action_term(DistParams("gaussian", {"mean": mean_t, "log_std": same_log_std}), constant,
                                           LossConfig(kl_mean_scale="dimension")),
                               gaussian_kl(mean_t, same_log_std, constant["mean"], same_log_std).mean())  # the KL itself
    mean_s = torch.full((2, 1), 0.1, requires_grad=True)  # the same mean error in both states
    student = DistParams("gaussian", {"mean": mean_s, "log_std": log_std_t.clone()})
    action_term(teacher, student, LossConfig()).backward()
    per_state = mean_s.grad.flatten().clone()
    assert per_state[0] / per_state[1] == pytest.approx(100.0)  # the KL: (0.5 / 0.05)^2 times the pull on the sure state
    mean_s.grad = None
    action_term(teacher, student, LossConfig(kl_mean_scale="dimension")).backward()
    assert mean_s.grad[0].item() == pytest.approx(mean_s.grad[1].item())
    with pytest.raises(PolicyKDError, match="kl_mean_scale"):
        DistillConfig(teacher="t.zip", loss="bc", kl_mean_scale="dimension")


def test_kl_with_the_teachers_mean_scale_gives_a_wider_student_std_no_escape_from_a_mean_error():
    teacher = DistParams("gaussian", {"mean": torch.zeros(1, 1), "log_std": torch.log(torch.tensor([[0.2]]))})

    def mean_pull_and_best_log_std(config: LossConfig) -> tuple[float, float]:
        """The mean's gradient with the student's std at the teacher's and the log std that minimises the term
        for a mean error of 0.4 (twice the teacher's std)."""
        mean_s = torch.full((1, 1), 0.4, requires_grad=True)
        log_std_s = torch.log(torch.tensor([[0.2]])).requires_grad_(True)
        optimiser = torch.optim.SGD([log_std_s], lr=0.1)
        action_term(teacher, DistParams("gaussian", {"mean": mean_s, "log_std": log_std_s.detach()}), config).backward()
        pull = mean_s.grad.item()
        for _ in range(2000):
            optimiser.zero_grad()
            action_term(teacher, DistParams("gaussian", {"mean": mean_s.detach(), "log_std": log_std_s}), config).backward()
            optimiser.step()
        return pull, log_std_s.item()

    kl_pull, kl_log_std = mean_pull_and_best_log_std(LossConfig())
    teacher_pull, teacher_log_std = mean_pull_and_best_log_std(LossConfig(kl_mean_scale="teacher"))
    assert kl_pull == pytest.approx(teacher_pull)  # at the teacher's std both are the KL
    assert math.exp(kl_log_std) == pytest.approx(math.sqrt(0.2**2 + 0.4**2), rel=1e-3)  # the KL widens the std...
    assert math.exp(teacher_log_std) == pytest.approx(0.2, rel=1e-3)  # ...the teacher's scale keeps it the teacher's
    assert not LossConfig(kl_mean_scale="teacher").kl_as_is


def test_kl_with_a_shared_student_std_gives_the_std_head_one_target_per_dimension():
    mean_t = torch.zeros(4, 1)
    log_std_t = torch.log(torch.tensor([[0.05], [0.1], [0.3], [0.5]]))
    teacher = DistParams("gaussian", {"mean": mean_t, "log_std": log_std_t})
    log_std_s = log_std_t.clone().requires_grad_(True)  # already matching the teacher state by state
    student = DistParams("gaussian", {"mean": torch.zeros(4, 1), "log_std": log_std_s})
    per_state = action_term(teacher, student, LossConfig())
    assert per_state.item() == pytest.approx(0.0, abs=1e-6)
    shared = action_term(teacher, student, LossConfig(kl_student_std="shared"))
    assert shared.item() > 0.1  # one std cannot match four
    shared.backward()
    assert torch.allclose(log_std_s.grad, log_std_s.grad[0].expand(4, 1))  # every row pulled alike (the batch mean)
    assert not LossConfig(kl_student_std="shared").kl_as_is and LossConfig(tau=2.0).kl_as_is


def test_mixed_student_std_averages_both_kls_and_keeps_a_pull_on_a_mean_the_student_gave_up_on():
    teacher = DistParams("gaussian", {"mean": torch.zeros(2, 1), "log_std": torch.log(torch.tensor([[0.1], [0.1]]))})

    def pull_on_the_wide_state(config: LossConfig) -> tuple[float, float]:
        mean_s = torch.tensor([[0.05], [1.0]], requires_grad=True)  # state 2: mean far off, std widened to escape it
        student = DistParams("gaussian", {"mean": mean_s, "log_std": torch.log(torch.tensor([[0.1], [3.0]]))})
        term = action_term(teacher, student, config)
        term.backward()
        return term.item(), mean_s.grad[1, 0].item()

    state, state_pull = pull_on_the_wide_state(LossConfig())
    shared, shared_pull = pull_on_the_wide_state(LossConfig(kl_student_std="shared"))
    mixed, mixed_pull = pull_on_the_wide_state(LossConfig(kl_student_std="mixed"))
    assert mixed == pytest.approx(0.5 * (state + shared))
    assert mixed_pull == pytest.approx(0.5 * (state_pull + shared_pull))
    assert mixed_pull > 5 * state_pull > 0  # the per-state KL alone barely pulls a mean under a wide std
    assert not LossConfig(kl_student_std="mixed").kl_as_is
    with pytest.raises(PolicyKDError, match="kl_student_std 'mixed'.*kl_mean_scale"):
        DistillConfig(teacher="t.zip", kl_student_std="mixed", kl_mean_scale="teacher")


def test_a_detached_std_head_trains_its_own_weights_but_sends_no_gradient_into_the_trunk():
    from policykd.students import Student, StudentSpec

    torch.manual_seed(0)
    student = Student(StudentSpec(obs_dim=3, action_dim=2, family="gaussian", hidden=(8,), action_low=(-1.0,) * 2,
                                  action_high=(1.0,) * 2))
    obs = torch.randn(16, 3)
    teacher = DistParams("gaussian", {"mean": torch.zeros(16, 2), "log_std": torch.full((16, 2), -2.0)})

    def trunk_and_std_head_grads(detach: bool, std_only: bool) -> tuple[torch.Tensor, torch.Tensor]:
        student.zero_grad()
        student.detach_std_head = detach
        dist, _ = student(obs)
        if std_only:  # a loss on the std alone: what the std fit asks of the trunk
            dist.params["log_std"].sum().backward()
        else:
            action_term(teacher, dist, LossConfig()).backward()
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in (student.trunk[0].weight, student.log_std_head.weight)]
        return grads[0].clone(), grads[1].clone()

    trunk, head = trunk_and_std_head_grads(detach=False, std_only=True)
    assert trunk.abs().sum() > 0 and head.abs().sum() > 0
    trunk, head = trunk_and_std_head_grads(detach=True, std_only=True)
    assert trunk.abs().sum() == 0 and head.abs().sum() > 0  # the head still fits, the trunk is left to the means
    kl_trunk, _ = trunk_and_std_head_grads(detach=True, std_only=False)
    attached_trunk, _ = trunk_and_std_head_grads(detach=False, std_only=False)
    assert kl_trunk.abs().sum() > 0 and not torch.allclose(kl_trunk, attached_trunk)  # the means still train the trunk
    assert DistillConfig(teacher="t.zip", std_head_detached=True).std_head_detached
