"""Several markets in one training run (``data.paths``, hmarl/market/many.py) and the backtest
of such a checkpoint per market and pooled (hmarl/backtest/many.py), on tiny synthetic files."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from hmarl.agent.rollout import sample_market_starts
from hmarl.market.many import MARKETS_KEY, MarketsError
from hmarl.steps import EQUITY, end_to_end
from tests.helpers import compose_config, tiny_overrides

MARKETS = (("alpha", 3000, 1), ("beta", 2500, 2))  # name, candles, synthetic market seed


def _write_market(folder: Path, name: str, n: int, seed: int) -> Path:
    from hmarl.data.synthetic import synthetic_candles

    candles = synthetic_candles(n, seed)
    candles.index.name = "timestamp"
    path = folder / f"{name}.csv"
    candles.to_csv(path)
    return path


def _config(tmp: Path, pattern: str, *extra: str) -> Any:
    return compose_config(
        *tiny_overrides(tmp),
        "data=csv",
        f"data.paths=[{pattern}]",
        "+data.columns.timestamp=timestamp",
        "threads=1",
        *extra,
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two markets trained together for 10 episodes, then backtested per market and pooled."""
    from hmarl.backtest.run import backtest
    from hmarl.config import BacktestConfig, TrackingConfig
    from hmarl.train.trainer import train

    tmp = tmp_path_factory.mktemp("many")
    data = tmp / "data"
    data.mkdir()
    for name, n, seed in MARKETS:
        _write_market(data, name, n, seed)
    cfg = _config(tmp, f"{data}/*.csv", "trainer.episodes=10")
    result = train(cfg, tmp / "run", progress=False)
    bt = BacktestConfig(
        checkpoint=str(result.last_checkpoint),
        tracking=TrackingConfig(enabled=False),
        random_timing=20,
        n_bootstrap=0,
        fee_multipliers=[1.0],
        cache_dir=str(tmp / "cache"),
        threads=1,
        plots=False,
        report_html=False,
        progress=False,
    )
    bt = replace(
        bt,
        baselines=replace(bt.baselines, supervised=replace(bt.baselines.supervised, enabled=False)),
    )
    report = backtest(bt, tmp / "bt")
    return {"tmp": tmp, "data": data, "cfg": cfg, "result": result, "report": report}


def test_each_market_is_scaled_on_its_own_train_split(trained: dict[str, Any]) -> None:
    from hmarl.agent.checkpoint import load_checkpoint
    from hmarl.train.trainer import load_market

    ckpt = load_checkpoint(trained["result"].last_checkpoint)
    markets = ckpt["feature_spec"][MARKETS_KEY]
    assert [m["name"] for m in markets] == ["alpha", "beta"]
    assert ckpt["feature_spec"]["scalers"] == {}  # no single scaler fits both
    cfg = trained["cfg"]
    for m in markets:  # the market built alone gives the same scalers and fingerprint
        alone = replace(cfg, data=replace(cfg.data, paths=[], path=m["path"]))
        own = load_market(alone, log=None)
        assert m["scalers"] == own.scalers and m["fingerprint"] == own.fingerprint
    assert markets[0]["scalers"] != markets[1]["scalers"]


def test_validation_pools_the_markets_and_reports_each(trained: dict[str, Any]) -> None:
    result = trained["result"]
    per = result.best_val_markets
    assert list(per) == ["alpha", "beta"]
    compounded = math.prod(1 + per[m]["Return [%]"] / 100 for m in per)
    assert result.best_val["Return [%]"] == pytest.approx((compounded - 1) * 100, abs=1e-9)
    # a position open at the end of one market and of the same side at the next one's start
    # reads as one trade in the pooled record: at most one merge per boundary
    own = sum(per[m]["# Trades"] for m in per)
    assert own - (len(per) - 1) <= result.best_val["# Trades"] <= own
    log = (trained["tmp"] / "run" / "train.log").read_text()
    assert "per market: alpha return" in log and "beta return" in log


def test_the_backtest_reports_each_market_and_the_pooled_record(trained: dict[str, Any]) -> None:
    out = trained["tmp"] / "bt"
    own = {}
    for name in ("alpha", "beta"):
        doc = json.loads((out / name / "stats.json").read_text())
        assert doc["meta"]["data"].endswith(f"{name}.csv")
        assert (out / name / "steps.csv").is_file()
        own[name] = doc["stats"]
    pooled = json.loads((out / "pooled" / "stats.json").read_text())
    assert pooled["meta"]["markets"] == ["alpha", "beta"]
    for run in ("strategy", "buy_and_hold", "flat", "momentum"):
        compounded = math.prod(1 + own[m][run]["Return [%]"] / 100 for m in own)
        assert pooled["stats"][run]["Return [%]"] == pytest.approx((compounded - 1) * 100)
    assert "Random-Timing Percentile [%]" in pooled["random_timing"]
    markets = pd.read_csv(out / "markets.csv", index_col=0)
    assert list(markets.index) == ["alpha", "beta", "pooled"]
    assert markets.loc["alpha", "mean strategy [%]"] == pytest.approx(
        own["alpha"]["strategy"]["Return [%]"]
    )
    buckets = pd.read_csv(out / "buckets.csv", index_col=0)
    assert buckets.loc["pooled", "markets"] == 2 and len(buckets) >= 2


def test_a_market_too_short_is_refused_by_name_before_training(trained: dict[str, Any]) -> None:
    from hmarl.train.trainer import train

    tmp = trained["tmp"]
    data = tmp / "short"
    data.mkdir()
    _write_market(data, "alpha", 3000, 1)
    _write_market(data, "stub", 100, 3)
    cfg = _config(tmp, f"{data}/*.csv", "trainer.episodes=2")
    with pytest.raises(MarketsError, match=r"market stub \(.*stub\.csv\): 100 candles"):
        train(cfg, tmp / "short_run", progress=False)
    assert not (tmp / "short_run" / "checkpoints" / "last.pt").exists()
    # long enough for the windows, but its train split cannot hold one episode
    long_episode = _config(tmp, f"{trained['data']}/*.csv", "trainer.episode_len=1800")
    with pytest.raises(MarketsError, match=r"market beta .*fewer than trainer\.episode_len=1800"):
        train(long_episode, tmp / "long_run", progress=False)


def test_a_glob_matching_nothing_is_refused_before_training(tmp_path: Path) -> None:
    from hmarl.train.trainer import train

    cfg = _config(tmp_path, f"{tmp_path}/nothing*.csv")
    # a ValueError: the command line's one error line and exit 2 (hmarl/cli.py)
    with pytest.raises(MarketsError, match=r"nothing\*\.csv' matches no file"):
        train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_episodes_stay_in_one_market_drawn_by_train_length() -> None:
    ranges = [(10, 110), (500, 2500)]  # 100 and 2000 train rows
    gen = torch.Generator().manual_seed(0)
    starts = sample_market_starts(ranges, 20, 20_000, gen).numpy()
    first = (starts >= 10) & (starts <= 110 - 20)
    second = (starts >= 500) & (starts <= 2500 - 20)
    assert np.all(first | second)  # every episode's 20 rows inside one market's train rows
    share = first.mean()  # 81 of 81 + 1981 possible starts
    assert share == pytest.approx(81 / (81 + 1981), abs=0.01)
    assert starts[second].min() == 500 and starts[second].max() == 2480
    with pytest.raises(MarketsError, match="does not fit"):
        sample_market_starts([(0, 10)], 20, 4, gen)


def test_end_to_end_lays_overlapping_segments_one_after_another() -> None:
    index = pd.date_range("2024-01-01 00:05", periods=4, freq="5min", tz="UTC")
    seg = pd.DataFrame({EQUITY: [1.0, 1.1, 1.2, 1.5], "x": 1.0}, index=index)
    out = end_to_end([seg, seg])  # the same dates twice, as two markets' validation splits
    assert out.index.is_monotonic_increasing and len(out) == 8
    assert (out.index[4:] - out.index[:4] == pd.Timedelta(days=1)).all()  # time of day kept
    np.testing.assert_allclose(out[EQUITY].to_numpy()[4:], seg[EQUITY].to_numpy() * 1.5)
    later = seg.set_axis(index + pd.Timedelta(days=200))  # months later: moved back, no gap
    out = end_to_end([seg, later])
    assert out.index[4] - out.index[3] == pd.Timedelta(days=1) - pd.Timedelta(minutes=15)


def test_a_sweep_builds_each_market_of_data_paths_once(trained: dict[str, Any]) -> None:
    from hmarl.train.resume import describe_data
    from hmarl.train.sweep import prebuild_markets

    cfg = trained["cfg"]
    assert prebuild_markets([cfg, cfg]) == 2  # two markets, each once, not one "data.paths"
    assert describe_data({"data": {"source": "csv", "paths": ["a.csv", "b.csv"]}}) == (
        "data=csv data.paths=[a.csv,b.csv]"
    )


def test_a_resumed_many_market_run_is_bit_identical(trained: dict[str, Any]) -> None:
    from hmarl.cli import Interrupted
    from hmarl.train.trainer import train
    from tests.helpers import assert_identical

    tmp, cfg = trained["tmp"], trained["cfg"]

    def stop_after_5(episode: int, *_: Any) -> None:
        if episode == 5:  # episode 6 of 10: last.pt holds the state after episode 5
            raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        train(cfg, tmp / "half", progress=False, on_episode=stop_after_5)
    last = tmp / "half" / "checkpoints" / "last.pt"
    rest = replace(cfg, trainer=replace(cfg.trainer, resume=str(last)))
    resumed = train(rest, tmp / "half", progress=False)
    assert_identical(resumed.last_checkpoint, trained["result"].last_checkpoint)


def test_excess_returns_remove_each_markets_own_training_drift(trained: dict[str, Any]) -> None:
    from hmarl.train.trainer import Trainer

    tmp = trained["tmp"]
    cfg = _config(tmp, f"{trained['data']}/*.csv", "trainer.excess_returns=true")
    run = Trainer(cfg, tmp / "excess")
    got, true = run.train_tensors.returns, run.tensors.returns
    ranges = run.markets.ranges("train")
    assert set(ranges) == {"alpha", "beta"}
    drifts = []
    for lo, hi in ranges.values():
        drifts.append(float(true[lo:hi].mean()))
        assert abs(float(got[lo:hi].mean())) < 1e-15
        assert torch.equal(got[lo:hi], true[lo:hi] - true[lo:hi].mean())
    assert drifts[0] != drifts[1]  # each market its own mean, not the pooled one
