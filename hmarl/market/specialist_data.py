"""The market's tensors for ``model=specialists``: one window tensor per specialist.

MacroNet reads ``features.names`` over ``features.macro_window`` exactly as in SPEC.md's
model (the same cache entry). Each specialist reads its own feature list over its own
window; every distinct (feature list, window) pair is built once, as a market of its own
through :func:`hmarl.market.market_data.cached_market` (the same causal features, the same
prefix-sum windows, a z-score scaler fitted on the train split only, the same on-disk cache),
and the specialists' scaled windows are laid side by side in ``MarketData.micro``
(``[T, sum_k 3 N_k]``, in the order of ``model.specialists``). The policy splits that tensor
back per specialist (hmarl/agent/specialists.py), so the rollout reads one context tensor as
for SPEC's MicroNet and is unchanged.

All tensors share the candle rows; the decision rows start where every window is complete.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from hmarl.config import DataConfig, SpecialistConfig
from hmarl.market.groups import expand_groups
from hmarl.market.market_data import (
    MarketData,
    cached_market,
    candles_needed,
    data_warnings,
    decision_splits,
    extra_columns,
    load_market_candles,
    market_for_config,
    resolve_feature_names,
    split_args,
)

# A specialist's market builds its window as `macro`; its `micro` (required by the builder)
# is the shortest window allowed, so it costs next to nothing and is never read.
UNUSED_WINDOW = 2


@dataclass(frozen=True)
class SpecialistInputs:
    """What one specialist reads: feature names (groups expanded) and a window in bars."""

    names: tuple[str, ...]
    window: int

    def spec(self) -> dict[str, object]:
        return {"names": list(self.names), "window": self.window}


def specialist_inputs(specialists: Sequence[SpecialistConfig]) -> list[SpecialistInputs]:
    """The configured specialists' inputs, ``group:<name>`` expanded (hmarl.market.groups)."""
    return [SpecialistInputs(tuple(expand_groups(s.features)), s.window) for s in specialists]


def inputs_from_spec(spec: Mapping[str, object]) -> list[SpecialistInputs]:
    """A checkpoint's ``feature_spec['specialists']`` back as inputs (empty: SPEC's model)."""
    stored = spec.get("specialists") or []
    assert isinstance(stored, list)
    return [SpecialistInputs(tuple(d["names"]), int(d["window"])) for d in stored]


def _scaler_key(pair: int, part: str) -> str:
    return f"s{pair}.{part}"


def market_for_model(
    data: DataConfig,
    *,
    feature_names: Sequence[str],
    macro_window: int,
    micro_window: int,
    specialists: Sequence[SpecialistInputs] = (),
    cache_dir: str | None,
    scalers: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
    log: Callable[[str], None] | None = print,
) -> MarketData:
    """The entry points' market: :func:`market_for_config` for SPEC's model (unchanged), or
    the MacroNet's tensors plus each specialist's windows (``scalers`` given: a checkpoint's,
    never refitted)."""
    if not specialists:
        return market_for_config(
            data,
            feature_names=feature_names,
            macro_window=macro_window,
            micro_window=micro_window,
            cache_dir=cache_dir,
            scalers=scalers,
            log=log,
        )
    names = resolve_feature_names(feature_names)
    pairs = list(dict.fromkeys(specialists))  # distinct (features, window), first-use order
    lists = [names, *(list(p.names) for p in pairs)]
    need = max(
        candles_needed(names, macro_window, micro_window),
        *(candles_needed(p.names, p.window) for p in pairs),
    )
    candles = load_market_candles(
        data,
        min_candles=need,
        extra_columns=extra_columns(data, lists),
        log=log,
        need_reason="the longest window (MacroNet's or a specialist's) + feature warm-up + "
        "room for validation and test splits",
    )
    for note in data_warnings(candles, macro_window, micro_window):
        print(f"warning: {note}", file=sys.stderr)
    common = split_args(data)
    main = cached_market(
        candles,
        cache_dir=cache_dir,
        log=log,
        feature_names=names,
        macro_window=macro_window,
        micro_window=micro_window,
        scalers=None if scalers is None else {k: scalers[k] for k in ("macro", "micro")},
        **common,
    )
    built: list[MarketData] = []
    for i, pair in enumerate(pairs):
        own = None
        if scalers is not None:
            own = {k: scalers[_scaler_key(i, k)] for k in ("macro", "micro")}
        built.append(
            cached_market(
                candles,
                cache_dir=cache_dir,
                log=log,
                feature_names=list(pair.names),
                macro_window=pair.window,
                micro_window=UNUSED_WINDOW,
                scalers=own,
                **common,
            )
        )
    first_valid = max(int(m.meta["first_valid"]) for m in (main, *built))
    tensors = {pair: m.macro for pair, m in zip(pairs, built, strict=True)}
    merged = dict(main.scalers)
    for i, m in enumerate(built):
        merged.update({_scaler_key(i, k): v for k, v in m.scalers.items()})
    return dataclasses.replace(
        main,
        micro=np.concatenate([np.asarray(tensors[s]) for s in specialists], axis=1),
        splits=decision_splits(main.meta["row_splits"], first_valid),
        scalers=merged,
        specialists=[s.spec() for s in specialists],
        meta={**main.meta, "first_valid": first_valid},
    )
