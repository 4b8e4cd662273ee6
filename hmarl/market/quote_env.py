"""The quoting task one step at a time: the environment a gym loop (or PPO) steps.

The same market (:mod:`hmarl.market.avellaneda`), the same fill and posting rules and the same
settlement (:func:`hmarl.market.quoting.settle_quotes`) as the factored rollout, behind the
``reset`` / ``step`` API of gymnasium (``step`` returns ``obs, reward, terminated, truncated,
info``). Why a plain class: the market package imports neither torch nor gymnasium;
:func:`as_gymnasium` wraps it in a ``gymnasium.Env`` (the ``[mm]`` extra) for Stable-Baselines3.

Episodes come from a ``draw`` function (:class:`EpisodeEnv`): the Avellaneda-Stoikov market's
fresh seeded paths (:class:`QuoteEnv`) or random episodes of a tick tape (built in
:mod:`hmarl.train.quote_ppo`, which has the tape's tables).

Observation: the long window's ``[mean | std | last]`` of the market features, the short
window's, then ``q / Q`` and ``1 - |q / Q|``: exactly the hierarchical policy's inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from hmarl.market import avellaneda as av
from hmarl.market.quoting import QuoteParams, settle_quotes


class Episode(NamedTuple):
    """One episode's market side, per step ``[L, ...]`` (what :meth:`EpisodeEnv.step` reads)."""

    inputs: np.ndarray  # [L, n_obs - 2] float32, the windows' summaries
    bid_fill: np.ndarray  # [L, A] bool, whether each action's bid would fill
    ask_fill: np.ndarray  # [L, A]
    bid_edge: np.ndarray  # [L, A] price units, mid - bid (0 where not quoted)
    ask_edge: np.ndarray  # [L, A]
    dmid: np.ndarray  # [L] the mid's move over each step


class EpisodeEnv:
    """Episodes drawn by ``draw(rng)`` stepped one quote at a time; seeded by ``reset(seed=...)``.

    Any market whose fills are decided per action before the episode (drawn uniforms in the
    Avellaneda-Stoikov market, the tape on a tick market) fits: :class:`QuoteEnv` and
    :func:`tape_env` are the two.
    """

    def __init__(
        self,
        params: QuoteParams,
        draw: Callable[[np.random.Generator], Episode],
        n_obs: int,
        *,
        seed: int = 0,
    ) -> None:
        self.params, self.draw, self.n_obs = params, draw, n_obs
        self.rng = np.random.default_rng(seed)
        self.k, self.state = 0, params.start
        self.episode: Episode | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.episode = self.draw(self.rng)
        self.k, self.state = 0, self.params.start
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        assert self.episode is not None
        x = (self.state - self.params.start) / self.params.max_inventory
        row = self.episode.inputs[min(self.k, len(self.episode.dmid) - 1)]
        return np.concatenate([row, np.array([x, 1.0 - abs(x)], dtype=np.float32)])

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.episode is None:
            raise RuntimeError("call reset() before step()")
        e, a, k = self.episode, int(action), self.k
        last = k == len(e.dmid) - 1

        def cell(x: float | bool) -> np.ndarray:
            return np.array([[x]])

        out = settle_quotes(
            self.params,
            cell(self.state),
            cell(a),
            cell(bool(e.bid_fill[k, a])),
            cell(bool(e.ask_fill[k, a])),
            cell(e.bid_edge[k, a]),
            cell(e.ask_edge[k, a]),
            cell(e.dmid[k]),
            liquidate=last,
        )
        self.state = int(out.inventory[0, 0]) + self.params.start
        self.k += 1
        info = {"inventory": int(out.inventory[0, 0])}
        return self._obs(), float(out.reward[0, 0]), last, False, info


class QuoteEnv(EpisodeEnv):
    """One Avellaneda-Stoikov episode at a time (fresh seeded paths at every reset)."""

    def __init__(
        self,
        market: av.ASParams,
        params: QuoteParams,
        *,
        macro_window: int,
        micro_window: int,
        seed: int = 0,
    ) -> None:
        self.market = market
        self.paths: av.ASPaths | None = None
        super().__init__(params, self._draw, 2 * 3 * len(av.FEATURES) + 2, seed=seed)
        self.windows = (macro_window, micro_window)

    def _draw(self, rng: np.random.Generator) -> Episode:
        macro_w, micro_w = self.windows
        self.paths = av.generate(self.market, 1, rng, history=max(self.windows))
        macro = av.features(self.paths, self.market, macro_w)[0]
        micro = av.features(self.paths, self.market, micro_w)[0]
        p_bid, p_ask, e_bid, e_ask = av.action_tables(self.market, self.params)
        n = self.market.steps
        return Episode(
            np.concatenate([macro, micro], axis=1).astype(np.float32),
            self.paths.u_bid[0, :, None] < p_bid,
            self.paths.u_ask[0, :, None] < p_ask,
            np.broadcast_to(e_bid, (n, len(e_bid))),
            np.broadcast_to(e_ask, (n, len(e_ask))),
            self.paths.dmid[0],
        )


def as_gymnasium(env: EpisodeEnv) -> Any:
    """``env`` as a ``gymnasium.Env`` (needs the ``[mm]`` extra: ``pip install hmarl[mm]``)."""
    import gymnasium
    from gymnasium import spaces

    class GymQuoteEnv(gymnasium.Env):
        def __init__(self) -> None:
            super().__init__()
            self.metadata = {"render_modes": []}
            self.inner = env
            self.observation_space = spaces.Box(-np.inf, np.inf, (env.n_obs,), np.float32)
            self.action_space = spaces.Discrete(env.params.n_actions)

        def reset(
            self, *, seed: int | None = None, options: dict[str, Any] | None = None
        ) -> tuple[np.ndarray, dict[str, Any]]:
            super().reset(seed=seed)
            return self.inner.reset(seed=seed, options=options)

        def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
            return self.inner.step(int(action))

    return GymQuoteEnv()
