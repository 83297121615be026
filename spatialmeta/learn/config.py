"""Learning configuration, one frozen dataclass shared by training and forecasting."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["LearnConfig", "LEARNERS", "FINETUNE", "resolve_device"]

# the names of ``spatialmeta.learn.algorithms.REGISTRY`` (a test holds the two equal; the
# configuration sits below the algorithms and cannot import them)
LEARNERS = ("hier", "ridge", "anil", "maml", "fomaml", "reptile", "protonet")
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
    query_span : int, optional
        Steps after the support window over which an episode's ``query`` origins are
        spread evenly (``query``: consecutive origins). None: as long as the test period
        (the origins from ``test_start`` to the end of the record), so that training
        episodes reach as far past the support window as the forecasts do. Training and
        validation windows end ``query_span + horizon - 1`` steps before ``test_start``.
    hidden : int, optional
        Width of the learner's network: the graph backbone's (default 32) or, for
        ``"hier"``, its prior network's (default 16). None: that default.
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
    learner : {"hier", "ridge", "anil", "maml", "fomaml", "reptile", "protonet"}
        The meta-learner, by its name in ``spatialmeta.learn.algorithms.REGISTRY`` (one
        module each under ``learn/algorithms/``): ``"hier"``, a conjugate Bayesian update
        of the region's seasonal climatology and anomaly persistence from a prior that a
        graph network predicts from the neighbours' records and covariates (it conditions
        on the whole known record and needs no backbone); ``"ridge"``, a closed-form
        Bayesian ridge head (R2-D2); ``"anil"``, inner SGD on the head (second order);
        ``"maml"`` over every backbone parameter (second order; ``"fomaml"``: first
        order); ``"reptile"`` over every backbone parameter; ``"protonet"``, prototypes of
        the support window's target classes, forecasting by the mixture of their means.
        MAML and Reptile adapt each task with its own graph forward (a Python loop over
        tasks, inherent to them).
    inner_steps, inner_lr : optional
        Inner-loop SGD steps and step size of ANIL, MAML and Reptile (None: the learner's
        default).
    finetune : {"head", "head+last"}
        What the ``global_finetuned`` baseline fits on a held-out region's support window:
        the mean and variance heads, or those and the backbone's last layer.
    finetune_steps, finetune_lr : int, float
        Gradient steps (Adam, per-region moments) and step size of that fine-tuning (all
        held-out regions at once).
    pretrain : bool
        Meta-train from the supervised global network (:func:`~spatialmeta.learn.train.
        global_train`, trained first unless ``meta_train`` is given it as ``init``) rather
        than from a random initialization: the backbone learns the shared dynamics from
        every window of every training region, then meta-training learns the per-region
        adaptation on top of it (Chen et al. 2021, Meta-Baseline, arXiv:2003.04390).
    pretrained_lr : float
        Learning rate of a pretrained backbone during meta-training, relative to ``lr``.
    prior_lr : float
        Learning rate of the adaptation's own parameters (the ridge head's log prior
        precisions), relative to ``lr``: a handful of scale parameters, learned from every
        episode rather than picked on the single validation period.
    finetune_select : bool
        Choose the ``global_finetuned`` baseline's steps and step size on the validation
        regions and period (:func:`~spatialmeta.learn.finetune.select_finetune`; the
        configured ``finetune_steps``/``finetune_lr`` are among the candidates) rather
        than take them as given.
    members : int
        Members of the ``hier`` learner's seed ensemble (a deep ensemble, Lakshminarayanan
        et al. 2017): member ``j`` is trained with seed ``seed + 1000 j`` (its own
        validation regions, episode pool and initialization), and the forecast is the
        members' Gaussian mixture, moment-matched. 1 trains a single network. The
        learners on a backbone train one network whatever this says.
    """

    lags: int = 12
    horizon: int = 3
    query: int = 12
    query_span: int | None = None
    hidden: int | None = None
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
    learner: str = "hier"
    inner_steps: int | None = None
    inner_lr: float | None = None
    finetune: str = "head"
    finetune_steps: int = 10
    finetune_lr: float = 3e-4
    pretrain: bool = True
    pretrained_lr: float = 0.1
    prior_lr: float = 10.0
    finetune_select: bool = True
    members: int = 3

    def to_dict(self) -> dict:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """``"auto"`` is CUDA when a GPU is present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} requested but no CUDA GPU is available; use device='cpu'."
        )
    return torch.device(name)
