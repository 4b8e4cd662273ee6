"""The hierarchical quoting policy: SPEC.md's towers, a head over the joint quote actions.

The quoting task reuses :class:`hmarl.agent.policy.HierarchicalPolicy` unchanged: MacroNet over
the long window of tick features, MicroNet over the short one, and a DecisionHead whose state
columns carry the inventory instead of the position, ``x = q / Q`` in ``[-1, 1]`` and
``1 - |x|`` (the trading task's "cash ratio" column: here, the room left before a limit), with
one logit per joint (bid, ask) action. Why not a new network: the factored rollout, the dropout
masks and the all-states pass (:meth:`DecisionHead.all_states`) then carry over as they are.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from hmarl.agent.policy import HierarchicalPolicy
from hmarl.market.quoting import QuoteParams


def quote_policy(n_features: int, params: QuoteParams, **sizes: Any) -> HierarchicalPolicy:
    """A HierarchicalPolicy with ``params.n_actions`` outputs (the joint quotes); ``sizes`` are
    its keyword arguments (``macro_hidden``, ``head_hidden``, ``dropout``, ...: SPEC.md's
    network when none is given)."""
    return HierarchicalPolicy(n_features, n_actions=params.n_actions, **sizes)


def inventory_inputs(params: QuoteParams, device: torch.device | str = "cpu") -> Tensor:
    """The head's state input of every inventory-grid state, ``q / Q`` ``[S]`` float32."""
    q = torch.as_tensor(params.inventory(), dtype=torch.float32, device=device)
    return q / params.max_inventory
