"""Declarative loss specs: say which outputs to train and how, instead of writing glue.

A model returns predictions; a spec says what to minimize::

    training_net = multiloss.attach(model, [
        multiloss.Attach("class", CrossEntropy()),
        multiloss.Scaled(multiloss.Port("kl"), KLAnneal(10_000)),
        multiloss.Maximize(multiloss.Port("entropy")),
    ])
    losses = training_net(batch)      # NamedLosses: raw values and weights
    training_net.net                  # the model, untouched

See ``docs/specs.md`` for the grammar and the rules of ``Automatic``.
"""

from multiloss.spec.base import Spec, SpecLike, flatten
from multiloss.spec.errors import AutomaticError, MissingKeyError
from multiloss.spec.explain import ExplainedLoss, Explanation, explain
from multiloss.spec.forms import Attach, Automatic, AutomaticSpec, Maximize, Port, Scaled
from multiloss.spec.markers import OUTPUT_KINDS, mark_output
from multiloss.spec.plan import Resolved
from multiloss.spec.term import Term
from multiloss.spec.training_net import TrainingNet, attach

__all__ = [
    "OUTPUT_KINDS",
    "Attach",
    "Automatic",
    "AutomaticError",
    "AutomaticSpec",
    "ExplainedLoss",
    "Explanation",
    "Maximize",
    "MissingKeyError",
    "Port",
    "Resolved",
    "Scaled",
    "Spec",
    "SpecLike",
    "Term",
    "TrainingNet",
    "attach",
    "explain",
    "flatten",
    "mark_output",
]
