"""``task=quote`` on tick markets through the entry points (issues 24 and 25):
``data=ticks_synthetic`` (seeded synthetic tapes) and ``data=ticks`` (the bundled capture):
training with checkpoints, a bit-exact resume, and the backtest beside its baselines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import assert_identical, compose_config, full_and_resumed
from test_quote_task import run_main

from hmarl.agent.checkpoint import load_checkpoint
from hmarl.backtest.__main__ import main as backtest_main
from hmarl.config import ConfigError
from hmarl.train import quote_tape as qt
from hmarl.train.__main__ import main as train_main
from hmarl.train.quote_tape import TapeQuoteMarket
from hmarl.train.quote_task import quote_market, quote_policy_from_checkpoint

CAPTURE = "binance_spot_btcusdt_20240809_ws.gz"
TINY = (
    "+experiment=mm_asym_1_10",
    "features.macro_window=16",
    "features.micro_window=4",
    "trainer.n_envs=4",
    "trainer.eval_every=2",
    "trainer.checkpoint_every=2",
    "threads=1",
    "tracking=none",
)
TICKS_TINY = (
    *TINY,
    "data=ticks_synthetic",
    "data.ticks_synthetic.train_steps=600",
    "data.ticks_synthetic.val_steps=300",
    "data.ticks_synthetic.test_steps=300",
    "data.ticks_synthetic.episode_steps=20",
)


def test_tick_market_configs_and_bad_values(tmp_path: Path) -> None:
    """The defaults are scripts/bench_quoting.py --market ticks / real; bad values are refused
    naming the key."""
    cfg = compose_config("+experiment=mm_asym_1_10", "data=ticks_synthetic")
    t = cfg.data.ticks_synthetic
    assert cfg.task.value == "quote" and cfg.data.source.value == "ticks_synthetic"
    assert (t.train_steps, t.val_steps, t.test_steps, t.episode_steps) == (
        50_000,
        20_000,
        20_000,
        100,
    )
    assert t.informed == 0.3 and t.dt == 1.0 and cfg.quote.offsets == [0, 1, 2, 4]
    assert cfg.quote.tick == 0.01 and cfg.quote.liquidation_cost == 0.005
    # the benchmark's trainer values, applied after task=quote's (conf/task_data/); the
    # command line still wins, and the Avellaneda-Stoikov market keeps task=quote's 150 x 32
    assert (cfg.trainer.episodes, cfg.trainer.n_envs) == (500, 8)
    assert (cfg.features.macro_window, cfg.features.micro_window) == (64, 8)
    assert cfg.trainer.macro_every == 11 and cfg.trainer.estimator.value == "expected"
    cfg = compose_config("+experiment=mm_asym_1_10", "data=ticks_synthetic", "trainer.n_envs=3")
    assert (cfg.trainer.episodes, cfg.trainer.n_envs) == (500, 3)
    cfg = compose_config("+experiment=mm_asym_1_10")
    assert cfg.data.source.value == "avellaneda"
    assert (cfg.trainer.episodes, cfg.trainer.n_envs, cfg.features.macro_window) == (150, 32, 64)
    assert compose_config().trainer.episodes == compose_config("task=trade").trainer.episodes
    with pytest.raises(ConfigError, match=r"data\.ticks_synthetic\.informed must be in"):
        compose_config(
            "+experiment=mm_asym_1_10", "data=ticks_synthetic", "data.ticks_synthetic.informed=2"
        )
    with pytest.raises(ConfigError, match=r"data\.ticks_synthetic\.spread_probs must sum to 1"):
        compose_config(
            "+experiment=mm_asym_1_10",
            "data=ticks_synthetic",
            "data.ticks_synthetic.spread_probs=[0.5,0.2]",
        )
    with pytest.raises(ConfigError, match=r"data\.path is required for data=ticks"):
        compose_config("+experiment=mm_asym_1_10", "data=ticks")
    missing = tmp_path / "nope.gz"
    with pytest.raises(ConfigError, match=rf"data\.path={missing} does not exist"):
        compose_config("+experiment=mm_asym_1_10", "data=ticks", f"data.path={missing}")
    with pytest.raises(ConfigError, match=r"data\.ticks\.dt must be >= 0\.001"):
        compose_config("+experiment=mm_asym_1_10", "data=ticks", "data.ticks.dt=0.0001")
    with pytest.raises(ConfigError, match="add task=quote"):
        compose_config("data=ticks_synthetic")
    cfg = compose_config(*TICKS_TINY, "data.ticks_synthetic.val_steps=30")  # no whole episode
    with pytest.raises(ConfigError, match=r"data=ticks_synthetic: the validation tape .*val_steps"):
        quote_market(cfg)


def test_train_resume_and_backtest_on_synthetic_ticks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Interrupted after 2 episodes and resumed to 4: bit-exact; `python -m hmarl.backtest`
    scores best.pt on the test tape beside no quote, the best fixed quote chosen on validation
    and the estimated closed form, the library's evaluation giving the same figures."""
    full, resumed = full_and_resumed(tmp_path, list(TICKS_TINY), episodes=4, stop=2)
    assert_identical(full.last_checkpoint, resumed.last_checkpoint)
    assert full.best_checkpoint is not None and resumed.best_checkpoint is not None
    assert_identical(full.best_checkpoint, resumed.best_checkpoint)
    assert full.state.best_value == resumed.state.best_value
    ckpt = load_checkpoint(full.best_checkpoint)
    assert ckpt["task"] == "quote" and ckpt["config"]["data"]["source"] == "ticks_synthetic"

    market = quote_market(compose_config(*TICKS_TINY, "trainer.episodes=4"))
    assert isinstance(market, TapeQuoteMarket) and market.fingerprint == ckpt["data_fingerprint"]
    policy = quote_policy_from_checkpoint(ckpt)
    assert full.state.best_value == market.objective(policy, market.eval_batch("val"))
    library = qt.evaluate(policy, market.tape, market.params, market.data)

    out = tmp_path / "bt"
    monkeypatch.chdir(tmp_path)
    args = (f"checkpoint={full.best_checkpoint}", f"out={out}", "tracking=none")
    assert run_main(backtest_main, monkeypatch, *args) == 0
    assert {p.name for p in out.iterdir()} >= {"stats.json", "steps.csv", "report.html"}
    doc = json.loads((out / "stats.json").read_text())
    objectives = doc["objectives"]
    assert set(objectives) == {"agent", "best_fixed", "no_quote", "closed_form"}
    assert objectives["agent"] == pytest.approx(library["test"])
    assert objectives["best_fixed"] == pytest.approx(library["best_fixed"])
    assert objectives["closed_form"] == pytest.approx(library["closed_form"])
    assert objectives["no_quote"] == 0.0
    assert doc["meta"]["best_fixed_level"] == market.best_fixed_level()
    assert "no market impact" in doc["meta"]["assumption"]
    episodes = (300 - market.data.test.tables.warmup) // 20
    assert doc["meta"]["episodes"] == episodes
    per_day = doc["quote_stats_per_day"]["agent"]
    assert list(per_day) == ["2024-01-01"]  # the generator's clock starts there
    assert per_day["2024-01-01"]["PnL [price x lots]"] == pytest.approx(
        doc["stats"]["agent"]["PnL [price x lots]"]
    )
    steps = pd.read_csv(out / "steps.csv")
    assert len(steps) == episodes * 20
    fills = steps["bid_fill"] - steps["ask_fill"]  # the inventory follows the fills from flat
    assert np.allclose(fills.groupby(steps["path"]).cumsum(), steps["inventory"])
    gains = steps[["spread", "mtm"]].sum(axis=1)
    parts = gains - steps[["fee", "inventory_penalty", "no_quote", "terminal"]].sum(axis=1)
    assert np.allclose(parts, steps["reward"])
    assert steps.groupby("path")["reward"].sum().mean() == pytest.approx(objectives["agent"])


def test_train_and_backtest_on_the_bundled_capture(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_data: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """data=ticks on the real capture: consecutive time segments, trained and back-tested; the
    closed form is a number or NaN with its reason; a dt too large for the capture exits 2."""
    capture = shared_data / CAPTURE
    if not capture.is_file():
        pytest.skip(f"the bundled tick capture {capture} is absent")
    monkeypatch.chdir(tmp_path)
    common = (*TINY, "data=ticks", f"data.path={capture}")
    run = tmp_path / "run"
    assert (
        run_main(train_main, monkeypatch, *common, "trainer.episodes=2", f"hydra.run.dir={run}")
        == 0
    )
    out = tmp_path / "bt"
    best = run / "checkpoints" / "best.pt"
    assert (
        run_main(backtest_main, monkeypatch, f"checkpoint={best}", f"out={out}", "tracking=none")
        == 0
    )
    doc = json.loads((out / "stats.json").read_text())
    meta = doc["meta"]
    assert meta["market"]["source"] == "ticks" and meta["market"]["dt"] == 0.25
    assert set(doc["quote_stats_per_day"]["agent"]) == {"2024-08-09"}
    cf = doc["objectives"]["closed_form"]  # NaN is written as null
    assert (cf is not None and math.isfinite(cf)) == (meta["closed_form_missing"] is None)
    assert (
        cf is not None
        or "A=" in meta["closed_form_missing"]
        or "estimable" in meta["closed_form_missing"]
    )
    capsys.readouterr()
    args = (*common, "data.ticks.dt=60", f"hydra.run.dir={tmp_path}/r2")  # 5 steps in 5 minutes
    assert run_main(train_main, monkeypatch, *args) == 2
    assert "data.ticks.dt" in capsys.readouterr().err
