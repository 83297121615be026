"""Losses of Gaussian forecasts on normalized targets, masked by what is known (torch)."""

from __future__ import annotations

import torch

__all__ = ["task_nll", "gaussian_nll"]


def task_nll(
    y: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """Masked mean Gaussian NLL of each task: ``(B, N, H)`` inputs → ``(B,)``.

    The constant is dropped, as in :func:`gaussian_nll`. Summing
    it over tasks gives a loss whose gradient with respect to task ``b``'s own parameters
    is the gradient of task ``b``'s loss alone — which is what lets one autograd call run
    the inner loops of all tasks at once.
    """
    nll = _nll(y, mean, var) * mask
    return nll.sum(dim=(-2, -1)) / mask.sum(dim=(-2, -1)).clamp_min(1.0)


def _nll(y, mean, var) -> torch.Tensor:
    return 0.5 * (torch.log(var) + (y - mean) ** 2 / var)


def gaussian_nll(y, mean, var, mask) -> torch.Tensor:
    """Masked mean Gaussian negative log-likelihood over every task, origin and horizon
    (constant dropped)."""
    return (_nll(y, mean, var) * mask).sum() / mask.sum().clamp_min(1.0)
