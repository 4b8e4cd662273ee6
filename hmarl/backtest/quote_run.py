"""The backtest of a quoting checkpoint (``task=quote``): what
``python -m hmarl.backtest checkpoint=<quoting best.pt>`` runs.

It scores the checkpoint's policy on the market it was trained on, on ``split`` (test by
default; val also), beside the baselines on the same episodes. On a tick market
(``data=ticks_synthetic`` | ``ticks``): every whole episode of the split's tape, the greedy
agent beside no quote, the best fixed symmetric quote (its level chosen on validation) and the
closed-form quotes with ``sigma``, ``A``, ``k`` estimated on the train tape (NaN, with the reason
in ``meta.closed_form_missing``, when they cannot be); each objective is the settled reward of
the one path the tape gives; stats.json adds ``quote_stats_per_day`` (per policy, per UTC day of
the tape's timestamps). On the Avellaneda-Stoikov market, the fixed seeded paths of ``split``:

* **no quote**; the **best fixed symmetric quote** (the level with the best exact objective:
  on the Avellaneda-Stoikov market a (time, inventory) policy's value does not depend on the
  mid's path, so that is the level validation chooses); the **closed-form quotes** (Gueant's
  approximation, :func:`hmarl.market.avellaneda.closed_form_policy`); and the **exact optimum**
  by backward induction;
* each as the exact objective over the fills given the paths (what training selects on), and as
  the statistics of one run on the paths' sampled fills (:mod:`hmarl.stats.quoting`, per
  episode, through :func:`~hmarl.stats.quoting.batch_quote_stats`).

It writes one report folder, whole or absent (the trading backtest's
:func:`hmarl.io.staged_folder`, under :func:`hmarl.backtest.run.backtest`'s lock): stats.json,
stats.csv, steps.csv (the policy's every step: mid, quotes, fills, inventory, cash, reward
parts), cost_sensitivity.csv (every policy at each of ``fee_multipliers``: maker fee and
liquidation cost scaled, baselines re-chosen), seeds.csv (``seeds=K`` sampled runs), on a tick
market ``days/`` (per UTC day and ticker: :mod:`hmarl.backtest.quote_days` through
:mod:`hmarl.backtest.tape_days`), report.html, config.json and backtest.log; and logs it to
MLflow as a run tagged ``kind=backtest`` beside its training run. **The market does not react
to the quotes** (no market impact): every figure rests on that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf

from hmarl import __version__
from hmarl.agent.checkpoint import checkpoint_episode
from hmarl.agent.quote_rollout import (
    QuoteBatch,
    QuoteSample,
    QuoteTrajectory,
    as_batch,
    collect_quotes,
    follow,
    sample_quotes,
)
from hmarl.agent.quote_update import exact_objective
from hmarl.backtest import quote_days
from hmarl.backtest.report import BacktestResult
from hmarl.backtest.tape_days import write_days
from hmarl.config import BacktestConfig, BacktestError, Config, flatten, to_config
from hmarl.io import append_text, staged_folder, write_csv, write_json
from hmarl.market.quoting import QuoteParams, QuoteSettlement, posted
from hmarl.report.quote_html import write_quote_report_html
from hmarl.stats.metrics import metric_keys
from hmarl.stats.quoting import batch_quote_stats, quote_stats
from hmarl.tracking import backtest_tracking, git_commit, tracked_run
from hmarl.train import quote_tape as qt
from hmarl.train.quote_tape import TapeQuoteMarket
from hmarl.train.quote_task import (
    OBJECTIVE,
    SPLIT_SEEDS,
    AnyQuoteMarket,
    QuoteMarket,
    as_numpy,
    evaluate,
    objective_figures,
    quote_market,
    quote_policy_from_checkpoint,
)

AGENT = "agent"
NO_IMPACT = "no market impact: the market does not react to the quotes"
FILL_RULE = (
    "a one-lot quote delta from the mid fills within a step with probability "
    "1 - exp(-A exp(-k delta) dt), sides independent; a quote lives one step; a quote that "
    "could breach the inventory limits is not posted"
)
BASELINE_DEFINITIONS = {
    "optimum": "the exact optimal (time, inventory) policy by backward induction",
    "closed_form": "Gueant's closed-form quotes with the market's sigma, A, k, rounded to the "
    "nearest offset",
    "best_fixed": "both sides at the one level with the best exact objective",
    "no_quote": "never quote (objective 0)",
}
TAPE_FILL_RULE = (
    "a bid at P fills from the step's sell trades printing below P in full, and at P for the "
    "volume beyond the queue ahead (the displayed size at P when the step starts); the ask "
    "mirrors it; a quote lives one step; a quote that could breach the inventory limits is not "
    "posted"
)
TAPE_BASELINE_DEFINITIONS = {
    "closed_form": "Gueant's closed-form quotes with sigma, A, k estimated on the train tape "
    "(hmarl.market.tape_market.estimate_as), rounded to the nearest offset; NaN when A or k "
    "cannot be estimated > 0",
    "best_fixed": "both sides at the one level with the best validation objective",
    "no_quote": "never quote",
}
TAPE_NAMES = {
    qt.AGENT: AGENT,
    qt.BEST_FIXED: "best_fixed",
    qt.NO_QUOTE: "no_quote",
    qt.CLOSED_FORM: "closed_form",
}
CLOSED_FORM = "closed_form"
Run = tuple[np.ndarray, np.ndarray, QuoteSettlement[np.ndarray]]  # states, actions, settlement


def checkpoint_config(ckpt: Mapping[str, Any]) -> Config:
    """The training config a quoting checkpoint records, typed."""
    merged = OmegaConf.merge(OmegaConf.structured(Config), dict(ckpt.get("config") or {}))
    return to_config(merged)  # type: ignore[arg-type]


def _agent_run(
    cfg: BacktestConfig,
    ckpt: Mapping[str, Any],
    source: str,
    batch: QuoteBatch,
    params: QuoteParams,
) -> tuple[float, Run, str]:
    """The policy on the batch: greedy (as validated in training) or sampled with a seed."""
    policy = quote_policy_from_checkpoint(ckpt, source)
    traj: QuoteSample | QuoteTrajectory
    if cfg.policy in ("auto", "greedy"):
        value, traj = evaluate(policy, batch, params)
        how = "greedy (argmax), as validated in training"
    else:
        seed = cfg.policy_seed
        seed = int(ckpt["config"].get("seed", 0)) if seed is None else seed
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            traj = collect_quotes(policy, batch, params, generator=gen)
            value = exact_objective(params, batch, traj.every_state().permute(1, 2, 0, 3).double())
        how = f"sampled (seed {seed}); its objective is exact over its own action noise too"
    run = (traj.states.numpy(), traj.actions.numpy(), as_numpy(traj.settlement))
    return value, run, how


def _policy_run(params: QuoteParams, batch: QuoteBatch, policy: np.ndarray) -> tuple[float, Run]:
    """A (time, inventory) policy ``[L, S, A]`` on the batch: exact objective and one run."""
    n_env, length = batch.dmid.shape
    probs = torch.as_tensor(policy, dtype=torch.float64)
    value = exact_objective(params, batch, probs.expand(n_env, *probs.shape))
    choice = probs.argmax(-1).T.unsqueeze(1).expand(params.n_states, n_env, length)
    states, actions, settlement = follow(params, batch, choice)
    return value, (states.numpy(), actions.numpy(), as_numpy(settlement))


def step_pnl(s: QuoteSettlement[np.ndarray]) -> np.ndarray:
    """Wealth's change per step ``[B, L]``: realised spread net of fees, mark-to-market, the
    final liquidation (the penalties are not money)."""
    return s.spread - s.fee + s.mtm - s.terminal


def steps_frame(params: QuoteParams, batch: QuoteBatch, mid: np.ndarray, run: Run) -> pd.DataFrame:
    """Every step of every episode of a run: mid, quotes (NaN: not posted), fills, inventory,
    cash (price units, before the final liquidation) and the reward's parts."""
    states, actions, s = run
    a = torch.as_tensor(actions).unsqueeze(-1)
    bid_edge = batch.bid_edge.gather(-1, a).squeeze(-1).numpy()
    ask_edge = batch.ask_edge.gather(-1, a).squeeze(-1).numpy()
    bid_posted, ask_posted = posted(params, states, actions)
    start = mid[:, :-1]
    bid = np.where(bid_posted, start - bid_edge, np.nan)
    ask = np.where(ask_posted, start + ask_edge, np.nan)
    cash = np.cumsum(
        s.ask_fill * np.nan_to_num(ask) - s.bid_fill * np.nan_to_num(bid) - s.fee, axis=1
    )
    n_env, length = states.shape
    columns: dict[str, np.ndarray] = {
        "path": np.repeat(np.arange(n_env), length),
        "step": np.tile(np.arange(length), n_env),
        "mid": start,
        "bid": bid,
        "ask": ask,
        "bid_posted": bid_posted,
        "ask_posted": ask_posted,
        "bid_fill": s.bid_fill,
        "ask_fill": s.ask_fill,
        "inventory": s.inventory,
        "cash": cash,
        "spread": s.spread,
        "fee": s.fee,
        "mtm": s.mtm,
        "inventory_penalty": s.inventory_penalty,
        "no_quote": s.no_quote,
        "terminal": s.terminal,
        "reward": s.reward,
    }
    return pd.DataFrame({k: np.asarray(v).reshape(-1) for k, v in columns.items()})


class Scores(NamedTuple):
    """What a market's scoring gives the report: objectives, statistics, the agent's steps,
    mean cumulative PnL curves and the market's own entries of ``meta``."""

    values: dict[str, float]
    stats: dict[str, dict[str, Any]]
    steps: pd.DataFrame
    curves: dict[str, np.ndarray]
    meta: dict[str, Any]
    extra: dict[str, Any]  # further top-level entries of stats.json


def _as_scores(
    cfg: BacktestConfig, ckpt: Mapping[str, Any], source: str, market: QuoteMarket, split: str
) -> Scores:
    """The Avellaneda-Stoikov market: exact objectives on the split's seeded paths."""
    params, s = market.params, market.settings
    paths = market.paths(split)
    batch = as_batch(
        market.market, params, paths, macro_window=s.macro_window, micro_window=s.micro_window
    )
    value, agent, how = _agent_run(cfg, ckpt, source, batch, params)
    values, runs = {AGENT: value}, {AGENT: agent}
    for name, pi in market.baseline_policies().items():
        values[name], runs[name] = _policy_run(params, batch, pi)
    stats = {
        name: {
            **objective_figures(values[name], values),
            **batch_quote_stats(params, *run, periods=market.steps),
        }
        for name, run in runs.items()
    }
    meta = {
        "episodes": int(paths.dmid.shape[0]),
        "paths_seed": SPLIT_SEEDS[split],
        "market": {"source": "avellaneda", **asdict(market.market)},
        "best_fixed_level": market.best_fixed_level(),
        "policy": how,
        "fill_rule": FILL_RULE,
        "baselines": BASELINE_DEFINITIONS,
    }
    steps = steps_frame(params, batch, paths.mid, agent)
    return Scores(values, stats, steps, _curves(runs), meta, {})


def _curves(runs: Mapping[str, Run]) -> dict[str, np.ndarray]:
    return {name: step_pnl(run[2]).cumsum(1).mean(0) for name, run in runs.items()}


def _cat_runs(runs: Sequence[Run]) -> Run:
    """Runs of several tapes as one (episodes stacked)."""
    if len(runs) == 1:
        return runs[0]
    states = np.concatenate([r[0] for r in runs])
    actions = np.concatenate([r[1] for r in runs])
    settled = QuoteSettlement(*(np.concatenate(x) for x in zip(*(r[2] for r in runs), strict=True)))
    return states, actions, settled


def _cat_parts(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`hmarl.train.quote_tape.run_stats` of several tapes as one run (arrays joined)."""
    return {
        k: np.concatenate([p[k] for p in parts]) if isinstance(v, np.ndarray) else v
        for k, v in parts[0].items()
    }


def _tape_scores(
    cfg: BacktestConfig,
    ckpt: Mapping[str, Any],
    source: str,
    market: TapeQuoteMarket,
    train_cfg: Config,
    split: str,
    *,
    days: bool = True,
) -> Scores:
    """A tick market: every whole episode of the split of every tape, the greedy agent beside
    the baselines of :func:`hmarl.train.quote_tape.pooled_choices` (settled rewards of one
    path each, averaged over the episodes of every tape); statistics per UTC day and ticker,
    and the agent's day files (:mod:`hmarl.backtest.quote_days`) in ``extra["days"]``."""
    if cfg.policy not in ("auto", "greedy"):
        raise BacktestError(
            f"policy={cfg.policy}: a tick-market checkpoint is scored greedily (its tape fixes "
            "every fill); use policy=greedy (default) and seeds=K for sampled runs"
        )
    params, name = market.params, qt.SPLITS[split]
    policy = quote_policy_from_checkpoint(ckpt, source)
    chosen, _ = qt.pooled_choices(policy, market.parts, params, name)
    periods = qt.periods_per_year(market.tape)
    runs: dict[str, list[Run]] = {}
    parts: dict[str, list[dict[str, Any]]] = {}
    frames: list[pd.DataFrame] = []
    first_path = 0
    for part, c in zip(market.parts, chosen, strict=True):
        on: qt.TapeSplit = getattr(part.data, name)
        for policy_name, table in c.tables.items():
            key = TAPE_NAMES[policy_name]
            states, actions, settled = follow(params, on.batch, table)
            runs.setdefault(key, []).append((states.numpy(), actions.numpy(), as_numpy(settled)))
            parts.setdefault(key, []).append(qt.run_stats(params, on.batch, table, periods))
        rows = on.starts[:, None] + np.arange(part.market.episode_steps + 1)
        tape = getattr(part.market, name)
        mid = (tape.bid + tape.ask) / 2.0 * part.market.tick
        steps = steps_frame(params, on.batch, mid[np.minimum(rows, len(mid) - 1)], runs[AGENT][-1])
        steps.insert(0, "tape", part.name)
        steps["path"] += first_path
        first_path += len(on.starts)
        frames.append(steps)
    joined = {key: _cat_runs(r) for key, r in runs.items()}
    values = {key: float(run[2].reward.sum(1).mean()) for key, run in joined.items()}
    stats = {
        key: {OBJECTIVE: values[key], **quote_stats(**_cat_parts(p))} for key, p in parts.items()
    }
    per_day = {key: _per_day(market, name, p) for key, p in parts.items()}
    estimates = {p.name: p.data.estimate for p in market.parts}
    reason = None
    if CLOSED_FORM not in values:
        values[CLOSED_FORM] = math.nan
        reason = "; ".join(
            f"{p.name}: "
            + (
                p.data.estimate_note
                or f"estimated A={p.data.estimate.A:g}, k={p.data.estimate.k:g}: both must be > 0"
            )
            for p in market.parts
            if not qt.closed_form_defined(p.data.estimate)
        )
    est = market.data.estimate
    source_name = train_cfg.data.source.value
    baselines = market.baselines()
    meta = {
        "episodes": sum(len(getattr(p.data, name).starts) for p in market.parts),
        "first_row": int(getattr(market.data, name).starts[0]),
        "market": {
            "source": source_name,
            **asdict(getattr(train_cfg.data, source_name)),
            "path": train_cfg.data.path,
            "paths": list(train_cfg.data.paths),
            "tick": market.tape.tick,
        },
        "tapes": {p.name: len(getattr(p.data, name).starts) for p in market.parts},
        "best_fixed_level": chosen[0].best_fixed_level,
        "best_fixed_validation": chosen[0].best_fixed_validation,
        "closed_form_validation": baselines.get(CLOSED_FORM, math.nan),
        "estimate_on_train": {"sigma": est.sigma, "A": est.A, "k": est.k},
        "estimates_on_train": {n: e._asdict() for n, e in estimates.items()},
        "closed_form_missing": reason,
        "policy": "greedy (argmax), as validated in training",
        "fill_rule": TAPE_FILL_RULE,
        "baselines": TAPE_BASELINE_DEFINITIONS,
    }
    extra: dict[str, Any] = {"quote_stats_per_day": per_day}
    steps = pd.concat(frames, ignore_index=True)
    if not days:
        return Scores(values, stats, steps, _curves(joined), meta, extra)
    lot = train_cfg.data.ticks.lot if source_name == "ticks" else 1.0
    day_frames = [
        quote_days.part_steps(
            p, name, f, quote_days.action_probabilities(policy, getattr(p.data, name), params), lot
        )
        for p, f in zip(market.parts, frames, strict=True)
    ]
    extra["days"] = quote_days.agent_days(
        market.parts, day_frames, per_day, params, periods=periods, lot=lot
    )
    return Scores(values, stats, steps, _curves(joined), meta, extra)


def _per_day(market: TapeQuoteMarket, name: str, parts: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One policy's statistics per UTC day (keyed ``YYYY-MM-DD``; ``"TICKER YYYY-MM-DD"`` when
    the market has several tickers), each ticker's tapes joined in time order."""
    by_ticker: dict[str, list[int]] = {}
    for i, p in enumerate(market.parts):
        by_ticker.setdefault(p.ticker, []).append(i)
    out: dict[str, Any] = {}
    for ticker, idx in by_ticker.items():
        joined = _cat_parts([parts[i] for i in idx])
        days = qt.per_day_of(
            [market.parts[i].market for i in idx],
            [getattr(market.parts[i].data, name) for i in idx],
            name,
            joined,
        )
        prefix = f"{ticker} " if len(by_ticker) > 1 else ""
        out.update({prefix + day: v for day, v in days.items()})
    return out


PNL_EPISODE = "PnL per episode [price x lots]"


def _scores(
    cfg: BacktestConfig,
    ckpt: Mapping[str, Any],
    source: str,
    market: AnyQuoteMarket,
    train_cfg: Config,
    split: str,
    days: bool = True,
) -> Scores:
    """The market's scoring (``days``: with the tick market's day files, which the fee
    multipliers' re-scorings skip)."""
    if isinstance(market, TapeQuoteMarket):
        return _tape_scores(cfg, ckpt, source, market, train_cfg, split, days=days)
    return _as_scores(cfg, ckpt, source, market, split)


def scaled_costs(params: QuoteParams, multiplier: float) -> QuoteParams:
    """The rules with the maker fee and the final liquidation cost times ``multiplier``."""
    return replace(
        params,
        maker_fee=params.maker_fee * multiplier,
        liquidation_cost=params.liquidation_cost * multiplier,
    )


def cost_sensitivity(
    cfg: BacktestConfig,
    ckpt: Mapping[str, Any],
    source: str,
    market: AnyQuoteMarket,
    train_cfg: Config,
    split: str,
    scored: Scores,
) -> pd.DataFrame:
    """Every policy's objective and PnL per episode at each of ``fee_multipliers``: the maker
    fee (a rebate when negative: it scales too) and the liquidation cost times the multiplier,
    every baseline re-chosen under those costs (the best fixed level on validation, the closed
    form's fee term, the optimum), the agent's quotes unchanged (it was trained at 1x)."""
    rows = []
    for m in cfg.fee_multipliers:
        if m == 1.0:
            at = scored
        else:
            scaled = market.with_params(scaled_costs(market.params, m))
            at = _scores(cfg, ckpt, source, scaled, train_cfg, split, days=False)
        for name, value in at.values.items():
            per_episode = at.curves[name][-1] if name in at.curves else math.nan
            rows.append(
                {
                    "fee_multiplier": m,
                    "policy": name,
                    OBJECTIVE: value,
                    PNL_EPISODE: float(per_episode),
                }
            )
    return pd.DataFrame(rows)


def seed_runs(
    cfg: BacktestConfig, ckpt: Mapping[str, Any], source: str, market: AnyQuoteMarket, split: str
) -> dict[str, Any]:
    """``seeds`` sampled runs of the checkpoint's policy (seeds 0..K-1) on the split's
    episodes: each run's settled objective (mark-to-market included) and PnL per episode, their
    mean and std; on the Avellaneda-Stoikov market also the sampled policy's exact objective
    over its actions and the fills (the same for every seed)."""
    policy = quote_policy_from_checkpoint(ckpt, source)
    batch, params = market.eval_batch(split), market.params
    objectives, pnl = [], []
    for seed in range(cfg.seeds):  # one path each: the sampling-only rollout walks it
        run = sample_quotes(policy, batch, params, generator=torch.Generator().manual_seed(seed))
        objectives.append(float(run.settlement.reward.sum(1).mean()))
        pnl.append(float(step_pnl(as_numpy(run.settlement)).sum(1).mean()))
    out: dict[str, Any] = {
        "seed": list(range(cfg.seeds)),
        OBJECTIVE: objectives,
        PNL_EPISODE: pnl,
        "mean": float(np.mean(objectives)),
        "std": float(np.std(objectives, ddof=1)) if len(objectives) > 1 else 0.0,
        "pnl_mean": float(np.mean(pnl)),
    }
    if isinstance(market, QuoteMarket):  # every state's probabilities, once (eval: no masks)
        with torch.no_grad():
            grid = collect_quotes(policy, batch, params, generator=torch.Generator(), greedy=True)
        probs = grid.every_state().permute(1, 2, 0, 3).double()
        out["expected_objective"] = exact_objective(params, batch, probs)
    return out


def quote_backtest(
    cfg: BacktestConfig, ckpt: Mapping[str, Any], source: str, out: Path
) -> BacktestResult:
    """Score a quoting checkpoint on ``cfg.split``'s paths with its baselines; write the report
    folder atomically into ``out`` (see the module docstring)."""
    if cfg.data is not None:
        raise BacktestError(
            "data= is for candle checkpoints: a quoting checkpoint is backtested on the market "
            "it was trained on (its own data.* record); drop data="
        )
    split = cfg.split.value
    if split not in SPLIT_SEEDS:
        raise BacktestError(
            f"split={split}: a quoting checkpoint is scored on its fixed validation or test "
            "split: use split=test (default) or split=val"
        )
    tracking, store_reason = backtest_tracking(cfg.tracking, ckpt, cfg.run_id)
    train_cfg = checkpoint_config(ckpt)
    market = quote_market(train_cfg)
    params = market.params
    if market.fingerprint != ckpt["data_fingerprint"]:
        raise BacktestError(
            f"{source}: its recorded market does not match its fingerprint (a changed capture "
            "file, or a modified checkpoint); back-test it on the data it was trained on"
        )
    scored = _scores(cfg, ckpt, source, market, train_cfg, split)
    values, stats, steps, curves = scored.values, scored.stats, scored.steps, scored.curves
    days = scored.extra.pop("days", None)
    costs = cost_sensitivity(cfg, ckpt, source, market, train_cfg, split, scored)
    seeds = seed_runs(cfg, ckpt, source, market, split) if cfg.seeds else None
    table = pd.DataFrame(stats)
    meta: dict[str, Any] = {
        "task": "quote",
        "checkpoint": source,
        "train_run_id": cfg.run_id or ckpt["train_state"].get("run_id"),
        "checkpoint_episode": checkpoint_episode(ckpt),
        "best_episode": ckpt["train_state"].get("best_episode"),
        "edge_found_in_training": ckpt["train_state"].get("best_edge"),
        "split": split,
        "steps_per_episode": market.steps,
        "rules": {**asdict(params), "offsets": list(params.offsets)},
        **scored.meta,
        "assumption": NO_IMPACT,
        "data_fingerprint": market.fingerprint,
        "hmarl": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    tags = {"kind": "backtest", "task": "quote", "git_commit": git_commit()}
    with tracked_run(tracking, f"backtest {split} {source}", tags) as tracker:
        meta["tracking"] = {"uri": tracking.uri if tracking.enabled else None, "why": store_reason}
        meta["mlflow_run_id"] = tracker.run_id
        doc = {
            "meta": meta,
            "objectives": dict(values),
            "stats": stats,
            **scored.extra,
            "cost_sensitivity": costs.to_dict(orient="records"),
            **({"seeds": seeds} if seeds else {}),
        }
        header = (
            f"{source}, split={split}: {meta['episodes']} episodes of {market.steps} steps; "
            f"policy {meta['policy']}; {NO_IMPACT}"
        )
        with staged_folder(out, "out") as work:  # renamed to `out` when complete
            files = [
                write_json(work / "stats.json", doc),
                write_csv(work / "stats.csv", table),
                write_csv(work / "steps.csv", steps, index=False),
                write_json(work / "config.json", flatten(asdict(cfg))),
                write_csv(work / "cost_sensitivity.csv", costs, index=False),
            ]
            if seeds:
                runs = pd.DataFrame({k: seeds[k] for k in ("seed", OBJECTIVE, PNL_EPISODE)})
                files.append(write_csv(work / "seeds.csv", runs, index=False))
            if days:
                what = "the checkpoint's greedy quotes"
                write_days(days, work / "days", plots=cfg.plots, what=what)
            if cfg.report_html:
                files.append(
                    write_quote_report_html(work / "report.html", steps, curves, table, header)
                )
            text = summary(meta, values, table, out, costs, seeds)
            files.append(append_text(work / "backtest.log", text))
            files = [out / p.name for p in files]
        result = BacktestResult(out, stats, table, steps, meta, files, tracker.run_id)
        tracker.set_tags({"train_run_id": str(meta["train_run_id"]), "split": split})
        tracker.log_params(flatten(asdict(cfg)))
        metrics = {
            f"{name}/{key}": float(v)
            for name, row in stats.items()
            for key, v in metric_keys(row).items()
        }
        tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=0)
        for path in files:
            tracker.log_artifact(path, "backtest")
    return result


def summary(
    meta: Mapping[str, Any],
    values: Mapping[str, float],
    table: pd.DataFrame,
    out: Path,
    costs: pd.DataFrame | None = None,
    seeds: Mapping[str, Any] | None = None,
) -> str:
    """The console summary (kept in backtest.log)."""
    opt = values.get("optimum")

    def share(v: float) -> str:
        return f" ({100 * v / opt:.1f}%)" if opt else ""

    lines = [
        f"quoting backtest of {meta['checkpoint']}, split={meta['split']}: "
        f"{meta['episodes']} episodes of {meta['steps_per_episode']} steps; {NO_IMPACT}",
        f"policy: {meta['policy']}",
        "objective per episode (after fees, minus the inventory penalties; on the Avellaneda-"
        "Stoikov market expected over the fills given the paths, on a tape its one path): "
        + ", ".join(f"{k} {v:+.4f}{share(v)}" for k, v in values.items()),
        table.to_string(float_format=lambda v: f"{v:,.4f}"),
    ]
    if costs is not None and len(costs) > 1:
        lines += [
            "cost sensitivity (maker fee and liquidation cost x multiplier; objective per "
            "episode):",
            costs.pivot(index="fee_multiplier", columns="policy", values=OBJECTIVE).to_string(
                float_format=lambda v: f"{v:+.4f}"
            ),
        ]
    if seeds:
        lines.append(
            f"sampled policy, {len(seeds['seed'])} seeds: objective per episode mean "
            f"{seeds['mean']:+.4f}, std {seeds['std']:.4f} (greedy {values[AGENT]:+.4f})"
        )
    lines += [
        f"output: {out.resolve()}"
        + (f"; MLflow run {meta['mlflow_run_id']}" if meta.get("mlflow_run_id") else ""),
    ]
    text = "\n".join(lines)
    print(text)
    return text
