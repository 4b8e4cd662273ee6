"""Statistics of a quoting run, with units in the keys (the conventions of
:func:`hmarl.stats.metrics.compute_stats`).

Why a function of its own: a market maker's PnL is additive in price units x lots, not a
compounded equity curve, so return-based figures (annualised return, drawdown in %) do not
apply; the drawdown here is absolute, from the running peak of cumulative PnL, and the Sharpe
ratio is that of per-step PnL over ``periods`` steps a year (the one
:func:`hmarl.stats.metrics.sharpe_ratio`). Inputs are the settlement's parts per step of one
run (``hmarl.market.quoting.QuoteSettlement``, as numpy arrays ``[L]``). The market does not
react to the quotes (no market impact): every report that shows these says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hmarl.market.quoting import QuoteParams, QuoteSettlement, posted
from hmarl.stats.metrics import sharpe_ratio


def batch_quote_stats(
    params: QuoteParams,
    states: np.ndarray,
    actions: np.ndarray,
    settlement: QuoteSettlement[np.ndarray],
    periods: float,
) -> dict[str, Any]:
    """:func:`quote_stats` of each of ``B`` episodes ``[B, L]``, averaged over the episodes
    (per-episode figures: a market maker's episodes are separate days, not one curve)."""
    bid_posted, ask_posted = posted(params, states, actions)
    runs = [
        quote_stats(
            inventory=settlement.inventory[b],
            bid_fill=settlement.bid_fill[b],
            ask_fill=settlement.ask_fill[b],
            bid_posted=bid_posted[b],
            ask_posted=ask_posted[b],
            spread=settlement.spread[b],
            fee=settlement.fee[b],
            mtm=settlement.mtm[b],
            terminal=settlement.terminal[b],
            max_inventory=params.max_inventory,
            periods=periods,
        )
        for b in range(len(states))
    ]
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def quote_stats(
    *,
    inventory: np.ndarray,
    bid_fill: np.ndarray,
    ask_fill: np.ndarray,
    bid_posted: np.ndarray,
    ask_posted: np.ndarray,
    spread: np.ndarray,
    fee: np.ndarray,
    mtm: np.ndarray,
    terminal: np.ndarray,
    max_inventory: int,
    periods: float,
) -> dict[str, Any]:
    """One run's quoting statistics; every array is per step ``[L]``.

    PnL is wealth's change (realised spread net of fees, plus mark-to-market, minus the final
    liquidation), without the training penalties (``phi q^2``, no-quote): those shape the
    objective, they are not money.
    """
    realised = np.asarray(spread, dtype=np.float64) - np.asarray(fee, dtype=np.float64)
    step_pnl = realised + np.asarray(mtm, dtype=np.float64) - np.asarray(terminal, np.float64)
    cum = np.cumsum(step_pnl)
    peak = np.maximum.accumulate(np.concatenate([[0.0], cum]))[1:]
    q = np.asarray(inventory, dtype=np.float64)
    fills_bid, fills_ask = float(np.sum(bid_fill)), float(np.sum(ask_fill))
    posted = float(np.sum(bid_posted) + np.sum(ask_posted))
    return {
        "PnL [price x lots]": float(cum[-1]) if len(cum) else 0.0,
        "Realised spread net of fees [price x lots]": float(realised.sum()),
        "Spread captured [price x lots]": float(np.sum(spread)),
        "Fees [price x lots]": float(np.sum(fee)),
        "Mark-to-market PnL [price x lots]": float(np.sum(mtm)),
        "Liquidation cost [price x lots]": float(np.sum(terminal)),
        "Fills bid [#]": fills_bid,
        "Fills ask [#]": fills_ask,
        "Fill ratio [%]": 100.0 * (fills_bid + fills_ask) / posted if posted else 0.0,
        "Inventory mean [lots]": float(q.mean()) if len(q) else 0.0,
        "Inventory |mean| [lots]": float(np.abs(q).mean()) if len(q) else 0.0,
        "Inventory max [lots]": float(np.abs(q).max()) if len(q) else 0.0,
        "Time at limits [%]": 100.0 * float(np.mean(np.abs(q) >= max_inventory)) if len(q) else 0.0,
        "Sharpe Ratio (step PnL)": sharpe_ratio(step_pnl, periods),
        "Max. Drawdown [price x lots]": float(np.max(peak - cum)) if len(cum) else 0.0,
    }
