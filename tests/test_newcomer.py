"""A newcomer's walk (issue 22): no silent fallback, and messages that finish the sentence.

Each test names the message or path it would have caught: training on the synthetic market
when ``data.path`` was given without ``data=csv``; "unknown config key data.columns (did you
mean data.columns?)"; Python syntax in the missing-column hint; "checkpoint not found" for a
run folder; Ctrl-C's "resume it from its last.pt" without a path and an empty ``train.log``;
a resume that needed the original overrides; a summary that called a kept no-edge episode
"best" and listed every edge condition instead of the one that failed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from helpers import compose_config, tiny_overrides
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException

from hmarl.agent.checkpoint import CheckpointError, checkpoint_file, load_checkpoint
from hmarl.cli import Interrupted, describe
from hmarl.config import (
    BacktestError,
    Config,
    ConfigError,
    conf_dir,
    register_backtest_configs,
    register_configs,
    to_backtest_config,
    to_config,
)
from hmarl.data.candles import DataError
from hmarl.data.reading import load_candles
from hmarl.report.style import figure_notes, log_odds, split_marks
from hmarl.train.resume import resume_command, resumed_config
from hmarl.train.selection import edge_failures, edge_found
from hmarl.train.trainer import TrainState, kept_line, no_edge_warning, train

# ----------------------------------------------------------------------------- silent paths


def test_a_data_path_without_a_file_source_is_refused() -> None:
    """It trained on the synthetic market without a word."""
    with pytest.raises(
        ConfigError, match=r"data\.path=my\.csv is set but data=synthetic.*data=csv"
    ):
        compose_config("data.path=my.csv")
    with pytest.raises(ConfigError, match=r"add data=parquet"):
        compose_config("data.path=candles.parquet")
    assert compose_config("data=csv", "data.path=my.csv").data.path == "my.csv"


def compose_error(*overrides: str, schema: type = Config, name: str = "config") -> str:
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        with pytest.raises(HydraException) as info:
            compose(name, overrides=list(overrides))
    return describe(info.value, schema)


@pytest.mark.parametrize("override", ['data.columns={close: "price"}', "data.columns.close=price"])
def test_a_mapping_key_says_how_to_set_its_entries(override: str) -> None:
    """Both read "unknown config key data.columns (did you mean data.columns?)"."""
    line = compose_error("data=csv", "data.path=x.csv", override)
    assert "did you mean" not in line
    assert "data.columns is a mapping" in line and "+data.columns.close=price" in line


def test_the_mapping_override_the_message_gives_works() -> None:
    cfg = compose_config("data=csv", "data.path=x.csv", "+data.columns.close=price")
    assert cfg.data.columns == {"close": "price"}


def test_a_typo_still_gets_its_suggestion() -> None:
    assert compose_error("trainer.macro_evry=3") == (
        "unknown config key trainer.macro_evry (did you mean trainer.macro_every?)"
    )


def test_missing_columns_suggest_the_overrides_that_work(tmp_path: Path) -> None:
    """The hint was Python syntax (``columns={'<canonical name>': ...}``), not an override."""
    path = tmp_path / "mine.csv"
    rows = [f"2024-01-01 00:{5 * i:02d}:00,1,2,0.5,1.5,10" for i in range(12)]
    path.write_text("time,o,h,l,price,Trade volume\n" + "\n".join(rows) + "\n")
    with pytest.raises(DataError) as info:
        load_candles(path)
    text = str(info.value)
    assert "columns={" not in text
    for item in ("+data.columns.open=o", "+data.columns.high=h", "+data.columns.low=l"):
        assert item in text
    assert "'+data.columns.volume=\"Trade volume\"'" in text
    mapping = {"open": "o", "high": "h", "low": "l", "close": "price", "volume": "Trade volume"}
    frame = load_candles(path, columns=mapping)
    assert list(frame.columns) == ["open", "high", "low", "close", "volume"]


# ----------------------------------------------------------------------------- runs and resume


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A tiny run stopped by Ctrl-C after episode 7 (its last checkpoint: episode 4)."""
    tmp = tmp_path_factory.mktemp("walk")

    def ctrl_c(episode: int, *_: Any) -> None:
        if episode == 7:
            raise KeyboardInterrupt

    cfg = compose_config(*tiny_overrides(tmp, "trainer.episodes=12"))
    with pytest.raises(Interrupted) as info:
        train(cfg, tmp / "run", progress=False, on_episode=ctrl_c)
    return tmp, str(info.value)


def test_ctrl_c_prints_the_checkpoint_and_the_command(interrupted_run: tuple[Path, str]) -> None:
    """It printed "resume it from its last.pt" with no path and left train.log empty."""
    tmp, message = interrupted_run
    last = (tmp / "run" / "checkpoints" / "last.pt").resolve()
    assert f"its last checkpoint is {last} (episode 4)" in message
    assert resume_command(last) in message
    assert f"trainer.resume={last} hydra.run.dir={last.parent.parent}" in message
    assert (tmp / "run" / "train.log").read_text().strip() == message.strip()


def test_interrupt_before_any_checkpoint_says_to_start_again(tmp_path: Path) -> None:
    def ctrl_c(episode: int, *_: Any) -> None:
        raise KeyboardInterrupt

    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.episodes=12"))
    with pytest.raises(Interrupted, match=r"no checkpoint was written yet.*start the run again"):
        train(cfg, tmp_path / "run", progress=False, on_episode=ctrl_c)


def test_resume_from_the_checkpoint_alone(interrupted_run: tuple[Path, str]) -> None:
    """``trainer.resume=<last.pt>`` alone failed: "the data differs ... (fingerprint)"."""
    tmp, _ = interrupted_run
    run_dir = tmp / "run"
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        given = [f"trainer.resume={run_dir}", "trainer.episodes=13"]  # a folder names last.pt
        dcfg = resumed_config(compose("config", overrides=given), given)
    cfg = to_config(dcfg)
    saved = load_checkpoint(run_dir / "checkpoints" / "last.pt")["config"]
    assert cfg.data.n_candles == 6000 == saved["data"]["n_candles"]
    assert (cfg.features.macro_window, cfg.cache_dir) == (48, saved["cache_dir"])
    assert cfg.trainer.episodes == 13  # a key named on the command line wins
    assert cfg.trainer.resume == str(run_dir / "checkpoints" / "last.pt")
    result = train(cfg, run_dir, progress=False)  # in place, as the printed command does
    assert result.state.episode == 13


def test_a_resume_on_other_data_names_both(interrupted_run: tuple[Path, str]) -> None:
    tmp, _ = interrupted_run
    last = tmp / "run" / "checkpoints" / "last.pt"
    other = compose_config(*tiny_overrides(tmp, "data.market_seed=3"), f"trainer.resume={last}")
    with pytest.raises(CheckpointError) as info:
        train(other, tmp / "other", progress=False)
    text = str(info.value)
    assert "trained on data=synthetic data.n_candles=6000 data.market_seed=0" in text
    assert "this config reads data=synthetic data.n_candles=6000 data.market_seed=3" in text
    assert f"trainer.resume={last} alone" in text


def test_a_run_folder_names_its_checkpoint(tmp_path: Path) -> None:
    """``checkpoint=<run folder>`` said "checkpoint not found" for a folder that exists."""
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    for name in ("best.pt", "last.pt"):
        (tmp_path / "run" / "checkpoints" / name).write_bytes(b"x")
    best, last = (tmp_path / "run" / "checkpoints" / n for n in ("best.pt", "last.pt"))
    assert checkpoint_file(tmp_path / "run", ("best.pt", "last.pt")) == best
    assert checkpoint_file(tmp_path / "run" / "checkpoints", ("last.pt", "best.pt")) == last
    assert checkpoint_file(last, ("best.pt",)) == last
    with pytest.raises(CheckpointError, match=r"is a folder without best\.pt or last\.pt"):
        checkpoint_file(tmp_path, ("best.pt", "last.pt"))


def test_the_backtest_refuses_a_data_path_without_a_source() -> None:
    register_backtest_configs()
    overrides = ["checkpoint=x.pt", "data=synthetic", "data.path=y.csv"]
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        dcfg = compose("backtest", overrides=overrides)
    with pytest.raises(BacktestError, match=r"data\.path=y\.csv is set but data=synthetic"):
        to_backtest_config(dcfg)


# ----------------------------------------------------------------------------- the verdict


def stats(trades: int, ret: float, rank: float, long_pct: float = 50.0) -> dict[str, Any]:
    return {
        "# Trades": trades,
        "Return [%]": ret,
        "Random-Timing Percentile [%]": rank,
        "Long Exposure Time [%]": long_pct,
        "Exposure Time [%]": 94.0,
    }


def test_edge_failures_name_the_conditions() -> None:
    assert edge_failures(stats(1252, 3.0, 40.0), 5, 5.0, 90.0) == ["buy_and_hold", "random_timing"]
    assert edge_failures(stats(2, -1.0, 95.0), 5, -3.0, 90.0) == ["trades", "flat"]
    assert edge_failures(stats(40, 9.0, 99.0, long_pct=97.0), 5, 5.0, 90.0) == ["long_only"]
    assert edge_failures(stats(40, 9.0, math.nan), 5, 5.0, 90.0) == ["random_timing"]
    assert edge_failures(stats(40, 9.0, math.nan), 5, 5.0, 0.0) == []
    assert edge_found(stats(40, 9.0, 95.0), 5, 5.0, 90.0)


def test_the_summary_names_the_failed_condition_and_the_kept_episode() -> None:
    """A run with 1,252 trades read "no evaluation had >= 5 trades"; "best validation
    sharpe=-6.03 at episode 49" hid a +0.20 reached later."""
    cfg = compose_config()
    state = TrainState(
        best_value=-6.03,
        best_episode=49,
        evaluations=10,
        peak_value=0.2,
        peak_episode=89,
        edge_misses={"buy_and_hold": 10, "random_timing": 7},
    )
    warning = no_edge_warning(state, cfg, buy_and_hold_pct=4.5)
    assert "trades" not in warning and "long on" not in warning
    assert "buy & hold (+4.50%) after costs (10 of 10 evaluations failed it)" in warning
    assert "90th percentile of random timing (7 of 10" in warning
    line = kept_line(state, cfg, {"Exposure Time [%]": 94.0})
    assert "kept episode 49 (best.pt): no edge, so the least exposed policy" in line
    assert "in the market on 94% of validation bars" in line
    assert "the best validation sharpe was +0.2 at episode 89, not kept" in line
    state.best_edge = True
    assert kept_line(state, cfg, {}).startswith("kept episode 49 (best.pt): an edge")


# ----------------------------------------------------------------------------- the figure style


def figure_steps(n: int = 40, p_hold: float = 0.99) -> pd.DataFrame:
    """A steps frame of n 5-minute bars, flat, HOLD at ``p_hold`` (test_metrics.make_steps)."""
    from test_metrics import make_steps

    steps = make_steps([0.001] * n, prices=[100.0 + i for i in range(n + 1)])
    steps["p_hold"], steps["p_buy"], steps["p_sell"] = p_hold, (1 - p_hold) / 2, (1 - p_hold) / 2
    return steps


def figure_doc(steps: pd.DataFrame) -> dict[str, Any]:
    return {
        "meta": {
            "in_sample": True,
            "split": "all",
            "first_decision": steps.index[0].isoformat(),
            "last_decision": steps.index[-1].isoformat(),
            "split_starts": {
                "val": steps.index[20].isoformat(),
                "test": steps.index[30].isoformat(),
            },
        },
        "flag_notes": ["the training run found no edge on validation: stay flat"],
    }


def test_png_and_html_share_one_palette() -> None:
    """Momentum was red in the PNGs and green in report.html; flat green vs grey."""
    from matplotlib.colors import to_hex

    from hmarl.report import html
    from hmarl.report.plots import equity_figure
    from hmarl.report.style import PALETTE

    assert html.COLORS is PALETTE
    steps = figure_steps()
    runs = {name: steps for name in ("strategy", "buy_and_hold", "flat", "momentum")}
    (ax,) = equity_figure(runs, "t").axes
    drawn = {str(line.get_label()): to_hex(line.get_color()) for line in ax.get_lines()}
    assert {name: drawn[name] for name in runs} == {name: PALETTE[name] for name in runs}


def test_figures_carry_the_flags_and_the_split_boundaries() -> None:
    """The PNGs carried neither the no-edge flag nor the in-sample warning; split=all figures
    did not mark where validation and test start."""
    from hmarl.backtest.report import report_figures

    steps = figure_steps()
    doc = figure_doc(steps)
    figures = report_figures({"strategy": steps, "buy_and_hold": steps}, "all", None, doc)
    assert set(figures) == {"equity.png", "drawdown.png", "positions.png",
                            "action_probabilities.png"}  # fmt: skip
    for fig in figures.values():
        title = fig.get_suptitle()
        assert "found no edge" in title and "IN SAMPLE" in title
        for ax in fig.axes:
            labels = [t.get_text() for t in ax.texts]
            assert labels.count("val starts") == 1 and labels.count("test starts") == 1
    outside = dict(doc, meta={**doc["meta"], "split_starts": {"val": "2020-01-01T00:00:00+00:00"}})
    assert split_marks(outside) == []  # a boundary outside the bars is not drawn


def test_action_probabilities_are_readable_near_one() -> None:
    """P(HOLD) = 0.99 was a flat line at the top of a linear 0-1 axis."""
    from hmarl.report.plots import probabilities_figure

    fig = probabilities_figure(figure_steps(p_hold=0.99), "t")
    (ax,) = fig.axes
    hold = next(line for line in ax.get_lines() if line.get_label() == "HOLD")
    assert np.allclose(hold.get_ydata(), math.log(0.99 / 0.01))  # log-odds, not 0.99
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert {"0.5", "0.99", "0.999"} <= set(labels)
    low, high = ax.get_ylim()
    assert low < log_odds(0.001) and high > log_odds(0.999)


def test_report_html_uses_the_same_notes_and_marks(tmp_path: Path) -> None:
    from hmarl.report.html import _header, report_layout

    steps = figure_steps()
    doc = figure_doc(steps)
    header = _header(doc)
    for note in figure_notes(doc):
        assert note in header
    layout = report_layout({"strategy": steps}, pd.DataFrame({"strategy": [1.0]}, index=["x"]), doc)
    spans = [m for m in layout.references() if type(m).__name__ == "Span"]
    assert len(spans) == 2 * 5  # two boundaries on each of the five panels
