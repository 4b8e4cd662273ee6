"""The exact expectation of the policy gradient over the agent's own action noise.

Why this is possible here: the market does not react to the agent, and the agent's only
action-dependent state is its position on a grid of a few values
(:func:`hmarl.market.env.position_grid`).
For a sampled batch of market paths (rows), and the dropout masks drawn in the rollout, the
rollout already computes ``pi_k(a | s)`` for every grid state ``s`` at every step ``k``. Each
step's reward is a known function of the state before and after the decision,

    R_k(s, a) = log(1 - fee(pos[s'], drift(pos[s], r_{k-1}))) + log(1 + pos[s'] r_k), s'=next(s,a)

exactly as :func:`hmarl.market.env.settle` charges it. So the finite-horizon problem over the
grid can be solved exactly:

* forward state occupancy ``d_k(s)`` (``d_0`` = flat) under the policy;
* backward values ``V_k(s) = sum_a pi_k(a|s) Q_k(s, a)`` with
  ``Q_k(s, a) = R_k(s, a) + gamma V_{k+1}(next(s, a))`` and ``V_L = 0``.

The REINFORCE estimator ``sum_k grad log pi_k(a_k|s_k) G_k`` (``G_k`` the discounted return from
``k``) has expectation over the actions ``sum_k sum_s d_k(s) sum_a grad pi_k(a|s) Q_k(s, a)``
(the policy-gradient theorem for a finite horizon). :func:`expected_surrogate` is a loss whose
gradient is exactly that (with ``Q`` replaced by the advantage ``Q - V``, which has the same
gradient because ``sum_a grad pi = 0``). It removes all variance from the agent's own sampling;
what remains is the variance of the market paths and of dropout.

Both recursions are linear (affine) in the state vector, so on an accelerator they run as
parallel prefix products of small ``[S, S]`` matrices (``log2 L`` batched matmuls) rather than
``L`` steps; on the CPU a numpy loop of ``L`` tiny steps is faster and is used instead.
``tests/test_expected.py`` checks both against a plain loop and the gradient against a
Monte-Carlo average of the sampled estimator.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import torch
from torch import Tensor

from hmarl.agent.rollout import grid_tensors
from hmarl.market.env import traded

if TYPE_CHECKING:
    from hmarl.market.env import EnvParams, Grid


class GridValues(NamedTuple):
    """Exact occupancy and values over the position grid for a batch of market paths."""

    occupancy: Tensor  # [B, L, S] probability of being in state s before decision k
    q: Tensor  # [B, L, S, 3] action values
    v: Tensor  # [B, L, S] state values, V_k(s) = sum_a pi Q
    rewards: Tensor  # [B, L, S, 3] R_k(s, a)


def grid_rewards(grid: Grid, env: EnvParams, ret_prev: Tensor, ret: Tensor) -> Tensor:
    """``R[b, k, s, a]``: the log equity growth of taking ``a`` in state ``s`` at step k.

    ``ret_prev[b, k]`` is the return of the bar before decision k (it drifts the position held
    into k), ``ret[b, k]`` the return the decision earns. Identical to
    :func:`hmarl.market.env.settle` along any path (tested); for the start state (flat) the
    previous return does not matter.
    """
    device = ret.device
    next_flat, pos = grid_tensors(grid, device)  # [S * 3], [S] float64
    nxt = next_flat.view(-1, 3)  # [S, 3]
    target = pos[nxt]  # [S, 3] position held after the decision
    rp = ret_prev.to(torch.float64).unsqueeze(-1)  # [B, L, 1]
    p = pos.view(1, 1, -1)
    before = p * (1.0 + rp) / torch.clamp(1.0 + p * rp, min=1e-12)  # [B, L, S]
    fee = traded(target, before.unsqueeze(-1), env.cost_rate)[1]  # [B, L, S, 3]
    r = ret.to(torch.float64).view(*ret.shape, 1, 1)
    growth_asset = torch.clamp(1.0 + target * r, min=1e-12)
    return torch.log((1.0 - fee) * growth_asset)


def scan_products(m: Tensor, *, reverse: bool = False) -> Tensor:
    """Inclusive products along dim -3 of ``[..., L, n, n]`` matrices, in ``ceil(log2 L)`` rounds.

    ``reverse=False``: ``out[k] = m[0] @ m[1] @ ... @ m[k]`` (prefix products);
    ``reverse=True``: ``out[k] = m[k] @ m[k+1] @ ... @ m[L-1]`` (suffix products).
    """
    x = m.flip(-3) if reverse else m
    length, offset = x.shape[-3], 1
    while offset < length:
        earlier, later = x[..., :-offset, :, :], x[..., offset:, :, :]
        # reverse: the flipped sequence is built right to left, so the new factor goes on the left
        step = later @ earlier if reverse else earlier @ later
        x = torch.cat([x[..., :offset, :, :], step], dim=-3)
        offset *= 2
    return x.flip(-3) if reverse else x


def grid_values(
    grid: Grid, probs: Tensor, rewards: Tensor, gamma: float, *, occupancy: bool = True
) -> GridValues:
    """Occupancy from the start state and backward values, exactly, for ``probs [B, L, S, 3]``.

    ``occupancy=False`` skips the forward recursion (``all_actions`` needs the values alone):
    the occupancy is then NaN, so that using it by mistake cannot go unnoticed.
    """
    s = probs.shape[2]
    p = probs.to(torch.float64)
    nxt = grid_tensors(grid, p.device)[0].view(-1, 3)  # [S, 3]
    onehot = torch.nn.functional.one_hot(nxt, s).to(torch.float64)  # [S, 3, S]
    trans = torch.einsum("bksa,sat->bkst", p, onehot)  # [B, L, S, S] row-stochastic

    c = (p * rewards).sum(-1)  # [B, L, S] expected one-step reward
    occ, v = state_recursions(trans, c, grid.start, gamma, occupancy)
    v_next = torch.cat([v[:, 1:], torch.zeros_like(v[:, :1])], dim=1)  # V_{k+1}, V_L = 0
    q = rewards + gamma * v_next[:, :, nxt]  # [B, L, S, 3]
    return GridValues(occ, q, v, rewards)


def state_recursions(
    trans: Tensor, c: Tensor, start: int, gamma: float, occupancy: bool = True
) -> tuple[Tensor, Tensor]:
    """Occupancy ``[B, L, S]`` from ``start`` and values ``[B, L, S]`` of a Markov chain with
    transitions ``trans [B, L, S, S]`` and expected rewards ``c [B, L, S]`` (``V_L = 0``): the
    numpy loop on the CPU, the prefix scans elsewhere. Both tasks' exact estimators use it
    (the quoting task's transitions are random given the action: hmarl/agent/quote_update.py).
    """
    if trans.device.type == "cpu":
        return _recursions_loop(trans, c, start, gamma, occupancy)
    return _recursions_scan(trans, c, start, gamma, occupancy)


def _recursions_scan(
    trans: Tensor, c: Tensor, start: int, gamma: float, forward: bool = True
) -> tuple[Tensor, Tensor]:
    """Occupancy and values as parallel prefix products (``log2 L`` batched matmuls): on an
    accelerator this is a handful of kernels instead of ``2 L`` tiny ones."""
    b, length, s, _ = trans.shape
    # ---- forward: d_{k+1} = d_k @ M_k, d_0 = the start state ----
    occupancy = torch.full((b, length, s), math.nan, dtype=torch.float64, device=trans.device)
    if forward:
        prefix = scan_products(trans)  # [B, L, S, S], prefix[k] = M_0 ... M_k
        d0 = torch.zeros(b, 1, s, dtype=torch.float64, device=trans.device)
        d0[..., start] = 1.0
        occupancy = torch.cat([d0, prefix[:, :-1, start, :]], dim=1)  # [B, L, S]
    # ---- backward: V_k = c_k + gamma M_k V_{k+1}, as suffix products of affine maps ----
    aug = torch.zeros(b, length, s + 1, s + 1, dtype=torch.float64, device=trans.device)
    aug[..., :s, :s] = gamma * trans
    aug[..., :s, s] = c
    aug[..., s, s] = 1.0
    v = scan_products(aug, reverse=True)[..., :s, s]  # [B, L, S] = V_k
    return occupancy, v


def _recursions_loop(
    trans: Tensor, c: Tensor, start: int, gamma: float, forward: bool = True
) -> tuple[Tensor, Tensor]:
    """The same recursions step by step in numpy: on the CPU, ``2 L`` tiny numpy steps
    (~1 us each) beat ``log2 L`` rounds of torch's batched 4x4 matmuls (~2 ms each)."""
    m = np.ascontiguousarray(trans.numpy().transpose(1, 0, 2, 3))  # [L, B, S, S]
    cc = np.ascontiguousarray(c.numpy().transpose(1, 0, 2))  # [L, B, S]
    length, b, s, _ = m.shape
    occ = np.full((length, b, s), np.nan)
    v = np.empty((length, b, s))
    d = np.zeros((b, s))
    d[:, start] = 1.0
    for k in range(length if forward else 0):
        occ[k] = d
        d = np.einsum("bs,bst->bt", d, m[k])
    nxt = np.zeros((b, s))
    for k in range(length - 1, -1, -1):
        nxt = cc[k] + gamma * np.einsum("bst,bt->bs", m[k], nxt)
        v[k] = nxt
    return torch.from_numpy(occ.transpose(1, 0, 2)), torch.from_numpy(v.transpose(1, 0, 2))


def expected_surrogate(logits: Tensor, values: GridValues, scale: float) -> tuple[Tensor, Tensor]:
    """Policy loss ``[B]`` and log-probabilities ``[B, L, S, 3]`` (with graph) from all-state
    logits ``[S, B, L, 3]``.

    ``loss.backward()`` gives ``-sum_k sum_s d_k(s) sum_a grad pi_k(a|s) A_k(s, a) / scale``:
    the exact expectation of the (return-scaled) REINFORCE gradient over the agent's actions.
    The log-probabilities serve the exploration term, weighted by :func:`occupancy_weighted`.
    """
    logp = torch.log_softmax(logits, dim=-1).permute(1, 2, 0, 3)  # [B, L, S, 3]
    probs = logp.exp()
    adv = (values.q - values.v.unsqueeze(-1)) / scale
    weight = (values.occupancy.unsqueeze(-1) * adv).to(probs.dtype)  # no graph
    loss = -(weight * probs).sum(dim=(1, 2, 3))  # [B]
    return loss, logp


def occupancy_weighted(values: GridValues, per_state: Tensor) -> Tensor:
    """``sum_s d_k(s) x[b, k, s]``: a per-state quantity ``[B, L, S]`` in expectation over the
    state the agent is in at step k (``[B, L]``), e.g. the entropy of its policy."""
    return (values.occupancy.to(per_state.dtype) * per_state).sum(-1)
