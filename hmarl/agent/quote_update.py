"""The quoting task's four policy-gradient estimators and its update.

Estimators as in trading (hmarl/agent/reinforce.py): ``reinforce``, ``baseline``,
``all_actions``, ``expected``. What differs is the transition: a quote step moves the inventory
by a *random* amount given the action (the fills), so the exact estimators take the expectation
over the step's outcome distribution (down / stay / up) as well as over the actions:

    Q_k(s, a) = E[r_k | s, a] + gamma sum_o P_k(o | s, a) V_{k+1}(s + move_o),
    V_k(s)   = sum_a pi_k(a | s) Q_k(s, a),
    d_{k+1}(t) = sum_s d_k(s) sum_a pi_k(a | s) P_k(t - s | s, a),

with ``E[r | s, a]`` and ``P`` from :func:`hmarl.market.quoting.expected_rewards`. What the
expectation covers depends on the market:

* **Avellaneda-Stoikov market**: fill probabilities are known, so ``expected`` is the exact
  expectation of the sampled estimator over the agent's actions *and* the fills, given the
  mid's path (``tests/test_quote_update.py`` checks it against Monte Carlo over both).
* **Tape-driven market**: given the tape a quote's fill is deterministic, ``P`` is one-hot and
  ``expected`` is the exact expectation over the agent's own action noise only, given the tape:
  the same meaning as in trading.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hmarl.agent.expected import (
    GridValues,
    expected_surrogate,
    occupancy_weighted,
    state_recursions,
)
from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.quote_rollout import QuoteBatch, QuoteTrajectory
from hmarl.agent.reinforce import (
    PolicyLoss,
    discounted_returns,
    exploration_bonus,
    leave_one_out,
    normalise,
    step_modules,
)
from hmarl.agent.rollout import entropy_of
from hmarl.market.quoting import QuoteParams, continuation, expected_rewards


def last_step(batch: QuoteBatch) -> Tensor:
    """1.0 at each episode's last step (the liquidation), 0.0 elsewhere, ``[B, L]``."""
    last = torch.zeros_like(batch.dmid)
    last[:, -1] = 1.0
    return last


def quote_grid_values(
    params: QuoteParams,
    batch: QuoteBatch,
    probs: Tensor,
    gamma: float,
    *,
    occupancy: bool = True,
    with_mtm: bool = True,
) -> GridValues:
    """Exact occupancy and values over the inventory grid for ``probs [B, L, S, A]``.

    ``with_mtm=False`` drops the mark-to-market term from the expected rewards: the mid's next
    move is independent of the inventory the agent holds over it, so the term is zero in
    expectation over the mid, and the objective of an evaluation is estimated with less noise.
    """
    p = probs.to(torch.float64)
    dmid = batch.dmid if with_mtm else torch.zeros_like(batch.dmid)
    p_bid, p_ask, bid_edge, ask_edge = (
        _compact(x) for x in (batch.p_bid, batch.p_ask, batch.bid_edge, batch.ask_edge)
    )
    model = expected_rewards(params, p_bid, p_ask, bid_edge, ask_edge, dmid, last_step(batch))
    w_up, w_down = (p * model.up).sum(-1), (p * model.down).sum(-1)  # [B, L, S]
    trans = torch.zeros(*w_up.shape, params.n_states, dtype=torch.float64, device=p.device)
    trans.diagonal(0, -2, -1).copy_(1.0 - w_up - w_down)
    trans.diagonal(1, -2, -1).copy_(w_up[..., :-1])  # s -> s + 1
    trans.diagonal(-1, -2, -1).copy_(w_down[..., 1:])  # s -> s - 1
    reward = model.reward
    c = (p * reward).sum(-1)
    occ, v = state_recursions(trans, c, params.start, gamma, occupancy)
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)  # V_{k+1}, V_L = 0
    q = reward + gamma * continuation(model, v_next)
    return GridValues(occ, q, v, reward)


def exact_objective(params: QuoteParams, batch: QuoteBatch, probs: Tensor) -> float:
    """The mean over the batch's paths of the expected objective (over the fills) of a policy
    given as every state's action probabilities ``[B, L, S, A]``: how the agent and every
    baseline are scored on the Avellaneda-Stoikov market (the mark-to-market term is out: it
    is zero in expectation over the mid, and only adds noise)."""
    values = quote_grid_values(params, batch, probs, 1.0, occupancy=False, with_mtm=False)
    return float(values.v[:, 0, params.start].mean())


def _compact(x: Tensor) -> Tensor:
    """``[A]`` for a ``[B, L, A]`` table that is the same at every step (the Avellaneda-Stoikov
    market's, an expanded view): the fills' model is then computed once, not ``B x L`` times."""
    return x[0, 0] if x.stride(0) == 0 and x.stride(1) == 0 else x


def _entropy_and_bonus(logp: Tensor, exploration: str) -> tuple[Tensor, Tensor]:
    entropy = entropy_of(logp)
    return entropy, entropy if exploration == "entropy" else exploration_bonus(logp, exploration)


def quote_policy_loss(
    policy: HierarchicalPolicy,
    traj: QuoteTrajectory,
    batch: QuoteBatch,
    params: QuoteParams,
    returns: Tensor,
    estimator: str,
    gamma: float,
    exploration: str = "entropy",
) -> PolicyLoss:
    """One estimator's loss for a quoting batch (the four of hmarl/agent/reinforce.py)."""
    if estimator in ("reinforce", "baseline", "all_actions"):
        logits = policy.head.from_context(traj.ctx, traj.positions, traj.cash, traj.head_masks)
        logp_all = torch.log_softmax(logits, dim=-1)  # [B, L, A], with graph
        if estimator == "all_actions":
            values = quote_grid_values(
                params, batch, traj.every_state().permute(1, 2, 0, 3), gamma, occupancy=False
            )
            s_k = traj.states.view(*traj.states.shape, 1, 1).expand(-1, -1, 1, params.n_actions)
            adv = (values.q - values.v.unsqueeze(-1)).gather(2, s_k).squeeze(2)  # [B, L, A]
            scale = float(returns.std()) + 1e-8
            loss = -((adv / scale).to(logp_all.dtype) * logp_all.exp()).sum(dim=(1, 2)).mean()
        else:
            b_logp = logp_all.gather(-1, traj.actions.unsqueeze(-1)).squeeze(-1)
            adv = normalise(returns) if estimator == "reinforce" else leave_one_out(returns)
            loss = -(b_logp * adv.to(b_logp.dtype)).sum(dim=1).mean()
        return PolicyLoss(loss, *_entropy_and_bonus(logp_all, exploration))
    if estimator != "expected":
        raise ValueError(
            "trainer.estimator must be one of reinforce, baseline, expected, all_actions, "
            f"got {estimator!r}"
        )
    grid_logits = traj.grid_logits
    if grid_logits is None:
        inv = traj.positions.new_tensor(params.inventory()) / params.max_inventory
        grid_logits = policy.head.all_states(traj.ctx, inv, traj.head_masks)
    probs = torch.softmax(grid_logits.detach(), dim=-1).permute(1, 2, 0, 3)
    with torch.no_grad():
        values = quote_grid_values(params, batch, probs, gamma)
    loss, logp = expected_surrogate(grid_logits, values, float(returns.std()) + 1e-8)
    entropy, bonus = _entropy_and_bonus(logp, exploration)
    return PolicyLoss(
        loss.mean(), occupancy_weighted(values, entropy), occupancy_weighted(values, bonus)
    )


def quote_update(
    policy: HierarchicalPolicy,
    optimizers: dict[str, torch.optim.Adam],
    traj: QuoteTrajectory,
    batch: QuoteBatch,
    params: QuoteParams,
    *,
    gamma: float,
    entropy_coef: float,
    grad_clip: float,
    update_macro: bool,
    estimator: str = "expected",
    exploration: str = "entropy",
) -> dict[str, float]:
    """One update from a quoting batch; the schedule and optimizers are trading's."""
    b_rewards = traj.settlement.reward  # [B, L]
    b_returns = discounted_returns(b_rewards, gamma)  # [B, L]
    loss_policy, b_entropy, b_bonus = quote_policy_loss(
        policy, traj, batch, params, b_returns, estimator, gamma, exploration
    )
    loss = loss_policy - entropy_coef * b_bonus.sum(dim=1).mean()
    metrics = step_modules(policy, optimizers, loss, grad_clip=grad_clip, update_macro=update_macro)
    s = traj.settlement
    metrics.update(
        {
            "reward/mean": b_rewards.sum(dim=1).mean().item(),
            "reward/spread": s.spread.sum(1).mean().item(),
            "reward/fee": s.fee.sum(1).mean().item(),
            "reward/mtm": s.mtm.sum(1).mean().item(),
            "reward/inventory_penalty": s.inventory_penalty.sum(1).mean().item(),
            "reward/no_quote": s.no_quote.sum(1).mean().item(),
            "reward/terminal": s.terminal.sum(1).mean().item(),
            "loss/policy": loss_policy.item(),
            "loss/total": loss.item(),
            "entropy": b_entropy.mean().item(),
        }
    )
    return metrics
