"""Distillation losses: golden values on hand-computed examples, limits and argument checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from blmkd.distill.kd import DistillationLoss, HintLoss, KDLoss, dkd_parts, lambda_schedule

# A 2×3 example at T = 2: z/T is z_s → [[0.5, 1, 1.5], [0, 0, 0]], z_t → [[1.5, 1, 0.5], [0.5, 0, 0]].
Z_S = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
Z_T = torch.tensor([[3.0, 2.0, 1.0], [1.0, 0.0, 0.0]])
T = 2.0
_a, _b, _c = math.exp(1.5), math.exp(1.0), math.exp(0.5)
_Z1 = _a + _b + _c
# Row 1: q is p reversed, so log q − log p = [1, 0, −1] and KL = q_1 − q_3 = (e^1.5 − e^0.5)/Z ≈ 0.32016.
KL_ROW1 = (_a - _c) / _Z1
# Row 2: p uniform, q = [e^0.5, 1, 1]/(e^0.5 + 2): KL = Σ q log q + log 3 ≈ 0.03017.
_q2 = [_c / (_c + 2), 1 / (_c + 2), 1 / (_c + 2)]
KL_ROW2 = sum(q * math.log(q) for q in _q2) + math.log(3)
KD_KL = T * T * (KL_ROW1 + KL_ROW2) / 2  # ≈ 0.70065
# Soft CE: −Σ q log p. Row 1: log Z − Σ q·z_s/T with q = [e^1.5, e^1, e^0.5]/Z ≈ 1.34035; row 2: log 3.
SCE_ROW1 = math.log(_Z1) - (0.5 * _a + 1.0 * _b + 1.5 * _c) / _Z1
KD_SCE = (SCE_ROW1 + math.log(3)) / 2  # ≈ 1.21948


def test_lambda_schedule_golden():
    assert [lambda_schedule(e, 4) for e in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert [lambda_schedule(e, 2, 0.2, 0.6) for e in (0, 1, 2, 10)] == pytest.approx([0.2, 0.4, 0.6, 0.6])
    assert lambda_schedule(0, 0, 0.1, 0.7) == 0.7  # no warm-up: λ_max at once
    assert lambda_schedule(3, 10, 0.9, 0.3) == pytest.approx(0.72)  # a decreasing ramp is allowed


@pytest.mark.parametrize(
    "args", [(0, -1), (-1, 5), (0, 5, -0.1, 1.0), (0, 5, 0.0, 1.5), (0, 5, 0.5, float("nan"))]
)
def test_lambda_schedule_rejects_bad_arguments(args):
    with pytest.raises(ValueError):
        lambda_schedule(*args)


def test_kd_kl_hand_computation():
    got = KDLoss(T, "kl")(Z_S, Z_T).item()
    assert got == pytest.approx(KD_KL, rel=1e-6)
    assert got == pytest.approx(0.70065, abs=1e-5)  # the decimal worked out in the comment above
    # the T² factor and the batch mean: the rows by hand, not a second run of the same formula
    assert KDLoss(T, "kl").per_pixel(Z_S, Z_T).tolist() == pytest.approx([4 * 0.32016, 4 * 0.03017], abs=1e-4)


def test_kd_soft_ce_hand_computation():
    got = KDLoss(T, "soft-ce")(Z_S, Z_T).item()
    assert got == pytest.approx(KD_SCE, rel=1e-6)
    assert got == pytest.approx(1.21948, abs=1e-5)  # (1.34035 + log 3) / 2


def test_soft_ce_is_ce_against_soft_targets():
    g = torch.Generator().manual_seed(0)
    z_s, z_t = torch.randn(8, 6, generator=g), torch.randn(8, 6, generator=g)
    soft = F.softmax(z_t / 3.0, dim=-1)
    expected = F.cross_entropy(z_s / 3.0, soft)  # probabilities as targets
    torch.testing.assert_close(KDLoss(3.0, "soft-ce")(z_s, z_t), expected)


def test_kd_is_zero_when_logits_match_and_positive_otherwise():
    z = torch.randn(5, 4)
    assert KDLoss(4.0, "kl")(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert KDLoss(4.0, "kl")(z, z + torch.randn(5, 4)).item() > 1e-4


def test_kd_gradients_reach_only_the_student():
    z_s, z_t = Z_S.clone().requires_grad_(), Z_T.clone().requires_grad_()
    KDLoss(T)(z_s, z_t).backward()
    assert z_s.grad is not None and z_s.grad.abs().sum() > 0 and z_t.grad is None


@pytest.mark.parametrize("kwargs", [dict(temperature=0.0), dict(temperature=-1.0), dict(kind="mse")])
def test_kd_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        KDLoss(**kwargs)


def test_dkd_parts_recompose_the_classic_kl_per_pixel():
    # Zhao et al. 2022, eq. (5): KL(q ‖ p) = TCKD + (1 − q_y)·NCKD, for any logits and target
    g = torch.Generator().manual_seed(1)
    z_s, z_t = torch.randn(32, 7, generator=g) * 3, torch.randn(32, 7, generator=g) * 3
    y = torch.randint(0, 7, (32,), generator=g)
    tckd, nckd = dkd_parts(z_s, z_t, y, 2.0)
    q = F.softmax(z_t / 2.0, -1)
    kl = (q * (q.log() - F.log_softmax(z_s / 2.0, -1))).sum(-1)
    torch.testing.assert_close(tckd + (1 - q[torch.arange(32), y]) * nckd, kl, rtol=1e-5, atol=1e-6)
    assert (tckd >= -1e-7).all() and (nckd >= -1e-7).all()
    # with α = 1 and β = 1 − q_y (here one value for the whole batch) DKD is the classic KD term
    y0 = torch.zeros(32, dtype=torch.long)
    z_t0 = torch.cat([torch.full((32, 1), 1.0), torch.zeros(32, 6)], 1)  # every q_y the same
    q_y = F.softmax(z_t0 / 2.0, -1)[0, 0].item()
    torch.testing.assert_close(KDLoss(2.0, "dkd", 1.0, 1 - q_y)(z_s, z_t0, y0), KDLoss(2.0, "kl")(z_s, z_t0))


def test_dkd_without_its_target_term_leaves_the_confidence_to_the_labels():
    # A student that ranks the wrong classes as the teacher does but is surer of the label:
    # the classic term pulls its confidence down to the teacher's, NCKD alone does not.
    z_t = torch.tensor([[1.0, 0.5, -1.0, 0.0]])
    z_s = z_t + torch.tensor([[4.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([0])
    assert KDLoss(2.0, "kl")(z_s, z_t).item() > 0.1
    assert KDLoss(2.0, "dkd", 0.0, 1.0)(z_s, z_t, y).item() == pytest.approx(0.0, abs=1e-6)
    assert KDLoss(2.0, "dkd", 1.0, 1.0)(z_s, z_t, y).item() > 0.1  # TCKD sees the confidence gap
    # without labels the target is the teacher's top class (here the same)
    assert KDLoss(2.0, "dkd", 1.0, 1.0)(z_s, z_t).item() == pytest.approx(
        KDLoss(2.0, "dkd", 1.0, 1.0)(z_s, z_t, y).item()
    )
    z_sg = z_s.clone().requires_grad_()
    KDLoss(2.0, "dkd", 0.5, 2.0)(z_sg, z_t, y).backward()
    assert torch.isfinite(z_sg.grad).all() and z_sg.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        KDLoss(2.0, "dkd", -1.0, 1.0)


def test_distillation_loss_mixes_ce_and_kd():
    y = torch.tensor([2, 0])
    loss = DistillationLoss(temperature=T, kind="kl")
    ce = F.cross_entropy(Z_S, y).item()
    # CE by hand: row 1 −log(e^3/(e+e²+e³)), row 2 log 3.
    ce_hand = (-(3 - math.log(math.e + math.e**2 + math.e**3)) + math.log(3)) / 2
    assert ce == pytest.approx(ce_hand, rel=1e-6)

    total, parts = loss(Z_S, Z_T, y, 0.0)  # λ = 0: pure CE
    assert total.item() == pytest.approx(ce, rel=1e-6)
    assert parts["ce"] == pytest.approx(ce, rel=1e-6) and parts["kd"] == pytest.approx(KD_KL, rel=1e-6)
    total, _ = loss(Z_S, Z_T, y, 1.0)  # λ = 1: pure KD
    assert total.item() == pytest.approx(KD_KL, rel=1e-6)
    total, _ = loss(Z_S, Z_T, y, 0.25)
    assert total.item() == pytest.approx(0.75 * ce + 0.25 * KD_KL, rel=1e-6)
    assert isinstance(parts["ce"], float) and isinstance(parts["kd"], float)


def test_per_pixel_trust_mixes_each_pixel_with_its_own_lambda():
    y = torch.tensor([2, 0])
    loss = DistillationLoss(temperature=T, kind="kl")
    ce_i = F.cross_entropy(Z_S, y, reduction="none")
    kd_i = torch.tensor([T * T * KL_ROW1, T * T * KL_ROW2])  # the hand-computed rows
    torch.testing.assert_close(loss.kd.per_pixel(Z_S, Z_T), kd_i)
    total, parts = loss(Z_S, Z_T, y, 0.5, trust=torch.tensor([1.0, 0.2]))
    want = ((1 - 0.5) * ce_i[0] + 0.5 * kd_i[0] + (1 - 0.1) * ce_i[1] + 0.1 * kd_i[1]) / 2
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert parts["kd"] == pytest.approx(KD_KL, rel=1e-6)  # the parts stay unweighted means
    full, _ = loss(Z_S, Z_T, y, 0.5, trust=torch.ones(2))  # trust 1 everywhere: the plain mix
    assert full.item() == pytest.approx(loss(Z_S, Z_T, y, 0.5)[0].item(), rel=1e-6)


def test_per_pixel_weight_scales_each_pixels_mixed_loss():
    y = torch.tensor([2, 0])
    loss = DistillationLoss(temperature=T, kind="kl")
    ce_i = F.cross_entropy(Z_S, y, reduction="none")
    kd_i = torch.tensor([T * T * KL_ROW1, T * T * KL_ROW2])
    total, parts = loss(Z_S, Z_T, y, 0.5, weight=torch.tensor([3.0, 0.5]))
    want = (3.0 * (0.5 * ce_i[0] + 0.5 * kd_i[0]) + 0.5 * (0.5 * ce_i[1] + 0.5 * kd_i[1])) / 2
    assert total.item() == pytest.approx(want.item(), rel=1e-6)
    assert parts["kd"] == pytest.approx(KD_KL, rel=1e-6)  # the logged parts stay unweighted
    ones, _ = loss(Z_S, Z_T, y, 0.5, weight=torch.ones(2))
    assert ones.item() == pytest.approx(loss(Z_S, Z_T, y, 0.5)[0].item(), rel=1e-6)
    both, _ = loss(Z_S, Z_T, y, 0.5, trust=torch.tensor([1.0, 0.2]), weight=torch.tensor([3.0, 0.5]))
    want = (3.0 * (0.5 * ce_i[0] + 0.5 * kd_i[0]) + 0.5 * (0.9 * ce_i[1] + 0.1 * kd_i[1])) / 2
    assert both.item() == pytest.approx(want.item(), rel=1e-6)


def test_distillation_loss_label_smoothing_and_bad_arguments():
    y = torch.tensor([2, 0])
    total, parts = DistillationLoss(T, "soft-ce", label_smoothing=0.1)(Z_S, Z_T, y, 0.0)
    assert parts["ce"] == pytest.approx(F.cross_entropy(Z_S, y, label_smoothing=0.1).item(), rel=1e-6)
    with pytest.raises(ValueError):
        DistillationLoss(T, "kl")(Z_S, Z_T, y, 1.5)
    with pytest.raises(ValueError):
        DistillationLoss(T, "kl", label_smoothing=1.0)


def test_hint_loss():
    torch.manual_seed(0)
    hint = HintLoss(4, 6)
    f_s, f_t = torch.randn(3, 4, requires_grad=True), torch.randn(3, 6, requires_grad=True)
    loss = hint(f_s, f_t)
    torch.testing.assert_close(loss, ((hint.proj(f_s) - f_t) ** 2).mean())
    loss.backward()
    assert f_t.grad is None and f_s.grad is not None and hint.proj.weight.grad is not None
    with torch.no_grad():  # a perfect projection gives zero
        hint.proj.weight.zero_()
        hint.proj.bias.zero_()
    assert hint(f_s, torch.zeros(3, 6)).item() == 0.0
