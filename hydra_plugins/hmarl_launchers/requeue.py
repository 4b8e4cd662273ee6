"""SLURM (and its local rehearsal) through submitit, with requeue that resumes from ``last.pt``.

Why a subclass: when a job nears its time limit or is preempted, submitit sends it a signal
(``USR2``, ``hydra.launcher.signal_delay_s`` before the limit), calls the submitted
callable's ``checkpoint`` and requeues the job with what it returns (up to
``max_num_timeout`` times). hydra-submitit-launcher resubmits the same overrides, so the
requeued job would start from scratch in a folder that already holds ``last.pt`` (which the
trainer refuses). Here the resubmission adds ``trainer.resume=<job folder>/checkpoints/last.pt``
when that file exists, and the trainer's resume guarantee (a resumed run is bit-identical to
an uninterrupted one, continuing the same MLflow run) does the rest.
"""

from __future__ import annotations

import importlib.util
from typing import Any


class _ResumeOnRequeue:
    """``checkpoint``: submitit's hook, called in the job's process when the signal arrives."""

    def checkpoint(self, sweep_overrides: list[str], *args: Any, **kwargs: Any) -> Any:
        import submitit
        from hydra.core.hydra_config import HydraConfig

        from hmarl.train.sweep import resume_overrides

        job_dir = HydraConfig.get().runtime.output_dir
        overrides = resume_overrides(list(sweep_overrides), job_dir)
        launcher: Any = self  # the launcher subclass below: a callable
        return submitit.helpers.DelayedSubmission(launcher, overrides, *args, **kwargs)


if importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None:  # slurm extra
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
        LocalLauncher,
        SlurmLauncher,
    )

    class RequeueSlurmLauncher(_ResumeOnRequeue, SlurmLauncher):
        """``hydra/launcher=slurm``: array jobs, requeued and resumed on timeout or preemption."""

    class RequeueLocalLauncher(_ResumeOnRequeue, LocalLauncher):
        """``hydra/launcher=slurm_rehearsal``: the same on this machine (submitit's local
        executor restarts a requeued job itself)."""
