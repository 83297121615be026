"""Learning configuration, one frozen dataclass shared by training and forecasting."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["LearnConfig"]


@dataclass(frozen=True)
class LearnConfig:
    """Hyper-parameters of meta-training and forecasting.

    Attributes
    ----------
    lags : int
        Length of the lag window fed to the temporal encoder.
    horizon : int
        Forecast steps 1..H.
    query : int
        Query origins per training episode.
    hidden : int
        Backbone width.
    conv : str
        Graph layer (``"sage"``, ``"gat"``, ``"gcn"``).
    meta_batch : int
        Tasks (regions) per meta-batch.
    episodes : int
        Maximum meta-training episodes.
    lr : float
        Adam learning rate.
    val_fraction : float
        Fraction of training regions kept for validation (early stopping).
    val_every, patience : int
        Validate every ``val_every`` episodes; stop after ``patience`` checks without gain.
    seed : int
        Seed for initialization and episode sampling.
    subgraph_hops : int, optional
        Compute each meta-batch on the task regions' k-hop neighbourhood instead of the
        whole graph (1 covers the backbone's single graph layer exactly); for large graphs.
    device : str
        ``"auto"`` (CUDA when present, else CPU), ``"cpu"`` or ``"cuda"``.
    learner : {"ridge", "anil"}
        Per-task adaptation: closed-form ridge head (R2-D2) or ANIL's inner SGD on the
        head (second order). MAML, Reptile and ProtoNets live in
        :mod:`spatialmeta.learn.learners` and are driven by ``learner_episode_loss``.
    """

    lags: int = 12
    horizon: int = 3
    query: int = 12
    hidden: int = 32
    conv: str = "sage"
    meta_batch: int = 16
    episodes: int = 400
    lr: float = 3e-3
    val_fraction: float = 0.15
    val_every: int = 20
    patience: int = 6
    seed: int = 0
    subgraph_hops: int | None = None
    device: str = "auto"
    learner: str = "ridge"

    def to_dict(self) -> dict:
        return asdict(self)
