"""Text features of records: TF-IDF of title and abstract, fitted without labels.

ASReview's default extractor is word uni- and bigrams with sublinear term frequency,
``max_df = 0.95``, over title + abstract, fitted on all of a review's records (their text
is known before any label). :class:`TextFeatures` is that, by scikit-learn, and can add
character n-grams within word boundaries (``char_wb``, 3 to 5), which match word forms
across spelling variants and are the issue's "word and character n-grams". Nothing is
downloaded. Records without title and abstract get an all-zero row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

__all__ = ["TextFeatures"]


@dataclass
class TextFeatures:
    """TF-IDF features: word n-grams ``word_ngrams`` (default 1-2) and, with ``chars``,
        character n-grams ``char_ngrams`` (default 3-5), each L2-normalized and the blocks
        stacked side by side (each block scaled by ``1 / sqrt(blocks)`` so rows stay unit
        length). ``max_df``/``min_df``/``stop_words`` (scikit-learn's built-in English list,
    no download) as scikit-learn's."""

    word_ngrams: tuple = (1, 2)
    chars: bool = False
    char_ngrams: tuple = (3, 5)
    max_df: float = 0.95
    min_df: int = 1
    sublinear_tf: bool = True
    stop_words: str | None = None

    def fit_transform(self, texts) -> sparse.csr_matrix:
        """Fit on ``texts`` (every record of a review, or of several) and transform them."""
        texts = [str(t) for t in np.asarray(texts, dtype=object)]
        blocks = [TfidfVectorizer(ngram_range=tuple(self.word_ngrams), max_df=self.max_df,
                                  min_df=self.min_df, sublinear_tf=self.sublinear_tf,
                                  stop_words=self.stop_words)]  # fmt: skip
        if self.chars:
            blocks.append(TfidfVectorizer(analyzer="char_wb", ngram_range=tuple(self.char_ngrams),
                                          max_df=self.max_df, min_df=max(self.min_df, 2),
                                          sublinear_tf=True))  # fmt: skip
        self.vectorizers_ = []
        mats = []
        for vec in blocks:
            try:
                mats.append(vec.fit_transform(texts))
                self.vectorizers_.append(vec)
            except ValueError:  # every text empty (or all terms pruned): a zero block
                mats.append(sparse.csr_matrix((len(texts), 1)))
                self.vectorizers_.append(None)
        X = sparse.hstack(mats, format="csr") / np.sqrt(len(mats))
        return X.astype(np.float64)
