"""Faults and bad inputs a user meets (issue 12's probe list): one clear error, nothing lost.

A regression corpus: every bad file, config, checkpoint, store and server is generated here
at test time (no binary fixtures). Each case failed on the code it was written against
(raw exceptions, silent acceptance, wrong labels, a hang); the comment says how.
Cases that need a small or read-only filesystem mount a tmpfs inside ``unshare -rm`` (a user
namespace) and skip with the reason where the machine does not allow it.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import fields
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, get_type_hints

import numpy as np
import pandas as pd
import pytest
import torch
from fake_binance import FakeBinance
from helpers import REPO, compose_config, run_cli, tiny_overrides
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from test_binance_download import publish_day, run
from test_sweep import OPEN_STORE, open_store_together

import hmarl.train.trainer as train_mod
from hmarl.agent.checkpoint import (
    CheckpointError,
    checkpoint_episode,
    load_checkpoint,
    policy_from_checkpoint,
    save_checkpoint,
)
from hmarl.agent.policy import HierarchicalPolicy
from hmarl.backtest.run import backtest
from hmarl.config import (
    BACKTEST_RANGES,
    RANGES,
    BacktestConfig,
    BacktestError,
    Config,
    ConfigError,
    ModelConfig,
    conf_dir,
    model_record,
    register_backtest_configs,
    register_configs,
    to_backtest_config,
)
from hmarl.data.candles import DataError
from hmarl.data.reading import load_candles
from hmarl.io import OutputError, atomic_write, write_text
from hmarl.sources.binance import DownloadError, NetworkError, RemoteFile, fetch_file
from hmarl.tracking import TrackingError, open_experiment
from hmarl.train.sweep import job_configs
from hmarl.train.trainer import train

# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides,words",
    [
        # `+` adds a key the schema lacks: it trained with macro_every=11 and exited 0
        (["+trainer.macro_evry=3"], r"unknown key trainer\.macro_evry \(did you mean "),
        (["+foo=1"], r"unknown key foo "),
        # these were accepted and failed late, or never
        (["trainer.episodes=0"], r"trainer\.episodes must be >= 1, got 0"),
        (["trainer.episodes=-5"], r"trainer\.episodes must be >= 1, got -5"),
        (["model.macro_hidden=0"], r"model\.macro_hidden must be >= 1, got 0"),
        (["threads=-3"], r"threads must be >= 0, got -3"),
        (["trainer.grad_clip=-1"], r"trainer\.grad_clip must be >= 0, got -1"),
        (["trainer.lr_macro=nan"], r"trainer\.lr_macro must be > 0, got nan"),
        (["model.head_hidden=[64,0]"], r"model\.head_hidden must be >= 1, got \[64, 0\]"),
        (["data.train_frac=0.9"], r"data\.train_frac \+ data\.val_frac must be < 1"),
        (["data.start=yesterday-ish"], r"data\.start='yesterday-ish' is not a date"),
        (["device=gpu"], r"device='gpu' is not a device"),
        # ZeroDivisionError before
        (["env.action_mode=increment", "env.increment=0"], r"env\.increment must be in \(0, 1\]"),
        (["env.action_mode=increment", "env.increment=0.3"], r"must divide env\.max_position"),
    ],
)
def test_config_mistakes_are_refused_naming_the_key(overrides: list[str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        compose_config(*overrides)


def test_all_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        compose_config("trainer.episodes=0", "threads=-3", "+trainer.macro_evry=3")
    message = str(info.value)
    assert "\n" not in message
    for key in ("trainer.episodes", "threads", "trainer.macro_evry"):
        assert key in message


def _numeric_fields(schema: type) -> Iterator[tuple[type, str]]:
    """(class, field) of every int/float field (or list of them) reachable from a schema."""
    hints = get_type_hints(schema)
    for f in fields(schema):
        hint = hints[f.name]
        options = (hint, *getattr(hint, "__args__", ()))
        nested = [t for t in options if isinstance(t, type) and hasattr(t, "__dataclass_fields__")]
        if nested:
            yield from _numeric_fields(nested[0])
        elif any(t in (int, float) for t in options):
            yield schema, f.name


@pytest.mark.parametrize(
    "schema,table", [(Config, RANGES), (BacktestConfig, BACKTEST_RANGES)], ids=["train", "backtest"]
)
def test_every_numeric_key_has_a_range(schema: type, table: dict[type, Any]) -> None:
    """A new numeric key without a line in the range table fails here, naming it."""
    missing = [f"{c.__name__}.{n}" for c, n in _numeric_fields(schema) if n not in table.get(c, {})]
    assert not missing, f"add these keys to the range table: {missing}"


def test_sweep_jobs_and_backtests_validate_too() -> None:
    register_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        with pytest.raises(ConfigError, match=r"trainer\.episodes must be >= 1"):
            job_configs("config", [["seed=1"], ["trainer.episodes=0"]])
    register_backtest_configs()
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        for overrides, words in [
            (["+foo=1"], r"unknown key foo"),
            (["calendar.session_hours=0"], r"calendar\.session_hours must be in \(0, 24\]"),
            (["seeds=-1"], r"seeds must be >= 0, got -1"),
            (["threads=-2"], r"threads must be >= 0"),
        ]:
            with pytest.raises(BacktestError, match=words):
                to_backtest_config(compose("backtest", ["checkpoint=x.pt", *overrides]))


# ----------------------------------------------------------------------------- the CLI convention


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def test_train_cli_config_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    # Hydra's own error (a typo without `+`) suggested `+trainer.macro_evry=3`, which trained
    proc = run_cli("hmarl.train", "trainer.macro_evry=3", "tracking=none", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert error_lines(proc.stderr) == [
        "error: unknown config key trainer.macro_evry (did you mean trainer.macro_every?)"
    ]
    proc = run_cli("hmarl.train", "trainer.episodes=0", "tracking=none", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = error_lines(proc.stderr)
    assert line.startswith("error: invalid configuration: trainer.episodes must be >= 1")
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.pt"))


def test_hydra_full_error_shows_the_traceback(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "hmarl.train", "threads=-3", "tracking=none"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "HYDRA_FULL_ERROR": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr and "ConfigError" in proc.stderr
    assert error_lines(proc.stderr)[-1].startswith("error: invalid configuration: threads")


def test_train_cli_runtime_failure_is_one_line_exit_1(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = [*tiny_overrides(tmp_path, "trainer.episodes=2"), f"cache_dir={blocker}"]
    proc = run_cli("hmarl.train", *args, f"hydra.run.dir={tmp_path}/out", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = error_lines(proc.stderr)  # Hydra printed ~25 lines of traceback here
    assert line.startswith("error: ") and str(blocker) in line


def test_backtest_cli_random_bytes_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "noise.pt"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    proc = run_cli("hmarl.backtest", f"checkpoint={path}", "tracking=none", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    (line,) = error_lines(proc.stderr)
    assert "noise.pt is not a checkpoint" in line and "execute code" not in line


# ----------------------------------------------------------------------------- data files

HEADER = "timestamp,open,high,low,close,volume\n"


def candle_text(n: int = 12, close: float = 100.0, volume: float = 5.0, row: int = -1) -> str:
    """n 5-minute candles; row ``row`` (1-based) gets ``close`` and ``volume``."""
    lines = [HEADER]
    stamps = pd.date_range("2024-01-01", periods=n, freq="5min")
    for i, ts in enumerate(stamps, start=1):
        c, v = (close, volume) if i == row else (100.0, 5.0)
        hi = max(101.0, c)
        lines.append(f"{ts.isoformat()},100.0,{hi},99.0,{c},{v}\n")
    return "".join(lines)


def zipped(name: str, text: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, text)
    return buffer.getvalue()


def parquet_bytes() -> bytes:
    frame = pd.read_csv(io.StringIO(candle_text()))
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    return buffer.getvalue()


def damaged_zip() -> bytes:
    """A zip whose directory is intact but whose compressed CSV is not (bad CRC / inflate)."""
    blob = bytearray(zipped("bars.csv", candle_text(200)))
    for i in range(60, 90):
        blob[i] ^= 0x5A
    return bytes(blob)


def non_utf8() -> bytes:
    lines = candle_text().encode().split(b"\n")
    lines[3] = lines[3].replace(b"100.0", b"100\xff0", 1)
    return b"\n".join(lines)


BAD_FILES = {
    # name: (bytes, expected words); each raised a raw pandas / zipfile / unicode error
    "empty.csv": (b"", r"empty\.csv: the file is empty \(0 bytes"),
    "blank.csv": (b"\n\n\n", r"blank\.csv: no columns to read"),
    "latin.csv": (non_utf8(), r"latin\.csv: not UTF-8 text \(byte 0xff at line 4"),
    "zip_named.csv": (zipped("x.csv", candle_text()), r"zip_named\.csv: not CSV text but a zip"),
    "parquet_named.csv": (parquet_bytes(), r"parquet_named\.csv: not CSV text but a Parquet"),
    "damaged.zip": (damaged_zip(), r"damaged\.zip: a damaged zip archive"),
    "noise.parquet": (b"PAR1 but not really", r"noise\.parquet: cannot be read as Parquet"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_unreadable_files_name_the_file_and_the_fix(tmp_path: Path, name: str) -> None:
    blob, words = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(blob)
    with pytest.raises(DataError, match=words):
        load_candles(path, log=None)


def test_a_bad_file_in_a_folder_is_named(tmp_path: Path) -> None:
    folder = tmp_path / "months"
    folder.mkdir()
    (folder / "a.csv").write_text(candle_text(12))
    (folder / "b.csv").write_bytes(non_utf8())
    (folder / "c.csv").write_text(candle_text(12))
    with pytest.raises(DataError, match=r"months/b\.csv: not UTF-8 text"):
        load_candles(folder, log=None)


@pytest.mark.parametrize(
    "close,volume,words",
    [
        (1e308, 5.0, r"bars\.csv row 3 \(line 4\).*bad price high=1e\+308"),
        (100.0, 1e308, r"bars\.csv row 3 \(line 4\).*bad volume 1e\+308"),
    ],
)
def test_huge_values_fail_at_load_naming_row_and_column(
    tmp_path: Path, close: float, volume: float, words: str
) -> None:
    """They passed validation and failed later as "non-finite feature window at row 1500"."""
    path = tmp_path / "bars.csv"
    path.write_text(candle_text(close=close, volume=volume, row=3))
    with pytest.raises(DataError, match=words):
        load_candles(path, log=None)


# ----------------------------------------------------------------------------- checkpoints


def test_non_checkpoints_are_named_as_such(tmp_path: Path) -> None:
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(1).bytes(2048))  # was "would need to execute code"
    with pytest.raises(CheckpointError, match=r"noise\.pt is not a checkpoint") as info:
        load_checkpoint(noise)
    assert "execute code" not in str(info.value)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")  # was "cannot read checkpoint ...: " with no reason
    with pytest.raises(CheckpointError, match=r"empty\.pt is empty \(0 bytes\)"):
        load_checkpoint(empty)
    text = tmp_path / "notes.pt"
    text.write_text("hello")  # was a raw KeyError
    with pytest.raises(CheckpointError, match=r"notes\.pt is not a checkpoint"):
        load_checkpoint(text)
    good = save_checkpoint(tmp_path / "good.pt", {"policy": {"w": torch.ones(1000)}})
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match=r"cut\.pt.*damaged or truncated"):
        load_checkpoint(cut)


def test_tampered_model_dims_are_a_checkpoint_error() -> None:
    model = model_record(ModelConfig())  # the record a checkpoint holds
    policy = HierarchicalPolicy(3, **model)
    ckpt = {
        "model": {**model, "micro_dim": 16},  # the weights say 32
        "feature_spec": {"names": ["a", "b", "c"]},
        "policy": policy.state_dict(),
    }
    with pytest.raises(CheckpointError, match=r"weights in edited\.pt do not fit.*size mismatch"):
        policy_from_checkpoint(ckpt, source="edited.pt")
    with pytest.raises(CheckpointError, match="records a model that cannot be built"):
        policy_from_checkpoint({**ckpt, "model": {**model, "extra_layer": 3}}, source="x.pt")


def test_checkpoint_episode_is_the_loaded_weights_episode() -> None:
    assert checkpoint_episode({"train_state": {"episode": 41, "best_episode": 29}}) == 40
    assert checkpoint_episode({"train_state": {"episode": 30, "best_episode": 29}}) == 29
    assert checkpoint_episode({"train_state": {"episode": 0, "best_episode": -1}}) is None


# ----------------------------------------------------------------------------- disk full, read-only


def test_a_full_disk_names_the_file_and_keeps_the_previous_one(tmp_path: Path) -> None:
    target = write_text(tmp_path / "report.json", "previous")

    def full(path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OutputError, match=r"disk full: cannot write .*report\.json") as info:
        atomic_write(target, full)
    assert info.value.errno == errno.ENOSPC
    assert target.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def in_small_mount(tmp_path: Path, code: str, size: str = "256k", ro: bool = False):
    """Run ``python -c code`` with a fresh tmpfs mounted on tmp_path/mnt (argv[1] is its path)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed: cannot mount a small filesystem")
    opts = f"size={size}" + (",ro" if ro else "")
    script = f'mount -t tmpfs -o {opts} tmpfs "$1" || exit 97; shift; exec "$@"'
    proc = subprocess.run(
        [
            "unshare",
            "-rm",
            "sh",
            "-c",
            script,
            "sh",
            str(mnt),
            sys.executable,
            "-c",
            code,
            str(mnt),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
    )
    if proc.returncode == 97 or "unshare failed" in proc.stderr:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {proc.stderr.strip()[:200]}")
    return proc


def test_checkpoint_on_a_full_disk(tmp_path: Path) -> None:
    """torch.save said "basic_ios::clear: iostream error"; now the path and the cause."""
    code = """
import sys, torch
from pathlib import Path
from hmarl.agent.checkpoint import save_checkpoint, load_checkpoint
path = Path(sys.argv[1]) / "last.pt"
save_checkpoint(path, {"policy": {"w": torch.ones(10)}})
try:
    save_checkpoint(path, {"policy": {"w": torch.ones(400_000)}})
except OSError as exc:
    print(type(exc).__name__, exc)
print("kept", load_checkpoint(path)["policy"]["w"].numel())
print("files", sorted(p.name for p in Path(sys.argv[1]).iterdir()))
"""
    proc = in_small_mount(tmp_path, code)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout.splitlines()
    assert out[0].startswith("OutputError disk full: cannot write ") and "last.pt" in out[0]
    assert out[1:] == ["kept 10", "files ['last.pt']"]


def test_read_only_store_location_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    uri = f"sqlite:///{blocker}/mlflow.db"  # was "unable to open database file", no path
    with pytest.raises(TrackingError, match=rf"cannot open the MLflow store tracking\.uri={uri}"):
        open_experiment(uri, "hmarl")
    code = """
import sys
from hmarl.tracking import open_experiment, TrackingError
try:
    open_experiment(f"sqlite:///{sys.argv[1]}/mlflow.db", "hmarl")
except TrackingError as exc:
    print(exc)
"""
    proc = in_small_mount(tmp_path, code, ro=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"folder {tmp_path / 'mnt'} is not writable" in proc.stdout
    assert "tracking=none" in proc.stdout


@pytest.mark.slow
def test_training_on_a_full_disk_fails_cleanly(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    args = [*tiny_overrides(tmp_path, "trainer.episodes=6", tracking=True)]
    code = (
        "import sys, runpy; sys.argv = ['hmarl.train', *" + repr(args) + ", "
        "f'hydra.run.dir={sys.argv[1]}/run']; runpy.run_module('hmarl.train', run_name='__main__')"
    )
    proc = in_small_mount(tmp_path, code, size="200k")
    assert proc.returncode == 1, proc.stderr[-3000:]
    line = error_lines(proc.stderr)[-1]
    assert line.startswith("error: disk full: cannot write ") and ".pt" in line
    client = MlflowClient(uri)
    (run_,) = client.search_runs([client.get_experiment_by_name("hmarl").experiment_id])
    assert run_.info.status == "FAILED"


# ----------------------------------------------------------------------------- runs and resume


def test_a_reused_output_folder_is_refused(tmp_path: Path) -> None:
    """A stale best.pt in a reused folder was reported as this run's (episodes=0 exited 0)."""
    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.episodes=2"))
    first = train(cfg, tmp_path / "run", progress=False)
    before = first.last_checkpoint.read_bytes()
    with pytest.raises(CheckpointError, match=r"already holds last\.pt.*trainer\.resume="):
        train(cfg, tmp_path / "run", progress=False)
    assert first.last_checkpoint.read_bytes() == before  # nothing lost
    resumed = compose_config(
        *tiny_overrides(tmp_path, "trainer.episodes=3"), f"trainer.resume={first.last_checkpoint}"
    )
    assert train(resumed, tmp_path / "run", progress=False).state.episode == 3  # in place: fine


def test_resume_against_another_store_is_a_clear_error(tmp_path: Path) -> None:
    cfg = compose_config(*tiny_overrides(tmp_path, "trainer.episodes=2", tracking=True))
    first = train(cfg, tmp_path / "a", progress=False)
    other = compose_config(
        *tiny_overrides(tmp_path, "trainer.episodes=3", tracking=True),
        f"tracking.uri=sqlite:///{tmp_path}/other.db",
        f"trainer.resume={first.last_checkpoint}",
    )
    with pytest.raises(TrackingError, match=rf"MLflow run {first.run_id}, which is not in"):
        train(other, tmp_path / "b", progress=False)  # was a raw MlflowException


def test_resume_into_a_new_folder_carries_best(tmp_path: Path) -> None:
    """The new folder and the MLflow run got last.pt only while best_episode said 9."""
    ov = tiny_overrides(tmp_path, "trainer.episodes=10", tracking=True)
    first = train(compose_config(*ov), tmp_path / "a", progress=False)
    assert first.best_checkpoint is not None and first.state.best_episode >= 0
    resumed = train(
        compose_config(*ov, f"trainer.resume={first.last_checkpoint}"),
        tmp_path / "b",
        progress=False,
    )
    best = tmp_path / "b" / "checkpoints" / "best.pt"
    assert (
        resumed.best_checkpoint == best and best.read_bytes() == first.best_checkpoint.read_bytes()
    )
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    run_ = client.get_run(first.run_id)
    assert run_.data.tags["best_episode"] == str(first.state.best_episode)
    artifacts = {a.path for a in client.list_artifacts(first.run_id, "checkpoints")}
    assert "checkpoints/best.pt" in artifacts


def test_backtests_label_the_episode_of_the_weights_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``checkpoint_episode`` was the best episode even for last.pt."""
    real = train_mod.policy_stats
    calls = {"n": 0}

    def worsening(*args: Any, **kwargs: Any) -> dict[str, Any]:  # best at the first evaluation
        stats = real(*args, **kwargs)
        calls["n"] += 1
        edge = {  # an edge every time
            "Return [%]": 1e6,
            "# Trades": 50,
            "Long Exposure Time [%]": 50.0,
            "Random-Timing Percentile [%]": 100.0,
        }
        return {**stats, **edge, "Sharpe Ratio": 10.0 - calls["n"]}

    monkeypatch.setattr(train_mod, "policy_stats", worsening)
    ov = tiny_overrides(
        tmp_path,
        "trainer.episodes=12",
        "trainer.min_val_trades=0",
        "trainer.edge_confirmations=1",  # the first evaluation is an edge, and the best
    )
    result = train(compose_config(*ov), tmp_path / "run", progress=False)
    assert result.state.best_episode == 4 and result.best_checkpoint is not None
    for path, episode in ((result.last_checkpoint, 11), (result.best_checkpoint, 4)):
        bt = BacktestConfig(
            checkpoint=str(path), n_bootstrap=0, plots=False, progress=False,
            fee_multipliers=[1.0], cache_dir=f"{tmp_path}/cache",
        )  # fmt: skip
        bt.tracking.enabled = False
        meta = backtest(bt, tmp_path / f"bt-{episode}").meta
        assert (meta["checkpoint_episode"], meta["best_episode"]) == (episode, 4)


# ----------------------------------------------------------------------------- the downloader


class SlowServer:
    """Answers checksums at once and trickles everything else, one byte per 0.2 s, for <= 8 s.

    ``slow_headers``: the status line and headers trickle too.
    """

    def __init__(self, slow_headers: bool) -> None:
        self.slow_headers = slow_headers
        self.body = b"x" * 200

    def handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.endswith(".CHECKSUM"):
                    text = f"{hashlib.sha256(outer.body).hexdigest()}  f.zip\n".encode()
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    self.wfile.write(text)
                    return
                head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(outer.body)}\r\n\r\n".encode()
                if not outer.slow_headers:
                    self.wfile.write(head)
                    head = b""
                stop = time.monotonic() + 8.0
                try:
                    for byte in head + outer.body:
                        if time.monotonic() > stop:
                            break
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                        time.sleep(0.2)
                except OSError:
                    pass  # the client gave up
                self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.mark.parametrize("slow_headers", [False, True], ids=["slow-body", "slow-headers"])
def test_a_slow_server_cannot_outlast_the_timeout(tmp_path: Path, slow_headers: bool) -> None:
    """``--timeout 3`` bounded each socket read only: a 1 byte/s server ran past 30 s."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), SlowServer(slow_headers).handler())
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/f.zip"
        t0 = time.monotonic()
        with pytest.raises(NetworkError, match=r"no complete answer within --timeout 1\.5 s"):
            fetch_file(RemoteFile(url, "f.zip", "daily"), tmp_path, timeout=1.5)
        assert time.monotonic() - t0 < 4.0
        assert not (tmp_path / "f.zip").exists()
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_a_published_zip_that_is_damaged_is_never_verified(
    server: tuple[FakeBinance, str],
    tmp_path: Path,
) -> None:
    """Its checksum matched, so it stayed "verified" and every re-run raised BadZipFile."""
    fake, base = server
    remote, _, path = publish_day(fake, base)
    broken = damaged_zip()
    fake.bodies[path] = [broken]
    fake.bodies[path + ".CHECKSUM"] = [
        f"{hashlib.sha256(broken).hexdigest()}  {remote.name}\n".encode()
    ]
    for _attempt in range(2):
        with pytest.raises(
            DownloadError, match=r"matches its published checksum but is not a read"
        ):
            run(base, tmp_path, date(2024, 1, 5), date(2024, 1, 5))
        assert not (tmp_path / remote.name).exists()
    # a copy verified by an older version (zip + .CHECKSUM on disk) is checked again
    (tmp_path / remote.name).write_bytes(broken)
    (tmp_path / (remote.name + ".CHECKSUM")).write_bytes(fake.bodies[path + ".CHECKSUM"][0])
    with pytest.raises(DownloadError, match="the published file itself is damaged"):
        run(base, tmp_path, date(2024, 1, 5), date(2024, 1, 5))
    assert not (tmp_path / remote.name).exists()


# ----------------------------------------------------------------------------- concurrency

# tests/test_sweep.py's racing process, opening the store the way every run now does
OPEN_TOGETHER = OPEN_STORE.replace(
    "client = MlflowClient(tracking_uri=uri)\n"
    '    exp = get_or_create_experiment(client, "hmarl", uri)',
    'from hmarl.tracking import open_experiment\n    client, exp = open_experiment(uri, "hmarl")',
)
assert "open_experiment(uri" in OPEN_TOGETHER


@pytest.mark.slow
def test_processes_opening_a_fresh_store_together_all_succeed(tmp_path: Path) -> None:
    """Without the lock this crashed (tests/test_sweep.py shows the race with MlflowClient)."""
    n = 4
    for attempt in range(2):
        uri = f"sqlite:///{tmp_path}/fresh{attempt}/mlflow.db"
        results = open_store_together(uri, tmp_path / f"sync{attempt}", n, OPEN_TOGETHER)
        assert results == ["OK"] * n, results
        client = MlflowClient(uri)
        assert len(client.search_runs([client.get_experiment_by_name("hmarl").experiment_id])) == n


@pytest.mark.slow
def test_three_trainings_started_together_on_a_fresh_store_all_finish(tmp_path: Path) -> None:
    """Issue 12 item 1: the second training died ("duplicate column name: step")."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from concurrent_trainings import start_together
    finally:
        sys.path.pop(0)
    outcome = start_together(3, tmp_path / "conc", ["trainer.episodes=3"])
    assert outcome.returncodes == [0, 0, 0], outcome.errors
    assert outcome.statuses == ["FINISHED"] * 3
