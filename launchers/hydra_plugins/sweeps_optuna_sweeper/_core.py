"""The sweep's loop: keep every slot busy until the budget is spent, then the results.

`run_sweep()` prepares the sweep (`_prepare`: every input checked before any trial) and runs the loop.
With an asynchronous launcher (sweeps.launching.AsyncLauncher: sweeps_local, sweeps_databricks), a trial
starts as soon as a slot frees up; with any other launcher, trials run in batches of `workers` through
`launch()`. Either way the driver reads each trial's progress (sweeps.channel), reports to Optuna and
decides pruning; only the driver writes to the study.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from omegaconf import OmegaConf
from optuna.trial import Trial, TrialState

from sweeps import channel
from sweeps.channel import ProgressReader
from sweeps.errors import exit_on_config_error, mark_started
from sweeps.launching import AsyncLauncher, AttachableLauncher, JobHandle, LostJob

from . import _outcome, _results, _search_space, _signals, _study
from ._options import key
from ._prepare import Plan, prepare
from .optuna_sweeper import SweepsOptunaSweeper

log = logging.getLogger(__name__)

INTERRUPTED_EXIT = 130


def run_sweep(sweeper: SweepsOptunaSweeper, arguments: list[str]) -> dict[str, Any] | None:
    """Body of `sweep()`: bad input exits with status 2 before any trial exists."""
    with exit_on_config_error():
        return Driver(prepare(sweeper, arguments)).run()


@dataclass
class Running:
    """A trial whose job was started."""

    trial: Trial
    overrides: list[str]
    progress: ProgressReader
    prune_file: Path
    handle: JobHandle | None = None
    prune_requested: bool = False
    told: bool = False


@dataclass
class Counts:
    finished: int = 0  # toward n_trials
    failed: int = 0  # toward max_failure_rate
    last_error: str | None = None


class Driver:
    """The loop of one sweep: asks Optuna for trials, runs them on the plan's launcher, tells the outcomes."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.counts = Counts()
        self.running: dict[int, Running] = {}
        self.finishing: list[Running] = []  # ended, not yet told
        self.draining: list[JobHandle] = []
        self.stop_reason: str | None = None
        self.failure_limit_hit = False
        self.tracker: Any = None
        self.parent_run: str | None = None
        self.interrupts = _signals.Deferred()

    # ---------------------------------------------------------------- the sweep
    def run(self) -> dict[str, Any] | None:
        plan, opts = self.plan, self.plan.opts
        mark_started()  # from here on a failure is the sweep's, not bad input
        plan.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(plan.config, plan.sweep_dir / "multirun.yaml")
        self.study = optuna.create_study(
            study_name=plan.study_name,
            storage=plan.storage,
            sampler=plan.sampler,
            pruner=plan.pruner,
            directions=opts.directions,
            load_if_exists=True,
        )
        self._start_tracking()
        reattached = self._reattach()
        stale = _study.fail_stale_trials(self.study, plan.storage, keep=set(reattached))
        trials = self.study.get_trials(deepcopy=False)
        self.counts.finished = sum(_study.counts_toward_budget(t) for t in trials)
        self.counts.failed = sum(_study.counted_failure(t) for t in trials)
        mode = f"{plan.slots} slots, asynchronous" if plan.asynchronous else f"batches of {plan.slots}"
        log.info(
            f"Study {plan.study_name} in {_study.masked(plan.storage_url)}: {self.counts.finished} of "
            f"{opts.n_trials} trials done; sampler {opts.sampler['name']}, pruner {plan.pruner_name}, "
            f"directions {opts.directions}; {mode}"
        )
        if reattached:
            log.info(f"Trials {reattached} of a stopped sweep are still running: attached again")
        if stale:
            log.warning(
                f"Trials {[t.number for t in stale]} were left running by a stopped sweep: failed, queued again"
            )
        self.started = time.monotonic()
        try:
            if plan.asynchronous:
                with self.interrupts.active():
                    self._run_async()
            else:
                with _signals.interrupt_on_sigterm():
                    self._run_batches()
        except KeyboardInterrupt:
            self._interrupt()
            raise SystemExit(INTERRUPTED_EXIT) from None
        finally:
            if isinstance(plan.launcher, AsyncLauncher):
                plan.launcher.close()
        results = self._results()
        self._end_tracking(results)
        if self.failure_limit_hit:
            raise RuntimeError(
                f"sweep stopped: {self.counts.failed} of {opts.n_trials} trials failed, more than "
                f"{key('max_failure_rate')}={opts.max_failure_rate}; last error: {self.counts.last_error}"
            )
        if plan.finish is not None and plan.task_cfg is not None and results.get("best_trial") is not None:
            with exit_on_config_error():
                plan.finish(plan.task_cfg, plan.study_name)
        return results

    def _may_start(self) -> bool:
        if self.stop_reason is not None:
            return False
        opts = self.plan.opts
        if self.counts.failed > opts.max_failure_rate * opts.n_trials:
            self.failure_limit_hit = True
            self._stop(f"{self.counts.failed} trials failed (max_failure_rate={opts.max_failure_rate})")
            return False
        if opts.timeout is not None and time.monotonic() - self.started >= opts.timeout:
            self._stop(f"timeout of {opts.timeout} s reached")
            return False
        return self.counts.finished + len(self.finishing) + len(self.running) < opts.n_trials

    def _stop(self, reason: str) -> None:
        self.stop_reason = reason
        log.warning(f"No new trials: {reason}; waiting for {len(self.running)} running trial(s)")

    def _new_trial(self) -> Running:
        trial = self.study.ask(fixed_distributions=self.plan.space.distributions)
        if self.plan.custom is not None:
            self.plan.custom(self.plan.config, trial)
        overrides = self.plan.space.overrides(dict(trial.params))
        trial_dir = self.plan.sweep_dir / ".trials" / str(trial.number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        trial.set_user_attr(_study.PROGRESS_FILE, str(trial_dir / "progress.jsonl"))  # a rerun reads its run dir
        return Running(trial, overrides, ProgressReader(trial_dir / "progress.jsonl"), trial_dir / "prune")

    def _env(self, run: Running) -> dict[str, str]:
        # A grid point is named after its overrides; a sampled trial after its study and number.
        swept = run.overrides[: len(run.overrides) - len(self.plan.space.fixed)]
        name = " ".join(swept) if self.plan.opts.sampler["name"] == "grid" and swept else None
        resume_from = run.trial.user_attrs.get(_study.RESUME_FROM)  # a rerun continues its predecessor's run
        args = (run.progress.path, run.prune_file, self.plan.study_name, run.trial.number, self.parent_run)
        return channel.trial_env(*args, run_name=name, resume_from=resume_from)

    def _run_async(self) -> None:
        """Refill free slots first, then tell Optuna about the trials that just ended."""
        launcher = self.plan.launcher
        assert isinstance(launcher, AsyncLauncher)
        while True:
            self.interrupts.check()
            while len(self.running) + len(self.draining) < self.plan.slots and self._may_start():
                run = self._new_trial()
                self.running[run.trial.number] = run
                run.handle = launcher.submit(run.overrides, run.trial.number, self._env(run))
                self._remember(run)
                log.info(f"Trial {run.trial.number} started: {' '.join(run.overrides)}")
            while self.finishing:
                run = self.finishing.pop(0)
                self._finish(run, run.handle.result())
            if not self.running and not self.draining:
                return
            handles = [r.handle for r in self.running.values()] + self.draining
            done = {id(h) for h in launcher.wait_any(handles, self.plan.opts.poll_interval)}
            self.draining = [h for h in self.draining if id(h) not in done]
            for number, run in list(self.running.items()):
                if id(run.handle) in done:
                    del self.running[number]
                    self.finishing.append(run)
                elif self._check_progress(run):
                    run.handle.cancel()
                    del self.running[number]
                    self.draining.append(run.handle)
                    self._tell_pruned(run)

    def _remember(self, run: Running) -> None:
        """What a later driver needs to attach to this trial's job again, if the launcher can."""
        run.trial.set_user_attr("overrides", run.overrides)
        assert run.handle is not None
        if run.handle.external_id is not None:
            run.trial.set_user_attr(_study.EXTERNAL_ID, run.handle.external_id)
            if run.handle.external_url:
                run.trial.set_user_attr("sweeps:external_url", run.handle.external_url)

    def _reattach(self) -> list[int]:
        """Trials a stopped driver left RUNNING whose jobs still run (an AttachableLauncher, e.g. remote
        clusters): watch them again instead of failing them."""
        launcher = self.plan.launcher
        if not isinstance(launcher, AttachableLauncher):
            return []
        study_id = self.plan.storage.get_study_id_from_name(self.plan.study_name)
        numbers = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            external_id, progress = t.user_attrs.get(_study.EXTERNAL_ID), t.user_attrs.get(_study.PROGRESS_FILE)
            if external_id is None or progress is None:
                continue
            trial_id = self.plan.storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
            run = Running(
                Trial(self.study, trial_id),
                list(t.user_attrs.get("overrides", [])),
                ProgressReader(Path(progress)),
                Path(progress).parent / "prune",
            )
            run.progress.last_step = max(t.intermediate_values, default=None)
            try:
                run.handle = launcher.attach(external_id, t.number, self._env(run))
            except Exception as e:
                log.info(f"Trial {t.number}: its job {external_id} cannot be attached again ({e})")
                continue
            self.running[t.number] = run
            numbers.append(t.number)
        return numbers

    def _run_batches(self) -> None:
        while self._may_start():
            size = min(self.plan.slots, self.plan.opts.n_trials - self.counts.finished)
            runs = [self._new_trial() for _ in range(size)]
            for run in runs:
                self.running[run.trial.number] = run
            batch = [run.overrides + _env_overrides(self._env(run)) for run in runs]
            for run in runs:
                run.trial.set_user_attr("overrides", run.overrides)
                log.info(f"Trial {run.trial.number} queued: {' '.join(run.overrides)}")
            with self._watch(runs):
                returns = self.plan.launcher.launch(batch, initial_job_idx=runs[0].trial.number)
            for run, ret in zip(runs, returns, strict=True):
                del self.running[run.trial.number]
                self._finish(run, ret)

    @contextmanager
    def _watch(self, runs: Sequence[Running]) -> Iterator[None]:
        """While a batch runs in launch(), read progress in a thread and flag trials to prune."""
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(self.plan.opts.poll_interval):
                for run in runs:
                    if not run.prune_requested:
                        self._check_progress(run)

        thread = threading.Thread(target=poll, name="sweeps-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()

    def _check_progress(self, run: Running, decide: bool = True) -> bool:
        """Report new progress lines; True when the trial should be pruned (its prune file is then written)."""
        reports = run.progress.read()
        if run.progress.run_id and _study.MLFLOW_RUN_ID not in run.trial.user_attrs:
            run.trial.set_user_attr(_study.MLFLOW_RUN_ID, run.progress.run_id)
        if run.progress.run_dir and run.trial.user_attrs.get(_study.RUN_DIR) != run.progress.run_dir:
            run.trial.set_user_attr(_study.RUN_DIR, run.progress.run_dir)
        if self.plan.multi or not reports:
            return False
        for step, value in reports:
            run.trial.report(value, step)
        if not decide or not run.trial.should_prune():
            return False
        run.prune_requested = True
        channel.request_prune(run.prune_file)
        return True

    def _tell_pruned(self, run: Running) -> None:
        step = run.progress.last_step
        run.trial.set_user_attr("last_step", step)
        self._tell(run, TrialState.PRUNED)
        log.info(f"Trial {run.trial.number} pruned at step {step}")

    def _finish(self, run: Running, ret: JobReturn) -> None:
        if run.told:
            return
        self._check_progress(run, decide=False)
        trial = run.trial
        job_dir = _outcome.job_dir(ret)
        if job_dir:
            trial.set_user_attr("job_dir", job_dir)
        if run.prune_requested:
            self._tell_pruned(run)
            return
        if run.progress.last_step is not None:
            trial.set_user_attr("last_step", run.progress.last_step)
        error = _outcome.job_error(ret)
        if isinstance(ret._return_value, LostJob) and error is not None:  # continues from its checkpoint
            run.told = _study.run_lost_again(self.study, trial, run.progress.run_dir, error, self.plan.opts.max_resumes)
            if run.told:
                return
        if error is None:
            try:
                values = _outcome.values(ret.return_value, len(self.plan.opts.directions), self.plan.opts.metric)
            except ValueError as e:
                error = str(e)
            else:
                self._tell(run, TrialState.COMPLETE, values)
                log.info(f"Trial {trial.number} finished: {values if self.plan.multi else values[0]}")
                return
        trial.set_user_attr("error", error[:2000])
        self._tell(run, TrialState.FAIL)
        self.counts.failed += 1
        self.counts.last_error = error
        log.warning(f"Trial {trial.number} failed: {error}")

    def _tell(self, run: Running, state: TrialState, values: list[float] | None = None) -> None:
        run.told = True
        try:
            self.study.tell(run.trial, state=state, values=values)
        except RuntimeError as e:
            if "Study.stop" not in str(e):  # the grid sampler stops the study once the grid is done
                raise
        self.counts.finished += 1

    def _interrupt(self) -> None:
        """Ctrl-C or SIGTERM: end the running jobs, mark their trials so a rerun repeats them."""
        with _signals.ignored():
            while self.finishing:
                run = self.finishing.pop(0)
                self._finish(run, run.handle.result())
            handles = [r.handle for r in self.running.values() if r.handle is not None] + self.draining
            for handle in handles:
                handle.cancel()
            for handle in handles:
                handle.wait()
            for run in self.running.values():
                if run.told:
                    continue
                run.told = True
                _study.requeue_interrupted(self.study, run.trial, run.progress)
            log.warning(
                f"Interrupted: {len(self.running)} running trial(s) stopped and queued again; "
                "rerun the same command to resume the study"
            )
            self.running.clear()
            self._end_tracking(None, status="KILLED")

    # ---------------------------------------------------------------- results
    def _results(self) -> dict[str, Any]:
        return _results.results(self.study, self.plan)

    # ---------------------------------------------------------------- MLflow parent run
    def _start_tracking(self) -> None:
        from . import _tracking

        self.tracker = _tracking.ParentRun.start(self.plan, self.study)
        self.parent_run = self.tracker.run_id if self.tracker else None

    def _end_tracking(self, results: dict[str, Any] | None, status: str = "FINISHED") -> None:
        if self.tracker is not None:
            self.tracker.end(self.study, results, status)
            self.tracker = None


def _env_overrides(env: Mapping[str, str]) -> list[str]:
    """The trial's environment as Hydra overrides, for launchers without submit(env=...)."""
    return [f"++hydra.job.env_set.{k}={_search_space.format_value(v)}" for k, v in env.items()]
