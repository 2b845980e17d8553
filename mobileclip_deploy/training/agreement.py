"""How closely the student reproduces its teachers' decisions on images (held out, or the training photos).

No teacher runs here: its decisions come from the stored embeddings (the stored view 0 of each image, and
the sentence bank / caption embeddings), and the student sees exactly that view at its own resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mobileclip_deploy.tokenizer import tokenize
from mobileclip_deploy.training.batches import caption_of, collate
from mobileclip_deploy.training.losses import ensemble_probs


@torch.no_grad()
def _encode_texts(student: nn.Module, texts: Sequence[str], context_length: int, device: torch.device,
                  chunk: int = 64) -> torch.Tensor:
    out = [student.encode_text(tokenize(list(texts[i:i + chunk]), context_length).to(device))
           for i in range(0, len(texts), chunk)]
    return F.normalize(torch.cat(out).float(), dim=-1)


@torch.no_grad()
def agreement(student: nn.Module, samples: Sequence, data, teacher_scales: Sequence[float],
              device: torch.device, chunk: int = 32, teacher_text: bool = False) -> dict:
    """Zero-shot top-1 agreement over the sentence bank (class prompts) and image-to-text retrieval agreement.

    Retrieval is among the images' own captions (ground truth, else the synthetic one training draws at epoch 0;
    photos without one still query the others): does the student retrieve the caption the teacher ensemble
    retrieves? With `teacher_text` the student's image embeddings are matched with the teachers' stored text
    embeddings instead of its own text tower's (a student trained by DIME-FM's released form, whose text tower is
    the teacher's).
    """
    variant = student.variant
    was_training = student.training
    student.eval()
    dims = [t.dim for t in data.teachers]
    sets = ["real"] if data.has_captions else (["synthetic"] if data.has_synthetic else [])
    s_img, t_img = [], []
    for i in range(0, len(samples), chunk):
        part = list(samples[i:i + chunk])
        batch = collate(part, [0] * len(part), 0, variant.image_size, variant.context_length, (),
                        augmentation=0).to(device)
        s_img.append(F.normalize(student.encode_image(batch.images).float(), dim=-1))
        t_img.append(batch.teacher_image)
    s_img, t_img = torch.cat(s_img), torch.cat(t_img)
    drawn = [c for c in (caption_of(s, sets[0], 0, 0) for s in samples) if c] if sets else []
    result: dict = {"images": len(samples), "text_tower": "teacher" if teacher_text else "student"}

    def student_pick(texts: Sequence[str], teacher_cols: torch.Tensor) -> torch.Tensor:
        if teacher_text:
            return sum(s_img @ c.T for c in teacher_cols.split(dims, dim=-1)).argmax(-1)
        return (s_img @ _encode_texts(student, texts, variant.context_length, device).T).argmax(-1)

    if data.sentences is not None and len(data.sentences) > 1:
        bank = torch.from_numpy(np.asarray(data.sentence_emb, dtype=np.float32)).to(device)
        teacher_top1 = ensemble_probs(t_img, bank, dims, teacher_scales).argmax(-1)
        student_top1 = student_pick(data.sentences, bank)
        result["zero_shot_top1_agreement"] = float((teacher_top1 == student_top1).float().mean())
        result["zero_shot_classes"] = len(data.sentences)
        result["zero_shot_chance"] = 1.0 / len(data.sentences)
    if len(drawn) > 1:
        captions = [c for c, _ in drawn]
        t_txt = torch.from_numpy(np.stack([r for _, r in drawn]).astype(np.float32)).to(device)
        teacher_pick = ensemble_probs(t_img, t_txt, dims, teacher_scales).argmax(-1)
        result["retrieval_agreement"] = float((teacher_pick == student_pick(captions, t_txt)).float().mean())
        result["retrieval_chance"] = 1.0 / len(captions)
    student.train(was_training)
    return result
