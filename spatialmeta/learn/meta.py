"""Meta-learner: a differentiable closed-form ridge head adapted per task (R2-D2 style).

Each task (region) adapts the backbone's global mean head by ridge regression of its
support-window residuals on the backbone features, solved in closed form for all tasks of
a meta-batch at once (one batched linear solve, no Python loop over tasks). The ridge
penalty is meta-learned, and gradients flow through the solve into the backbone.

References
----------
Bertinetto, L., Henriques, J. F., Torr, P. H. S., & Vedaldi, A. (2019). Meta-learning with
differentiable closed-form solvers. ICLR. arXiv:1805.08136
"""

from __future__ import annotations

import torch
from torch import nn

from spatialmeta.learn.model import GraphForecaster

__all__ = ["RidgeMetaLearner"]


class RidgeMetaLearner(nn.Module):
    """Backbone plus a per-task ridge correction of its mean head.

    Parameters
    ----------
    backbone : GraphForecaster
    log_lambda : float
        Initial log ridge penalty (meta-learned).
    """

    def __init__(self, backbone: GraphForecaster, log_lambda: float = 4.0):
        super().__init__()
        self.backbone = backbone
        self.log_lambda = nn.Parameter(torch.tensor(float(log_lambda)))

    def adapt(self, feats: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Closed-form ridge correction for a batch of tasks.

        Parameters
        ----------
        feats : ``(B, N, d)`` support features
        target : ``(B, N, H)`` support targets (normalized)
        mask : ``(B, N, H)`` which targets are known

        Returns
        -------
        torch.Tensor
            ``(B, H, d + 1)`` coefficients (features and intercept) per task and horizon.
        """
        b, n, d = feats.shape
        x = torch.cat([feats, feats.new_ones(b, n, 1)], dim=-1)  # (B, N, d+1)
        resid = (target - self.backbone.mean_head(feats)) * mask  # (B, N, H)
        m = mask.transpose(1, 2)  # (B, H, N)
        gram = torch.einsum("bni,bhn,bnj->bhij", x, m, x)  # (B, H, d+1, d+1)
        rhs = torch.einsum("bni,bnh->bhi", x, resid)  # masked rows are zero already
        eye = torch.eye(d + 1, dtype=feats.dtype, device=feats.device)
        coef = torch.linalg.solve(gram + torch.exp(self.log_lambda) * eye, rhs.unsqueeze(-1))
        return coef.squeeze(-1)

    def predict(
        self, feats: torch.Tensor, coef: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance ``(B, N, H)`` for query features ``(B, N, d)``; ``coef=None`` is unadapted."""
        mean = self.backbone.mean_head(feats)
        if coef is not None:
            x = torch.cat([feats, feats.new_ones(*feats.shape[:-1], 1)], dim=-1)
            mean = mean + torch.einsum("bni,bhi->bnh", x, coef)
        return mean, self.backbone.variance(feats)
