"""Learning configuration, one frozen dataclass shared by training and forecasting."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["LearnConfig", "LEARNERS", "FINETUNE"]

LEARNERS = ("ridge", "anil", "maml", "fomaml", "reptile")
FINETUNE = ("head", "head+last")


@dataclass(frozen=True)
class LearnConfig:
    """Hyper-parameters of meta-training, global training, fine-tuning and forecasting.

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
        Maximum training steps (meta-training episodes, or mini-batches of the global network).
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
    learner : {"ridge", "anil", "maml", "fomaml", "reptile"}
        Per-task adaptation: closed-form ridge head (R2-D2), ANIL's inner SGD on the head
        (second order), MAML over every backbone parameter (second order; ``"fomaml"``:
        first order) or Reptile over every backbone parameter. MAML and Reptile adapt
        each task with its own graph forward (a Python loop over tasks, inherent to them).
    inner_steps, inner_lr : optional
        Inner-loop SGD steps and step size of ANIL, MAML and Reptile (None: the learner's
        default).
    finetune : {"head", "head+last"}
        What the ``global_finetuned`` baseline fits on a held-out region's support window:
        the mean and variance heads, or those and the backbone's last layer.
    finetune_steps, finetune_lr : int, float
        Gradient steps (Adam, per-region moments) and step size of that fine-tuning (all
        held-out regions at once).
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
    inner_steps: int | None = None
    inner_lr: float | None = None
    finetune: str = "head"
    finetune_steps: int = 10
    finetune_lr: float = 3e-4

    def to_dict(self) -> dict:
        return asdict(self)
