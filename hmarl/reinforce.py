"""REINFORCE with one optimizer per module and the asymmetric MacroNet schedule.

An *episode* is one update computed from ``n_envs`` parallel trajectories of ``episode_len``
decisions (``n_envs = 1`` is SPEC.md's literal single trajectory). MacroNet steps iff
``episode % macro_every == 0`` (11 for asym_1_10: episodes 0, 11, 22, ...); MicroNet and the
DecisionHead step every episode. A frozen MacroNet gets no gradient and its optimizer is not
stepped, so its Adam state (step count, moments) does not advance either.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor, nn

from hmarl.policy import HierarchicalPolicy
from hmarl.rollout import Trajectory, log_probs

MODULES: tuple[str, ...] = ("macro", "micro", "head")


def make_optimizers(
    policy: HierarchicalPolicy, *, lr_macro: float, lr_micro: float, lr_head: float
) -> dict[str, torch.optim.Adam]:
    """One Adam per module, so each can have its own learning rate and its own clock."""
    lrs = {"macro": lr_macro, "micro": lr_micro, "head": lr_head}
    return {
        name: torch.optim.Adam(module_of(policy, name).parameters(), lr=lrs[name])
        for name in MODULES
    }


def module_of(policy: HierarchicalPolicy, name: str) -> nn.Module:
    module = getattr(policy, name)
    assert isinstance(module, nn.Module)
    return module


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


def reinforce_update(
    policy: HierarchicalPolicy,
    optimizers: dict[str, torch.optim.Adam],
    traj: Trajectory,
    *,
    gamma: float,
    entropy_coef: float,
    grad_clip: float,
    update_macro: bool,
) -> dict[str, float]:
    """One REINFORCE update from a collected batch of trajectories; returns episode metrics."""
    # ---- returns: discounted, then normalised over the batch ----
    b_rewards = traj.settlement.reward  # [B, L]
    b_returns = normalise(discounted_returns(b_rewards, gamma)).to(torch.float32)  # [B, L]

    # ---- loss: -sum_t log pi(a_t|s_t) * G_hat_t, averaged over trajectories ----
    # The entropy bonus is summed over t like the policy term, so that entropy_coef weighs
    # one step's entropy against one step's normalised return whatever the episode length.
    b_logp, b_entropy = log_probs(policy, traj)  # [B, L] each, with graph
    loss_policy = -(b_logp * b_returns).sum(dim=1).mean()
    loss = loss_policy - entropy_coef * b_entropy.sum(dim=1).mean()
    entropy = b_entropy.mean()  # per step, for logging

    # ---- update: every module computes its gradient; the schedule picks who steps ----
    stepping = [name for name in MODULES if name != "macro" or update_macro]
    before = {name: _flat(module_of(policy, name)) for name in MODULES}
    for opt in optimizers.values():
        opt.zero_grad(set_to_none=True)
    loss.backward()
    metrics: dict[str, float] = {}
    for name in MODULES:
        params = [p for p in module_of(policy, name).parameters() if p.grad is not None]
        metrics[f"grad_norm/{name}"] = _clip(params, grad_clip) if name in stepping else 0.0
    for name in stepping:
        optimizers[name].step()

    metrics.update(
        {
            "reward/mean": b_rewards.sum(dim=1).mean().item(),
            "loss/policy": loss_policy.item(),
            "loss/total": loss.item(),
            "entropy": entropy.item(),
            "update/macro": float(update_macro),
        }
    )
    for name in MODULES:
        delta = _flat(module_of(policy, name)) - before[name]
        metrics[f"param_delta/{name}"] = float(delta.norm())
    return metrics


def _flat(module: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()]).clone()


def _clip(params: list[nn.Parameter], max_norm: float) -> float:
    """Gradient norm before clipping (clipping only when ``max_norm > 0``)."""
    if not params:
        return 0.0
    if max_norm > 0:
        return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    return float(
        torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    )
