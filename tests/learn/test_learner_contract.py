"""Every registered learner passes the shared contract (tests/learn/learner_checks.py)."""

import pytest

from spatialmeta.learn.algorithms import REGISTRY

from .learner_checks import assert_learner

# per-learner settings that keep the contract run short; the contract itself is the same
FAST = {
    "maml": {"inner_steps": 1},
    "fomaml": {"inner_steps": 1},
    "reptile": {"inner_steps": 2},
}


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_learner_contract(name, tmp_path):
    figures = assert_learner(name, tmp_path, **FAST.get(name, {}))
    short, long = figures["support_rmse"]
    assert long < short
