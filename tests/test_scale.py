"""Markets larger than memory: blockwise evaluation, re-settling, fast CSV, same results.

Why it matters: a backtest over millions of rows cannot hold one forward pass's activations
(~4 KB a row), so :func:`hmarl.agent.evaluation.run_split` runs ``block`` rows at a time and the
cost sensitivity re-settles the strategy's decisions instead of running the policy again; and
its steps.csv is written with UTC timestamps formatted by numpy. Each must leave every figure
and every byte as before (issue 26: "no change of results").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hmarl.agent.evaluation import run_split
from hmarl.agent.policy import HierarchicalPolicy
from hmarl.agent.rollout import market_tensors
from hmarl.backtest.runs import STRATEGY, cost_sensitivity, resettled, scaled_costs
from hmarl.config import DataConfig
from hmarl.market.env import EnvParams
from hmarl.market.market_data import MarketData, market_for_config
from hmarl.stats.baselines import baseline_steps
from hmarl.stats.metrics import CRYPTO

FEATURES = ["ret_1", "rv_12"]


@pytest.fixture(scope="module")
def market() -> MarketData:
    return market_for_config(
        DataConfig(n_candles=3000),
        feature_names=FEATURES,
        macro_window=24,
        micro_window=6,
        cache_dir=None,
        log=None,
    )


def random_policy(seed: int) -> HierarchicalPolicy:
    """Random weights, larger than at initialisation so that even argmax switches actions."""
    torch.manual_seed(seed)
    policy = HierarchicalPolicy(
        len(FEATURES), macro_hidden=16, macro_dim=8, micro_hidden=8, micro_dim=4,
        head_hidden=(12, 6), dropout=0.2,
    )  # fmt: skip
    with torch.no_grad():
        for p in policy.parameters():
            p.normal_(0.0, 1.0)
    return policy


@pytest.mark.parametrize("block", [64, 700, 4096])
@pytest.mark.parametrize(
    ("greedy", "env"),
    [
        (True, EnvParams()),
        (False, EnvParams()),
        (False, EnvParams(action_mode="increment", increment=0.25, allow_short=True)),
    ],
)
def test_blockwise_evaluation_is_the_single_pass(
    market: MarketData, block: int, greedy: bool, env: EnvParams
) -> None:
    policy = random_policy(3)
    tensors = market_tensors(market)
    rows = (market.splits["train"][0] + 5, market.splits["test"][1])
    whole = run_split(policy, market, tensors, rows, env, greedy=greedy, seed=11, block=10**9)
    parts = run_split(policy, market, tensors, rows, env, greedy=greedy, seed=11, block=block)
    assert len(whole) == rows[1] - rows[0] > block or block == 4096  # 4096: the single pass
    assert whole["position"].nunique() > 1  # a run that trades: the carried state matters
    pd.testing.assert_frame_equal(parts, whole, check_exact=True)


def test_resettled_strategy_equals_a_rerun_at_those_costs(market: MarketData) -> None:
    policy, env = random_policy(4), EnvParams()
    tensors = market_tensors(market)
    rows = market.splits["test"]
    runs = {STRATEGY: run_split(policy, market, tensors, rows, env, greedy=False, seed=2)}
    runs.update(baseline_steps(market, *rows, env, momentum_bars=12))
    dear = scaled_costs(env, 3.0)
    again = resettled(runs, market, tensors, rows, dear, 12)
    rerun = run_split(policy, market, tensors, rows, dear, greedy=False, seed=2)
    pd.testing.assert_frame_equal(again[STRATEGY], rerun, check_exact=True)
    assert not again[STRATEGY]["fee"].equals(runs[STRATEGY]["fee"])  # the costs did change
    assert list(again) == list(runs)
    assert resettled(runs, market, tensors, rows, env, 12)[STRATEGY].equals(runs[STRATEGY])

    costs = cost_sensitivity(
        runs, market, tensors, rows, env, [1.0, 3.0], calendar=CRYPTO, momentum_bars=12, seed=0
    )
    assert costs.loc[(3.0, STRATEGY), "Fees Paid [%]"] > costs.loc[(1.0, STRATEGY), "Fees Paid [%]"]


@pytest.mark.parametrize(
    ("index", "fast"),
    [
        (pd.date_range("2023-01-01", periods=500, freq="5min", tz="UTC", name="time"), True),
        (pd.date_range("2023-01-01", periods=5, freq="D", tz="UTC", name="time"), True),
        (pd.date_range("2023-01-01", periods=5, freq="min", tz="UTC", unit="s"), True),
        (pd.date_range("2023-01-01", periods=5, freq="500ms", tz="UTC"), False),  # sub-second
        (pd.date_range("2023-01-01", periods=5, freq="h", tz="Europe/Paris"), False),
        (pd.DatetimeIndex(["2023-01-01 00:05", None], tz="UTC"), False),  # NaT
    ],
)
def test_fast_timestamps_write_the_csv_pandas_writes(
    tmp_path: Path, index: pd.DatetimeIndex, fast: bool
) -> None:
    from hmarl.io import csv_ready, write_csv

    frame = pd.DataFrame(
        {"x": np.linspace(0.1, 7.3, len(index)), "entry": index, "n": range(len(index))},
        index=index,
    )
    write_csv(tmp_path / "a.csv", frame)
    write_csv(tmp_path / "b.csv", frame, index=False, chunk_rows=3)  # in chunks: the same
    write_csv(tmp_path / "c.csv", frame.iloc[:0])
    assert (tmp_path / "a.csv").read_text() == frame.to_csv()
    assert (tmp_path / "b.csv").read_text() == frame.to_csv(index=False)
    assert (tmp_path / "c.csv").read_text() == frame.iloc[:0].to_csv()  # the header alone
    ready = csv_ready(frame)
    assert isinstance(ready.index, pd.DatetimeIndex) != fast  # the fast path was taken
    assert isinstance(frame.index, pd.DatetimeIndex)  # the caller's frame is unchanged
    assert isinstance(frame["entry"].dtype, pd.DatetimeTZDtype)


def rss_file_kb() -> int | None:
    """This process's resident file-backed pages (kB), where /proc tells."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    line = next((ln for ln in status.splitlines() if ln.startswith("RssFile:")), None)
    return None if line is None else int(line.split()[1])


def test_released_rows_of_a_mapped_cache_read_the_same(tmp_path: Path) -> None:
    from hmarl.market.market_data import release_rows

    data = np.arange(200_000 * 6, dtype=np.float32).reshape(200_000, 6)
    np.save(tmp_path / "w.npy", data)
    mapped = np.load(tmp_path / "w.npy", mmap_mode="r")
    assert float(mapped[1000:150_000].sum()) == float(data[1000:150_000].sum())  # touch them
    touched = rss_file_kb()
    release_rows(mapped, 1000, 150_000)
    if touched is not None:  # Linux: the ~3.6 MB of pages touched left the resident set
        assert touched - rss_file_kb() > 0.5 * 149_000 * 24 / 1024
    release_rows(mapped[10:], 0, 5)  # a view: offsets from its own first row
    np.testing.assert_array_equal(mapped, data)  # read back from the file, unchanged
    in_memory = data.copy()
    release_rows(in_memory, 0, 200_000)  # not a mapping: left alone (DONTNEED would zero it)
    np.testing.assert_array_equal(in_memory, data)
