"""Learning, asserted so that it holds on any machine's float rounding.

One trajectory's luck is not a test: a different CPU (thread count, vector width, library)
rounds differently, and a REINFORCE run then takes another path. So each case trains several
seeds under a different numeric setting (1 thread, 2 threads, deterministic algorithms: three
different roundings of the same computation) and asserts what must hold for most of them: the
`best` checkpoint, selected on validation, beats flat and buy & hold after fees on validation
AND on the untouched test split, with margins, trades, and beats most random-timing policies that
make the same trades at random times. Each seed trains in its own process with its numeric
setting applied there (two at a time under the one-thread settings). Wall times are printed, not
asserted (speed lives in scripts/bench_train.py; learning quality in scripts/bench_learning.py).
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
import torch
from helpers import compose_config

from hmarl.agent.checkpoint import load_checkpoint, policy_from_checkpoint
from hmarl.agent.evaluation import run_split
from hmarl.agent.rollout import market_tensors
from hmarl.stats.baselines import baseline_steps
from hmarl.stats.metrics import compute_stats
from hmarl.stats.random_timing import random_timing, random_timing_stats
from hmarl.train.trainer import env_params, load_market, train

SEEDS = (0, 1, 2)
NEED = 2  # of len(SEEDS) seeds must succeed under every numeric setting
MARGIN_PCT = 5.0  # percentage points over flat and buy & hold
TIMING_PCT = 90.0  # percentile among random-timing policies with the same trades


SETTINGS = ("threads1", "threads2", "deterministic")
# Seeds trained at once, each in its own process with the setting applied there. Two-thread
# seeds go one at a time: two of them on a 2-core machine oversubscribe it (measured 185-194 s
# a seed against 70 s for a one-thread seed), and the rounding under test is the same.
WORKERS = {"threads1": 2, "threads2": 1, "deterministic": 2}


def _apply(setting: str) -> None:
    """One numeric setting: torch's own thread count and deterministic mode (process-wide)."""
    torch.set_num_threads(2 if setting == "threads2" else 1)
    torch.use_deterministic_algorithms(setting == "deterministic")


def _seed_in_process(
    setting: str, tmp: str, seed: int
) -> tuple[dict[str, dict[str, float]], float]:
    """Train and evaluate one seed in a fresh process under ``setting`` (the trainer's own
    summary lines are kept out of the test's output)."""
    _apply(setting)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        res = _run(Path(tmp), seed)
    return res, time.perf_counter() - t0


def _run(tmp_path: Path, seed: int) -> dict[str, dict[str, float]]:
    cfg = compose_config(
        "+experiment=asym_1_10",
        "data.n_candles=50000",
        "trainer.episodes=250",
        f"seed={seed}",
        "tracking=none",
        f"cache_dir={tmp_path}/cache",
    )
    result = train(cfg, tmp_path / f"run{seed}", progress=False)
    assert result.best_checkpoint is not None
    policy = policy_from_checkpoint(load_checkpoint(result.best_checkpoint))
    market = load_market(cfg, log=None)
    tensors, env = market_tensors(market), env_params(cfg)
    out: dict[str, dict[str, float]] = {}
    greedy = cfg.trainer.eval_policy.value == "greedy"  # act as validation selected it
    for split in ("val", "test"):
        steps = run_split(policy, market, tensors, split, env, greedy=greedy, seed=seed)
        lo, hi = market.splits[split]
        base = baseline_steps(market, lo, hi, env, names=("flat", "buy_and_hold"))
        ours = compute_stats(steps, n_bootstrap=0)
        null = random_timing_stats(random_timing(steps, market.returns[lo:hi], env, n=200))
        out[split] = {
            "policy": ours["Return [%]"],
            "trades": ours["# Trades"],
            "timing_pct": null["Random-Timing Percentile [%]"],
            **{k: compute_stats(v, n_bootstrap=0)["Return [%]"] for k, v in base.items()},
        }
    return out


@pytest.mark.slow
@pytest.mark.parametrize("numeric_setting", SETTINGS)
def test_best_policy_beats_flat_and_buy_and_hold_on_most_seeds(
    tmp_path: Path, numeric_setting: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spawned worker first re-runs the parent's __main__ module; after the page tests that is
    # the Streamlit page (its test harness runs it as __main__), which fails outside the app.
    # A bare __main__ (no file, no spec) gives the workers nothing to re-run.
    monkeypatch.setitem(sys.modules, "__main__", types.ModuleType("__main__"))
    ctx = multiprocessing.get_context("spawn")  # a fresh torch per process: its own setting
    with ProcessPoolExecutor(max_workers=WORKERS[numeric_setting], mp_context=ctx) as pool:
        futures = [pool.submit(_seed_in_process, numeric_setting, str(tmp_path), s) for s in SEEDS]
        results = [f.result() for f in futures]
    ok = []
    for seed, (res, wall) in zip(SEEDS, results, strict=True):
        good = all(
            r["trades"] >= 5
            and r["policy"] > r["flat"] + MARGIN_PCT
            and r["policy"] > r["buy_and_hold"] + MARGIN_PCT
            and r["timing_pct"] > TIMING_PCT
            for r in res.values()
        )
        ok.append(good)
        print(
            f"{numeric_setting} seed {seed} ({wall:.0f} s): "
            + "; ".join(
                f"{split} policy {r['policy']:+.1f}% ({r['trades']} trades, random-timing "
                f"percentile {r['timing_pct']:.0f}), flat {r['flat']:+.1f}%, "
                f"buy & hold {r['buy_and_hold']:+.1f}%"
                for split, r in res.items()
            )
            + ("" if good else "  <- not learned")
        )
    assert sum(ok) >= NEED, f"{sum(ok)} of {len(SEEDS)} seeds learned under {numeric_setting}"
