"""Hydra multirun + MLflow: the sqlite race, the sweep callback, launchers, presets.

The slow cases run real sweeps (`python -m hmarl.train -m ...`) in a subprocess on a tiny
synthetic market, with a fresh sqlite store and cache under tmp_path.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from hmarl.config import Config, conf_dir, register_configs
from hmarl.tracking import JOB_DIR_ENV, PARENT_RUN_ENV, SWEEP_DIR_ENV, prepare_store
from hmarl.train.sweep import (
    SWEEP_MARKER,
    SweepCallback,
    SweepFailed,
    SweepSetupError,
    abort_sweep,
    check_visible,
    child_names,
    export_env,
    finish_sweep,
    parse_sweep,
    pin_paths,
    prebuild_markets,
    quote,
    start_parent_run,
    sweep_status,
)

TINY = [
    "data.n_candles=6000",
    "features.macro_window=48",
    "features.micro_window=12",
    "trainer.episodes=3",
    "trainer.n_envs=4",
    "trainer.episode_len=32",
    "trainer.eval_every=1",
]
N_JOBS = 4  # processes opening one store together
SCHEMA_ERRORS = ("already exists", "duplicate column", "no such table", "alembic", "migration")

# A process that opens a store the moment the test says "go" (a file barrier), so that
# all of them hit a fresh sqlite file together, as parallel sweep jobs do.
OPEN_STORE = """
import sys, time
from pathlib import Path
from mlflow.tracking import MlflowClient
from hmarl.tracking import get_or_create_experiment
uri, sync, i = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
(sync / f"ready{i}").touch()
while not (sync / "go").exists():
    time.sleep(0.002)
try:
    client = MlflowClient(tracking_uri=uri)
    exp = get_or_create_experiment(client, "hmarl", uri)
    run = client.create_run(exp, run_name=f"job{i}")
    client.log_metric(run.info.run_id, "x", 1.0)
    client.set_terminated(run.info.run_id)
except Exception as exc:
    print(f"ERROR {type(exc).__name__}: {exc}")
    sys.exit(1)
print("OK")
"""


def open_store_together(uri: str, sync: Path, n: int, script: str = OPEN_STORE) -> list[str]:
    """Start n processes, release them at once, return each one's output ("OK" or the error)."""
    sync.mkdir(parents=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, uri, str(sync), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(n)
    ]
    deadline = time.monotonic() + 120
    while len(list(sync.glob("ready*"))) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    (sync / "go").touch()
    return [p.communicate(timeout=120)[0].strip() or "ERROR no output" for p in procs]


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def all_runs(uri: str) -> list[Run]:
    client = MlflowClient(tracking_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return list(client.search_runs(ids, max_results=1000))


def run_sweep(
    tmp_path: Path, args: Sequence[str], timeout: int = 240
) -> subprocess.CompletedProcess[str]:
    """`python -m hmarl.train -m ...` in tmp_path with a tmp store and cache."""
    cmd = [
        sys.executable, "-m", "hmarl.train", "-m", *args, *TINY,
        f"tracking.uri={sqlite_uri(tmp_path / 'mlflow.db')}", f"cache_dir={tmp_path / 'cache'}",
        "hydra.sweep.dir=multirun/sweep",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in (PARENT_RUN_ENV, SWEEP_DIR_ENV)}
    return subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=timeout, env=env
    )


def parent_and_children(uri: str) -> tuple[Run, list[Run]]:
    runs = all_runs(uri)
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1, [r.info.run_name for r in runs]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return parent, children


# ----------------------------------------------------------------------------- the race


@pytest.mark.slow
def test_parallel_jobs_opening_a_fresh_sqlite_store_crash(tmp_path: Path) -> None:
    """The bug the callback exists for: N processes creating one new store race its schema."""
    failures: list[str] = []
    for attempt in range(3):  # a race: give it three chances to show
        uri = sqlite_uri(tmp_path / f"fresh{attempt}.db")
        results = open_store_together(uri, tmp_path / f"sync{attempt}", N_JOBS)
        failures = [r for r in results if not r.startswith("OK")]
        if failures:
            break
    assert failures, f"{N_JOBS} processes opened a fresh store 3 times without a schema race"
    assert any(marker in f for f in failures for marker in SCHEMA_ERRORS), failures


@pytest.mark.slow
def test_a_store_prepared_first_serves_parallel_jobs(tmp_path: Path) -> None:
    uri = sqlite_uri(tmp_path / "sub" / "mlflow.db")  # the folder is created too
    prepare_store(uri, "hmarl")
    results = open_store_together(uri, tmp_path / "sync", N_JOBS)
    assert results == ["OK"] * N_JOBS
    assert sorted(r.info.run_name for r in all_runs(uri)) == [f"job{i}" for i in range(N_JOBS)]


# ----------------------------------------------------------------------------- plain helpers


def test_parse_sweep_expands_like_the_basic_sweeper() -> None:
    sweeping, jobs = parse_sweep(
        ["+experiment=asym_1_10,sym_1_1", "seed=0,1,2", "trainer.episodes=3"]
    )
    assert sweeping == ["+experiment=asym_1_10,sym_1_1", "seed=0,1,2"]
    assert jobs is not None and len(jobs) == 6
    assert ["+experiment=sym_1_1", "seed=2", "trainer.episodes=3"] in jobs
    assert len({tuple(j) for j in jobs}) == 6


def test_parse_sweep_gives_no_jobs_for_an_optuna_interval() -> None:
    sweeping, jobs = parse_sweep(["trainer.lr_macro=interval(1e-5,1e-3)", "seed=0"])
    assert sweeping == ["trainer.lr_macro=interval(1e-5,1e-3)"]
    assert jobs is None


@pytest.mark.parametrize(
    ("statuses", "expected", "status"),
    [
        (["FINISHED", "FINISHED"], 2, "FINISHED"),
        (["FINISHED", "FAILED"], 2, "FAILED"),
        (["FINISHED", "KILLED"], None, "FAILED"),
        (["FINISHED", "RUNNING"], None, "FAILED"),  # a job died without closing its run
        (["FINISHED"], 2, "FAILED"),  # a planned job left no run at all
        ([], None, "FINISHED"),
    ],
)
def test_sweep_status(statuses: list[str], expected: int | None, status: str) -> None:
    assert sweep_status(statuses, expected) == status


def test_child_names_keep_only_the_varying_overrides() -> None:
    common = "data.n_candles=6000 tracking.uri=sqlite:///x.db"
    overrides = {
        "r1": f"+experiment=asym_1_10 seed=0 {common}",
        "r2": f"+experiment=sym_1_1 seed=0 {common}",
        "r3": f"+experiment=sym_1_1 seed=1 {common}",
    }
    experiments = {"r1": "asym_1_10", "r2": "sym_1_1", "r3": "sym_1_1"}
    assert child_names(overrides, experiments) == {
        "r1": "asym_1_10 seed=0",
        "r2": "sym_1_1 seed=0",
        "r3": "sym_1_1 seed=1",
    }


def test_callback_carries_the_parent_into_a_job_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker spawned before the sweep (or elsewhere) gets the ids from the pickled callback."""
    for name in (PARENT_RUN_ENV, SWEEP_DIR_ENV, JOB_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / SWEEP_MARKER).write_text("{}")
    cb = SweepCallback()
    cb.parent_run_id, cb.sweep_dir = "abc123", str(tmp_path)
    in_worker = pickle.loads(pickle.dumps(cb))
    job = OmegaConf.create({"hydra": {"runtime": {"output_dir": str(tmp_path / "3")}}})
    in_worker.on_job_start(config=job, task_function=print)
    assert os.environ[PARENT_RUN_ENV] == "abc123"
    assert os.environ[SWEEP_DIR_ENV] == str(tmp_path)
    assert os.environ[JOB_DIR_ENV] == str(tmp_path / "3")  # tagged as the child's output_dir
    export_env(None, None)
    assert PARENT_RUN_ENV not in os.environ and JOB_DIR_ENV not in os.environ


def test_a_job_that_cannot_see_the_sweep_folder_stops_with_what_to_do(tmp_path: Path) -> None:
    """A worker on another machine: the marker (and a sqlite store) are not there."""
    cb = SweepCallback()
    cb.parent_run_id, cb.sweep_dir, cb.launch_host = "abc", str(tmp_path / "gone"), "login1"
    cb.uri = sqlite_uri(tmp_path / "gone" / "mlflow.db")
    with pytest.raises(SweepSetupError) as err:
        cb.on_job_start(config=OmegaConf.create({}), task_function=print)
    message = str(err.value)
    assert str(tmp_path / "gone") in message and "mlflow.db" in message and "login1" in message
    assert "tracking.uri=http://" in message
    (tmp_path / "gone").mkdir()
    (tmp_path / "gone" / SWEEP_MARKER).write_text("{}")
    with pytest.raises(SweepSetupError, match="MLflow store"):  # the folder alone is not enough
        check_visible(str(tmp_path / "gone"), cb.uri, "login1")
    (tmp_path / "gone" / "mlflow.db").touch()
    check_visible(str(tmp_path / "gone"), cb.uri, "login1")
    check_visible(str(tmp_path / "gone"), "http://server:5000", "login1")  # a server: no file


def test_pin_paths_makes_relative_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path)
    cfg.cache_dir, cfg.tracking.uri = "rel cache,x", "sqlite:///x.db"
    cfg.data.path = "data/candles.csv"
    given = ["seed=0,1", "cache_dir=rel cache,x", "tracking.uri=sqlite:///x.db"]
    pinned = pin_paths(given, [cfg])
    assert pinned[0] == "seed=0,1" and len(pinned) == 4
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(pinned)}
    assert parsed["cache_dir"] == str(tmp_path / "rel cache,x")  # quoted: the comma is no sweep
    assert parsed["tracking.uri"] == f"sqlite:///{tmp_path / 'x.db'}"
    assert parsed["data.path"] == str(tmp_path / "data" / "candles.csv")
    cfg.cache_dir, cfg.tracking.uri, cfg.data.path = "/abs/cache", "http://server:5000", None
    assert pin_paths(["seed=0,1"], [cfg]) == ["seed=0,1"]  # nothing relative: unchanged
    other = tiny_config(tmp_path)
    other.cache_dir = "elsewhere"
    with pytest.raises(SweepSetupError, match="different relative cache_dir"):
        pin_paths(["cache_dir=a,elsewhere"], [tiny_config(tmp_path), other, cfg])


def test_pin_paths_makes_each_entry_of_data_paths_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(tmp_path)
    cfg.cache_dir, cfg.tracking.uri = "/abs/cache", "http://server:5000"
    cfg.data.paths = ["data/*.csv", "/abs/b.csv"]
    pinned = pin_paths(["seed=0,1", "data.paths=[data/*.csv,/abs/b.csv]"], [cfg])
    parsed = {o.key_or_group: o.value() for o in OverridesParser.create().parse_overrides(pinned)}
    assert parsed["data.paths"] == [str(tmp_path / "data" / "*.csv"), "/abs/b.csv"]
    assert len(pinned) == 2  # the relative list replaced, not added beside
    cfg.data.paths = ["/abs/a.csv", "/abs/b.csv"]
    assert pin_paths(["seed=0,1"], [cfg]) == ["seed=0,1"]  # nothing relative: unchanged


def test_quote_survives_quotes_in_a_path() -> None:
    value = "/tmp/it's here, really"
    override = OverridesParser.create().parse_override(f"cache_dir={quote(value)}")
    assert override.value() == value and not override.is_sweep_override()


def test_callback_does_nothing_in_a_single_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PARENT_RUN_ENV, "from-the-shell")
    SweepCallback().on_job_start(config=OmegaConf.create({}), task_function=print)
    assert os.environ[PARENT_RUN_ENV] == "from-the-shell"


def tiny_config(tmp_path: Path, **features: int) -> Config:
    cfg = Config()
    cfg.data.n_candles = 6000
    cfg.features.macro_window = features.get("macro_window", 48)
    cfg.features.micro_window = 12
    cfg.cache_dir = str(tmp_path / "cache")
    return cfg


def test_prebuild_builds_each_distinct_market_once(tmp_path: Path) -> None:
    a, b, c = tiny_config(tmp_path), tiny_config(tmp_path), tiny_config(tmp_path, macro_window=60)
    b.seed = 7  # the training seed does not change the market
    assert prebuild_markets([a, b, c]) == 2
    assert len(list((tmp_path / "cache").glob("market-*"))) == 2


# ----------------------------------------------------------------------------- MLflow parent


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One prepared store for the parent-run tests (a new sqlite schema takes seconds)."""
    uri = sqlite_uri(tmp_path_factory.mktemp("store") / "mlflow.db")
    prepare_store(uri, "hmarl")
    return uri


def child(client: MlflowClient, parent: str, overrides: str, experiment: str, status: str) -> str:
    exp = client.get_experiment_by_name("hmarl")
    assert exp is not None
    tags = {
        "mlflow.parentRunId": parent,
        "kind": "train",
        "hydra_overrides": overrides,
        "experiment_name": experiment,
    }
    run = client.create_run(exp.experiment_id, tags=tags, run_name="long name " + overrides)
    client.set_terminated(run.info.run_id, status=status)
    return str(run.info.run_id)


def test_finish_sweep_fails_the_parent_of_a_failed_job(store: str, tmp_path: Path) -> None:
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("hmarl")
    assert exp is not None
    parent = start_parent_run(store, exp.experiment_id, "sweep seed=0,1", {"sweep_dir": "/s"})
    ok = child(client, parent, "seed=0 trainer.episodes=3", "asym_1_10", "FINISHED")
    bad = child(client, parent, "seed=1 trainer.episodes=3", "asym_1_10", "FAILED")
    (tmp_path / "multirun.yaml").write_text("hydra: {}\n")
    result = finish_sweep(store, parent, 2, sweep_dir=str(tmp_path))
    assert result.status == "FAILED"
    assert result.problems == [f"child long name seed=1 trainer.episodes=3 ({bad}) is FAILED"]
    run = client.get_run(parent)
    assert run.info.status == "FAILED"
    assert run.data.tags["kind"] == "sweep"
    assert (run.data.tags["jobs_finished"], run.data.tags["jobs_failed"]) == ("1", "1")
    assert client.get_run(ok).info.run_name == "asym_1_10 seed=0"
    assert client.get_run(bad).info.run_name == "asym_1_10 seed=1"
    assert [a.path for a in client.list_artifacts(parent, "sweep")] == ["sweep/multirun.yaml"]


def test_finish_sweep_counts_missing_jobs(store: str) -> None:
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("hmarl")
    assert exp is not None
    parent = start_parent_run(store, exp.experiment_id, "sweep", {})
    child(client, parent, "+experiment=sym_1_1 seed=0 x=1", "sym_1_1", "FINISHED")
    jobs = [["+experiment=sym_1_1", f"seed={s}", "x=1"] for s in range(3)]
    sweeping = ["+experiment=sym_1_1", "seed=0,1,2"]
    result = finish_sweep(store, parent, 3, jobs=jobs, sweeping=sweeping)
    assert result.status == "FAILED"
    missing = "2 of 3 jobs left no run (+experiment=sym_1_1 seed=1; +experiment=sym_1_1 seed=2)"
    assert result.problems == [missing]
    tags = client.get_run(parent).data.tags
    assert tags["jobs_expected"] == "3" and tags["sweep_error"] == missing


def test_a_failed_sweep_makes_the_command_fail(store: str, tmp_path: Path) -> None:
    """on_multirun_end closes the parent FAILED and raises, so the command exits non-zero."""
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("hmarl")
    assert exp is not None
    cb = SweepCallback()
    cb.uri, cb.sweep_dir, cb.expected_jobs = store, str(tmp_path), 2
    cb.parent_run_id = start_parent_run(store, exp.experiment_id, "sweep seed=0,1", {})
    cb.jobs, cb.sweeping = [["seed=0"], ["seed=1"]], ["seed=0,1"]
    child(client, cb.parent_run_id, "seed=0", "asym_1_10", "FINISHED")
    with pytest.raises(SweepFailed, match=r"ended FAILED: 1 of 2 jobs left no run \(seed=1\)"):
        cb.on_multirun_end(config=OmegaConf.create({}))
    assert client.get_run(cb.parent_run_id).info.status == "FAILED"


def test_a_requeued_job_counts_as_its_planned_job(store: str) -> None:
    """A requeue adds trainer.resume to the child's overrides: still the same job, same name."""
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("hmarl")
    assert exp is not None
    parent = start_parent_run(store, exp.experiment_id, "sweep", {})
    child(client, parent, "seed=0 trainer.resume=/s/0/checkpoints/last.pt", "a", "FINISHED")
    child(client, parent, "seed=1", "a", "FINISHED")
    result = finish_sweep(store, parent, 2, jobs=[["seed=0"], ["seed=1"]], sweeping=["seed=0,1"])
    assert result == ("FINISHED", [])
    names = {
        r.info.run_name for r in all_runs(store) if r.data.tags.get("mlflow.parentRunId") == parent
    }
    assert names == {"a seed=0", "a seed=1"}


def test_abort_closes_only_a_running_parent(store: str) -> None:
    client = MlflowClient(tracking_uri=store)
    exp = client.get_experiment_by_name("hmarl")
    assert exp is not None
    running = start_parent_run(store, exp.experiment_id, "sweep a", {})
    done = start_parent_run(store, exp.experiment_id, "sweep b", {})
    client.set_terminated(done, status="FINISHED")
    abort_sweep(store, running)
    abort_sweep(store, done)
    assert client.get_run(running).info.status == "FAILED"
    assert client.get_run(done).info.status == "FINISHED"


# ----------------------------------------------------------------------------- config presets


def compose_hydra(overrides: list[str]) -> object:
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_config_registers_the_sweep_callback() -> None:
    from hydra.utils import instantiate

    cfg = compose_hydra([])
    cb = instantiate(cfg.hydra.callbacks.sweep)  # type: ignore[attr-defined]
    assert isinstance(cb, SweepCallback)
    assert cb.prebuild is True


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher not installed (pip install -e .[slurm])",
)
def test_slurm_preset_composes() -> None:
    cfg = compose_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=cpu"])
    launcher = cfg.hydra.launcher  # type: ignore[attr-defined]
    assert launcher._target_ == "hydra_plugins.hmarl_launchers.requeue.RequeueSlurmLauncher"
    assert (launcher.partition, launcher.cpus_per_task, launcher.timeout_min) == ("cpu", 4, 240)
    assert launcher.max_num_timeout > 0  # a job that hits its time limit is requeued


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="hydra-ray-launcher not installed (pip install -e .[ray])",
)
@pytest.mark.parametrize(("preset", "address"), [("ray_local", "local"), ("ray_cluster", "auto")])
def test_ray_presets_compose(preset: str, address: str) -> None:
    """ray_local never joins a running head ("local"); ray_cluster joins one, 1 CPU a job."""
    cfg = compose_hydra([f"hydra/launcher={preset}"])
    launcher = cfg.hydra.launcher  # type: ignore[attr-defined]
    assert launcher._target_ == "hydra_plugins.hmarl_launchers.ray_cluster.ClusterRayLauncher"
    assert launcher.ray.init.address == address
    assert launcher.ray.remote.num_cpus == 1


# ----------------------------------------------------------------------------- real sweeps


@pytest.mark.slow
def test_joblib_sweep_on_a_fresh_store(tmp_path: Path) -> None:
    """4 jobs, 2 at a time, one fresh store: one parent, four finished children, one build."""
    proc = run_sweep(
        tmp_path,
        [
            "+experiment=asym_1_10,sym_1_1",
            "seed=0,1",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
        ],
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert not any(marker in log for marker in ("OperationalError", "alembic_version")), log[-3000:]
    parent, children = parent_and_children(sqlite_uri(tmp_path / "mlflow.db"))
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sweep_dir"] == str((tmp_path / "multirun" / "sweep").resolve())
    assert parent.data.tags["jobs_expected"] == "4"
    assert [c.info.status for c in children] == ["FINISHED"] * 4
    pairs = {(c.data.params["experiment_name"], c.data.params["seed"]) for c in children}
    assert pairs == {(e, s) for e in ("asym_1_10", "sym_1_1") for s in ("0", "1")}
    names = {c.info.run_name for c in children}
    assert names == {f"{e} seed={s}" for e in ("asym_1_10", "sym_1_1") for s in (0, 1)}
    assert {c.data.tags["sweep_dir"] for c in children} == {parent.data.tags["sweep_dir"]}
    # the launching process built the tensors once; every job loaded them
    assert log.count("features: built and cached") == 1, log[-3000:]
    assert log.count("features: loaded from cache") == 4, log[-3000:]


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
    reason="hydra-submitit-launcher not installed (pip install -e .[slurm]); .ci/run installs it",
)
def test_submitit_local_sweep(tmp_path: Path) -> None:
    proc = run_sweep(tmp_path, ["seed=0,1", "hydra/launcher=submitit_local"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    parent, children = parent_and_children(sqlite_uri(tmp_path / "mlflow.db"))
    assert parent.info.status == "FINISHED"
    assert sorted(c.data.params["seed"] for c in children) == ["0", "1"]
    assert [c.info.status for c in children] == ["FINISHED"] * 2
    assert list((tmp_path / "multirun" / "sweep" / ".submitit").glob("*/*_result.pkl"))


@pytest.mark.slow
def test_a_failing_job_fails_the_sweep_parent(tmp_path: Path) -> None:
    """The basic sweeper re-raises a job's error, so on_multirun_end never runs: atexit closes."""
    proc = run_sweep(tmp_path, ["trainer.best_metric=no_such_metric,sharpe"])
    assert proc.returncode != 0
    parent, children = parent_and_children(sqlite_uri(tmp_path / "mlflow.db"))
    assert parent.info.status == "FAILED"
    assert "sweep_error" in parent.data.tags
    # the basic launcher runs the whole batch, then the sweeper re-raises the failure
    assert sorted(c.info.status for c in children) == ["FAILED", "FINISHED"]


@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="hydra-optuna-sweeper not installed (pip install -e .[optuna])",
)
def test_optuna_preset_composes() -> None:
    cfg = compose_hydra(["hydra/sweeper=optuna_lr", "hydra.sweeper.n_trials=4"])
    sweeper = cfg.hydra.sweeper  # type: ignore[attr-defined]
    assert sweeper._target_.endswith("OptunaSweeper")
    assert (sweeper.direction, sweeper.n_trials, sweeper.storage) == ("maximize", 4, None)
    assert set(sweeper.params) == {
        "trainer.lr_macro", "trainer.lr_micro", "trainer.lr_head", "trainer.entropy_coef",
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None,
    reason="hydra-optuna-sweeper not installed (pip install -e .[optuna])",
)
def test_optuna_sweep_is_one_parent_with_its_trials(tmp_path: Path) -> None:
    proc = run_sweep(tmp_path, ["hydra/sweeper=optuna_lr", "hydra.sweeper.n_trials=2"])
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    uri = sqlite_uri(tmp_path / "mlflow.db")
    parent, children = parent_and_children(uri)
    assert parent.info.status == "FINISHED" and len(children) == 2
    assert len({c.data.params["trainer.lr_macro"] for c in children}) == 2
    artifacts = MlflowClient(tracking_uri=uri).list_artifacts(parent.info.run_id, "sweep")
    assert "sweep/optimization_results.yaml" in {a.path for a in artifacts}


@pytest.mark.slow
@pytest.mark.skipif(
    importlib.util.find_spec("hydra_plugins.hydra_ray_launcher") is None,
    reason="hydra-ray-launcher not installed (pip install -e .[ray])",
)
def test_ray_local_sweep(tmp_path: Path) -> None:
    args = ["seed=0,1", "hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2"]
    proc = run_sweep(tmp_path, args)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    parent, children = parent_and_children(sqlite_uri(tmp_path / "mlflow.db"))
    assert parent.info.status == "FINISHED"
    assert sorted(c.info.status for c in children) == ["FINISHED"] * 2
