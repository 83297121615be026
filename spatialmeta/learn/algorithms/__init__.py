"""The meta-learners, one module each, and the registry that names them.

``REGISTRY`` maps every name ``LearnConfig.learner`` accepts to its class (and the settings
the name implies); importing this package registers them all.

==========  =====================================================  ==========================
name        class                                                  module
==========  =====================================================  ==========================
hier        :class:`~.hier.HierarchicalLearner` (the default)      ``algorithms/hier.py``
ridge       :class:`~.ridge.RidgeMetaLearner`                      ``algorithms/ridge.py``
anil        :class:`~.anil.ANILLearner`                            ``algorithms/anil.py``
maml        :class:`~.maml.MAMLLearner`                            ``algorithms/maml.py``
fomaml      :class:`~.maml.MAMLLearner` (``first_order=True``)     ``algorithms/maml.py``
reptile     :class:`~.reptile.ReptileLearner`                      ``algorithms/reptile.py``
protonet    :class:`~.protonet.ProtoNetLearner`                    ``algorithms/protonet.py``
==========  =====================================================  ==========================

The global network (:class:`~.global_net.GlobalLearner`, the ``global`` baselines) shares
the base but is not a meta-learner, so it is not in the registry.
"""

from spatialmeta.learn.algorithms.anil import ANILLearner
from spatialmeta.learn.algorithms.base import (
    REGISTRY,
    Learner,
    build_learner,
    learner_entry,
    register,
)
from spatialmeta.learn.algorithms.global_net import GlobalLearner
from spatialmeta.learn.algorithms.hier import HierarchicalLearner
from spatialmeta.learn.algorithms.maml import MAMLLearner
from spatialmeta.learn.algorithms.protonet import ProtoNetLearner
from spatialmeta.learn.algorithms.reptile import ReptileLearner
from spatialmeta.learn.algorithms.ridge import RidgeMetaLearner

__all__ = [
    "REGISTRY",
    "Learner",
    "build_learner",
    "learner_entry",
    "register",
    "HierarchicalLearner",
    "RidgeMetaLearner",
    "ANILLearner",
    "MAMLLearner",
    "ReptileLearner",
    "ProtoNetLearner",
    "GlobalLearner",
]
