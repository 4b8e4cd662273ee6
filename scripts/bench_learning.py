"""Learning benchmark: does training reliably find an edge where one exists, and do no harm?

    python scripts/bench_learning.py                 # 10 seeds per market
    python scripts/bench_learning.py --quick         # 3 seeds per market
    python scripts/bench_learning.py --quick --markets default trainer.estimator=reinforce
    python scripts/bench_learning.py --trace --out traced.json  # + every validation's network
    python scripts/bench_learning.py --table traced.json        # re-print a (cut) run's table
    python scripts/bench_learning.py --table s0_2.json s3_9.json  # one table of a run in parts

Markets (one row each):

* ``default``: the config's synthetic market (``conf/data/synthetic.yaml``, strong trends);
* ``hard``: ``synthetic_candles``' own defaults (weaker drift 1e-4, 5-day regimes);
* ``planted``: the real candles of ``../shared/data/binance_spot_BTCUSDT_5m_2024Q4.csv`` with a
  seeded regime drift added to their log prices (hmarl/market/planted.py, drift ``--planted-drift``
  per bar, 2.5-day regimes); the oracle that knows the regime is reported after fees;
* ``real_q1``, ``real_q4``: the real 2024 Q1 / Q4 BTCUSDT 5-minute candles unchanged (no edge
  promised: the check is that the trainer does no harm and says when it found nothing).
* ``planted_flow``: the Q4 candles with short seeded regimes (45 bars on average) planted in
  their prices and a raw column ``flow`` revealing the next bar's regime with noise
  (hmarl/market/planted.py ``plant_flow``); trained with three specialists (``price`` on
  group:price, ``flow`` on col:flow and its 8-bar EMA col_ema8:flow, ``volume`` on group:volume)
  under one MacroNet. The edge is visible to the flow specialist and only faintly to the others.
  Issue 23's figures add ``trainer.excess_returns=true`` (the Q4 training split rose 53%; see
  docs/specialists.md, "Excess returns and starting by holding").

``--ablate`` re-runs every specialists market with each specialist removed in turn (rows
``planted_flow -flow`` ...; ``--ablations-only`` runs only those, for a table merged with an
earlier JSON of the whole model). For specialists runs the table's gate column is the mean gate
weight of each specialist on test (``Mean Gate <name>`` of compute_stats) and its trade-share
column ``Trade Share <name>``, both over the runs that beat buy & hold and flat on test;
``test win`` counts those runs, and the last column the runs that also capture >= 50% of the
oracle (issue 23's per-seed target).

Every run trains from scratch with ``tracking=none`` (plus any Hydra overrides given), keeps
``best.pt`` (selected on validation) and ``last.pt``, and is evaluated here:

* success: best validation Sharpe above the market's threshold (``THRESHOLDS``), validation
  return above buy & hold's on the same bars after the same costs, and at least
  ``trainer.min_val_trades`` validation trades;
* final vs best: the last policy's validation Sharpe against the best's ("near" = within 25%);
* test return of ``best.pt`` after fees, beside buy & hold and flat on the test split, and the
  random-timing null (1,000 policies making the same trades at random times; median and the
  policy's percentile, hmarl/stats/random_timing.py);
* collapsed: the final policy's training entropy below ``trainer.collapse_entropy`` or one
  action's mean validation probability above ``trainer.collapse_share``
  (hmarl.train.trainer.collapse_reason);
* no harm: the test return of ``best.pt`` at most 1 point below flat's; and "as advised": a run
  whose validation found no edge (``hmarl.train.selection.edge_found``; its summary warns "no
  edge found" and its MLflow tag ``edge_found`` is False) advises staying flat, so it counts
  flat's return;
* wall time and env-steps per second of training (validation included).

Prints a markdown table and writes every run and the summary as JSON (``--out``).

``--trace`` also records, at every validation of every run, what that network scores on the
whole validation split, on each of its halves (each run from flat, with buy & hold and a
100-policy random-timing null of its own) and on the test split: the material to replay any
selection or edge rule offline (``scripts/replay_selection.py``) without training again. The
test figures are never seen by the trainer; they only say what each rule would have chosen.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra import compose, initialize_config_dir

from hmarl.agent.checkpoint import load_checkpoint, policy_from_checkpoint
from hmarl.agent.evaluation import run_split
from hmarl.agent.rollout import market_tensors
from hmarl.config import Config, SpecialistConfig, conf_dir, register_configs, to_config
from hmarl.data.reading import load_candles
from hmarl.io import atomic_write, write_text
from hmarl.market.features import feature_lookback
from hmarl.market.groups import expand_groups
from hmarl.market.planted import FLOW_COLUMN, oracle_positions, plant_edge, plant_flow
from hmarl.stats.baselines import baseline_steps, settled_frame
from hmarl.stats.metrics import GATE_PREFIX, TRADE_SHARE_PREFIX, compute_stats
from hmarl.stats.random_timing import random_timing, random_timing_stats
from hmarl.train.trainer import collapse_reason, env_params, load_market, train

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
Q1 = "binance_spot_BTCUSDT_5m_2024Q1.csv"
Q4 = "binance_spot_BTCUSDT_5m_2024Q4.csv"
MARKETS = ("default", "hard", "planted", "real_q1", "real_q4", "planted_flow")
# Best validation Sharpe a run must exceed to count as a success (with beating buy & hold).
PLANTED_DRIFT = 3e-4  # per-bar log drift of the planted regimes (as the default synthetic market)
THRESHOLDS = {
    "default": 10.0,
    "hard": 3.0,
    "planted": 3.0,
    "real_q1": 1.0,
    "real_q4": 1.0,
    "planted_flow": 3.0,
}
# planted_flow's three specialists (the flow reader sees the planted edge). The flow reader
# reads the column and its 8-bar EMA (since 2026-12-07, session 5: 8/10 seeds on the target
# against 6/10 on the column alone, docs/specialists.md; `--specialist flow.features=col:flow`
# gives the earlier reader back).
FLOW_SPECIALISTS = (
    SpecialistConfig(name="price", features=["group:price"], window=60),
    SpecialistConfig(
        name="flow", features=[f"col:{FLOW_COLUMN}", f"col_ema8:{FLOW_COLUMN}"], window=12
    ),
    SpecialistConfig(name="volume", features=["group:volume"], window=60),
)


SPECIALIST_FIELDS = ("features", "window", "hidden", "dim", "head_hidden", "lr", "every")


def set_specialists(
    specs: Sequence[SpecialistConfig], settings: Sequence[str]
) -> tuple[SpecialistConfig, ...]:
    """The benchmark's specialists with ``--specialist NAME.KEY=VALUE`` applied (a screen of one
    specialist's window, sizes, rate or period without editing :data:`FLOW_SPECIALISTS`)."""
    out = [SpecialistConfig(**vars(s)) for s in specs]
    by_name = {s.name: s for s in out}
    for item in settings:
        target, _, value = item.partition("=")
        name, _, key = target.partition(".")
        if name not in by_name or key not in SPECIALIST_FIELDS or not value:
            raise SystemExit(
                f"--specialist {item!r}: give NAME.KEY=VALUE, NAME one of {sorted(by_name)}, "
                f"KEY one of {list(SPECIALIST_FIELDS)} (e.g. --specialist flow.window=8)"
            )
        spec = by_name[name]
        if key == "features":  # a comma-separated feature list, e.g. col:flow,col_ema6:flow
            spec.features = [f for f in value.split(",") if f]
            try:  # a bad name stops here, before any run starts
                feature_lookback(expand_groups(spec.features))
            except ValueError as err:
                raise SystemExit(f"--specialist {item!r}: {err}") from None
        else:
            setattr(spec, key, type(getattr(spec, key))(value))
    return tuple(out)


@dataclass
class Market:
    name: str
    overrides: list[str]
    regime: np.ndarray | None = None  # planted market: the regime of each candle row
    specialists: tuple[SpecialistConfig, ...] = ()  # set on the config after composing
    without: str | None = None  # --ablate: the specialist removed

    @property
    def label(self) -> str:
        """The table's row: the market, and the specialist removed (ablation)."""
        return self.name if self.without is None else f"{self.name} -{self.without}"


def make_market(
    name: str, work: Path, planted_drift: float, seed: int = 0, data_dir: Path = SHARED
) -> Market:
    """The Hydra overrides (and, for ``planted``, the file and regimes) of one market."""
    if name == "default":
        return Market(name, [])
    if name == "hard":
        return Market(name, ["data.trend_drift=1e-4", "data.mean_regime_bars=1440"])
    if name in ("real_q1", "real_q4"):
        path = _shared(data_dir, Q1 if name == "real_q1" else Q4)
        return Market(name, ["data=csv", f"data.path={path}"])
    if name == "planted":
        candles = load_candles(_shared(data_dir, Q4), log=None)
        planted, regime = plant_edge(candles, seed, drift=planted_drift)
        path = _write_csv(planted, work / f"planted_{seed}.csv")
        return Market(name, ["data=csv", f"data.path={path}"], regime)
    if name == "planted_flow":
        candles = load_candles(_shared(data_dir, Q4), log=None)
        flowed, regime = plant_flow(candles, seed, drift=planted_drift)
        path = _write_csv(flowed, work / f"planted_flow_{seed}.csv")
        overrides = ["data=csv", f"data.path={path}", "model=specialists"]
        return Market(name, overrides, regime, FLOW_SPECIALISTS)
    raise SystemExit(f"unknown market {name!r}; choose from {MARKETS}")


def _write_csv(candles: Any, path: Path) -> Path:
    """Write a market's file atomically: two runs of one seed (an ablation and the full model)
    write the same file at once, and one must never read the other's half-written copy."""
    return atomic_write(path, lambda tmp: candles.reset_index().to_csv(tmp, index=False))


def _shared(data_dir: Path, name: str) -> Path:
    path = data_dir / name
    if not path.is_file():
        raise SystemExit(
            f"real data not found: {path} (../shared/data beside the checkout, or --data-dir)"
        )
    return path


def compose_config(overrides: Sequence[str]) -> Config:
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        return to_config(compose("config", overrides=list(overrides)))


def _stats(steps: Any) -> dict[str, Any]:
    return compute_stats(steps, n_bootstrap=0)


def evaluate_run(cfg: Config, market: Market, best: Path, last: Path) -> dict[str, Any]:
    """Validation of best and last, test of best beside the baselines (and the oracle)."""
    data = load_market(cfg, log=None)
    tensors, env = market_tensors(data), env_params(cfg)
    greedy = cfg.trainer.eval_policy.value == "greedy"
    policies = {
        k: policy_from_checkpoint(load_checkpoint(p)) for k, p in (("best", best), ("last", last))
    }
    out: dict[str, Any] = {}
    for which, policy in policies.items():
        out[f"{which}_val"] = _stats(
            run_split(policy, data, tensors, "val", env, greedy=greedy, seed=cfg.seed)
        )
    steps = run_split(policies["best"], data, tensors, "test", env, greedy=greedy, seed=cfg.seed)
    out["best_test"] = _stats(steps)
    for split in ("val", "test"):
        lo, hi = data.splits[split]
        base = baseline_steps(data, lo, hi, env, names=("buy_and_hold", "flat"))
        for name, frame in base.items():
            out[f"{name}_{split}"] = _stats(frame)
        if market.regime is not None:
            held = oracle_positions(market.regime, np.arange(lo, hi), env.allow_short)
            out[f"oracle_{split}"] = _stats(settled_frame(data, lo, hi, held, env))
    lo, hi = data.splits["test"]
    out["random_timing_test"] = random_timing_stats(
        random_timing(steps, data.returns[lo:hi], env, seed=cfg.seed)
    )
    return out


TRACE_NULL_N = 100  # random-timing policies per traced evaluation (resolves percentiles to 1%)


class Tracer:
    """The trace of one run (``--trace``): each validation's network on val, its halves and test.

    Why halves: a rule that asks an edge to hold on two sub-periods of validation is one a
    replay can then test; a 100-policy null lets it try percentiles above the trainer's 30-policy
    resolution. Everything here runs on the network the trainer just validated, with the same
    greedy/sampled policy and seed as its validation.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.data = load_market(cfg, log=None)
        self.env = env_params(cfg)
        lo, hi = self.data.splits["val"]
        mid = (lo + hi) // 2
        self.parts = {"val": (lo, hi), "val_a": (lo, mid), "val_b": (mid, hi)}
        self.parts["test"] = self.data.splits["test"]
        self.tensors: Any = None
        self.points: list[dict[str, Any]] = []
        self.buy_and_hold = {
            part: _stats(
                baseline_steps(self.data, a, b, self.env, names=("buy_and_hold",))["buy_and_hold"]
            )["Return [%]"]
            for part, (a, b) in self.parts.items()
        }

    def __call__(self, episode: int, metrics: dict[str, float], policy: Any) -> None:
        if "val/return_pct" not in metrics:
            return  # not a validation episode
        if self.tensors is None:
            self.tensors = market_tensors(self.data, next(policy.parameters()).device)
        greedy = self.cfg.trainer.eval_policy.value == "greedy"
        point: dict[str, Any] = {
            "episode": episode,
            "trainer_val_percentile": metrics.get("val/random_timing_percentile_pct"),
            "trainer_val_return_pct": metrics["val/return_pct"],
        }
        for part, (lo, hi) in self.parts.items():
            steps = run_split(
                policy,
                self.data,
                self.tensors,
                (lo, hi),
                self.env,
                greedy=greedy,
                seed=self.cfg.seed,
            )
            stats = _stats(steps)
            null = random_timing_stats(
                random_timing(
                    steps, self.data.returns[lo:hi], self.env, n=TRACE_NULL_N, seed=self.cfg.seed
                )
            )
            point[part] = {
                "return_pct": stats["Return [%]"],
                "sharpe": stats["Sharpe Ratio"],
                "trades": stats["# Trades"],
                "exposure_pct": stats["Exposure Time [%]"],
                "long_exposure_pct": stats["Long Exposure Time [%]"],
                "percentile": null["Random-Timing Percentile [%]"],
            }
        self.points.append(point)


def one_run(
    market: Market,
    seed: int,
    overrides: Sequence[str],
    work: Path,
    episodes: int,
    trace: bool = False,
) -> dict[str, Any]:
    run_dir = work / f"{market.label.replace(' ', '')}_seed{seed}"
    cfg = compose_config(
        [
            "+experiment=asym_1_10",
            f"trainer.episodes={episodes}",
            f"seed={seed}",
            "tracking=none",
            f"cache_dir={work / 'cache'}",
            *market.overrides,
            *overrides,
        ]
    )
    if market.specialists:
        cfg.model.specialists = [
            SpecialistConfig(**vars(s)) for s in market.specialists if s.name != market.without
        ]
    entropies: list[float] = []
    tracer = Tracer(cfg) if trace else None

    def on_episode(episode: int, metrics: dict[str, float], policy: Any, _: Any) -> None:
        entropies.append(metrics["entropy"])
        if tracer is not None:
            tracer(episode, metrics, policy)

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer's own summary lines
        result = train(cfg, run_dir, progress=False, on_episode=on_episode)
    wall = time.perf_counter() - t0
    tc = cfg.trainer
    rec: dict[str, Any] = {
        "market": market.label,
        "seed": seed,
        "wall_s": wall,
        "episodes": result.state.episode,
        "env_steps_per_s": result.state.episode * tc.n_envs * tc.episode_len / wall,
        "best_episode": result.state.best_episode,
        "best_edge": result.state.best_edge,
        "collapses_seen": result.state.collapses,
    }
    if result.best_checkpoint is None:
        rec["error"] = "no best checkpoint"
        return rec
    ev = evaluate_run(cfg, market, result.best_checkpoint, result.last_checkpoint)
    tail = entropies[-tc.eval_every :] or [math.nan]
    final_entropy = sum(tail) / len(tail)
    reason = collapse_reason(ev["last_val"], final_entropy, tc)
    best_val, last_val, test = ev["best_val"], ev["last_val"], ev["best_test"]
    rec.update(
        {
            "best_val_sharpe": best_val["Sharpe Ratio"],
            "best_val_return_pct": best_val["Return [%]"],
            "best_val_trades": best_val["# Trades"],
            "last_val_sharpe": last_val["Sharpe Ratio"],
            "last_val_return_pct": last_val["Return [%]"],
            "last_val_trades": last_val["# Trades"],
            "bh_val_return_pct": ev["buy_and_hold_val"]["Return [%]"],
            "bh_val_sharpe": ev["buy_and_hold_val"]["Sharpe Ratio"],
            "test_return_pct": test["Return [%]"],
            "test_sharpe": test["Sharpe Ratio"],
            "test_trades": test["# Trades"],
            "bh_test_return_pct": ev["buy_and_hold_test"]["Return [%]"],
            "flat_test_return_pct": ev["flat_test"]["Return [%]"],
            "random_timing_test_median_pct": ev["random_timing_test"][
                "Random-Timing Median Return [%]"
            ],
            "random_timing_test_percentile": ev["random_timing_test"][
                "Random-Timing Percentile [%]"
            ],
            "final_entropy": final_entropy,
            "collapsed": reason is not None,
            "collapse_reason": reason,
        }
    )
    rec["gates"] = {
        k.removeprefix(GATE_PREFIX): v for k, v in test.items() if k.startswith(GATE_PREFIX)
    }
    rec["trade_shares"] = {
        k.removeprefix(TRADE_SHARE_PREFIX): v
        for k, v in test.items()
        if k.startswith(TRADE_SHARE_PREFIX)
    }
    rec["test_win"] = bool(
        rec["test_return_pct"] > rec["bh_test_return_pct"]
        and rec["test_return_pct"] > rec["flat_test_return_pct"]
    )
    if "oracle_test" in ev:
        rec["oracle_test_return_pct"] = ev["oracle_test"]["Return [%]"]
        rec["oracle_val_return_pct"] = ev["oracle_val"]["Return [%]"]
    threshold = THRESHOLDS[market.name]
    rec["success"] = bool(
        rec["best_val_sharpe"] > threshold
        and rec["best_val_return_pct"] > rec["bh_val_return_pct"]
        and rec["best_val_trades"] >= tc.min_val_trades
    )
    best_s, last_s = rec["best_val_sharpe"], rec["last_val_sharpe"]
    rec["final_near_best"] = bool(best_s > 0 and last_s >= 0.75 * best_s)
    if "oracle_test_return_pct" in rec and rec["oracle_test_return_pct"] > 0:
        rec["oracle_capture"] = rec["test_return_pct"] / rec["oracle_test_return_pct"]
    rec["no_trade"] = rec["best_val_trades"] == 0
    rec["no_harm"] = rec["test_return_pct"] >= rec["flat_test_return_pct"] - 1.0
    # what the run advises: trade best.pt only if validation found an edge, else stay flat
    # (the summary's "no edge found" warning, the MLflow tag edge_found)
    rec["advised_test_return_pct"] = (
        rec["test_return_pct"] if rec["best_edge"] else rec["flat_test_return_pct"]
    )
    rec["advised_no_harm"] = rec["advised_test_return_pct"] >= rec["flat_test_return_pct"] - 1.0
    if tracer is not None:
        rec["trace"] = {
            "min_val_trades": tc.min_val_trades,
            "edge_null_percentile": tc.edge_null_percentile,
            "edge_confirmations": tc.edge_confirmations,
            "threshold": threshold,
            "buy_and_hold_pct": tracer.buy_and_hold,
            "points": tracer.points,
        }
    return rec


def _mean_sd(values: Sequence[float], sign: str = "+") -> str:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return "n/a"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):{sign}.1f} ± {sd:.1f}"


def _mean_gates(rs: Sequence[dict[str, Any]], key: str = "gates") -> str:
    """Each specialist's mean test gate weight (or trade share, ``key``) over the runs that won
    on test ('-' if none)."""
    won = [r[key] for r in rs if r.get("test_win") and r.get(key)]
    names = list(dict.fromkeys(n for g in won for n in g))
    return ", ".join(f"{n} {statistics.mean(g[n] for g in won):.2f}" for n in names) or "-"


def summarise(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(r["market"] for r in records):
        rs = [r for r in records if r["market"] == name and "error" not in r]
        n = len(rs)
        row: dict[str, Any] = {
            "market": name,
            "runs": n,
            "failed_runs": sum(1 for r in records if r["market"] == name and "error" in r),
            "threshold": THRESHOLDS[name.split(" ")[0]],
            "test_win": sum(r.get("test_win", False) for r in rs),
            "gates": _mean_gates(rs),
            "trade_shares": _mean_gates(rs, "trade_shares"),
            "success": sum(r["success"] for r in rs),
            "best_val_sharpe": _mean_sd([r["best_val_sharpe"] for r in rs]),
            "bh_val_sharpe": _mean_sd([r["bh_val_sharpe"] for r in rs]),
            "final_near_best": sum(r["final_near_best"] for r in rs),
            "collapsed": sum(r["collapsed"] for r in rs),
            "no_trade": sum(r["no_trade"] for r in rs),
            "no_harm": sum(r["no_harm"] for r in rs),
            "edge_found": sum(r["best_edge"] for r in rs),
            "advised_no_harm": sum(r["advised_no_harm"] for r in rs),
            "test_return_pct": _mean_sd([r["test_return_pct"] for r in rs]),
            "bh_test_return_pct": _mean_sd([r["bh_test_return_pct"] for r in rs]),
            "flat_test_return_pct": _mean_sd([r["flat_test_return_pct"] for r in rs]),
            "random_timing_test_median_pct": _mean_sd(
                [r["random_timing_test_median_pct"] for r in rs]
            ),
            "random_timing_test_percentile": _mean_sd(
                [r["random_timing_test_percentile"] for r in rs], sign=""
            ),
            "wall_s": _mean_sd([r["wall_s"] for r in rs], sign=""),
            "env_steps_per_s": statistics.mean([r["env_steps_per_s"] for r in rs]) if rs else 0.0,
        }
        if any("oracle_test_return_pct" in r for r in rs):
            row["oracle_test_return_pct"] = _mean_sd([r["oracle_test_return_pct"] for r in rs])
            row["capture_ge_50pct"] = sum(r.get("oracle_capture", -1.0) >= 0.5 for r in rs)
            # issue 23's per-seed target: both at once on the same seed
            row["win_and_capture"] = sum(
                bool(r.get("test_win")) and r.get("oracle_capture", -1.0) >= 0.5 for r in rs
            )
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| market | success (val Sharpe > thr, > B&H, trades) | best val Sharpe | B&H val Sharpe "
        "| final near best | collapsed | no trade | test return % | B&H | flat "
        "| random timing (median; policy's percentile) "
        "| oracle (captured >= 50%) | no harm (>= flat - 1%) | edge found "
        "| no harm as advised (flat without edge) | wall s | env-steps/s "
        "| test win (> B&H and flat) | mean gate (test winners) | trade share (test winners) "
        "| test win and >= 50% of the oracle |"
    )
    lines = [head, "|" + "---|" * 21]
    for r in rows:
        n = r["runs"]
        oracle = (
            f"{r['oracle_test_return_pct']} ({r['capture_ge_50pct']}/{n})"
            if "oracle_test_return_pct" in r
            else "-"
        )
        both = f"{r['win_and_capture']}/{n}" if "win_and_capture" in r else "-"
        lines.append(
            f"| {r['market']} | {r['success']}/{n} (> {r['threshold']:g}) | {r['best_val_sharpe']} "
            f"| {r['bh_val_sharpe']} | {r['final_near_best']}/{n} | {r['collapsed']}/{n} "
            f"| {r['no_trade']}/{n} | {r['test_return_pct']} | {r['bh_test_return_pct']} "
            f"| {r['flat_test_return_pct']} | {r['random_timing_test_median_pct']} "
            f"({r['random_timing_test_percentile']}) | {oracle} "
            f"| {r['no_harm']}/{n} | {r['edge_found']}/{n} | {r['advised_no_harm']}/{n} "
            f"| {r['wall_s']} | {r['env_steps_per_s']:,.0f} "
            f"| {r.get('test_win', 0)}/{n} | {r.get('gates', '-')} "
            f"| {r.get('trade_shares', '-')} | {both} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    ap.add_argument("--quick", action="store_true", help="3 seeds per market instead of 10")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per market (default 10)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first .. first + seeds - 1")
    ap.add_argument("--markets", nargs="+", default=list(MARKETS), choices=MARKETS)
    ap.add_argument("--episodes", type=int, default=300)
    ap.add_argument("--planted-drift", type=float, default=PLANTED_DRIFT, help="per-bar log drift")
    ap.add_argument(
        "--ablate",
        nargs="*",
        default=None,
        metavar="NAME",
        help="also run each specialists market with each specialist removed in turn (or only "
        "the named ones, e.g. --ablate flow)",
    )
    ap.add_argument(
        "--ablations-only",
        action="store_true",
        help="with --ablate: only the runs with a specialist removed (the full model's runs are "
        "in an earlier JSON; --table merges the two)",
    )
    ap.add_argument(
        "--specialist",
        action="append",
        default=[],
        metavar="NAME.KEY=VALUE",
        help="change one of planted_flow's specialists for every run, e.g. flow.window=8 "
        f"(KEY: {', '.join(SPECIALIST_FIELDS)}); repeatable",
    )
    ap.add_argument("--out", default="bench_learning.json", help="JSON of every run + summary")
    ap.add_argument("--jobs", type=int, default=2, help="runs in parallel (processes)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument(
        "--data-dir", type=Path, default=SHARED, help=f"the real candles' folder (default {SHARED})"
    )
    ap.add_argument(
        "--table",
        type=Path,
        nargs="+",
        metavar="JSON",
        help="print the table of earlier --out files (complete or cut short; several: the parts "
        "of one benchmark, e.g. run with --first-seed, merged) and exit",
    )
    ap.add_argument(
        "--trace",
        action="store_true",
        help="record every validation's network on val, its halves and test (for replays)",
    )
    args = ap.parse_args(argv)
    if args.table is not None:
        return print_table(args.table)
    seeds = args.seeds or (3 if args.quick else 10)
    first = args.first_seed
    set_specialists(FLOW_SPECIALISTS, args.specialist)  # a bad --specialist stops here
    variants = plan_variants(args.markets, args.ablate, args.ablations_only)
    # seed-major: a benchmark stopped early has the first seeds of every market, not some markets
    tasks = [(v, seed) for seed in range(first, first + seeds) for v in variants]
    records: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    print(
        f"{len(tasks)} runs, {args.jobs} at a time, {args.threads} torch thread(s) each", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="bench_learning_") as tmp:
        common = (args.overrides, tmp, args.episodes, args.planted_drift, args.threads)
        common += (args.data_dir, args.trace, tuple(args.specialist))
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
            futures = [
                pool.submit(_job, name, seed, *common, without) for (name, without), seed in tasks
            ]
            for future in as_completed(futures):
                rec = future.result()
                records.append(rec)
                print(f"[{len(records)}/{len(tasks)}] {_line(rec)}", flush=True)
                # every finished run is on disk at once: a stopped benchmark keeps what it ran
                _write(Path(args.out), args, seeds, records, complete=False)
    records.sort(key=lambda r: (_order(r["market"]), r["seed"]))
    rows = summarise(records)
    table = markdown(rows)
    print(
        f"\n{table}\n\ntotal wall time {time.perf_counter() - t0:.0f} s; overrides: "
        f"{' '.join(args.overrides) or '(none)'}; command: {' '.join(sys.argv)}"
    )
    _write(Path(args.out), args, seeds, records, complete=True, rows=rows)
    print(f"wrote {args.out}")
    return 0


def plan_variants(
    markets: Sequence[str], ablate: Sequence[str] | None, ablations_only: bool = False
) -> list[tuple[str, str | None]]:
    """The (market, specialist removed) pairs to run: every market whole, then with ``ablate``
    each specialists market without each specialist (all of them when ``ablate`` is empty);
    ``ablations_only`` keeps only the latter (the whole runs are in an earlier JSON)."""
    variants: list[tuple[str, str | None]] = [(name, None) for name in markets]
    if ablate is not None:
        variants += [
            (name, s.name)
            for name in markets
            if name == "planted_flow"
            for s in FLOW_SPECIALISTS
            if not ablate or s.name in ablate
        ]
    if ablations_only:
        if ablate is None:
            raise SystemExit("--ablations-only needs --ablate (which specialists to remove)")
        variants = [(name, without) for name, without in variants if without is not None]
    return variants


def print_table(paths: Sequence[Path]) -> int:
    """The markdown table of a benchmark's JSON (a cut-short one shows the runs it finished).

    Several files are the parts of one benchmark (e.g. seeds 0-2 and ``--first-seed 3``): their
    runs are merged into one table. They must have been run with the same overrides, and no
    (market, seed) may appear twice, since a merged table would otherwise count a run twice or
    mix two configurations.
    """
    records: list[dict[str, Any]] = []
    overrides: list[str] | None = None
    states = []
    for path in paths:
        try:
            data = json.loads(path.read_text())
            runs, these = data["runs"], list(data["overrides"])
            these += [f"--specialist {x}" for x in data.get("specialist", [])]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise SystemExit(f"cannot read benchmark JSON {path}: {exc}") from exc
        if overrides is not None and these != overrides:
            raise SystemExit(
                f"cannot merge {path}: its overrides {these} differ from {paths[0]}'s {overrides}"
            )
        overrides = these
        seen = {(r["market"], r["seed"]) for r in records}
        twice = sorted({(r["market"], r["seed"]) for r in runs} & seen)
        if twice:
            raise SystemExit(
                f"cannot merge {path}: (market, seed) already in an earlier file: {twice}"
            )
        records += runs
        states.append("complete" if data.get("complete") else "NOT complete (cut short)")
    records = sorted(records, key=lambda r: (_order(r["market"]), r["seed"]))
    names = ", ".join(f"{p} ({st})" for p, st in zip(paths, states, strict=True))
    state = states[0] if len(paths) == 1 else f"merged from {names}"
    head = str(paths[0]) if len(paths) == 1 else f"{len(paths)} files"
    print(
        f"{head}: {len(records)} runs, {state}; overrides: {' '.join(overrides or []) or '(none)'}"
    )
    print(markdown(summarise(records)))
    return 0


def _order(label: str) -> tuple[int, str]:
    """Table order: markets as listed in MARKETS, each market's ablation rows after it."""
    name, _, without = label.partition(" ")
    return MARKETS.index(name), without


def _write(
    out: Path,
    args: argparse.Namespace,
    seeds: int,
    records: list[dict[str, Any]],
    *,
    complete: bool,
    rows: list[dict[str, Any]] | None = None,
) -> None:
    """The JSON of the runs so far (atomic); ``complete`` is False until the last run."""
    payload = {
        "complete": complete,
        "overrides": args.overrides,
        "specialist": args.specialist,
        "seeds": seeds,
        "episodes": args.episodes,
        "planted_drift": args.planted_drift,
        "traced": args.trace,
        "runs": records,
        "summary": rows if rows is not None else summarise(records),
    }
    write_text(out, json.dumps(payload, indent=2, default=str) + "\n")


def _job(
    name: str,
    seed: int,
    overrides: Sequence[str],
    work: str,
    episodes: int,
    planted_drift: float,
    threads: int,
    data_dir: Path,
    trace: bool,
    specialist: Sequence[str] = (),
    without: str | None = None,
) -> dict[str, Any]:
    """One (market, seed) run in a worker process; the planted regimes use the run's seed."""
    torch.set_num_threads(threads)
    market = make_market(name, Path(work), planted_drift, seed, data_dir)
    market.without = without
    if market.specialists:
        market.specialists = set_specialists(market.specialists, specialist)
    return one_run(market, seed, overrides, Path(work), episodes, trace)


def _line(r: dict[str, Any]) -> str:
    if "error" in r:
        return f"{r['market']} seed {r['seed']}: {r['error']}"
    extra = f", oracle {r['oracle_test_return_pct']:+.1f}%" if "oracle_test_return_pct" in r else ""
    return (
        f"{r['market']} seed {r['seed']}: {'ok ' if r['success'] else 'no '} best val Sharpe "
        f"{r['best_val_sharpe']:.1f} (ep {r['best_episode']}, {r['best_val_trades']} trades; "
        f"B&H {r['bh_val_sharpe']:.1f}), last {r['last_val_sharpe']:.1f}; test "
        f"{r['test_return_pct']:+.1f}% (B&H {r['bh_test_return_pct']:+.1f}%{extra}); "
        f"entropy {r['final_entropy']:.3f}{' COLLAPSED' if r['collapsed'] else ''}; "
        f"{r['wall_s']:.0f} s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
