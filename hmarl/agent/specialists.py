"""Specialists: several agents, each on its own features and window, under one MacroNet.

The user's earlier system was a hierarchy of specialist agents (tape reading, liquidity, order
flow), each reading its own microstructure features, with a layer above them. Here:

* each specialist ``k`` is an agent: an encoder of its own window (mean/std/last of its
  features, ``[3 N_k]``) and, with ``model.combine=mixture``, its own logits over HOLD/BUY/SELL
  given its embedding, the position and the cash ratio, ``pi_k(a | s_k)``;
* the layer above reads the MacroNet embedding (and position, cash ratio) and outputs gate
  weights ``g(s)`` over the specialists (a softmax); the policy is the mixture
  ``pi(a | s) = sum_k g_k(s) pi_k(a | s_k)``. With ``model.gate_input=all`` the gate also reads
  every specialist's embedding: the MacroNet sees none of a specialist's features, so a gate on
  it alone can lean toward a specialist by market context but cannot tell *when* that
  specialist's reading is worth following. ``model.combine=concat`` keeps SPEC.md's form
  instead: the specialists' embeddings concatenated into the DecisionHead.

Why this fits the trainer unchanged: the specialists' inputs do not depend on the agent's
actions, so they sit where SPEC's MicroNet sits (:class:`SpecialistBank` reads the specialists'
windows laid side by side, hmarl/market/specialist_data.py). The gate's and each specialist's
first layers split into a context part and a state part exactly like the DecisionHead's, so
the rollout computes the context once per batch and the head for every position-grid state;
the mixture is still a distribution over three actions per grid state, returned as its log
(valid logits: ``softmax(log p) = p``). Every estimator, the frozen-MacroNet cache, dropout
masks reused for an exact gradient, resume and bit-exact reruns carry over.

Each specialist is one parameter group with its own optimizer, learning rate and period
``every`` (:func:`frozen_groups`); MacroNet keeps ``trainer.macro_every``; the gate (or the
DecisionHead) steps every episode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hmarl.agent.policy import (
    N_ACTIONS,
    N_STATE,
    ActionHead,
    ContextTower,
    DecisionHead,
    Encoder,
    HierarchicalPolicy,
    MacroNet,
    apply_dropout,
)
from hmarl.config import SPECIALIST_KEYS, Combine, GateInput, ModelConfig, SpecialistConfig
from hmarl.steps import HOLD

SPEC_PREFIX = "spec/"  # parameter groups (optimizers, metrics) of the specialists: spec/<name>


class SpecialistBank(ContextTower):
    """The specialists' encoders over their windows side by side ``[..., sum_k 3 N_k]``
    -> their embeddings side by side ``[..., sum_k D_k]`` (the MicroNet's place)."""

    def __init__(
        self, in_dims: Sequence[int], specs: Sequence[SpecialistConfig], dropout: float
    ) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(
            Encoder(n, s.hidden, s.dim, dropout) for n, s in zip(in_dims, specs, strict=True)
        )
        self.in_dims = [int(n) for n in in_dims]
        self.hiddens = [s.hidden for s in specs]
        self.dims = [s.dim for s in specs]
        self.p = dropout
        self.out_dim = sum(self.dims)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        xs = x.split(self.in_dims, dim=-1)
        masks: Sequence[Tensor | None] = (
            [None] * len(xs) if mask is None else mask.split(self.hiddens, dim=-1)
        )
        return torch.cat(
            [enc(xi, m) for enc, xi, m in zip(self.encoders, xs, masks, strict=True)], dim=-1
        )

    def mask_shape(self, lead: Sequence[int]) -> tuple[int, ...]:
        return (*lead, sum(self.hiddens))


class MixtureHead(ActionHead):
    """The gate over the specialists and their own action heads; logits = log of the mixture.

    The context ``[..., H_gate + sum_k H_k]`` holds the first-layer pre-activations of the
    gate (from the MacroNet embedding, and with ``gate_input=all`` the specialists' embeddings
    too) and of each specialist's head (from its embedding); position and cash ratio are added
    per grid state in :meth:`from_context`. The gate's inputs do not depend on the agent's
    actions either way, so its context is computed once per batch like the rest.
    """

    def __init__(
        self,
        macro_dim: int,
        specs: Sequence[SpecialistConfig],
        gate_hidden: int,
        dropout: float,
        gate_input: GateInput = GateInput.macro,
    ) -> None:
        super().__init__()
        self.macro_dim = macro_dim
        self.dims = [s.dim for s in specs]
        self.gate_input = GateInput(gate_input)
        gate_dim = macro_dim + (sum(self.dims) if self.gate_input == GateInput.all else 0)
        self.gate_in = nn.Linear(gate_dim + N_STATE, gate_hidden)
        self.gate_out = nn.Linear(gate_hidden, len(specs))
        self.own_in = nn.ModuleList(nn.Linear(s.dim + N_STATE, s.head_hidden) for s in specs)
        self.own_out = nn.ModuleList(nn.Linear(s.head_hidden, N_ACTIONS) for s in specs)
        self.parts = [gate_hidden, *(s.head_hidden for s in specs)]
        self.p = dropout

    def _first_layers(self) -> list[nn.Linear]:
        return [self.gate_in, *(layer for layer in self.own_in if isinstance(layer, nn.Linear))]

    def mask_shapes(self, lead: Sequence[int]) -> list[tuple[int, ...]]:
        return [(*lead, h) for h in self.parts]

    def context(self, macro: Tensor, micro: Tensor) -> Tensor:
        inputs = [macro, *micro.split(self.dims, dim=-1)]
        pre = [
            F.linear(x, layer.weight[:, : x.shape[-1]], layer.bias)
            for x, layer in zip(inputs, self._first_layers(), strict=True)
        ]
        if self.gate_input == GateInput.all:
            # the gate's columns after the MacroNet's read the specialists' embeddings (two
            # products, not one over a concatenation: a frozen MacroNet's cached embeddings
            # then need no input gradient, as in DecisionHead.context)
            n = self.macro_dim
            pre[0] = pre[0] + F.linear(micro, self.gate_in.weight[:, n : n + micro.shape[-1]])
        return torch.cat(pre, dim=-1)

    def parts_from_context(
        self,
        ctx: Tensor,
        position: Tensor,
        cash: Tensor,
        masks: Sequence[Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Log gate weights ``[..., K]`` and each specialist's log-probabilities ``[..., K, 3]``."""
        state = torch.stack([position, cash], dim=-1).to(ctx.dtype)
        hidden = []
        for i, (pre, layer) in enumerate(
            zip(ctx.split(self.parts, dim=-1), self._first_layers(), strict=True)
        ):
            h = F.relu(pre + F.linear(state, layer.weight[:, -N_STATE:]))
            mask = None if masks is None else masks[i]
            hidden.append(apply_dropout(h, mask, self.p, self.training))
        log_gate = torch.log_softmax(self.gate_out(hidden[0]), dim=-1)
        own = [
            torch.log_softmax(out(h), dim=-1)
            for out, h in zip(self.own_out, hidden[1:], strict=True)
        ]
        return log_gate, torch.stack(own, dim=-2)

    def from_context(
        self,
        ctx: Tensor,
        position: Tensor,
        cash: Tensor,
        masks: Sequence[Tensor | None] | None = None,
    ) -> Tensor:
        """``log sum_k g_k pi_k(a)`` ``[..., 3]``, a log-sum-exp (stable for tiny weights)."""
        return mixture_log_probs(*self.parts_from_context(ctx, position, cash, masks))


@torch.no_grad()
def start_holding(layer: nn.Linear, p_hold: float) -> None:
    """Set an action layer's bias to ``log`` of (``p_hold``, the rest shared by BUY and SELL):
    the policy starts near P(HOLD) = ``p_hold`` (exactly so where the layer's input is zero).
    The weights keep their draw, so every other parameter and the random stream are what they
    would be without this."""
    layer.bias.fill_(math.log((1.0 - p_hold) / 2.0))
    layer.bias[HOLD] = math.log(p_hold)


def mixture_log_probs(log_gate: Tensor, own: Tensor) -> Tensor:
    """``log sum_k g_k pi_k(a)`` ``[..., 3]`` from :meth:`MixtureHead.parts_from_context`'s log
    gate weights ``[..., K]`` and own log-probabilities ``[..., K, 3]``."""
    return torch.logsumexp(log_gate.unsqueeze(-1) + own, dim=-2)


class SpecialistPolicy(HierarchicalPolicy):
    """MacroNet + specialists + the gate (mixture) or the DecisionHead (concat)."""

    def __init__(self, n_features: int, in_features: Sequence[int], model: ModelConfig) -> None:
        nn.Module.__init__(self)
        specs = list(model.specialists)
        if len(in_features) != len(specs):
            raise ValueError(
                f"{len(specs)} specialists configured but inputs for {len(in_features)}"
            )
        self.n_features = n_features
        self.names = [s.name for s in specs]
        self.combine = Combine(model.combine)
        self.macro = MacroNet(3 * n_features, model.macro_hidden, model.macro_dim, model.dropout)
        bank = SpecialistBank([3 * n for n in in_features], specs, model.dropout)
        self.micro = bank
        if self.combine == Combine.mixture:
            self.head = MixtureHead(
                model.macro_dim, specs, model.gate_hidden, model.dropout, model.gate_input
            )
        else:
            self.head = DecisionHead(
                model.macro_dim, bank.out_dim, model.head_hidden, N_ACTIONS, model.dropout
            )
        if model.hold_init > 0:
            head = self.head
            outs = list(head.own_out) if isinstance(head, MixtureHead) else [head.out]
            for layer in outs:
                assert isinstance(layer, nn.Linear)
                start_holding(layer, model.hold_init)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """macro, one group per specialist (its encoder and, in a mixture, its own head),
        and the layer above (the gate, or the DecisionHead)."""
        bank, head = self.micro, self.head
        assert isinstance(bank, SpecialistBank)
        groups: dict[str, list[nn.Parameter]] = {"macro": list(self.macro.parameters())}
        for k, name in enumerate(self.names):
            params = list(bank.encoders[k].parameters())
            if isinstance(head, MixtureHead):
                params += [*head.own_in[k].parameters(), *head.own_out[k].parameters()]
            groups[SPEC_PREFIX + name] = params
        if isinstance(head, MixtureHead):
            groups["head"] = [*head.gate_in.parameters(), *head.gate_out.parameters()]
        else:
            groups["head"] = list(head.parameters())
        return groups


def build_policy(
    n_features: int, model: ModelConfig, in_features: Sequence[int] = ()
) -> HierarchicalPolicy:
    """SPEC.md's network, or the specialists' when ``model.specialists`` is set
    (``in_features``: each specialist's number of features, from the market)."""
    if not model.specialists:
        fields = asdict(model)
        for key in SPECIALIST_KEYS:
            fields.pop(key)
        return HierarchicalPolicy(n_features, **fields)
    return SpecialistPolicy(n_features, in_features, model)


def specialist_rates(model: ModelConfig) -> dict[str, float]:
    """Each specialist's learning rate by parameter group (make_optimizers' ``lrs``)."""
    return {SPEC_PREFIX + s.name: s.lr for s in model.specialists}


def frozen_groups(model: ModelConfig, episode: int) -> list[str]:
    """The specialists that do not step at ``episode`` (they step iff episode % every == 0)."""
    return [SPEC_PREFIX + s.name for s in model.specialists if episode % s.every != 0]


@torch.no_grad()
def decision_parts(
    policy: HierarchicalPolicy, ctx: Tensor, position: Tensor, cash: Tensor
) -> tuple[Tensor, Tensor] | None:
    """Gate weights ``[..., K]`` and each specialist's probabilities ``[..., K, 3]`` at the given
    states (no dropout: for reports), or None when the policy has no gate."""
    head = policy.head
    if not isinstance(head, MixtureHead):
        return None
    log_gate, own = head.parts_from_context(ctx, position, cash)
    return log_gate.exp(), own.exp()
