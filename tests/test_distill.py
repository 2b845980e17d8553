"""Distillation end to end on hand-made records: it learns the teacher, resumes exactly, and refuses bad input."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from distill_fakes import make_data, tiny_student, without_synthetic_every_other
from mobileclip_deploy.errors import UserError
from mobileclip_deploy.training import distributed
from mobileclip_deploy.training.agreement import agreement
from mobileclip_deploy.training.loop import DistillConfig, Trainer, distill, lr_at, param_groups

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = distributed.DistEnv(0, 0, 1, torch.device("cpu"))


@pytest.fixture(scope="module")
def photos(shared_dir: Path) -> Path:
    return shared_dir / "data" / "imagenet-samples"


@pytest.fixture(scope="module")
def data(photos: Path):
    return make_data(photos)


def config(tmp_path: Path, **kw) -> DistillConfig:
    base = dict(student="tiny-vit", data="hand-made", out=str(tmp_path / "run"), steps=12, batch_size=8, lr=1e-3,
                save_every=1000)
    return DistillConfig(**{**base, **kw})


def test_student_learns_the_teacher(data, tmp_path: Path) -> None:
    """The distillation loss falls and zero-shot agreement with the teacher goes well above chance."""
    student = tiny_student()
    before = agreement(copy.deepcopy(student), data.records, data, [100.0, 100.0], torch.device("cpu"))
    summary = distill(config(tmp_path, steps=300, lr=2e-3), student=student, data=data)
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log] == list(range(1, 301))
    first, last = (sum(h["distill"] for h in part) / len(part) for part in (log[:30], log[-30:]))
    assert last < first - 0.5, (first, last)
    after = summary["agreement"]
    chance = after["zero_shot_chance"]  # 8 classes
    assert after["zero_shot_top1_agreement"] >= 3 * chance, (before, after)
    assert after["zero_shot_top1_agreement"] > before["zero_shot_top1_agreement"], (before, after)
    assert after["retrieval_agreement"] >= 3 * after["retrieval_chance"]
    assert summary["warmup"] == 30 and summary["loss"] == "mobileclip"
    for name in ("student.pt", "state.pt", "curve.png", "summary.json"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert not list((tmp_path / "run").glob("*.partial"))


def test_resume_continues_exactly(data, tmp_path: Path) -> None:
    full = Trainer(config(tmp_path / "a"), data, tiny_student(), CPU)
    reference = [h["loss"] for h in full.run()]

    class Interrupted(Exception):
        pass

    def stop_after_six(record: dict) -> None:
        if record["step"] == 6:
            raise Interrupted

    cfg = config(tmp_path / "b", save_every=4)
    with pytest.raises(Interrupted):
        Trainer(cfg, data, tiny_student(), CPU).run(on_step=stop_after_six)
    # A fresh process: other initial weights, which the resumed state must replace.
    resumed = Trainer(config(tmp_path / "b", save_every=4), data, tiny_student(seed=1), CPU, resume=True)
    assert resumed.step == 4
    losses = [h["loss"] for h in resumed.run()]
    assert losses == pytest.approx(reference, rel=1e-6, abs=1e-7)


def test_photos_without_synthetic_captions_train_on_the_captions_they_have(photos: Path, data,
                                                                          tmp_path: Path) -> None:
    partial = without_synthetic_every_other(data)
    trainer = Trainer(config(tmp_path, steps=2), partial, tiny_student(), CPU)
    batch = trainer.batch(0)
    by_uid = {s.uid: s for s in partial.records}
    norms = batch.teacher_text["synthetic"].norm(dim=-1)
    assert [float(n) for n in norms] == pytest.approx([math.sqrt(2) if by_uid[u].synthetic else 0.0 for u in batch.uids],
                                                      abs=1e-6)  # two unit-norm teacher slices, or none
    assert all(math.isfinite(h["loss"]) and h["loss"] > 0 for h in trainer.run())
    # Without ground-truth captions, retrieval agreement is among the synthetic captions that exist.
    only_synthetic = without_synthetic_every_other(make_data(photos, captions=False))
    result = agreement(tiny_student(), only_synthetic.records, only_synthetic, [100.0, 100.0], torch.device("cpu"))
    assert result["retrieval_chance"] == 1 / 4 and "retrieval_agreement" in result  # 4 of the 8 photos have one


@pytest.mark.parametrize("vl_form", ["image", "both"])
def test_dime_fm_from_images_and_sentences(photos: Path, tmp_path: Path, vl_form: str) -> None:
    """A 16-D teacher for the 16-D student (DIME-FM's shared space); `image` leaves the text tower as it was."""
    image_only = make_data(photos, dims=(16,), captions=False, synthetic=False)
    student = tiny_student()
    text_before = copy.deepcopy(student.text.state_dict())
    trainer = Trainer(config(tmp_path, steps=60, lr=2e-3, dime_vl=vl_form), image_only, student, CPU)
    assert trainer.kind == "dime-fm" and not trainer.student.logit_scale.requires_grad
    log = trainer.run()
    assert set(log[0]) >= {"vl", "pvl", "udist"}
    first, last = (sum(h["loss"] for h in part) / len(part) for part in (log[:10], log[-10:]))
    assert last < first, (first, last)
    same = all(torch.equal(v, student.text.state_dict()[k]) for k, v in text_before.items())
    assert same == (vl_form == "image")
    if vl_form == "image":  # its agreement pairs the student's image tower with the teacher's text embeddings
        import torch.nn.functional as F

        from mobileclip_deploy.training.batches import collate
        from mobileclip_deploy.training.losses import ensemble_probs

        got = agreement(student, image_only.records, image_only, [100.0], torch.device("cpu"), teacher_text=True)
        batch = collate(image_only.records, [0] * 8, 0, 32, 77, (), augmentation=0)
        with torch.no_grad():
            s_img = F.normalize(student.encode_image(batch.images), dim=-1)
        bank = torch.from_numpy(image_only.sentence_emb)
        want = (ensemble_probs(batch.teacher_image, bank, [16], [100.0]).argmax(-1) == (s_img @ bank.T).argmax(-1))
        assert got["text_tower"] == "teacher" and got["zero_shot_top1_agreement"] == float(want.float().mean())


def test_dime_fm_objective_uses_the_teacher_image_columns(photos: Path, tmp_path: Path) -> None:
    """The loop hands PVL the teacher's image embeddings (the paper's pseudo-texts), not the student's rows."""
    import torch.nn.functional as F

    data = make_data(photos, dims=(16,), captions=False, synthetic=False)
    trainer = Trainer(config(tmp_path, dime_vl="image"), data, tiny_student(), CPU)
    batch = trainer.batch(0)
    with torch.no_grad():
        out = trainer.objective(trainer.forward, trainer.student, batch)
        i_s = F.normalize(trainer.student.encode_image(batch.images), dim=-1)
    i_t, t_t = batch.teacher_image, batch.teacher_text["sentences"]

    def kl(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return F.kl_div(F.log_softmax(logits, -1), F.softmax(target, -1), reduction="batchmean")

    torch.testing.assert_close(out["pvl"], 2 * kl(100 * i_t @ i_t.T / 3, 100 * i_s @ i_t.T / 3))
    torch.testing.assert_close(out["vl"], kl(100 * i_t @ t_t.T, 100 * i_s @ t_t.T) + kl(100 * t_t @ i_t.T,
                                                                                          100 * t_t @ i_s.T))


def test_schedule_and_no_decay_groups() -> None:
    lrs = [lr_at(s, 1e-3, 10, 100) for s in range(100)]
    assert lrs[9] == pytest.approx(1e-3) and lrs[0] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] < 1e-6
    decay, no_decay = param_groups(tiny_student(), 0.2)
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in decay["params"])
    assert len(no_decay["params"]) > 0


@pytest.mark.parametrize("change, message", [
    (dict(batch_size=9), r"the batch \(9 samples\) is larger than the training data \(8 samples"),
    (dict(loss="dime-fm", batch_size=8), None),
])
def test_batch_larger_than_data(data, tmp_path: Path, change: dict, message: str | None) -> None:
    if message is None:  # the sentence bank bounds a DIME-FM batch too
        data = copy.copy(data)
        data.sentences, data.sentence_emb = data.sentences[:5], data.sentence_emb[:5]
        message = r"larger than the sentence bank \(5 sentences\)"
    with pytest.raises(UserError, match=message):
        Trainer(config(tmp_path, **change), data, tiny_student(), CPU)


def test_refusals(photos: Path, data, tmp_path: Path) -> None:
    other_context = copy.copy(data)
    other_context.context_length = 128
    with pytest.raises(UserError, match="tokenizes to 77 tokens but the data was made with a 128-token context"):
        Trainer(config(tmp_path), other_context, tiny_student(), CPU)
    image_only = make_data(photos, captions=False, synthetic=False, sentences=False)
    with pytest.raises(UserError, match="no captions and no sentence bank"):
        Trainer(config(tmp_path), image_only, tiny_student(), CPU)
    with pytest.raises(UserError, match="--loss mobileclip needs captions"):
        Trainer(config(tmp_path, loss="mobileclip"), make_data(photos, captions=False, synthetic=False),
                tiny_student(), CPU)
    with pytest.raises(UserError, match="--teacher-scale was given 1 times but the data has 2 teachers"):
        Trainer(config(tmp_path, teacher_scales=[100.0]), data, tiny_student(), CPU)
    with pytest.raises(UserError, match=r"tiny-vit is 16-D, the teachers \(toy-0, toy-1\) are 6, 10-D"):
        Trainer(config(tmp_path, loss="dime-fm"), data, tiny_student(), CPU)
    with pytest.raises(UserError, match="unknown --dime-vl 'text'"):
        Trainer(config(tmp_path, loss="dime-fm", dime_vl="text"), data, tiny_student(), CPU)


def test_resume_refuses_other_settings_and_existing_runs(data, tmp_path: Path) -> None:
    distill(config(tmp_path, steps=2), student=tiny_student(), data=data)
    with pytest.raises(UserError, match="already holds a run"):
        distill(config(tmp_path, steps=2), student=tiny_student(), data=data)
    with pytest.raises(UserError, match=r"started with other settings: batch_size \(8 -> 4\)"):
        distill(config(tmp_path, steps=2, batch_size=4), resume=True, student=tiny_student(), data=data)
    for changed, name in ((dict(syn_text_key="^syn_text_dfn"), "syn_text_key"), (dict(dime_vl="image"), "dime_vl")):
        with pytest.raises(UserError, match=f"started with other settings: {name} "):
            distill(config(tmp_path, steps=2, **changed), resume=True, student=tiny_student(), data=data)
    with pytest.raises(UserError, match="nothing to resume"):
        distill(config(tmp_path / "new", steps=2), resume=True, student=tiny_student(), data=data)


def test_student_crops_are_bicubic_whatever_the_variant(data, tmp_path: Path) -> None:
    """Training crops are resampled bicubically (open_clip's training transform, as the released code), even for a
    student whose inference preprocessing is bilinear (MobileCLIP S0-S2/B, and the tiny test student)."""
    from mobileclip_deploy.registry import get_variant
    from mobileclip_deploy.training.augment import replay_augmentation
    from mobileclip_deploy.training.batches import pick

    student = tiny_student()
    assert student.variant.interpolation == "bilinear"
    assert {get_variant(n).interpolation for n in ("mobileclip-s0", "mobileclip-s2", "mobileclip-b")} == {"bilinear"}
    trainer = Trainer(config(tmp_path), data, student, CPU)
    batch = trainer.batch(0)
    by_uid = {s.uid: s for s in data.records}
    differs = 0
    for uid, pixels in zip(batch.uids, batch.images):
        s = by_uid[uid]
        param = s.param_aug[pick(0, 0, uid, "aug", len(s.param_aug))]
        bicubic = replay_augmentation(s.image, param, 32, "bicubic").float() / 255
        assert torch.equal(pixels, bicubic)
        differs += not torch.equal(pixels, replay_augmentation(s.image, param, 32, "bilinear").float() / 255)
    assert differs == len(batch.uids)
