"""Backbone: a temporal encoder over lag windows, message passing over the region graph, heads.

The graph convolution runs on the disjoint union of one copy of the region graph per
forecast origin (edge indices offset by ``R`` per copy), so a whole meta-batch is a single
torch-geometric forward pass.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv

from spatialmeta.learn.features import CALENDAR_FEATURES, SEASON_SHRINK

__all__ = ["GraphForecaster", "CONVS", "BACKBONE_HIDDEN"]

CONVS = {"sage": SAGEConv, "gat": GATConv, "gcn": GCNConv}
BACKBONE_HIDDEN = 32  # the backbone's width when ``LearnConfig.hidden`` is None


class GraphForecaster(nn.Module):
    """GRU over lags → graph convolution over regions → features, mean and variance heads.

    Parameters
    ----------
    n_covariates : int
        Number of static node covariates (standardized by the caller).
    horizon : int
        Number of steps forecast at once (direct multi-horizon heads).
    hidden : int
        Width of the encoder and the graph layer.
    conv : {"sage", "gat", "gcn"}
        Message-passing layer.
    """

    def __init__(
        self, n_covariates: int, horizon: int, *, hidden: int = BACKBONE_HIDDEN, conv: str = "sage"
    ):
        super().__init__()
        if conv not in CONVS:
            raise ValueError(f"`conv` must be one of {sorted(CONVS)}; got {conv!r}.")
        self.horizon = horizon
        self.hidden = hidden
        self.gru = nn.GRU(input_size=2, hidden_size=hidden, batch_first=True)
        self.context = nn.Sequential(
            nn.Linear(hidden + n_covariates + CALENDAR_FEATURES * horizon, hidden), nn.GELU()
        )
        self.conv = CONVS[conv](hidden, hidden)
        self.mix = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.mean_head = nn.Linear(hidden, horizon)  # global head; adapted per task by the learner
        self.var_head = nn.Linear(hidden, horizon)
        # the seasonal pseudo-count of the input normalization (features.window_stats),
        # fitted on the training regions when training starts and saved with the model
        self.register_buffer("season_shrink", torch.tensor(SEASON_SHRINK, dtype=torch.float64))

    def features(
        self,
        lags: torch.Tensor,
        lag_mask: torch.Tensor,
        calendar: torch.Tensor,
        covariates: torch.Tensor,
        edge_index: torch.Tensor,
        *,
        penultimate: bool = False,
    ) -> torch.Tensor:
        """Node features for every (origin, region): ``(O, R, hidden)``.

        Parameters
        ----------
        lags, lag_mask : ``(O, R, L)``
        calendar : ``(O, 4H)`` sin/cos of the target times' annual and diurnal phases
        covariates : ``(R, C)``
        edge_index : ``(2, E)`` region graph
        penultimate : bool
            Return the activations before the last layer (``last_layer`` maps them to the
            features), for fine-tuning that layer per region.
        """
        o, r, length = lags.shape
        seq = torch.stack([lags * lag_mask, lag_mask], dim=-1).reshape(o * r, length, 2)
        _, h = self.gru(seq)
        h = h[-1].reshape(o, r, self.hidden)
        ctx = torch.cat(
            [h, covariates.unsqueeze(0).expand(o, r, -1), calendar.unsqueeze(1).expand(o, r, -1)],
            dim=-1,
        )
        h0 = self.context(ctx).reshape(o * r, self.hidden)
        offsets = (torch.arange(o, device=edge_index.device) * r).repeat_interleave(
            edge_index.shape[1]
        )
        big = edge_index.repeat(1, o) + offsets
        h1 = self.conv(h0, big)
        z = self.mix[1](self.mix[0](torch.cat([h0, h1], dim=-1)))
        if not penultimate:
            z = self.last_layer(z)
        return z.reshape(o, r, self.hidden)

    @property
    def last_layer(self) -> nn.Linear:
        """The last layer of the feature stack (penultimate activations → features)."""
        return self.mix[2]

    def variance(self, feats: torch.Tensor) -> torch.Tensor:
        """Predictive variance (normalized units), ``(..., H)``."""
        return nn.functional.softplus(self.var_head(feats)) + 1e-3
