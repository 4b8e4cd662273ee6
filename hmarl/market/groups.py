"""Ready-made feature groups for specialists (``group:<name>`` in a feature list).

Why a registry of groups: the user's earlier system had one specialist per kind of
information (price, tape, liquidity, order flow); a group names that kind once, and a
specialist's feature list says ``group:tape`` instead of repeating its members. Groups hold
feature names of :mod:`hmarl.market.features` (registered features and ``col:<name>`` raw
columns); which candle columns they read follows from those names
(:func:`hmarl.market.features.required_columns`).
"""

from __future__ import annotations

from collections.abc import Sequence

from hmarl.market.features import DEFAULT_FEATURES

GROUP_PREFIX = "group:"
_VOLUME = ("vol_z_48", "logvol_chg", "obv_slope_48")
_CALENDAR = ("tod_sin", "tod_cos", "dow_sin", "dow_cos")

FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    # today's price indicators: the reference features without volume and calendar
    "price": tuple(f for f in DEFAULT_FEATURES if f not in _VOLUME + _CALENDAR),
    # candle volume (every OHLCV file has it)
    "volume": _VOLUME,
    # the tape of Binance klines: taker-buy share, trade count, signed volume
    "tape": ("taker_buy_share", "log_trades", "signed_vol_12", "signed_vol_48"),
    # tick bars (features=book, hmarl.sources.ticks): spread, depth, top-of-book imbalance
    "liquidity": (
        "col:spread_bps",
        "col:bid_size_mean",
        "col:ask_size_mean",
        "col:imbalance_last",
    ),
    # tick bars: imbalance and its changes, trade pressure and pace
    "order_flow": (
        "col:imbalance_tw",
        "col_chg:imbalance_last",
        "col:trade_pressure",
        "col:trade_count",
    ),
    # tick bars: short mid returns and realised volatility
    "mid": ("col:ret_1", "col:ret_5", "col:ret_10", "col:rv_10", "col:rv_30"),
}


def expand_groups(names: Sequence[str]) -> list[str]:
    """Feature names with each ``group:<name>`` replaced by its members, order kept, no repeats.

    An unknown group is a ValueError naming the known ones.
    """
    out: list[str] = []
    for name in names:
        if name.startswith(GROUP_PREFIX):
            group = name[len(GROUP_PREFIX) :]
            if group not in FEATURE_GROUPS:
                raise ValueError(
                    f"unknown feature group {name!r}; known: "
                    + ", ".join(GROUP_PREFIX + g for g in FEATURE_GROUPS)
                )
            members: Sequence[str] = FEATURE_GROUPS[group]
        else:
            members = (name,)
        out.extend(m for m in members if m not in out)
    return out
