"""The two distillation objectives as small modules (training.md section 2 and 3).

Both take L2-normalised features of the *local* batch, gather them across ranks themselves (teacher targets
exactly like the student features, pitfall 5 of section 5), and return the loss over the local rows against
the global columns; averaged over ranks that is the loss of the global batch.

Teacher embeddings are the concatenation of one unit-norm slice per ensemble member (`teacher_dims`); each
slice gets its own fixed scale and the members are averaged *after* the softmax (Eq. 2, pitfall 4).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mobileclip_deploy.training.batches import has_text
from mobileclip_deploy.training.distributed import gather_features, rank, world_size


def ensemble_probs(rows: torch.Tensor, cols: torch.Tensor, dims: Sequence[int], scales: Sequence[float],
                   temperature: float = 1.0) -> torch.Tensor:
    """(1/K) sum_k softmax(s_k * rows_k cols_k^T / t): the ensemble's target distribution over the columns."""
    probs = [F.softmax(s * r @ c.T / temperature, dim=-1)
             for r, c, s in zip(rows.split(list(dims), dim=-1), cols.split(list(dims), dim=-1), scales)]
    return torch.stack(probs).mean(0)


def soft_cross_entropy(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """-sum_rows sum_cols P log softmax(logits): the code form of the KD term (a CE, not a KL; pitfall 6), summed
    over rows so that the caller can divide by the rows of the global batch."""
    return -(target * F.log_softmax(logits, dim=-1)).sum()


def kl_batchmean(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(P || softmax(logits)) summed over columns, averaged over rows (torch KLDivLoss(batchmean), as DIME-FM)."""
    return F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="batchmean")


def _gather(*tensors: torch.Tensor, with_grad: bool) -> list[torch.Tensor]:
    return [gather_features(t, with_grad=with_grad) for t in tensors]


class MobileCLIPLoss(nn.Module):
    """sum over caption sets (real, synthetic) of (1 - lambda) CLIP + lambda distillation, both directions.

    `distill_weight` is lambda (1.0 for MobileCLIP-S*, 0.75 for B); `teacher_scales` one fixed scale per member.
    A caption set's batch holds the pairs that exist: a sample whose teacher row of the set is zero (no caption of
    that set, see `batches.has_text`) is neither a row nor a column of that set's terms, and the terms average over
    the global batch's captioned rows (the released trainer assumes every sample has every set).
    """

    def __init__(self, teacher_dims: Sequence[int], teacher_scales: Sequence[float], distill_weight: float = 1.0):
        super().__init__()
        if len(teacher_dims) != len(teacher_scales):
            raise ValueError(f"{len(teacher_dims)} teacher slices but {len(teacher_scales)} teacher scales")
        self.teacher_dims = list(teacher_dims)
        self.teacher_scales = [float(s) for s in teacher_scales]
        self.distill_weight = distill_weight

    def _one_set(self, image: tuple[torch.Tensor, torch.Tensor], text: tuple[torch.Tensor, torch.Tensor],
                 t_image: tuple[torch.Tensor, torch.Tensor], t_text: tuple[torch.Tensor, torch.Tensor],
                 scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(contrastive, distill) for one caption set; each pair is (local rows, global columns)."""
        rows, cols = has_text(t_text[0]), has_text(t_text[1])
        n = image[0].shape[0]
        # each local captioned row's column among the global captioned ones
        labels = (cols.cumsum(0) - 1)[rank() * n:(rank() + 1) * n][rows]
        i2t, t2i = scale * image[0][rows] @ text[1][cols].T, scale * text[0][rows] @ image[1][cols].T
        p_i2t = ensemble_probs(t_image[0][rows], t_text[1][cols], self.teacher_dims, self.teacher_scales)
        p_t2i = ensemble_probs(t_text[0][rows], t_image[1][cols], self.teacher_dims, self.teacher_scales)
        # sums over the local rows, scaled so that averaged over ranks they are the global batch's means
        share = world_size() / max(int(cols.sum()), 1)
        contrastive = F.cross_entropy(i2t, labels, reduction="sum") + F.cross_entropy(t2i, labels, reduction="sum")
        distill = soft_cross_entropy(p_i2t, i2t) + soft_cross_entropy(p_t2i, t2i)
        return contrastive * share / 2, distill * share / 2

    def forward(self, image: torch.Tensor, texts: Sequence[torch.Tensor], teacher_image: torch.Tensor,
                teacher_texts: Sequence[torch.Tensor], scale: torch.Tensor) -> dict[str, torch.Tensor]:
        """`scale` is the student's exp(logit_scale); `texts[j]` pairs with `teacher_texts[j]` (real, synthetic)."""
        image_all, = _gather(image, with_grad=True)
        t_image_all, = _gather(teacher_image, with_grad=False)
        contrastive = distill = image.new_zeros(())
        for text, t_text in zip(texts, teacher_texts, strict=True):
            text_all, = _gather(text, with_grad=True)
            t_text_all, = _gather(t_text, with_grad=False)
            c, d = self._one_set((image, image_all), (text, text_all), (teacher_image, t_image_all),
                                 (t_text, t_text_all), scale)
            contrastive, distill = contrastive + c, distill + d
        lam = self.distill_weight
        return {"loss": (1 - lam) * contrastive + lam * distill, "contrastive": contrastive.detach(),
                "distill": distill.detach()}


DIME_VL_FORMS = ("image", "both")


class DimeFMLoss(nn.Module):
    """w_vl L_VL + w_pvl L_PVL + w_udist L_udist over unpaired images and sentences (training.md section 3.2).

    Logits are `scale` * cosine for teacher (per member) and student, softmax at each term's temperature, KL
    with batchmean. The student's image embeddings live in the teachers' space (one width for all), as in
    DIME-FM: PVL is the paper's and the released code's, KL(softmax(I_T I_T^T) || softmax(I_S I_T^T)) with the
    teacher's image embeddings as pseudo-texts. VL has two forms: `image` (the released code) trains the image
    tower against the teacher's sentence embeddings; `both` also trains the student's text tower, the student's
    own sentence embeddings taking the teacher's place. Where the student's logits use teacher columns, each
    ensemble member gets its own KL and the KLs are averaged (one member: exactly the released loss).
    """

    def __init__(self, teacher_dims: Sequence[int], teacher_scales: Sequence[float] | None = None,
                 weights: tuple[float, float, float] = (0.7, 0.3, 0.0),
                 temperatures: tuple[float, float, float] = (1.0, 3.0, 7.0), student_scale: float = 100.0,
                 vl: str = "both"):
        super().__init__()
        if vl not in DIME_VL_FORMS:
            raise ValueError(f"DIME-FM VL form {vl!r}: use one of {', '.join(DIME_VL_FORMS)}")
        self.teacher_dims = list(teacher_dims)
        self.teacher_scales = [float(s) for s in (teacher_scales or [100.0] * len(teacher_dims))]
        self.weights, self.temperatures, self.student_scale, self.vl = weights, temperatures, student_scale, vl

    def _per_member(self, rows: torch.Tensor, cols: torch.Tensor, student: torch.Tensor, t: float,
                    student_rows: bool) -> torch.Tensor:
        """mean_k KL(softmax(s_k rows_k cols_k^T / t) || softmax(s S cols_k^T / t)), S = `student` as the rows
        (`student_rows`) or, transposed, softmax(s rows_k S^T / t) with the student as the columns."""
        split = list(self.teacher_dims)
        kls = []
        for r, c, scale in zip(rows.split(split, dim=-1), cols.split(split, dim=-1), self.teacher_scales):
            logits = student @ c.T if student_rows else r @ student.T
            kls.append(kl_batchmean(F.softmax(scale * r @ c.T / t, dim=-1), self.student_scale * logits / t))
        return torch.stack(kls).mean()

    def forward(self, image: torch.Tensor, teacher_image: torch.Tensor, teacher_text: torch.Tensor,
                text: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """`image`: the student's image embeddings; `text`: its embeddings of the sentences (`both` only)."""
        if (text is None) != (self.vl == "image"):
            raise ValueError(f"the {self.vl!r} VL form takes {'no' if self.vl == 'image' else 'the'} student text")
        image_all, = _gather(image, with_grad=True)
        t_image_all, t_text_all = _gather(teacher_image, teacher_text, with_grad=False)
        (t_vl, t_pvl, t_udist), s = self.temperatures, self.student_scale

        def target(rows: torch.Tensor, cols: torch.Tensor, t: float) -> torch.Tensor:
            return ensemble_probs(rows, cols, self.teacher_dims, self.teacher_scales, t)

        if text is None:  # released: the student's image against the teacher's sentences, both directions
            vl = (self._per_member(teacher_image, t_text_all, image, t_vl, student_rows=True)
                  + self._per_member(teacher_text, t_image_all, image_all, t_vl, student_rows=False))
        else:
            text_all, = _gather(text, with_grad=True)
            vl = (kl_batchmean(target(teacher_image, t_text_all, t_vl), s * image @ text_all.T / t_vl)
                  + kl_batchmean(target(teacher_text, t_image_all, t_vl), s * text @ image_all.T / t_vl))
        pvl = 2 * self._per_member(teacher_image, t_image_all, image, t_pvl, student_rows=True)
        udist = 2 * kl_batchmean(target(teacher_image, t_image_all, t_udist), s * image @ image_all.T / t_udist)
        w_vl, w_pvl, w_udist = self.weights
        return {"loss": w_vl * vl + w_pvl * pvl + w_udist * udist, "vl": vl.detach(), "pvl": pvl.detach(),
                "udist": udist.detach()}
