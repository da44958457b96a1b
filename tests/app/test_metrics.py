"""ROC-AUC against scikit-learn's on the same scores (ties included)."""

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from fedge.app.metrics import roc_auc


class _Scores(nn.Module):
    """Logits whose class-1 softmax is a given score per row (the row index is the input)."""

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.scores = torch.tensor(scores, dtype=torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.scores[x[:, 0].long()]
        return torch.stack([torch.zeros_like(s), torch.logit(s)], dim=1)


def test_roc_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    scores = np.round(np.clip(y * 0.3 + rng.random(300) * 0.7, 0.01, 0.99), 1)  # many ties
    x = torch.arange(300, dtype=torch.float32)[:, None]
    got = roc_auc(_Scores(scores), x, torch.from_numpy(y), batch_size=64)
    assert abs(got - roc_auc_score(y, scores)) < 1e-6


def test_one_class_gives_one_half() -> None:
    x = torch.arange(5, dtype=torch.float32)[:, None]
    assert roc_auc(_Scores(np.full(5, 0.7)), x, torch.zeros(5, dtype=torch.long)) == 0.5
