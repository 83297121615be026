"""Meta-learned screeners: a text encoder trained across earlier reviews, and the few-shot
heads that adapt it to a new review from a handful of labels.

The encoder (:class:`TextEncoder`) works on TF-IDF word uni- and bigrams (a vocabulary
fitted on the training reviews' text) and is meta-trained with prototypical-network
episodes (Snell et al. 2017): in each episode a training review gives a support set of a
few included and a few excluded records and a query set of others; the query records are
classified by their cosine similarity to the two class prototypes (the support means),
and the cross-entropy of that classification is minimized over many episodes of many
reviews. Episodes are drawn class-balanced (as many included as excluded query records,
whatever the review's prevalence): that is how the 1-in-100 imbalance of screening is
handled in training. Two kinds (``EncoderConfig.kind``):

* ``"terms"`` (the default): one learned weight per term (log-weights from 0, a penalty
  toward 0), the encoding the reweighted TF-IDF. Few parameters, and each word's weight
  is learned from every review that uses it, so what transfers (study-design words, say)
  is what it learns: on synthetic reviews whose topics differ and whose inclusion shows
  in shared design words, it weights those 5x and the one-shot ranking of unseen reviews
  improves (tests/screening/test_meta.py);
* ``"projection"``: a linear projection to ``dim`` dimensions from latent semantic
  analysis (a truncated SVD of the training corpus), a penalty toward that start. It has
  terms x dim parameters and memorizes its training reviews: on the same synthetic
  reviews its one-shot AUC on the training reviews went to 1.0 while unseen ones fell
  from 0.66 to 0.59.

The heads, each a :class:`~spatialmeta.screening.screeners.Screener` whose ``meta_fit``
trains the encoder on the other reviews (the heads of one fold share the training):

* :class:`ProtoNetScreener`: score = cosine to the included prototype minus cosine to the
  excluded one (adaptation is two means);
* :class:`MatchingScreener`: matching networks (Vinyals et al. 2016): attention over the
  labelled records by scaled cosine similarity, class-balanced (each class's attention
  mass divided by its size), the log-ratio of the two masses;
* :class:`ANILScreener`: ANIL (Raghu et al. 2020): the meta-learned body frozen, a new
  linear head per review (balanced logistic regression on the encoding, fitted to
  convergence: with the body frozen the head is convex, so its initial value, which MAML
  would meta-learn, does not matter);
* :class:`WeightedSVMScreener`: ASReview's own head and features (linear SVM, balanced
  weights, the review's TF-IDF) with the learned term weights applied: what earlier
  reviews taught about words, carried into the per-review model.

Nothing is downloaded: the encoder is learned here from the reviews given.

References
----------
Snell, J., Swersky, K., Zemel, R. (2017). Prototypical networks for few-shot learning.
NeurIPS. Vinyals, O. et al. (2016). Matching networks for one shot learning. NeurIPS.
Raghu, A. et al. (2020). Rapid learning or feature reuse? Towards understanding the
effectiveness of MAML. ICLR.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.svm import LinearSVC

from spatialmeta.screening.features import TextFeatures
from spatialmeta.screening.screeners import Screener, balanced_weights

__all__ = [
    "EncoderConfig",
    "TextEncoder",
    "train_encoder",
    "MetaScreener",
    "ProtoNetScreener",
    "MatchingScreener",
    "ANILScreener",
    "WeightedSVMScreener",
]


@dataclass(frozen=True)
class EncoderConfig:
    """Settings of the encoder and its meta-training: ``kind`` ("terms" or
    "projection", see the module), ``dim`` output dimensions of a projection,
    ``max_features``/``min_df`` of the vocabulary, ``steps`` of Adam at ``lr`` over
    ``episodes`` episodes a step, each with ``shots`` (included, excluded) support and
    ``queries`` query records per class, ``anchor`` the penalty weight toward the start
    (weights 1, or the LSA projection), ``scale`` the initial cosine temperature,
    ``seed``."""

    kind: str = "terms"
    dim: int = 128
    max_features: int = 60_000
    min_df: int = 2
    steps: int = 300
    lr: float = 2e-2
    episodes: int = 16
    shots: tuple = (3, 10)
    queries: int = 8
    anchor: float = 1e-3
    scale: float = 10.0
    seed: int = 0

    def __post_init__(self):
        if self.kind not in ("terms", "projection"):
            raise ValueError(
                f"EncoderConfig: `kind` must be 'terms' or 'projection'; got {self.kind!r}."
            )


class TextEncoder:
    """A fitted encoder: ``vectorizer`` (TF-IDF on the training reviews' vocabulary) and
    ``W``, one weight per term (1-D) or a projection (terms x dim); ``scale`` the learned
    cosine temperature. :meth:`encode` maps texts to unit-length rows (sparse for term
    weights, dense for a projection)."""

    def __init__(self, vectorizer: TfidfVectorizer, W: np.ndarray, scale: float):
        self.vectorizer, self.W, self.scale = vectorizer, W, float(scale)

    def encode(self, texts) -> np.ndarray:
        """Unit-length encodings of ``texts`` (records without known words: zero rows)."""
        X = self.vectorizer.transform([str(t) for t in np.asarray(texts, dtype=object)])
        if self.W.ndim == 1:  # learned term weights: a reweighted TF-IDF, unit rows
            X = sparse.csr_matrix(X.multiply(self.W[None, :]))
            norm = np.sqrt(np.asarray(X.multiply(X).sum(1))).ravel()
            return sparse.diags(1 / np.where(norm > 0, norm, 1.0)) @ X
        return _unit(np.asarray(X @ self.W))


def _unit(Z: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(Z, axis=-1, keepdims=True)
    return Z / np.where(norm > 0, norm, 1.0)


def train_encoder(texts, labels, groups, config: EncoderConfig = EncoderConfig(),
                  progress: bool = False) -> TextEncoder:  # fmt: skip
    """Meta-train a :class:`TextEncoder` on labelled records of several reviews
    (``texts``, ``labels`` 1/0, ``groups`` the review of each record) by prototypical
    episodes. Reviews with fewer than two included or excluded records cannot make an
    episode and only lend their text to the vocabulary (and the LSA start)."""
    import torch

    texts = [str(t) for t in np.asarray(texts, dtype=object)]
    labels, groups = np.asarray(labels), np.asarray(groups)
    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=config.min_df, max_df=0.95,
                          sublinear_tf=True, max_features=config.max_features)  # fmt: skip
    X = vec.fit_transform(texts).astype(np.float32).tocsr()
    # class pools per review, the episodes' sources
    pools = []
    for g in np.unique(groups):
        inc = np.flatnonzero((groups == g) & (labels == 1))
        exc = np.flatnonzero((groups == g) & (labels == 0))
        if inc.size >= 2 and exc.size >= 2:
            pools.append((inc, exc))
    if not pools and config.steps > 0:
        raise ValueError("meta-training needs a review with at least two included and two "
                         f"excluded records; none of the {np.unique(groups).size} given has "
                         "(add labelled reviews, or screen with asreview_default).")  # fmt: skip
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    if config.kind == "projection":  # from latent semantic analysis of the corpus
        svd = TruncatedSVD(config.dim, random_state=config.seed, algorithm="randomized", n_iter=4)
        anchor = torch.tensor(svd.fit(X).components_.T.astype(np.float32))
    else:  # one log-weight per term, starting at 0 (plain TF-IDF)
        anchor = torch.zeros(X.shape[1])
    W = anchor.clone().requires_grad_(True)
    log_scale = torch.tensor(np.log(config.scale), dtype=torch.float32, requires_grad=True)
    opt = torch.optim.Adam([W, log_scale], lr=config.lr)
    s_in, s_ex = config.shots
    q = config.queries
    steps = range(config.steps)
    if progress:
        from tqdm import tqdm

        steps = tqdm(steps, desc="meta-training the screening encoder", unit="step")
    for _ in steps:
        rows, shapes = [], []
        for e in rng.integers(len(pools), size=config.episodes):
            inc, exc = pools[e]
            k_in = min(s_in, inc.size - 1)  # keep one included record for the query
            qi = min(q, inc.size - k_in)
            a = rng.choice(inc, k_in + qi, replace=False)
            b = rng.choice(exc, min(s_ex + q, exc.size), replace=False)
            k_ex = min(s_ex, b.size - 1)
            rows.append(np.concatenate([a[:k_in], b[:k_ex], a[k_in:], b[k_ex : k_ex + q]]))
            shapes.append((k_in, k_ex, qi, min(q, b.size - k_ex)))
        # every episode of the step at once: each record's episode and role (0 support
        # included, 1 support excluded, 2 query included, 3 query excluded)
        sizes = np.array(shapes)
        ep = np.repeat(np.arange(len(rows)), sizes.sum(1))
        role = np.concatenate([np.repeat([0, 1, 2, 3], sz) for sz in sizes])
        z, extra = _encode_rows(X[np.concatenate(rows)], W, config.kind, torch)
        support = torch.tensor(role < 2)
        slot = torch.tensor(ep * 2 + role % 2)[support]  # (episode, class) of support rows
        sums = torch.zeros(2 * len(rows), z.shape[1]).index_add(0, slot, z[support])
        energy = (sums**2).sum(1) + torch.zeros(2 * len(rows)).index_add(0, slot, extra[support])
        protos = sums / energy.clamp_min(1e-12).sqrt()[:, None]  # (episode, class) rows
        query = torch.tensor(role >= 2)
        eq = torch.tensor(ep)[query]
        cos = z[query] @ protos.T  # one product; each query keeps its own episode's pair
        logits = log_scale.exp() * cos.gather(1, torch.stack([2 * eq, 2 * eq + 1], 1))
        target = torch.tensor(role[role >= 2] - 2)
        counts = torch.tensor(sizes[:, 2:], dtype=torch.float32)[eq, target]
        ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
        loss = (ce * 0.5 / counts).sum()  # each class half of its episode's loss
        loss = loss / len(shapes) + config.anchor * ((W - anchor) ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    W = W.detach().numpy()
    return TextEncoder(
        vec, W if config.kind == "projection" else np.exp(W), float(log_scale.exp().detach())
    )


def _encode_rows(Xe, W, kind, torch):
    """Unit-length encodings of a step's records (``Xe``: their TF-IDF rows) as a
    differentiable function of the parameters ``W`` (a projection, terms x dim, or term
    log-weights), in the form the episode loss needs: ``(z, extra)``, ``z`` the
    coordinates that enter dot products between records and ``extra`` each record's
    squared length outside them.

    With term weights, a term found in one record of the step enters no dot product
    between records (nor between a record and a prototype of other records): only its
    record's length, and its class prototype's length (no other record shares it, so no
    cross term). So ``z`` holds only the terms two or more of the step's records share (a
    few thousand of the vocabulary; a dense block that small back-propagates in ms) and
    ``extra`` the rest, exactly."""
    Xb = Xe.tocoo()
    if kind == "projection":
        ij = torch.tensor(np.vstack([Xb.row, Xb.col]))
        A = torch.sparse_coo_tensor(ij, Xb.data, Xb.shape, dtype=torch.float32)
        z = torch.nn.functional.normalize(torch.sparse.mm(A, W), dim=1)
        return z, torch.zeros(Xb.shape[0])
    counts = np.bincount(Xb.col, minlength=Xb.shape[1])
    shared = np.flatnonzero(counts >= 2)
    single = counts[Xb.col] == 1
    v = torch.tensor(Xb.data[single], dtype=torch.float32) * W[torch.tensor(Xb.col[single])].exp()
    lone = torch.zeros(Xb.shape[0]).index_add(0, torch.tensor(Xb.row[single]), v**2)
    dense = torch.tensor(Xe[:, shared].toarray(), dtype=torch.float32)
    zs = dense * W[torch.tensor(shared)].exp()
    norm2 = ((zs**2).sum(1) + lone).clamp_min(1e-12)
    return zs / norm2.sqrt()[:, None], lone / norm2


class _EncodedFeatures:
    """The features of the encoder-based heads: the encoding of each record."""

    def __init__(self, screener):
        self.screener = screener

    def fit_transform(self, texts):
        return self.screener.encoder_.encode(texts)


class MetaScreener(Screener):
    """Base of the meta-learned screeners: ``meta_fit`` trains the encoder on the other
    reviews' labelled records (or takes a trained ``encoder``); ``features`` encode."""

    name = "meta"
    meta_learned = True

    def __init__(self, config: EncoderConfig = EncoderConfig(), encoder: TextEncoder | None = None):
        self.config = config
        self.encoder_ = encoder
        self.features = _EncodedFeatures(self)

    def meta_fit(self, tasks, reviews) -> None:
        import hashlib

        content = hashlib.sha1(tasks.label.tobytes())  # same records, labels and text
        for part in (tasks.review, tasks.record_id, tasks.title, tasks.abstract):
            content.update("\x1f".join(map(str, part)).encode())
        key = (content.hexdigest(), tuple(str(r) for r in reviews), self.config)
        if key not in _TRAINED:  # the heads of one fold share one meta-training
            rows = np.concatenate([tasks.rows(r) for r in reviews])
            keep = rows[tasks.label[rows] >= 0]
            _TRAINED.clear()  # the last fold's encoder only: they are tens of MB
            _TRAINED[key] = train_encoder(tasks.text()[keep], tasks.label[keep],
                                          tasks.review[keep], self.config)  # fmt: skip
        self.encoder_ = _TRAINED[key]


_TRAINED: dict = {}


class ProtoNetScreener(MetaScreener):
    """Prototypical network: cosine to the included prototype minus to the excluded."""

    name = "protonet"

    def fit(self, X, y):
        y = np.asarray(y)
        if not ((y == 1).any() and (y == 0).any()):
            balanced_weights(y, 1.0)  # raises the screeners' error
        self.protos_ = _unit(np.vstack([np.asarray(X[y == 1].mean(0)).ravel(),
                                        np.asarray(X[y == 0].mean(0)).ravel()]))  # fmt: skip
        return self

    def scores(self, X):
        s = np.asarray(X @ self.protos_.T)
        return s[:, 0] - s[:, 1]


class MatchingScreener(MetaScreener):
    """Matching network: class-balanced attention over the labelled records."""

    name = "matching"

    def fit(self, X, y):
        y = np.asarray(y)
        balanced_weights(y, 1.0)  # at least one of each class
        self.X_, self.y_ = X, y
        return self

    def scores(self, X):
        scale = self.encoder_.scale
        a = X @ self.X_.T
        a = scale * (a.toarray() if sparse.issparse(a) else a)
        a = a - a.max(axis=1, keepdims=True)
        e = np.exp(a)
        inc = e[:, self.y_ == 1].mean(1)
        exc = e[:, self.y_ == 0].mean(1)
        tiny = np.finfo(float).tiny
        return np.log(inc + tiny) - np.log(exc + tiny)


class ANILScreener(MetaScreener):
    """ANIL: the meta-learned body frozen, a balanced logistic head fitted per review."""

    name = "anil"

    def __init__(self, config: EncoderConfig = EncoderConfig(), encoder=None, C: float = 1.0):
        super().__init__(config, encoder)
        self.C = C

    def fit(self, X, y):
        self.model_ = LogisticRegression(C=self.C, solver="liblinear")
        self.model_.fit(X, y, sample_weight=balanced_weights(y, 1.0))
        return self

    def scores(self, X):
        return self.model_.decision_function(X)


class _WeightedTfidf:
    """The review's own TF-IDF (ASReview's features) with each term's column scaled by
    the encoder's learned weight (1 for terms the training reviews never had), rows
    back to unit length."""

    def __init__(self, screener):
        self.screener, self.tfidf = screener, TextFeatures()

    def fit_transform(self, texts):
        X = self.tfidf.fit_transform(texts)
        vec = self.tfidf.vectorizers_[0]
        if vec is None:
            return X
        enc = self.screener.encoder_
        known = enc.vectorizer.vocabulary_
        terms = vec.get_feature_names_out()
        pos = np.array([known.get(t, -1) for t in terms])
        g = np.where(pos >= 0, enc.W[np.maximum(pos, 0)], 1.0) ** self.screener.power
        X = sparse.csr_matrix(X.multiply(g[None, :]))
        norm = np.sqrt(np.asarray(X.multiply(X).sum(1))).ravel()
        return sparse.diags(1 / np.where(norm > 0, norm, 1.0)) @ X


class WeightedSVMScreener(MetaScreener):
    """ASReview's head (linear SVM, ``C``, balanced ``ratio``) on the review's TF-IDF
    reweighted by the term weights meta-learned across earlier reviews (raised to
    ``power``): what the encoder learned about which words decide inclusion, carried into
    the per-review model. Needs ``kind="terms"``."""

    name = "weighted svm"

    def __init__(self, config: EncoderConfig = EncoderConfig(), encoder=None, *,
                 power: float = 1.0, C: float = 0.11, ratio: float = 9.8):  # fmt: skip
        if config.kind != "terms":
            raise ValueError("WeightedSVMScreener: `config.kind` must be 'terms' (term weights).")
        super().__init__(config, encoder)
        self.C, self.ratio, self.power = C, ratio, power
        self.features = _WeightedTfidf(self)

    def fit(self, X, y):
        self.model_ = LinearSVC(C=self.C, loss="squared_hinge", random_state=0)
        self.model_.fit(X, y, sample_weight=balanced_weights(y, self.ratio))
        return self

    def scores(self, X):
        return self.model_.decision_function(X)
