"""Window statistics against a naive per-t computation; the train-split scaler."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from hmarl.market.windows import STD_FLOOR, Scaler, window_stats


def naive_window_stats(x: np.ndarray, window: int) -> np.ndarray:
    """Per-t loop with np.mean / np.std(ddof=0) / x[t]; NaN where a column's window is unclean."""
    n_rows, n_cols = x.shape
    out = np.full((n_rows, 3 * n_cols), np.nan)
    for t in range(window - 1, n_rows):
        win = x[t - window + 1 : t + 1]
        clean = np.isfinite(win).all(axis=0)
        with np.errstate(invalid="ignore"):  # inf - inf inside np.std of an unclean window
            stats = np.concatenate([win.mean(axis=0), win.std(axis=0), x[t]])
        out[t] = np.where(np.tile(clean, 3), stats, np.nan)
    return out


def messy_matrix(n_rows: int, n_cols: int, seed: int) -> np.ndarray:
    """Columns with offsets far from zero, a staggered NaN warm-up, a lone NaN and an inf."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1.0, (n_rows, n_cols)) * rng.uniform(0.01, 10.0, n_cols)
    x += rng.uniform(-1000.0, 1000.0, n_cols)
    for j in range(n_cols):
        x[: j * 3, j] = np.nan
    x[n_rows // 2, 0] = np.nan
    x[(2 * n_rows) // 3, n_cols - 1] = np.inf
    return x


@pytest.mark.parametrize("window", [1, 2, 7, 50])
@pytest.mark.parametrize("shape", [(60, 1), (200, 4), (130, 7)])
def test_matches_naive_per_t_computation(window: int, shape: tuple[int, int]) -> None:
    x = messy_matrix(*shape, seed=window * 100 + shape[1])
    ours = window_stats(x, window)
    expected = naive_window_stats(x, window)
    assert ours.dtype == np.float32 and ours.shape == (shape[0], 3 * shape[1])
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(expected))
    spread = np.array([np.std(col[np.isfinite(col)]) for col in x.T])
    atol = 1e-5 * np.tile(spread, 3)  # std of a 1-row window is 0 up to rounding of the sums
    finite = np.isfinite(expected)
    excess = np.abs(ours - expected) - (atol + 1e-5 * np.abs(expected))
    assert (excess[finite] <= 0).all(), f"worst excess {excess[finite].max():.3g}"


def test_wide_inputs_sum_row_by_row_bit_identical_to_narrow_ones() -> None:
    """A wide matrix (the row-by-row prefix sums) gives, column for column, exactly the
    statistics of its narrow slices (numpy's cumulative sum), across row blocks too."""
    x = messy_matrix(90, 100, seed=3)  # 300 summed columns: >= WIDE_COLUMNS
    wide = window_stats(x, 7, chunk=40).reshape(90, 3, 100)
    for cols in (slice(0, 30), slice(30, 100)):
        narrow = window_stats(x[:, cols], 7, chunk=40)
        np.testing.assert_array_equal(wide[:, :, cols].reshape(90, -1), narrow)
    np.testing.assert_array_equal(window_stats(x, 7).reshape(90, 3, 100), wide)


def test_rows_before_a_full_window_and_short_inputs_are_nan() -> None:
    x = np.arange(20.0).reshape(10, 2)
    out = window_stats(x, 4)
    assert np.isnan(out[:3]).all() and np.isfinite(out[3:]).all()
    np.testing.assert_allclose(out[3], [3.0, 4.0, np.sqrt(5.0), np.sqrt(5.0), 6.0, 7.0], rtol=1e-6)
    assert np.isnan(window_stats(x, 11)).all()


def test_constant_and_far_offset_columns_stay_accurate() -> None:
    rng = np.random.default_rng(7)
    x = np.column_stack([np.full(5000, 3.25), 1e6 + rng.normal(0.0, 1.0, 5000)])
    out = window_stats(x, 492)
    assert (out[491:, 0] == 3.25).all() and (out[491:, 2] == 0.0).all()
    std = np.array([x[t - 491 : t + 1, 1].std() for t in range(491, 5000, 97)])
    np.testing.assert_allclose(out[491::97, 3], std, rtol=1e-5)


def test_later_rows_never_change_earlier_output() -> None:
    x = messy_matrix(300, 3, seed=11)
    for t in (0, 48, 49, 150, 298):
        changed = x.copy()
        changed[t + 1 :] = np.random.default_rng(t).normal(50.0, 30.0, changed[t + 1 :].shape)
        changed[t + 1 :: 5, 1] = np.nan
        for window in (50, 10):
            before, after = window_stats(x, window), window_stats(changed, window)
            assert np.array_equal(before[: t + 1], after[: t + 1], equal_nan=True)


@pytest.mark.parametrize(
    ("x", "window"), [(np.ones(5), 2), (np.ones((5, 2)), 0), (np.ones((5, 2)), 2.0)]
)
def test_bad_window_arguments_are_rejected(x: np.ndarray, window: int) -> None:
    with pytest.raises(ValueError, match=r"2-D|positive integer"):
        window_stats(x, window)


# ---------------------------------------------------------------- scaler


def test_scaler_uses_only_finite_train_rows() -> None:
    x = np.random.default_rng(3).normal(5.0, 2.0, (100, 3))
    x[:10] = np.nan
    x[30, 1] = np.nan  # a row with one NaN is skipped entirely
    scaler = Scaler.fit(x, (0, 60))
    train = np.delete(x[10:60], 20, axis=0)
    np.testing.assert_allclose(scaler.mean, train.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scaler.std, train.std(axis=0), rtol=1e-12)
    future = x.copy()
    future[60:] *= 1000.0
    refit = Scaler.fit(future, (0, 60))
    assert np.array_equal(refit.mean, scaler.mean) and np.array_equal(refit.std, scaler.std)


def test_scaler_transform_is_float32_keeps_nan_and_floors_flat_columns() -> None:
    x = np.column_stack([np.linspace(0.0, 1.0, 50), np.full(50, 7.0)])
    scaler = Scaler.fit(x, (0, 50))
    assert scaler.std[1] == 1.0 and STD_FLOOR > 0
    z = scaler.transform(np.vstack([x, [np.nan, 7.0]]))
    assert z.dtype == np.float32
    assert abs(float(z[:50, 0].mean())) < 1e-6 and float(z[:50, 0].std()) == pytest.approx(1.0)
    assert (z[:50, 1] == 0.0).all() and np.isnan(z[50, 0]) and z[50, 1] == 0.0


def test_scaler_round_trips_through_plain_lists_and_torch_weights_only(tmp_path: Path) -> None:
    x = np.random.default_rng(5).normal(-3.0, 0.5, (80, 4))
    scaler = Scaler.fit(x, (0, 40))
    plain = scaler.to_dict()
    assert json.loads(json.dumps(plain)) == plain
    path = tmp_path / "scaler.pt"
    torch.save({"scaler": plain}, path)
    loaded = Scaler.from_dict(torch.load(path, weights_only=True)["scaler"])
    assert np.array_equal(loaded.mean, scaler.mean) and np.array_equal(loaded.std, scaler.std)
    np.testing.assert_array_equal(loaded.transform(x), scaler.transform(x))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: Scaler.fit(np.ones((10, 2)), (5, 5)), r"rows \[5, 5\) outside"),
        (lambda: Scaler.fit(np.ones((10, 2)), (0, 11)), r"rows \[0, 11\) outside"),
        (lambda: Scaler.fit(np.full((10, 2), np.nan), (0, 10)), "no all-finite row"),
        (lambda: Scaler.from_dict({"mean": [0.0]}), r"lacks keys \['std'\]"),
        (lambda: Scaler.from_dict({"mean": [0.0], "std": [0.0]}), "std finite and > 0"),
        (lambda: Scaler.fit(np.ones((10, 2)), (0, 10)).transform(np.ones((3, 3))), "2 columns"),
    ],
)
def test_scaler_errors_say_what_is_wrong(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("chunk", [1, 7, 500, 1 << 20])
def test_blocks_are_bit_identical_to_one_pass(chunk: int) -> None:
    """Carried prefix sums: any block size gives exactly the values of a single block."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2000, 4)).cumsum(axis=0)
    x[5:9, 1] = np.nan
    x[1500, 2] = np.inf
    whole = window_stats(x, 60, chunk=len(x))
    assert np.array_equal(window_stats(x, 60, chunk=chunk), whole, equal_nan=True)
    rows = (100, 1700)
    fitted = Scaler.fit(whole, rows)
    part = whole[rows[0] : rows[1]].astype(np.float64)
    part = part[np.isfinite(part).all(axis=1)]
    assert np.array_equal(fitted.mean, part.mean(axis=0))  # numpy's own order of sums
    assert np.array_equal(fitted.std, part.std(axis=0))
    blocks = Scaler.fit_blocks(
        lambda: (whole[a : min(a + chunk, rows[1])] for a in range(rows[0], rows[1], chunk)),
        rows,
    )
    assert np.array_equal(blocks.mean, fitted.mean) and np.array_equal(blocks.std, fitted.std)
