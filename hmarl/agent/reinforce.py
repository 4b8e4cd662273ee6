"""REINFORCE with one optimizer per module and the asymmetric MacroNet schedule.

Four estimators of the same policy gradient (``trainer.estimator``), all unbiased:

* ``reinforce``: SPEC.md's plain loss, ``-sum_t log pi(a_t|s_t) G_hat_t`` with the discounted
  returns normalised over the whole batch;
* ``baseline``: the returns at step t centred on a leave-one-out baseline (the mean of the other
  trajectories' returns at t, which does not depend on this trajectory's actions), then scaled by
  one standard deviation over the batch;
* ``expected``: the exact expectation of the sampled estimator over the agent's own action noise,
  computed over the position grid (hmarl/agent/expected.py), scaled by the same standard
  deviation as ``reinforce`` so that ``entropy_coef`` weighs the same.
* ``all_actions``: at each *visited* state, the exact sum over the three actions of
  ``grad pi(a|s_k) A_k(s_k, a)`` with the grid's exact advantages (hmarl/agent/expected.py). The
  visited state is drawn from the occupancy ``d_k``, so its expectation is ``expected``'s; it
  keeps the variance of which state was visited and removes that of the action taken there,
  at ``reinforce``'s cost (the head's gradient at one state per step, not at all of them).

An *episode* is one update computed from ``n_envs`` parallel trajectories of ``episode_len``
decisions (``n_envs = 1`` is SPEC.md's literal single trajectory). MacroNet steps iff
``episode % macro_every == 0`` (11 for asym_1_10: episodes 0, 11, 22, ...); MicroNet and the
DecisionHead step every episode. A frozen MacroNet gets no gradient and its optimizer is not
stepped, so its Adam state (step count, moments) does not advance either.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor, nn

from hmarl.agent.expected import (
    GridValues,
    expected_surrogate,
    grid_rewards,
    grid_values,
    occupancy_weighted,
)
from hmarl.agent.policy import grid_arguments
from hmarl.agent.rollout import Trajectory, entropy_of, grid_tensors, visited_log_probs
from hmarl.agent.specialists import MixtureHead

if TYPE_CHECKING:
    from hmarl.agent.policy import HierarchicalPolicy
    from hmarl.market.env import EnvParams, Grid

ESTIMATORS: tuple[str, ...] = ("reinforce", "baseline", "expected", "all_actions")
EXPLORATIONS: tuple[str, ...] = ("entropy", "log_barrier")


def make_optimizers(
    policy: HierarchicalPolicy,
    *,
    lr_macro: float,
    lr_micro: float,
    lr_head: float,
    lrs: Mapping[str, float] | None = None,
) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter group (module, or specialist), so each can have its own learning
    rate and its own clock; ``lrs`` gives the rates of groups other than macro/micro/head."""
    rates = {"macro": lr_macro, "micro": lr_micro, "head": lr_head, **(lrs or {})}
    return {
        name: torch.optim.Adam(params, lr=rates[name])
        for name, params in policy.parameter_groups().items()
    }


def macro_steps_at(episode: int, macro_every: int) -> bool:
    """The schedule: MacroNet updates on episodes 0, k, 2k, ..."""
    return episode % macro_every == 0


@lru_cache(maxsize=8)
def _discount_matrix(length: int, gamma: float, device: str) -> Tensor:
    i = torch.arange(length, dtype=torch.float64)
    power = i.view(-1, 1) - i.view(1, -1)  # [i, t] = i - t
    mat = torch.where(power >= 0, gamma ** power.clamp(min=0), torch.zeros(()))
    return mat.to(device)


def discounted_returns(rewards: Tensor, gamma: float) -> Tensor:
    """``G_t = sum_i gamma^i r_{t+i}`` within each trajectory, ``[B, L] -> [B, L]`` (float64)."""
    r = rewards.to(torch.float64)
    return r @ _discount_matrix(r.shape[1], float(gamma), str(r.device))


def normalise(x: Tensor, eps: float = 1e-8) -> Tensor:
    """``(x - mean) / std`` over the whole batch.

    Why: per-bar log returns are ~1e-3; normalising makes the update's scale independent of
    the market's volatility and centres it, so below-average actions are pushed down.
    """
    return (x - x.mean()) / (x.std() + eps)


def leave_one_out(returns: Tensor, eps: float = 1e-8) -> Tensor:
    """Returns minus the other trajectories' mean return at the same step, over one std.

    Why leave-one-out: a baseline that includes the trajectory's own return is correlated with its
    actions and biases the gradient by a factor (B-1)/B; the mean of the others is not.
    """
    n = returns.shape[0]
    if n < 2:
        raise ValueError("trainer.estimator=baseline needs trainer.n_envs >= 2")
    baseline = (returns.sum(dim=0, keepdim=True) - returns) / (n - 1)
    adv = returns - baseline
    return adv / (adv.std() + eps)


class GridModel(NamedTuple):
    """What the ``expected`` estimator needs besides the trajectory: the grid, costs, returns."""

    grid: Grid
    env: EnvParams
    returns: Tensor  # [T] the market's next-bar returns (MarketTensors.returns)


class PolicyLoss(NamedTuple):
    """One estimator's loss, with the per-step entropy and exploration bonus ``[B, L]``."""

    loss: Tensor  # scalar, with graph
    entropy: Tensor  # [B, L] nats, with graph (logged, and the collapse floor)
    bonus: Tensor  # [B, L] the exploration term ``entropy_coef`` weighs (with graph)


def exploration_bonus(logp: Tensor, kind: str) -> Tensor:
    """Per-state exploration term from log-probabilities ``[..., A]``, to be maximised.

    * ``entropy``: ``-sum_a pi log pi``. Its gradient vanishes as an action's probability
      goes to 0 (``-p (log p + H)``), so a policy that has all but ruled out SELL while long
      gets almost no push back: it can stay always long for the rest of the run.
    * ``log_barrier``: ``mean_a log pi(a) + log A`` = ``-KL(uniform || pi)`` (0 at uniform).
      Its gradient on an action's logit is ``1/A - p``, which does not vanish as ``p -> 0``:
      no action is ever ruled out for good (the log-barrier regularisation of Agarwal et al.,
      "On the theory of policy gradient methods", 2021).
    """
    if kind == "entropy":
        return entropy_of(logp)
    if kind == "log_barrier":
        return logp.mean(-1) + math.log(logp.shape[-1])
    raise ValueError(f"trainer.exploration must be one of {EXPLORATIONS}, got {kind!r}")


def _entropy_and_bonus(
    logp: Tensor, exploration: str, per_step: Callable[[Tensor], Tensor] = lambda x: x
) -> tuple[Tensor, Tensor]:
    """Entropy and exploration bonus per step from log-probabilities; ``per_step`` reduces a
    per-state quantity to one per step (the ``expected`` estimator's occupancy weighting).
    With ``exploration=entropy`` the bonus is the entropy itself, computed once."""
    entropy = per_step(entropy_of(logp))
    if exploration == "entropy":
        return entropy, entropy
    return entropy, per_step(exploration_bonus(logp, exploration))


def policy_loss(
    policy: HierarchicalPolicy,
    traj: Trajectory,
    returns: Tensor,
    estimator: str,
    model: GridModel | None = None,
    gamma: float = 0.99,
    exploration: str = "entropy",
    solo_coef: float = 0.0,
    solo_values: str = "mixture",
) -> PolicyLoss:
    """The policy loss of one estimator, with the entropy and exploration bonus per step.

    ``solo_coef`` (a mixture of specialists): adds each specialist's own term
    ``-solo_coef * sum_a pi_k(a|s) A(s, a)`` at the visited states with the grid's exact
    advantages, whatever the estimator of the mixture's own gradient (:func:`solo_surrogate`):
    the mixture's advantages (``solo_values="mixture"``) or each specialist's own policy's
    (``"own"``, :func:`own_advantages`).
    """
    result, weight = _estimator_loss(policy, traj, returns, estimator, model, gamma, exploration)
    if solo_coef <= 0:
        return result
    if model is None:
        raise ValueError("model.solo_coef needs the grid model (GridModel)")
    scale = float(returns.std()) + 1e-8
    if solo_values == "own":
        weight = own_advantages(policy, model, traj, gamma, scale)
    elif solo_values != "mixture":
        raise ValueError(f"model.solo_values must be mixture or own, got {solo_values!r}")
    elif weight is None:
        weight = visited_advantages(model, traj, gamma, scale)
    solo = solo_surrogate(policy, traj, weight)
    return result._replace(loss=result.loss + solo_coef * solo)


def _estimator_loss(
    policy: HierarchicalPolicy,
    traj: Trajectory,
    returns: Tensor,
    estimator: str,
    model: GridModel | None,
    gamma: float,
    exploration: str,
) -> tuple[PolicyLoss, Tensor | None]:
    """:func:`policy_loss` without the specialists' own term; with ``all_actions`` also the
    scaled advantages it weighed (reused by that term), else None."""
    if estimator in ("reinforce", "baseline"):
        logp_all = visited_log_probs(policy, traj)  # [B, L, 3]
        b_logp = logp_all.gather(-1, traj.actions.unsqueeze(-1)).squeeze(-1)
        adv = normalise(returns) if estimator == "reinforce" else leave_one_out(returns)
        loss = -(b_logp * adv.to(b_logp.dtype)).sum(dim=1).mean()
        return PolicyLoss(loss, *_entropy_and_bonus(logp_all, exploration)), None
    if estimator not in ("expected", "all_actions"):
        raise ValueError(f"trainer.estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if model is None:
        raise ValueError(f"trainer.estimator={estimator} needs the grid model (GridModel)")
    scale = float(returns.std()) + 1e-8  # the same scale as reinforce's normalised returns
    if estimator == "all_actions":
        logp_all = visited_log_probs(policy, traj)  # [B, L, 3], with graph
        weight = visited_advantages(model, traj, gamma, scale).to(logp_all.dtype)  # no graph
        loss = -(weight * logp_all.exp()).sum(dim=(1, 2)).mean()
        return PolicyLoss(loss, *_entropy_and_bonus(logp_all, exploration)), weight
    logits = traj.grid_logits  # [S, B, L, 3], kept by the rollout (collect's keep_grid_logits)
    if logits is None:
        positions = grid_tensors(model.grid, traj.ctx.device)[1]
        logits = policy.head.all_states(traj.ctx, positions, traj.head_masks)
    probs = torch.softmax(logits.detach(), dim=-1).permute(1, 2, 0, 3)  # [B, L, S, 3]
    values = _grid_values(model, traj, probs, gamma)
    loss, logp = expected_surrogate(logits, values, scale)
    weighted = _entropy_and_bonus(logp, exploration, lambda x: occupancy_weighted(values, x))
    return PolicyLoss(loss.mean(), *weighted), None


def visited_advantages(model: GridModel, traj: Trajectory, gamma: float, scale: float) -> Tensor:
    """The exact advantages ``A(s_t, a)`` of every action at the visited states over ``scale``,
    ``[B, L, 3]`` float64, no graph (the ``all_actions`` estimator's weights)."""
    if traj.grid_probs is None or traj.states is None:
        raise ValueError("the visited states' advantages need a trajectory from collect()")
    probs = traj.grid_probs.permute(1, 2, 0, 3)  # [B, L, S, 3]
    values = _grid_values(model, traj, probs, gamma, occupancy=False)
    return _at_states(values, traj.states) / scale


def _at_states(values: GridValues, states: Tensor) -> Tensor:
    """``Q(s_t, a) - V(s_t)`` ``[B, L, 3]`` at the grid states ``states [B, L]``."""
    s_k = states.view(*states.shape, 1, 1).expand(-1, -1, 1, 3)  # [B, L, 1, 3]
    return (values.q - values.v.unsqueeze(-1)).gather(2, s_k).squeeze(2)


@torch.no_grad()
def own_advantages(
    policy: HierarchicalPolicy, model: GridModel, traj: Trajectory, gamma: float, scale: float
) -> Tensor:
    """Each specialist's exact advantages under its *own* policy, ``A_k(s_t, a)`` at the visited
    states over ``scale``, ``[B, L, K, 3]`` float64, no graph.

    Why: with the mixture's advantages a specialist learns the best action given how the team
    acts on; where the team has settled into a habit that fees make costly to leave (always
    long on a rising market), one step away from it loses, and no specialist learns what it
    would earn by acting on its own reading. Here each ``pi_k`` is valued as if it acted alone
    from every grid state (its own probabilities in the same exact recursion as the mixture's),
    so a flow reader learns to follow the flow whatever the gate does; the gate then weighs it.
    Costs one exact grid pass over K times the batch (the specialists side by side).
    """
    head = policy.head
    if not isinstance(head, MixtureHead):
        raise ValueError("model.solo_values=own needs a mixture of specialists (model=specialists)")
    if traj.states is None:
        raise ValueError("the visited states' advantages need a trajectory from collect()")
    own = traj.grid_own  # kept by the rollout (collect's keep_grid_own), else computed here
    if own is None:
        positions = grid_tensors(model.grid, traj.ctx.device)[1]
        _, own = head.parts_from_context(*grid_arguments(traj.ctx, positions, traj.head_masks))
    n_spec = own.shape[-2]
    probs = own.exp().to(torch.float64).permute(3, 1, 2, 0, 4).flatten(0, 1)  # [K B, L, S, 3]
    rewards = _rewards(model, traj).repeat(n_spec, 1, 1, 1)
    values = grid_values(model.grid, probs, rewards, gamma, occupancy=False)
    adv = _at_states(values, traj.states.repeat(n_spec, 1))  # [K B, L, 3]
    return adv.view(n_spec, *traj.states.shape, 3).permute(1, 2, 0, 3) / scale


def solo_surrogate(policy: HierarchicalPolicy, traj: Trajectory, weight: Tensor) -> Tensor:
    """Every specialist's own ``all_actions``-style loss, as if it acted alone: ``-sum_k sum_a
    pi_k(a|s) A(s, a)`` summed over the steps, mean over trajectories (``weight``: the scaled
    exact advantages ``[B, L, 3]`` of the visited states, no graph).

    Why: in the mixture ``pi = sum_k g_k pi_k`` specialist k's policy gets the gradient
    ``g_k A``, so a specialist the gate has turned away from stops learning, and the gate
    never learns that it could act well (a mixture of experts' rich get richer). The
    advantages are the mixture's (its exact grid values), so each ``pi_k`` climbs toward the
    actions that are best given how the team acts on; the gate, which gets no gradient from
    this term, can then weigh specialists by what each would do alone. Its gradient reaches
    only the specialists' groups (their encoders and own heads).
    """
    head = policy.head
    if not isinstance(head, MixtureHead):
        raise ValueError("model.solo_coef > 0 needs a mixture of specialists (model=specialists)")
    _, own = head.parts_from_context(traj.ctx, traj.positions, traj.cash, traj.head_masks)
    if weight.dim() == 3:  # the mixture's advantages, the same for every specialist
        weight = weight.unsqueeze(-2)
    return -(weight.to(own.dtype) * own.exp()).sum(dim=(1, 2, 3)).mean()


def gate_bonus(policy: HierarchicalPolicy, traj: Trajectory) -> Tensor:
    """The gate's log-barrier at the visited states, ``mean_k log g_k + log K`` ``[B, L]``
    (``-KL(uniform || g)``, 0 at a uniform gate), to be maximised.

    Why: the gate steps every episode and soon leans on whichever specialist helps first; a
    softmax near 0 or 1 has almost no gradient, so a specialist that learns later (a flow
    reader whose edge needs its own head to form) is never weighed again. The barrier's push
    on a weight's logit does not vanish as the weight goes to 0 (as ``exploration_bonus``'s
    ``log_barrier`` for actions); weighed by the exploration schedule it fades to nothing by
    the last episode when ``trainer.entropy_coef_final=0``.
    """
    head = policy.head
    if not isinstance(head, MixtureHead):
        raise ValueError("model.gate_barrier > 0 needs a mixture (model=specialists)")
    log_gate, _ = head.parts_from_context(traj.ctx, traj.positions, traj.cash, traj.head_masks)
    return log_gate.mean(-1) + math.log(log_gate.shape[-1])


@torch.no_grad()
def _grid_values(
    model: GridModel, traj: Trajectory, probs: Tensor, gamma: float, occupancy: bool = True
) -> GridValues:
    """Exact occupancy (unless ``occupancy=False``) and values over the grid for the
    trajectory's market paths and every state's probabilities ``probs [B, L, S, 3]``."""
    return grid_values(model.grid, probs, _rewards(model, traj), gamma, occupancy=occupancy)


def _rewards(model: GridModel, traj: Trajectory) -> Tensor:
    """``R[b, k, s, a]`` of the trajectory's market paths (:func:`grid_rewards`)."""
    rows = traj.rows
    prev, now = model.returns[(rows - 1).clamp(min=0)], model.returns[rows]
    return grid_rewards(model.grid, model.env, prev, now)


def reinforce_update(
    policy: HierarchicalPolicy,
    optimizers: dict[str, torch.optim.Adam],
    traj: Trajectory,
    *,
    gamma: float,
    entropy_coef: float,
    grad_clip: float,
    update_macro: bool,
    estimator: str = "reinforce",
    model: GridModel | None = None,
    exploration: str = "entropy",
    frozen: Collection[str] = (),
    solo_coef: float = 0.0,
    gate_barrier: float = 0.0,
    solo_values: str = "mixture",
) -> dict[str, float]:
    """One REINFORCE update from a collected batch of trajectories; returns episode metrics.

    ``frozen``: further parameter groups that do not step this episode (specialists off their
    period); like a frozen MacroNet, their optimizers are not stepped, so their Adam state does
    not advance."""
    # ---- returns: G_t = sum_i gamma^i r_{t+i} of each sampled trajectory ----
    b_rewards = traj.settlement.reward  # [B, L]
    b_returns = discounted_returns(b_rewards, gamma)  # [B, L] float64

    # ---- loss: -sum_t log pi(a_t|s_t) * G_hat_t (or its exact expectation), mean over B ----
    # The exploration term is summed over t like the policy term, so that entropy_coef weighs
    # one step's bonus against one step's normalised return whatever the episode length.
    loss_policy, b_entropy, b_bonus = policy_loss(
        policy, traj, b_returns, estimator, model, gamma, exploration, solo_coef, solo_values
    )
    loss = loss_policy - entropy_coef * b_bonus.sum(dim=1).mean()
    if gate_barrier > 0:
        loss = loss - entropy_coef * gate_barrier * gate_bonus(policy, traj).sum(dim=1).mean()
    entropy = b_entropy.mean()  # per step, for logging

    # ---- update: every module computes its gradient; the schedule picks who steps ----
    metrics = step_modules(
        policy, optimizers, loss, grad_clip=grad_clip, update_macro=update_macro, frozen=frozen
    )
    metrics.update(
        {
            "reward/mean": b_rewards.sum(dim=1).mean().item(),
            "loss/policy": loss_policy.item(),
            "loss/total": loss.item(),
            "entropy": entropy.item(),
        }
    )
    return metrics


def step_modules(
    policy: HierarchicalPolicy,
    optimizers: dict[str, torch.optim.Adam],
    loss: Tensor,
    *,
    grad_clip: float,
    update_macro: bool,
    frozen: Collection[str] = (),
) -> dict[str, float]:
    """Back-propagate ``loss``; step every parameter group except MacroNet off its schedule
    (``update_macro``) and the groups in ``frozen`` (specialists off their period).

    Shared by both tasks (trading here, quoting in hmarl/agent/quote_update.py): every group
    computes its gradient, the schedule picks who steps; a group that does not step keeps its
    Adam state. Returns the gradient norms (before clipping), the parameter moves and
    ``update/macro`` (and ``update/<specialist>``).
    """
    groups = policy.parameter_groups()
    stepping = [name for name in groups if name not in frozen and (name != "macro" or update_macro)]
    before = {name: _flat(params) for name, params in groups.items()}
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    loss.backward()
    metrics: dict[str, float] = {}
    for name, group in groups.items():
        params = [p for p in group if p.grad is not None]
        metrics[f"grad_norm/{name}"] = _clip(params, grad_clip) if name in stepping else 0.0
    for name in stepping:
        optimizers[name].step()
    metrics["update/macro"] = float(update_macro)
    for name, params in groups.items():
        if name not in ("macro", "micro", "head"):  # a specialist: did it step?
            metrics[f"update/{name}"] = float(name in stepping)
        metrics[f"param_delta/{name}"] = float((_flat(params) - before[name]).norm())
    return metrics


def _flat(params: list[nn.Parameter]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params]).clone()


def _clip(params: list[nn.Parameter], max_norm: float) -> float:
    """Gradient norm before clipping (clipping only when ``max_norm > 0``)."""
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    )
