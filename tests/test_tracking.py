"""The one tracked-run lifecycle (hmarl.tracking.tracked_run) and the run-name rule."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import pytest

from hmarl.config import TrackingConfig
from hmarl.tracking import RUN_NAME_LIMIT, Tracker, run_name, tracked_run


def test_run_names_up_to_the_limit_are_kept_and_longer_ones_keep_both_ends() -> None:
    short = "x" * RUN_NAME_LIMIT
    assert run_name(short) == short
    long = "backtest test " + "a" * 300 + "/checkpoints/best.pt"
    cut = run_name(long)
    assert len(cut) == RUN_NAME_LIMIT
    assert cut.startswith("backtest test ") and cut.endswith("/checkpoints/best.pt")
    assert "..." in cut


def test_tracking_none_gives_a_no_op_tracker() -> None:
    with tracked_run(TrackingConfig(enabled=False), "name", {}) as tracker:
        assert type(tracker) is Tracker and tracker.run_id is None


@pytest.mark.parametrize(
    ("error", "status"),
    [(None, "FINISHED"), (RuntimeError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")],
)
def test_a_tracked_run_ends_with_the_status_of_its_block(
    tmp_path: Path, error: BaseException | None, status: str
) -> None:
    from mlflow.tracking import MlflowClient

    tracking = TrackingConfig(uri=f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="t")
    failed: list[str | None] = []
    expect: AbstractContextManager[object] = (
        pytest.raises(type(error)) if error is not None else nullcontext()
    )
    with expect:
        with tracked_run(
            tracking, "run", {"kind": "test"}, on_failure=lambda t: failed.append(t.run_id)
        ) as tracker:
            if error is not None:
                raise error
    run = MlflowClient(tracking_uri=tracking.uri).get_run(str(tracker.run_id))
    assert run.info.status == status
    assert run.data.tags["kind"] == "test" and run.info.run_name == "run"
    assert failed == ([] if error is None else [tracker.run_id])
