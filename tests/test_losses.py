"""The distillation losses against direct implementations of training.md section 2.1 (paper form) and 3.2."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mobileclip_deploy.training.losses import DimeFMLoss, MobileCLIPLoss

B, D_STUDENT, DIMS, SCALES = 5, 8, [6, 10], [100.0, 70.0]


def unit(*shape: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64), dim=-1)


def teacher(seed: int) -> torch.Tensor:
    """Two members side by side, each slice unit-norm on its own (as stored)."""
    return torch.cat([unit(B, d, seed=seed + k) for k, d in enumerate(DIMS)], dim=-1)


def softmax_rows(m: torch.Tensor) -> torch.Tensor:
    e = torch.exp(m - m.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def kl_rows_mean(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    return sum((p[i] * (p[i].log() - q[i].log())).sum() for i in range(p.shape[0])) / p.shape[0]


def entropy_rows_mean(p: torch.Tensor) -> torch.Tensor:
    return -sum((p[i] * p[i].log()).sum() for i in range(p.shape[0])) / p.shape[0]


def paper_terms(img, txt, t_img, t_txt, scale):
    """Eq. 2 as written: CLIP InfoNCE and (1/bK) sum_k KL(S_tau_k(teacher) || S_tau_hat(student)), both ways."""
    logits = scale * img @ txt.T
    clip = 0.5 * (-torch.log(softmax_rows(logits).diagonal()).mean() - torch.log(softmax_rows(logits.T).diagonal()).mean())
    q_i2t, q_t2i = softmax_rows(logits), softmax_rows(logits.T)
    kl_i2t = kl_t2i = ent = 0.0
    offsets = [0, DIMS[0], sum(DIMS)]
    for k, s in enumerate(SCALES):
        a, b = offsets[k], offsets[k + 1]
        p_i2t = softmax_rows(s * t_img[:, a:b] @ t_txt[:, a:b].T)
        p_t2i = softmax_rows(s * t_txt[:, a:b] @ t_img[:, a:b].T)
        kl_i2t = kl_i2t + kl_rows_mean(p_i2t, q_i2t) / len(SCALES)
        kl_t2i = kl_t2i + kl_rows_mean(p_t2i, q_t2i) / len(SCALES)
        ent = ent + 0.5 * (entropy_rows_mean(p_i2t) + entropy_rows_mean(p_t2i)) / len(SCALES)
    return clip, 0.5 * kl_i2t + 0.5 * kl_t2i, ent


@pytest.mark.parametrize("lam", [1.0, 0.75])
def test_mobileclip_loss_is_eq3_up_to_the_teacher_entropy(lam: float) -> None:
    img = unit(B, D_STUDENT, seed=1).requires_grad_()
    texts = [unit(B, D_STUDENT, seed=2).requires_grad_(), unit(B, D_STUDENT, seed=3).requires_grad_()]
    t_img, t_texts = teacher(10), [teacher(20), teacher(30)]
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)

    out = MobileCLIPLoss(DIMS, SCALES, distill_weight=lam)(img, texts, t_img, t_texts, scale)
    clip = kl = ent = 0.0
    for txt, t_txt in zip(texts, t_texts):  # Eq. 3: real and synthetic summed, not averaged
        c, d, h = paper_terms(img, txt, t_img, t_txt, scale)
        clip, kl, ent = clip + c, kl + d, ent + h
    paper = (1 - lam) * clip + lam * kl
    # The code form is a CE against the averaged teacher distribution: CE = KL + H(P_k), averaged over members.
    torch.testing.assert_close(out["loss"], paper + lam * ent, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["contrastive"], clip.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out["distill"], (kl + ent).detach(), rtol=1e-10, atol=1e-10)
    # The teacher entropies are constants, so the gradients are those of the paper's loss.
    ours = torch.autograd.grad(out["loss"], [img, *texts])
    theirs = torch.autograd.grad(paper, [img, *texts])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_samples_without_a_synthetic_caption_are_left_out_of_the_synthetic_term() -> None:
    """Reinforce may give synthetic captions to some photos only (their teacher row is zero in the batch): the
    synthetic term is then Eq. 2 over the pairs that exist, the real term over the whole batch, and the placeholder
    captions get no gradient."""
    img = unit(B, D_STUDENT, seed=1).requires_grad_()
    texts = [unit(B, D_STUDENT, seed=2).requires_grad_(), unit(B, D_STUDENT, seed=3).requires_grad_()]
    t_img, t_texts = teacher(10), [teacher(20), teacher(30)]
    has = torch.tensor([True, False, True, True, False])
    t_texts[1][~has] = 0
    scale = torch.tensor(1 / 0.07, dtype=torch.float64)

    out = MobileCLIPLoss(DIMS, SCALES)(img, texts, t_img, t_texts, scale)
    real = paper_terms(img, texts[0], t_img, t_texts[0], scale)
    synthetic = paper_terms(img[has], texts[1][has], t_img[has], t_texts[1][has], scale)
    torch.testing.assert_close(out["contrastive"], (real[0] + synthetic[0]).detach(), rtol=1e-10, atol=1e-10)
    paper = real[1] + synthetic[1]
    torch.testing.assert_close(out["distill"], (paper + real[2] + synthetic[2]).detach(), rtol=1e-10, atol=1e-10)
    ours = torch.autograd.grad(out["loss"], [img, *texts])
    theirs = torch.autograd.grad(paper, [img, *texts])
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert not ours[2][~has].any()  # the placeholder captions of the photos without one do not train
    none = [t_texts[0], torch.zeros_like(t_texts[1])]  # no synthetic caption in the batch: the term is zero
    alone = MobileCLIPLoss(DIMS, SCALES)(img, texts, t_img, none, scale)
    torch.testing.assert_close(alone["contrastive"], real[0].detach(), rtol=1e-10, atol=1e-10)


def test_mobileclip_loss_averages_members_after_softmax() -> None:
    """One softmax over the summed cosines of the whole 16-D vector is a different (wrong) target."""
    img, txt = unit(B, D_STUDENT, seed=1), unit(B, D_STUDENT, seed=2)
    t_img, t_txt = teacher(10), teacher(20)
    per_member = MobileCLIPLoss(DIMS, [100.0, 100.0])(img, [txt], t_img, [t_txt], torch.tensor(14.0))["distill"]
    whole = MobileCLIPLoss([sum(DIMS)], [100.0])(img, [txt], t_img, [t_txt], torch.tensor(14.0))["distill"]
    assert not torch.isclose(per_member, whole, rtol=1e-3)


def test_mobileclip_loss_refuses_scale_count_mismatch() -> None:
    with pytest.raises(ValueError, match="2 teacher slices but 1 teacher scales"):
        MobileCLIPLoss(DIMS, [100.0])


def _dime_direct(i_s, i_t, t_t, t_s, temps=(1.0, 3.0, 7.0)):
    """DIME-FM's terms as written: logits 100 cos / t, KL batchmean; PVL with the teacher's image columns."""
    def sm(m: torch.Tensor, t: float) -> torch.Tensor:
        return softmax_rows(100 * m / t)

    t_vl, t_pvl, t_udist = temps
    vl = (kl_rows_mean(sm(i_t @ t_t.T, t_vl), sm(i_s @ t_s.T, t_vl))
          + kl_rows_mean(sm(t_t @ i_t.T, t_vl), sm(t_s @ i_s.T, t_vl)))
    pvl = 2 * kl_rows_mean(sm(i_t @ i_t.T, t_pvl), sm(i_s @ i_t.T, t_pvl))
    udist = 2 * kl_rows_mean(sm(i_t @ i_t.T, t_udist), sm(i_s @ i_s.T, t_udist))
    return vl, pvl, udist


@pytest.mark.parametrize("vl_form", ["image", "both"])
def test_dimefm_loss_matches_direct_formulas(vl_form: str) -> None:
    """One 6-D teacher, the student's image in the teacher's space. `image` is the released code: the student's
    image against the teacher's sentence embeddings; `both` puts the student's own sentence embeddings there."""
    d = 6
    i_t, t_t = unit(B, d, seed=4), unit(B, d, seed=5)
    i_s = unit(B, d, seed=6).requires_grad_()
    t_s = unit(B, d, seed=7).requires_grad_()
    weights, temps = (0.68, 0.22, 0.10), (1.0, 3.0, 7.0)
    loss = DimeFMLoss([d], weights=weights, temperatures=temps, vl=vl_form)
    out = loss(i_s, i_t, t_t, t_s if vl_form == "both" else None)
    vl, pvl, udist = _dime_direct(i_s, i_t, t_t, t_t if vl_form == "image" else t_s, temps)
    for name, want in (("vl", vl), ("pvl", pvl), ("udist", udist)):
        torch.testing.assert_close(out[name], want.detach(), rtol=1e-12, atol=1e-15)
    total = weights[0] * vl + weights[1] * pvl + weights[2] * udist
    torch.testing.assert_close(out["loss"], total, rtol=1e-12, atol=1e-15)
    inputs = [i_s, t_s] if vl_form == "both" else [i_s]
    for a, b in zip(torch.autograd.grad(out["loss"], inputs), torch.autograd.grad(total, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    assert math.isfinite(float(out["loss"].detach())) and float(out["vl"]) > 0
    # PVL's columns are the teacher's image embeddings: the student's own rows (the old form) give another value.
    own = 2 * kl_rows_mean(softmax_rows(100 * i_t @ i_t.T / 3), softmax_rows(100 * i_s @ i_s.T / 3))
    assert not torch.isclose(out["pvl"], own.detach(), rtol=1e-2)
    with pytest.raises(ValueError, match="takes"):
        loss(i_s, i_t, t_t, None if vl_form == "both" else t_s)


def test_dimefm_members_get_their_own_kl() -> None:
    """Two 6-D members: where the student's logits use teacher columns, the KL of each member is averaged."""
    d = 6
    i_t, t_t = torch.cat([unit(B, d, seed=4), unit(B, d, seed=8)], 1), torch.cat([unit(B, d, seed=5),
                                                                               unit(B, d, seed=9)], 1)
    i_s = unit(B, d, seed=6)
    out = DimeFMLoss([d, d], vl="image")(i_s, i_t, t_t)
    parts = [_dime_direct(i_s, i_t[:, k * d:(k + 1) * d], t_t[:, k * d:(k + 1) * d], t_t[:, k * d:(k + 1) * d])
             for k in range(2)]
    torch.testing.assert_close(out["vl"], (parts[0][0] + parts[1][0]) / 2, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(out["pvl"], (parts[0][1] + parts[1][1]) / 2, rtol=1e-12, atol=1e-15)
