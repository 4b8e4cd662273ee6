"""The backtest as a function, :func:`backtest`: what `python -m hmarl.backtest` and the app run.

A backtest answers one question honestly: what would this checkpoint have done on these
bars, net of these costs, and how does that compare with doing something trivial on the
same bars with the same costs? So it:

1. loads the checkpoint without executing code (:func:`hmarl.agent.checkpoint.load_checkpoint`),
   from a file or from an MLflow run's ``checkpoints/best.pt`` (falling back to ``last.pt``,
   :func:`hmarl.tracking.fetch_run_checkpoint`);
2. rebuilds the inputs with the checkpoint's feature names, windows and scalers (never
   refitted: a scaler refitted on the backtest period would leak its statistics into the
   inputs), and refuses a feature request or data that cannot give those inputs
   (:mod:`hmarl.backtest.inputs`);
3. runs the policy deterministically (argmax), optionally stochastically over K seeds, and
   at several cost multipliers (the policy never sees costs, so only settlement changes);
4. settles the baselines of :mod:`hmarl.stats.baselines` on the same rows and costs (3 and 4:
   :mod:`hmarl.backtest.runs`);
5. writes one report folder (stats.json/csv, daily.csv, trades.csv, steps.csv, costs.csv,
   stochastic.csv, PNG figures; :mod:`hmarl.backtest.report`), all atomically, and logs it
   to MLflow as a run tagged ``kind=backtest`` that links to its training run (tag
   ``train_run_id``).

Fill rule (from :mod:`hmarl.market.env`): the decision at bar t's close fills at that close plus
``slippage_bps``; commission and slippage are charged on traded notional; the position is
held over bar t+1. Every figure comes from :func:`hmarl.stats.metrics.compute_stats`.

A quoting checkpoint (``task=quote``, its ``task`` entry) is backtested by
:func:`hmarl.backtest.quote_run.quote_backtest` instead, under the same folder lock.

Only the entry point (:mod:`hmarl.backtest.__main__`) sees Hydra's config; it converts it to
:class:`hmarl.config.BacktestConfig` at once. :func:`backtest` takes that typed config (like
:func:`hmarl.train.trainer.train`) and wires the modules above with plain values. It lives apart
from the CLI so that the app (and any script) can run a backtest without importing an entry point.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Mapping
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from hmarl import __version__
from hmarl.agent.checkpoint import checkpoint_episode, policy_from_checkpoint
from hmarl.agent.rollout import market_tensors
from hmarl.backtest.inputs import (
    backtest_market,
    check_feature_request,
    checkpoint_env,
    data_config_for,
    decision_range,
    describe_data,
    in_sample,
    load_backtest_checkpoint,
)
from hmarl.backtest.many import market_views, pooled_backtest
from hmarl.backtest.report import (
    FILL_RULE,
    BacktestResult,
    advised_record,
    backtest_metrics,
    print_summary,
    write_report,
)
from hmarl.backtest.runs import (
    STRATEGY,
    acting_for,
    choose_momentum,
    cost_sensitivity,
    stats_of,
    stochastic_stats,
    strategy_and_baselines,
    summarise_seeds,
    supervised_baseline,
)
from hmarl.config import (
    AUTO_URI,
    BacktestConfig,
    DataConfig,
    flatten,
)
from hmarl.io import append_text, folder_lock, staged_folder, write_json
from hmarl.market.many import MARKETS_KEY
from hmarl.runtime import setup
from hmarl.stats import supervised
from hmarl.stats.baselines import BASELINE_DEFINITIONS
from hmarl.stats.metrics import (
    Calendar,
    flag_sentences,
    metric_keys,
    outcome_flags,
    stat_definition,
    stats_table,
)
from hmarl.stats.random_timing import RANDOM_TIMING_DEFINITION, random_timing, random_timing_stats
from hmarl.tracking import (
    DEFAULT_URI,
    backtest_tracking,
    git_commit,
    tracked_run,
)

if TYPE_CHECKING:
    import torch

    from hmarl.agent.checkpoint import Checkpoint
    from hmarl.market.env import EnvParams
    from hmarl.market.market_data import MarketData

TAG_KEYS = (  # meta entries copied to the MLflow run's tags
    "train_run_id",
    "checkpoint",
    "split",
    "data_fingerprint",
    "train_data_fingerprint",
    "in_sample",
    "flags",
)
DEFAULT_MIN_TRADES = 5  # for checkpoints that record no trainer.min_val_trades
LOG_FILE = "backtest.log"  # the console summary, kept in the report folder
CONFIG_FILE = "config.json"  # the backtest's resolved config (Hydra writes no .hydra/ here)

# ----------------------------------------------------------------------------- the backtest


def default_out_dir() -> Path:
    return Path("backtests") / datetime.now().strftime("%Y-%m-%d/%H-%M-%S")


def _meta(
    cfg: BacktestConfig,
    ckpt: Mapping[str, Any],
    source: str,
    data: DataConfig,
    market: MarketData,
    rows: tuple[int, int],
    env: EnvParams,
) -> dict[str, Any]:
    """Everything needed to know what was run, on what, and whether it is out of sample."""
    spec = ckpt["feature_spec"]
    lo, hi = rows
    sample = in_sample(ckpt, market, lo, hi)
    return {
        "checkpoint": source,
        "train_run_id": cfg.run_id or ckpt["train_state"].get("run_id"),
        "checkpoint_episode": checkpoint_episode(ckpt),  # the episode of the weights loaded
        "best_episode": ckpt["train_state"].get("best_episode"),  # the run's best when saved
        # whether the training run's validation found an edge (hmarl.train.selection.edge_found)
        # by the time this checkpoint was saved; None for checkpoints written before it was recorded
        "edge_found_in_training": ckpt["train_state"].get("best_edge"),
        "data": describe_data(data),
        "data_fingerprint": market.fingerprint,
        "train_data_fingerprint": ckpt["data_fingerprint"],
        "same_data_as_training": market.fingerprint == ckpt["data_fingerprint"],
        "in_sample": sample,
        "split": cfg.split.value,
        # where validation and test start, drawn on split=all figures (the training data only:
        # another file's fractions are not the checkpoint's splits)
        "split_starts": {
            name: market.index[market.splits[name][0]].isoformat() for name in ("val", "test")
        }
        if market.fingerprint == ckpt["data_fingerprint"]
        else {},
        "decision_rows": [lo, hi],
        "first_decision": market.index[lo].isoformat(),
        "last_decision": market.index[hi - 1].isoformat(),
        "bars": hi - lo,
        "features": list(spec["names"]),
        "macro_window": spec["macro_window"],
        "micro_window": spec["micro_window"],
        "env": asdict(env),
        "fill_rule": FILL_RULE,
        "calendar": asdict(cfg.calendar),
        "n_bootstrap": cfg.n_bootstrap,
        "seed": cfg.seed,
        "baselines": dict(BASELINE_DEFINITIONS),
        "hmarl": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def backtest(cfg: BacktestConfig, out_dir: str | os.PathLike[str] | None = None) -> BacktestResult:
    """Run the whole backtest of ``cfg`` and write its report folder (see module docstring).

    The folder is whole or absent: the report is written into a temporary folder beside it and
    renamed into place when complete (:func:`hmarl.io.staged_folder`), so a killed backtest
    leaves the previous report as it was; a second backtest into the same folder while this
    one runs is refused (:func:`hmarl.io.folder_lock`).
    """
    out = Path(out_dir or cfg.out or default_out_dir())
    with folder_lock(out, "out"):
        _drop_if_empty(out)  # made by Hydra as its run dir: absent until the report is whole
        return _backtest(cfg, out)


def _drop_if_empty(folder: Path) -> None:
    """Remove ``folder`` when it is an empty directory (nothing of a report is lost)."""
    try:
        folder.rmdir()
    except OSError:  # absent, not empty, or not ours to remove: left as it is
        pass


def _backtest(cfg: BacktestConfig, out: Path) -> BacktestResult:
    """:func:`backtest` under the folder's lock: one market's, or each market's of a checkpoint
    trained on several (:mod:`hmarl.backtest.many`) and their pooled record."""
    device = setup(cfg.device, cfg.threads)
    fetch_uri = DEFAULT_URI if cfg.tracking.uri == AUTO_URI else cfg.tracking.uri
    ckpt, source = load_backtest_checkpoint(cfg.checkpoint, cfg.run_id, fetch_uri, device)
    if ckpt.get("task") == "quote":  # a market maker's checkpoint: hmarl/backtest/quote_run.py
        from hmarl.backtest.quote_run import quote_backtest

        return quote_backtest(cfg, ckpt, source, out)
    check_feature_request(
        ckpt["feature_spec"],
        cfg.features.names,
        cfg.features.macro_window,
        cfg.features.micro_window,
    )
    if MARKETS_KEY in ckpt["feature_spec"]:
        views = market_views(ckpt, cfg.data, source)
        results = {
            view.name: backtest_one(cfg, out / view.name, view.ckpt, view.source, view.data, device)
            for view in views
        }
        return pooled_backtest(cfg, out, results, views, source)
    return backtest_one(cfg, out, ckpt, source, data_config_for(ckpt, cfg.data), device)


def backtest_one(
    cfg: BacktestConfig,
    out: Path,
    ckpt: Checkpoint,
    source: str,
    data: DataConfig,
    device: torch.device,
) -> BacktestResult:
    """The backtest of one market (its report folder ``out``, whole or absent)."""
    tracking, store_reason = backtest_tracking(cfg.tracking, ckpt, cfg.run_id)
    spec = ckpt["feature_spec"]
    market = backtest_market(spec, data, cfg.cache_dir)
    rows = decision_range(market, cfg.split.value, cfg.start, cfg.end)
    env = checkpoint_env(ckpt["env"], cfg.commission, cfg.slippage_bps)
    meta = _meta(cfg, ckpt, source, data, market, rows, env)
    if meta["in_sample"]:
        print(
            f"warning: split={cfg.split.value} overlaps the rows this checkpoint was trained or "
            "selected on: these figures are in-sample and flatter the policy",
            file=sys.stderr,
        )
    policy = policy_from_checkpoint(ckpt, device, source)
    acting = acting_for(ckpt, cfg.policy, cfg.policy_seed)
    meta["policy"] = acting.describe()
    tensors = market_tensors(market, device)
    calendar = Calendar(**asdict(cfg.calendar))
    momentum_bars, meta["momentum"] = choose_momentum(
        market, env, rows, cfg.momentum_bars, cfg.momentum_lookbacks, calendar
    )
    min_trades = cfg.min_trades
    if min_trades is None:
        stored = ckpt.get("config", {}).get("trainer", {}).get("min_val_trades")
        min_trades = DEFAULT_MIN_TRADES if stored is None else int(stored)

    tags = {"kind": "backtest", "git_commit": git_commit()}
    name = f"backtest {cfg.split.value} {source}"
    with tracked_run(tracking, name, tags) as tracker:
        meta["tracking"] = {"uri": tracking.uri if tracking.enabled else None, "why": store_reason}
        pbar = tqdm(
            total=3 + cfg.seeds + len(cfg.fee_multipliers),
            disable=not cfg.progress,
            desc="backtest",
            unit="run",
        )
        try:
            # ---- the policy (acting as validated) and baselines, same rows and costs ----
            runs = strategy_and_baselines(policy, market, tensors, rows, env, momentum_bars, acting)
            steps = runs[STRATEGY]
            classifier, supervised_info = supervised_baseline(
                market, env, rows, cfg.baselines.supervised, calendar, cfg.seed
            )
            if classifier is not None:
                runs[supervised.NAME] = classifier
                meta["baselines"][supervised.NAME] = supervised.DEFINITION
            pbar.update(1)
            stats = stats_of(runs, calendar, cfg.n_bootstrap, cfg.seed)
            meta["flags"] = outcome_flags(stats[STRATEGY], min_trades)
            if meta["edge_found_in_training"] is False:  # the run advised staying flat
                meta["flags"].append("no_edge_found_in_training")
            meta["min_trades"] = min_trades

            # ---- the random-timing null: the strategy's trades at random times ----
            null, null_stats = None, {}
            if cfg.random_timing > 0:
                null = random_timing(
                    steps,
                    market.returns[rows[0] : rows[1]],
                    env,
                    n=cfg.random_timing,
                    seed=cfg.seed,
                    calendar=calendar,
                )
                null_stats = random_timing_stats(null)
            table = stats_table({**stats, STRATEGY: {**stats[STRATEGY], **null_stats}})
            pbar.update(1)

            # ---- optional: stochastic runs, cost sensitivity ----
            seeds_frame = (
                stochastic_stats(
                    policy, market, tensors, rows, env, cfg.seeds, calendar, lambda: pbar.update(1)
                )
                if cfg.seeds > 0
                else None
            )
            stochastic = summarise_seeds(seeds_frame) if seeds_frame is not None else None
            costs = cost_sensitivity(
                runs,
                market,
                tensors,
                rows,
                env,
                cfg.fee_multipliers,
                calendar=calendar,
                momentum_bars=momentum_bars,
                seed=cfg.seed,
                tick=lambda: pbar.update(1),
            )

            # ---- report folder ----
            doc: dict[str, Any] = {
                "meta": {**meta, "mlflow_run_id": tracker.run_id},
                "stats": stats,
            }
            doc[supervised.NAME] = supervised_info
            if null is not None:
                doc["random_timing"] = {"definition": RANDOM_TIMING_DEFINITION, **null_stats}
            if stochastic is not None:
                doc["stochastic"] = {"seeds": cfg.seeds, **stochastic}
            doc["flag_notes"] = flag_sentences(stats[STRATEGY], meta["flags"], cfg.split.value)
            advised = advised_record(stats, meta["edge_found_in_training"])
            if advised is not None:
                doc["advised"] = advised
            defined = {k: stat_definition(k) for k in table.index}
            doc["definitions"] = {k: v for k, v in defined.items() if v is not None}
            label = (
                f"{cfg.split.value} {meta['first_decision'][:10]} .. {meta['last_decision'][:10]}"
            )
            with staged_folder(out, "out") as work:  # renamed to `out` when complete
                files = write_report(
                    work,
                    doc,
                    runs,
                    table,
                    costs,
                    seeds_frame,
                    label if cfg.plots else None,
                    null,
                    html=cfg.report_html,
                )
                files.append(write_json(work / CONFIG_FILE, flatten(asdict(cfg))))
                pbar.update(1)
                pbar.close()
                files = [out / path.name for path in files]  # where they will be
                result = BacktestResult(
                    out, stats, table, steps, doc["meta"], files, tracker.run_id, runs
                )
                append_text(work / LOG_FILE, print_summary(result, doc, tracking))

            tracker.set_tags(_tags(meta))
            tracker.log_params(flatten(asdict(cfg)))
            metrics = backtest_metrics(stats, stochastic, costs)
            metrics.update(metric_keys(null_stats))
            tracker.log_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, step=0)
            for path in files:
                tracker.log_artifact(path, "backtest")
        finally:
            pbar.close()
    return result


def _tags(meta: Mapping[str, Any]) -> dict[str, str]:
    """MLflow tags of a backtest run: what it ran on, and its flags (``none`` when clean)."""
    tags = {k: str(meta[k]) for k in TAG_KEYS if k != "flags"}
    tags["flags"] = ",".join(meta["flags"]) or "none"
    tags["momentum_lookback_bars"] = str(meta["momentum"]["lookback_bars"])
    return tags
