"""Knowledge distillation from a trained teacher to a (smaller) student.

Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", NIPS-W 2015. With
teacher logits z', student logits z and temperature T, on the chosen inputs (target batch, or
source and target):

    L = (1 - alpha) CE(z_s, y_s) + alpha T^2 KL( softmax(z'/T) || softmax(z/T) )

The T^2 factor keeps the soft term's gradients on the scale of the hard one. The teacher is
any shiftray checkpoint (built from its own spec.yaml), frozen, or ``zeroshot:<CLIP name or
folder>``: CLIP's zero-shot classifier of the job's class names
(`shiftray.models.zeroshot.ZeroShotTeacher`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shiftray.errors import UserInputError
from shiftray.methods.base import AdaptationMethod, StepOutput
from shiftray.methods.layers import frozen
from shiftray.methods.params import DistillParams  # torch-free
from shiftray.models.load import check_identity, load_trained_model, resolve_checkpoint


def kd_loss(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    return (
        F.kl_div(F.log_softmax(student / t, 1), F.softmax(teacher / t, 1), reduction="batchmean")
        * t
        * t
    )


def _zero_shot_teacher(name: str, info):
    from shiftray.models.zeroshot import ZeroShotCLIP, ZeroShotTeacher

    if info.job is None:
        raise UserInputError("method.params.teacher zeroshot:... needs the job's class names")
    try:
        return ZeroShotTeacher(ZeroShotCLIP.from_pretrained(name, info.job.classes))
    except OSError as e:
        raise UserInputError(f"method.params.teacher zeroshot:{name}: cannot load it ({e})") from None


class Distill(AdaptationMethod):
    """Soft-target distillation (Hinton et al. 2015) from a frozen teacher checkpoint."""

    Params = DistillParams
    needs_raw_inputs = True  # the teacher is a whole model: it reads raw inputs

    def __init__(self, params: DistillParams, info) -> None:
        super().__init__(params, info)
        if params.teacher.startswith("zeroshot:"):  # CLIP, zero-shot on the job's class names
            self.teacher = _zero_shot_teacher(params.teacher.removeprefix("zeroshot:"), info)
            frozen(self.teacher)
            return
        if info.job is not None:  # a teacher of this job's domains and classes
            fields = ("benchmark", "source", "target", "classes")
            check_identity(
                resolve_checkpoint(params.teacher), info.job, fields, "method.params.teacher"
            )
        self.teacher, labels = load_trained_model(params.teacher)
        if len(labels["classes"]) != info.num_classes:
            raise UserInputError(
                f"method.params.teacher has {len(labels['classes'])} classes, the data {info.num_classes}"
            )
        frozen(self.teacher)

    def forward(self, model, batch, progress):
        n_s = len(batch.x_s)
        logits, _ = model(torch.cat([batch.x_s, batch.x_t]))
        hard = F.cross_entropy(logits[:n_s], batch.y_s)
        self.teacher.eval()
        sl = slice(n_s, None) if self.params.inputs == "target" else slice(None)
        with torch.no_grad():
            t_logits = self.teacher(torch.cat([batch.x_s, batch.x_t])[sl])[0]
        soft = kd_loss(logits[sl], t_logits, self.params.temperature)
        a = self.params.alpha
        return StepOutput(
            (1 - a) * hard + a * soft, {"cls_loss": hard.detach(), "transfer_loss": soft.detach()}
        )
