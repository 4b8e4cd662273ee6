"""The quoting task one step at a time: the environment a gym loop (or PPO) steps.

The same market (:mod:`hmarl.market.avellaneda`), the same fill and posting rules and the same
settlement (:func:`hmarl.market.quoting.settle_quotes`) as the factored rollout, behind the
``reset`` / ``step`` API of gymnasium (``step`` returns ``obs, reward, terminated, truncated,
info``). Why a plain class: the market package imports neither torch nor gymnasium;
:func:`as_gymnasium` wraps it in a ``gymnasium.Env`` (the ``[mm]`` extra) for Stable-Baselines3.

Observation: the long window's ``[mean | std | last]`` of the market features, the short
window's, then ``q / Q`` and ``1 - |q / Q|``: exactly the hierarchical policy's inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hmarl.market import avellaneda as av
from hmarl.market.quoting import QuoteParams, settle_quotes


class QuoteEnv:
    """One Avellaneda-Stoikov episode at a time; seeded by ``reset(seed=...)``."""

    def __init__(
        self,
        market: av.ASParams,
        params: QuoteParams,
        *,
        macro_window: int,
        micro_window: int,
        seed: int = 0,
    ) -> None:
        self.market, self.params = market, params
        self.windows = (macro_window, micro_window)
        self.rng = np.random.default_rng(seed)
        self.tables = av.action_tables(market, params)
        self.n_obs = 2 * 3 * len(av.FEATURES) + 2
        self.k, self.state = 0, params.start
        self.paths: av.ASPaths | None = None
        self.inputs = np.zeros((market.steps, self.n_obs - 2), dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        macro_w, micro_w = self.windows
        self.paths = av.generate(self.market, 1, self.rng, history=max(self.windows))
        macro = av.features(self.paths, self.market, macro_w)[0]
        micro = av.features(self.paths, self.market, micro_w)[0]
        self.inputs = np.concatenate([macro, micro], axis=1).astype(np.float32)
        self.k, self.state = 0, self.params.start
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        x = (self.state - self.params.start) / self.params.max_inventory
        row = self.inputs[min(self.k, self.market.steps - 1)]
        return np.concatenate([row, np.array([x, 1.0 - abs(x)], dtype=np.float32)])

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.paths is None:
            raise RuntimeError("call reset() before step()")
        p_bid, p_ask, e_bid, e_ask = self.tables
        a, k = int(action), self.k
        last = k == self.market.steps - 1

        def cell(x: float | bool) -> np.ndarray:
            return np.array([[x]])

        out = settle_quotes(
            self.params,
            cell(self.state),
            cell(a),
            cell(bool(self.paths.u_bid[0, k] < p_bid[a])),
            cell(bool(self.paths.u_ask[0, k] < p_ask[a])),
            cell(e_bid[a]),
            cell(e_ask[a]),
            cell(self.paths.dmid[0, k]),
            liquidate=last,
        )
        self.state = int(out.inventory[0, 0]) + self.params.start
        self.k += 1
        info = {"inventory": int(out.inventory[0, 0])}
        return self._obs(), float(out.reward[0, 0]), last, False, info


def as_gymnasium(env: QuoteEnv) -> Any:
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
