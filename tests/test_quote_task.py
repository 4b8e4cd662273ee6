"""``task=quote`` through the entry points: Hydra, MLflow, checkpoints, resume, sweeps and the
quoting backtest (issue 24, the entry points), on a tiny Avellaneda-Stoikov market."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import assert_identical, compose_config, full_and_resumed

from hmarl.agent.checkpoint import load_checkpoint
from hmarl.agent.quote_rollout import collect_quotes
from hmarl.agent.quote_update import exact_objective
from hmarl.backtest.__main__ import main as backtest_main
from hmarl.backtest.quote_run import OBJECTIVE, checkpoint_config
from hmarl.config import ConfigError
from hmarl.train.__main__ import main as train_main
from hmarl.train.quote_task import quote_market, quote_policy_from_checkpoint
from hmarl.train.quoting import train_quotes
from hmarl.train.selection import quote_condition_text, quote_edge_failures

QUOTE_TINY = (
    "+experiment=mm_asym_1_10",
    "data.avellaneda.steps=20",
    "quote.eval_paths=8",
    "trainer.n_envs=4",
    "trainer.eval_every=2",
    "trainer.checkpoint_every=2",
    "threads=1",
)


def run_main(main: Callable[[], None], monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """An entry point's ``main()`` in this process, as ``python -m`` runs it (the imports are
    paid once: a subprocess per call would take most of this file's time budget)."""
    monkeypatch.setattr(sys, "argv", ["hmarl", *args])
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sigterm = signal.getsignal(signal.SIGTERM)  # the entry point turns SIGTERM into Ctrl-C
    try:
        main()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:  # leave this test process as it was: Hydra configures logging
        signal.signal(signal.SIGTERM, sigterm)
        root.handlers[:] = handlers
        root.setLevel(level)
    return 0


def test_composed_quote_config_and_bad_keys() -> None:
    """+experiment=mm_asym_1_10 selects task=quote and data=avellaneda; task=trade stays the
    default; a bad value or a task without its market is refused naming the key."""
    cfg = compose_config("+experiment=mm_asym_1_10")
    assert cfg.task.value == "quote" and cfg.data.source.value == "avellaneda"
    assert cfg.trainer.macro_every == 11 and cfg.trainer.estimator.value == "expected"
    assert cfg.quote.offsets == [1, 2, 3, 4, 6] and cfg.data.avellaneda.steps == 100
    assert compose_config().task.value == "trade"
    with pytest.raises(ConfigError, match=r"data\.avellaneda\.sigma must be > 0"):
        compose_config("+experiment=mm_asym_1_10", "data.avellaneda.sigma=-1")
    with pytest.raises(ConfigError, match="task=quote needs a quoting market"):
        compose_config("task=quote", "data=synthetic")
    with pytest.raises(ConfigError, match="add task=quote"):
        compose_config("data=avellaneda")
    with pytest.raises(ConfigError, match=r"quote\.max_inventory must be"):
        compose_config("task=quote", "quote.max_inventory=0")


def test_resume_reproduces_an_uninterrupted_run_and_the_library_loop(tmp_path: Path) -> None:
    """Interrupted after 2 episodes and resumed to 4: the same weights, optimizer states and
    generator as one uninterrupted run; and the same best validation as train_quotes (the
    benchmark's library loop) with the same settings."""
    overrides = [*QUOTE_TINY, "tracking=none"]
    full, resumed = full_and_resumed(tmp_path, overrides, episodes=4, stop=2)
    assert_identical(full.last_checkpoint, resumed.last_checkpoint)
    assert full.best_checkpoint is not None and resumed.best_checkpoint is not None
    assert_identical(full.best_checkpoint, resumed.best_checkpoint)
    assert full.state.best_value == resumed.state.best_value
    assert full.state.episode == resumed.state.episode == 4

    cfg = compose_config(*overrides, "trainer.episodes=4")
    market = quote_market(cfg)
    _, library = train_quotes(market.market, market.params, replace(market.settings, episodes=4))
    assert full.state.best_value == library.validation
    assert full.state.best_episode == library.best_episode


def test_train_sweep_and_backtest_through_the_entry_points(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`python -m hmarl.train -m ... seed=0,1` trains two quoting runs with MLflow (params,
    per-evaluation quote stats, reward parts, baselines, the edge tag); `python -m
    hmarl.backtest` scores one checkpoint with its baselines into a whole report folder."""
    db = tmp_path / "mlflow.db"
    sweep = tmp_path / "sweep"
    monkeypatch.chdir(tmp_path)
    code = run_main(
        train_main,
        monkeypatch,
        "-m",
        *QUOTE_TINY,
        "trainer.episodes=2",
        f"tracking.uri=sqlite:///{db}",
        f"hydra.sweep.dir={sweep}",
        f"cache_dir={tmp_path}/cache",
        "seed=0,1",
    )
    assert code == 0
    for job in ("0", "1"):
        ckpt = load_checkpoint(sweep / job / "checkpoints" / "best.pt")
        assert ckpt["task"] == "quote" and ckpt["config"]["seed"] == int(job)
        assert quote_policy_from_checkpoint(ckpt).head  # rebuilt from its model record
    with sqlite3.connect(db) as con:
        metrics = {k for (k,) in con.execute("select distinct key from metrics")}
        params = dict(con.execute("select key, value from params"))
        tags = {k for (k,) in con.execute("select distinct key from tags")}
    assert {
        "val/objective_price_x_lots",
        "val/of_the_optimum_pct",
        "val/fill_ratio_pct",
        "val/inventory_abs_mean_lots",
        "val/edge",
        "reward/spread",
        "reward/inventory_penalty",
        "reward/mtm",
        "baseline/optimum",
        "baseline/best_fixed",
        "baseline/closed_form",
        "baseline/no_quote",
    } <= metrics
    assert params["task"] == "quote" and params["data.source"] == "avellaneda"
    assert {"edge_found", "baseline_optimum", "mlflow.parentRunId"} <= tags

    out = tmp_path / "bt"
    best = sweep / "0" / "checkpoints" / "best.pt"
    args = (f"checkpoint={best}", f"out={out}", "tracking=none")  # its MLflow run: as trading's
    assert run_main(backtest_main, monkeypatch, *args, "seeds=2") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "backtest.log",
        "config.json",
        "cost_sensitivity.csv",
        "report.html",
        "seeds.csv",
        "stats.csv",
        "stats.json",
        "steps.csv",
    ]
    doc = json.loads((out / "stats.json").read_text())
    objectives = doc["objectives"]
    # fee multipliers (1, 2, 3 by default): nothing beats the optimum at any of them; this
    # market has no maker fee and no liquidation cost, so the figures do not move
    costs = pd.read_csv(out / "cost_sensitivity.csv")
    assert costs["fee_multiplier"].unique().tolist() == [1.0, 2.0, 3.0]
    for _, at in costs.groupby("fee_multiplier"):
        value = at.set_index("policy")["Objective [price x lots]"]
        assert value.idxmax() == "optimum" and value["no_quote"] == 0.0
        assert value.to_dict() == pytest.approx(objectives)
    # seeds=2: two sampled runs, and the sampled policy's exact objective, below the optimum
    assert doc["seeds"]["seed"] == [0, 1] and len(pd.read_csv(out / "seeds.csv")) == 2
    assert doc["seeds"]["expected_objective"] <= objectives["optimum"]
    # the runs walked by sample_quotes: collect_quotes's figures, exactly
    ckpt = load_checkpoint(best)
    policy, market = quote_policy_from_checkpoint(ckpt), quote_market(checkpoint_config(ckpt))
    batch = market.eval_batch("test")
    for seed, value in zip(doc["seeds"]["seed"], doc["seeds"][OBJECTIVE], strict=True):
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            traj = collect_quotes(policy, batch, market.params, generator=gen)
        assert value == float(traj.settlement.reward.sum(1).mean())
    probs = traj.every_state().permute(1, 2, 0, 3).double()
    assert doc["seeds"]["expected_objective"] == exact_objective(market.params, batch, probs)
    assert set(objectives) == {"agent", "optimum", "closed_form", "best_fixed", "no_quote"}
    assert objectives["no_quote"] == 0.0
    assert max(objectives.values()) == objectives["optimum"]  # nothing beats the optimum
    assert doc["meta"]["split"] == "test" and "no market impact" in doc["meta"]["assumption"]
    assert "Fill ratio [%]" in doc["stats"]["agent"]
    steps = pd.read_csv(out / "steps.csv")
    assert len(steps) == 8 * 20 and steps["path"].nunique() == 8
    for col in ("mid", "bid", "ask", "bid_fill", "ask_fill", "inventory", "cash", "reward"):
        assert col in steps
    fills = steps["bid_fill"] - steps["ask_fill"]  # the inventory follows the fills from flat
    assert np.array_equal(fills.groupby(steps["path"]).cumsum(), steps["inventory"])
    gains = steps[["spread", "mtm"]].sum(axis=1)
    parts = gains - steps[["fee", "inventory_penalty", "no_quote", "terminal"]].sum(axis=1)
    assert np.allclose(parts, steps["reward"])
    assert "Quoting backtest" in (out / "report.html").read_text()

    bad = tmp_path / "bt_all"  # a quoting checkpoint has no candle splits: refused, no folder
    assert (
        run_main(backtest_main, monkeypatch, f"checkpoint={best}", f"out={bad}", "split=all") == 2
    )
    assert not bad.exists()


def test_the_quoting_edge_beats_no_quote_and_the_best_fixed_quote() -> None:
    baselines = {"no_quote": 0.0, "best_fixed": 16.6}
    assert quote_edge_failures(20.0, baselines) == []
    assert quote_edge_failures(16.6, baselines) == ["best_fixed"]  # a tie is no edge
    assert quote_edge_failures(-1.0, baselines) == ["no_quote", "best_fixed"]
    assert "+16.6000" in quote_condition_text("best_fixed", baselines)


def test_bad_quote_config_exits_2_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ("+experiment=mm_asym_1_10", "data.avellaneda.dt=0", f"hydra.run.dir={tmp_path}/r")
    assert run_main(train_main, monkeypatch, *args) == 2
    assert "data.avellaneda.dt must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "r" / "checkpoints").exists()
