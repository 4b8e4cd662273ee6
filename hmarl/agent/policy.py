"""MacroNet, MicroNet, DecisionHead and the HierarchicalPolicy that ties them (SPEC.md).

Every dropout layer can take an explicit mask. Why: the factored rollout (hmarl/agent/rollout.py)
samples actions in a cheap per-step loop and recomputes log-probabilities afterwards in one
batched pass with gradients; reusing the masks drawn during the rollout makes that gradient
exactly the gradient of the trajectory that was sampled. A mask holds 0 or 1/(1-p) (inverted
dropout, as torch's ``F.dropout``); ``None`` means ordinary dropout in training mode and
identity in eval mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmarl.config import ModelConfig
from hmarl.market.env import cash_ratio
from hmarl.steps import ACTIONS

# The sizes, stated once in hmarl.config.ModelConfig (SPEC.md's network, 83,811 parameters).
SPEC_MODEL = ModelConfig()
N_ACTIONS = len(ACTIONS)
N_STATE = 2  # position in [-1, 1] and cash ratio in [0, 1], appended to the head's input


def apply_dropout(h: Tensor, mask: Tensor | None, p: float, training: bool) -> Tensor:
    if mask is not None:
        return h * mask
    return F.dropout(h, p, training)


def draw_mask(shape: Sequence[int], p: float, generator: torch.Generator | None) -> Tensor | None:
    """An inverted-dropout mask (0 or 1/(1-p)); ``None`` when p == 0 (no dropout)."""
    if p <= 0.0:
        return None
    # On the generator's device (a CUDA generator cannot fill a CPU tensor), in place:
    # uniform -> 1.0/0.0 keep indicator -> scaled (no temporaries).
    device = generator.device if generator is not None else None
    u = torch.rand(tuple(shape), generator=generator, device=device)
    return u.ge_(p).mul_(1.0 / (1.0 - p))


class ContextTower(nn.Module):
    """What the rollout needs of the fast context tower: dropout ``p``, ``out_dim`` and the
    shape of its mask; ``forward(x, mask)``. SPEC's MicroNet, or the specialists' bank
    (hmarl/agent/specialists.py)."""

    p: float
    out_dim: int

    def mask_shape(self, lead: Sequence[int]) -> tuple[int, ...]:
        raise NotImplementedError


class Encoder(ContextTower):
    """Linear(in, hidden) ReLU Dropout Linear(hidden, out) ReLU: the shape of both towers."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.fc2 = nn.Linear(hidden, out_dim)
        self.p = dropout
        self.in_dim, self.hidden, self.out_dim = in_dim, hidden, out_dim

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        inplace = not torch.is_grad_enabled()  # no graph to keep: skip a copy of each layer
        h = apply_dropout(F.relu(self.fc1(x), inplace), mask, self.p, self.training)
        return F.relu(self.fc2(h), inplace)

    def mask_shape(self, lead: Sequence[int]) -> tuple[int, ...]:
        return (*lead, self.hidden)


class MacroNet(Encoder):
    """Slow context: mean/std/last of the long (492-bar) window -> a 128-d embedding."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__(in_dim, hidden, out_dim, dropout)


class MicroNet(Encoder):
    """Fast context: mean/std/last of the short (60-bar) window -> a 32-d embedding."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__(in_dim, hidden, out_dim, dropout)


class ActionHead(nn.Module):
    """What the rollout and the estimators need of the layer that decides: a context from the
    two towers' embeddings (no action-dependent input), logits from that context plus the
    state (position, cash ratio), and the same for every grid state at once. SPEC's
    DecisionHead, or the specialists' gate (hmarl/agent/specialists.py)."""

    p: float

    def mask_shapes(self, lead: Sequence[int]) -> list[tuple[int, ...]]:
        raise NotImplementedError

    def context(self, macro: Tensor, micro: Tensor) -> Tensor:
        raise NotImplementedError

    def from_context(
        self,
        ctx: Tensor,
        position: Tensor,
        cash: Tensor,
        masks: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        raise NotImplementedError

    def all_states(
        self, ctx: Tensor, positions: Tensor, masks: Sequence[Tensor | None] | None = None
    ) -> Tensor:
        """Logits ``[S, *ctx.shape[:-1], n_actions]`` for every position in ``positions [S]``,
        with the same context and dropout masks: the rollout's pass over the position grid
        (without autograd) and the ``expected`` estimator's (with it)."""
        return self.from_context(*grid_arguments(ctx, positions, masks))

    def forward(
        self,
        macro: Tensor,
        micro: Tensor,
        position: Tensor,
        cash: Tensor,
        masks: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        return self.from_context(self.context(macro, micro), position, cash, masks)


def grid_arguments(
    ctx: Tensor, positions: Tensor, masks: Sequence[Tensor | None] | None = None
) -> tuple[Tensor, Tensor, Tensor, list[Tensor | None] | None]:
    """``from_context``'s arguments for every position in ``positions [S]`` at once: the context
    and masks with a leading grid axis, each state's position and cash ratio broadcast to it."""
    pos = positions.to(ctx.dtype).view(-1, *([1] * (ctx.dim() - 1)))
    grid_masks = None if masks is None else [None if m is None else m.unsqueeze(0) for m in masks]
    return ctx.unsqueeze(0), pos, cash_ratio(pos), grid_masks


class DecisionHead(ActionHead):
    """concat(macro, micro, position, cash) -> hidden layers -> logits over HOLD/BUY/SELL.

    The first layer is split into a context part (macro and micro, which do not depend on the
    agent's actions) and a state part (position and cash ratio, which do). The rollout
    computes the context part once per episode and adds the two state columns per step.
    """

    def __init__(
        self,
        macro_dim: int,
        micro_dim: int,
        hidden: Sequence[int],
        n_actions: int = N_ACTIONS,
        dropout: float = SPEC_MODEL.dropout,
    ) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("DecisionHead needs at least one hidden layer")
        self.ctx_dim = macro_dim + micro_dim
        dims = [self.ctx_dim + N_STATE, *hidden]
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in pairwise(dims))
        self.out = nn.Linear(dims[-1], n_actions)
        self.p = dropout
        self.hidden_sizes = tuple(hidden)

    def mask_shapes(self, lead: Sequence[int]) -> list[tuple[int, ...]]:
        return [(*lead, h) for h in self.hidden_sizes]

    def context(self, macro: Tensor, micro: Tensor) -> Tensor:
        """First-layer pre-activation from macro and micro alone (bias included).

        Two products summed (one ``addmm``), not one over ``cat([macro, micro])``: with a
        frozen MacroNet the macro embeddings need no gradient, and autograd then skips the
        ``[rows, H1] x [H1, macro_dim]`` input-gradient product the concatenation would force.
        """
        fc1 = self.hidden[0]
        assert isinstance(fc1, nn.Linear)
        n_macro = macro.shape[-1]
        pre = F.linear(micro, fc1.weight[:, n_macro : self.ctx_dim], fc1.bias)  # [..., H1]
        flat = torch.addmm(
            pre.reshape(-1, pre.shape[-1]),
            macro.reshape(-1, n_macro),
            fc1.weight[:, :n_macro].t(),
        )
        return flat.view(pre.shape)

    def from_context(
        self,
        ctx: Tensor,
        position: Tensor,
        cash: Tensor,
        masks: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """Logits from the context pre-activation plus the state terms.

        Without autograd (the rollout's all-states pass) activations are updated in place.
        """
        fc1 = self.hidden[0]
        assert isinstance(fc1, nn.Linear)
        state = torch.stack([position, cash], dim=-1).to(ctx.dtype)
        h = ctx + F.linear(state, fc1.weight[:, self.ctx_dim :])
        inplace = not torch.is_grad_enabled()
        for i, layer in enumerate(self.hidden):
            if i > 0:
                h = layer(h)
            h = h.relu_() if inplace else F.relu(h)
            mask = None if masks is None else masks[i]
            h = (
                h.mul_(mask)
                if inplace and mask is not None
                else apply_dropout(h, mask, self.p, self.training)
            )
        return self.out(h)


class HierarchicalPolicy(nn.Module):
    """MacroNet + MicroNet + DecisionHead; ``forward`` returns P(HOLD), P(BUY), P(SELL).

    ``n_actions`` other than 3 serves the quoting task (hmarl/agent/quote_policy.py): the same
    towers and head, with the joint quote actions as outputs and the inventory as the state.
    """

    def __init__(
        self,
        n_features: int,
        *,
        macro_hidden: int = SPEC_MODEL.macro_hidden,
        macro_dim: int = SPEC_MODEL.macro_dim,
        micro_hidden: int = SPEC_MODEL.micro_hidden,
        micro_dim: int = SPEC_MODEL.micro_dim,
        head_hidden: Sequence[int] = tuple(SPEC_MODEL.head_hidden),
        dropout: float = SPEC_MODEL.dropout,
        n_actions: int = N_ACTIONS,
    ) -> None:
        super().__init__()
        in_dim = 3 * n_features  # mean, std and last of each feature over a window
        self.n_features = n_features
        self.macro = MacroNet(in_dim, macro_hidden, macro_dim, dropout)
        self.micro: ContextTower = MicroNet(in_dim, micro_hidden, micro_dim, dropout)
        self.head: ActionHead = DecisionHead(macro_dim, micro_dim, head_hidden, n_actions, dropout)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimizer (one per module, each on its own clock), in this order."""
        return {name: list(getattr(self, name).parameters()) for name in ("macro", "micro", "head")}

    def logits(self, macro_x: Tensor, micro_x: Tensor, position: Tensor, cash: Tensor) -> Tensor:
        return self.head(self.macro(macro_x), self.micro(micro_x), position, cash)

    def forward(self, macro_x: Tensor, micro_x: Tensor, position: Tensor, cash: Tensor) -> Tensor:
        return torch.softmax(self.logits(macro_x, micro_x, position, cash), dim=-1)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
