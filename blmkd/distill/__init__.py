"""Knowledge distillation: teacher → student losses and their schedule."""

from blmkd.distill.losses import DistillationLoss, HintLoss, KDLoss, lambda_schedule

__all__ = ["DistillationLoss", "HintLoss", "KDLoss", "lambda_schedule"]
