"""The sweep: check every input, open the study, then keep every slot busy until the budget is spent.

With an asynchronous launcher (sweeps.launching.AsyncLauncher: sweeps_local, sweeps_databricks), a trial
starts as soon as a slot frees up; with any other launcher, trials run in batches of `workers` through
`launch()`. Either way
the driver reads each trial's progress file, reports to Optuna and decides pruning; only the driver
writes to the study.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from hydra.core.hydra_config import HydraConfig
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from optuna.trial import FrozenTrial, Trial, TrialState

from sweeps import channel
from sweeps.channel import ProgressReader
from sweeps.errors import ConfigError, exit_on_config_error, mark_started
from sweeps.launching import AsyncLauncher, AttachableLauncher, JobHandle

from . import _search_space, _study
from ._options import Options, key, plain
from .optuna_sweeper import SweepsOptunaSweeper

log = logging.getLogger(__name__)

INTERRUPTED_EXIT = 130


def run_sweep(sweeper: SweepsOptunaSweeper, arguments: list[str]) -> dict[str, Any] | None:
    """Body of `sweep()`: bad input exits with status 2 before any trial exists."""
    with exit_on_config_error():
        driver = Driver(sweeper)
        driver.prepare(arguments)
        return driver.run()


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
    def __init__(self, sweeper: SweepsOptunaSweeper) -> None:
        assert sweeper.config is not None and sweeper.hydra_context is not None
        self.config = sweeper.config
        self.hydra_context = sweeper.hydra_context
        self.task_function = sweeper.task_function
        self.raw_options = sweeper.options
        self.sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        self.counts = Counts()
        self.running: dict[int, Running] = {}
        self.finishing: list[Running] = []  # ended, not yet told
        self.draining: list[JobHandle] = []
        self.stop_reason: str | None = None
        self.failure_limit_hit = False
        self.tracker: Any = None
        self.parent_run: str | None = None
        self.interrupt_signal: int | None = None

    # ---------------------------------------------------------------- checks, before any trial
    def prepare(self, arguments: list[str]) -> None:
        errors = []
        try:
            self.opts = Options.parse(self.raw_options)
        except ConfigError as e:
            errors += e.errors
        params = plain(self.raw_options.get("params")) or {}
        entries = [(_param_line(k, v), key(f"params.{k}")) for k, v in dict(params).items()]
        entries += [(a, a.split("=", 1)[0]) for a in arguments]
        try:
            self.space = _search_space.parse(entries)
        except ConfigError as e:
            errors += e.errors
        if errors:
            raise ConfigError(*errors)
        opts = self.opts
        if not self.space.params and not opts.custom_search_space:
            log.warning(f"The search space is empty ({key('params')}): every trial runs the same config")
        self.custom = self._function(opts.custom_search_space, "custom_search_space")
        preflight = self._function(opts.preflight, "preflight")
        self.finish = self._function(opts.finish, "finish")
        self.task_cfg: DictConfig | None = None

        name = opts.sampler["name"]
        _study.check_sampler_packages(name, key("sampler.name"))
        grid = None
        if name == "grid":
            names = {n: key(f"params.{n}") if n in opts.params else n for n in self.space.params}
            grid = self.space.grid(names)
            size = math.prod(len(v) for v in grid.values())
            if size < opts.n_trials:
                log.info(f"Grid of {size} points: n_trials {opts.n_trials} -> {size}")
                opts.n_trials = size
        self.pruner = _study.make_pruner(opts.pruner, key("pruner"))
        self.multi = len(opts.directions) > 1

        self.launcher = self._launcher()
        self.asynchronous = isinstance(self.launcher, AsyncLauncher)
        slots = self.launcher.slots if isinstance(self.launcher, AsyncLauncher) else None
        self.slots = int(slots) if slots else (opts.workers or 1)
        self.sampler = _study.make_sampler(
            name, opts.sampler.get("seed"), opts.sampler.get("kwargs") or {}, key("sampler.name"), grid, self.slots
        )

        self._check_configs(preflight)

        self.storage_url = opts.storage or _study.default_storage(self._outputs_dir())
        self.study_name = opts.study_name or self._default_study_name(arguments)
        self.storage = _study.open_storage(self.storage_url, key("storage"))
        stored = _study.stored_directions(self.storage, self.study_name)
        if stored is not None and stored != opts.directions:
            raise ConfigError(
                f"{key('direction')}={opts.directions if self.multi else opts.directions[0]}: study "
                f"'{self.study_name}' was created with {len(stored)} objective(s) {stored}; use the same "
                f"direction(s) or another {key('study_name')}"
            )
        existing = _study.trial_count(self.storage, self.study_name)
        seed = opts.sampler.get("seed")
        if existing and seed is not None:
            # a resumed study must not replay the suggestions of its first run
            self.sampler = _study.make_sampler(
                name, seed + existing, opts.sampler.get("kwargs") or {}, key("sampler.name"), grid, self.slots
            )

    def _function(self, path: str | None, option: str) -> Callable[..., Any] | None:
        if not path:
            return None
        try:
            return get_method(path)
        except Exception as e:
            raise ConfigError(
                f"{key(option)}={path}: cannot import this function ({_search_space.first_line(e)}); "
                "give a dotted path module.function"
            ) from e

    def _outputs_dir(self) -> Path:
        """$SWEEPS_OUTPUTS, else outputs/ under the directory the command ran in."""
        if os.environ.get("SWEEPS_OUTPUTS"):
            return Path(os.environ["SWEEPS_OUTPUTS"]).resolve()
        return Path(str(self.config.hydra.runtime.cwd)) / "outputs"

    def _default_study_name(self, arguments: list[str]) -> str:
        basis = {
            "params": sorted(_param_line(k, v) for k, v in self.opts.params.items()),
            "arguments": sorted(arguments),
            "directions": self.opts.directions,
            "config": str(self.config.hydra.job.config_name),
        }
        digest = hashlib.sha1(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:8]
        return f"{self.config.hydra.job.name}-{digest}"

    def _launcher(self) -> Launcher:
        """The configured launcher; with `workers` set, its n_jobs (when it has one) becomes workers."""
        workers = self.opts.workers
        launcher_cfg = self.config.hydra.launcher
        if workers is not None and "n_jobs" in launcher_cfg:
            with read_write(launcher_cfg), open_dict(launcher_cfg):
                launcher_cfg.n_jobs = workers
        launcher = Plugins.instance().instantiate_launcher(
            hydra_context=self.hydra_context, task_function=self.task_function, config=self.config
        )
        return launcher

    def _check_configs(self, preflight: Callable[[DictConfig], None] | None) -> None:
        """Compose the job config for parameter sets covering every choice; then run the preflight."""
        loader = self.hydra_context.config_loader
        first: DictConfig | None = None
        for values in self.space.example_values()[:64]:
            overrides = self.space.overrides(values)
            try:
                cfg = loader.load_sweep_config(self.config, overrides)
            except Exception as e:
                raise ConfigError(
                    f"{' '.join(overrides)}: this trial's config cannot be composed "
                    f"({_search_space.first_line(e)}); fix the search space or the config"
                ) from e
            first = first or cfg
        if first is None:
            return
        task_cfg = copy.deepcopy(first)
        with read_write(task_cfg), open_dict(task_cfg):
            del task_cfg["hydra"]
        self.task_cfg = task_cfg
        if preflight is None:
            return
        saved = HydraConfig.instance().cfg
        HydraConfig.instance().set_config(first)
        try:
            preflight(task_cfg)
        finally:
            if saved is not None:
                HydraConfig.instance().cfg = saved

    # ---------------------------------------------------------------- the sweep
    def run(self) -> dict[str, Any] | None:
        opts = self.opts
        mark_started()  # from here on a failure is the sweep's, not bad input
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")
        self.study = optuna.create_study(
            study_name=self.study_name,
            storage=self.storage,
            sampler=self.sampler,
            pruner=self.pruner,
            directions=opts.directions,
            load_if_exists=True,
        )
        self._start_tracking()
        reattached = self._reattach()
        stale = _study.fail_stale_trials(self.study, self.storage, keep=set(reattached))
        trials = self.study.get_trials(deepcopy=False)
        self.counts.finished = sum(_study.counts_toward_budget(t) for t in trials)
        self.counts.failed = sum(_study.counted_failure(t) for t in trials)
        mode = f"{self.slots} slots, asynchronous" if self.asynchronous else f"batches of {self.slots}"
        log.info(
            f"Study {self.study_name} in {_study.masked(self.storage_url)}: {self.counts.finished} of "
            f"{opts.n_trials} trials done; sampler {opts.sampler['name']}, pruner {self.pruner_name()}, "
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
            if self.asynchronous:
                with self._deferred_interrupts():
                    self._run_async()
            else:
                with _interrupt_on_sigterm():
                    self._run_batches()
        except KeyboardInterrupt:
            self._interrupt()
            raise SystemExit(INTERRUPTED_EXIT) from None
        finally:
            if isinstance(self.launcher, AsyncLauncher):
                self.launcher.close()
        results = self._results()
        self._end_tracking(results)
        if self.failure_limit_hit:
            raise RuntimeError(
                f"sweep stopped: {self.counts.failed} of {opts.n_trials} trials failed, more than "
                f"{key('max_failure_rate')}={opts.max_failure_rate}; last error: {self.counts.last_error}"
            )
        if self.finish is not None and self.task_cfg is not None and results.get("best_trial") is not None:
            with exit_on_config_error():
                self.finish(self.task_cfg, self.study_name)
        return results

    def pruner_name(self) -> str:
        return "none (several objectives)" if self.multi else str(self.opts.pruner.get("name"))

    def _may_start(self) -> bool:
        if self.stop_reason is not None:
            return False
        opts = self.opts
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
        trial = self.study.ask(fixed_distributions=self.space.distributions)
        if self.custom is not None:
            self.custom(self.config, trial)
        overrides = self.space.overrides(dict(trial.params))
        trial_dir = self.sweep_dir / ".trials" / str(trial.number)
        trial_dir.mkdir(parents=True, exist_ok=True)
        return Running(trial, overrides, ProgressReader(trial_dir / "progress.jsonl"), trial_dir / "prune")

    def _env(self, run: Running) -> dict[str, str]:
        return channel.trial_env(run.progress.path, run.prune_file, self.study_name, run.trial.number, self.parent_run)

    @contextmanager
    def _deferred_interrupts(self) -> Iterator[None]:
        """Ctrl-C and SIGTERM take effect between storage writes, never in the middle of one."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum: int, frame: Any) -> None:
            if self.interrupt_signal is None:
                log.warning(f"{signal.Signals(signum).name}: stopping the sweep")
            self.interrupt_signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    def _check_interrupt(self) -> None:
        if self.interrupt_signal is not None:
            raise KeyboardInterrupt(signal.Signals(self.interrupt_signal).name)

    def _run_async(self) -> None:
        """Refill free slots first, then tell Optuna about the trials that just ended."""
        launcher = self.launcher
        assert isinstance(launcher, AsyncLauncher)
        while True:
            self._check_interrupt()
            while len(self.running) + len(self.draining) < self.slots and self._may_start():
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
            done = {id(h) for h in launcher.wait_any(handles, self.opts.poll_interval)}
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
            run.trial.set_user_attr(_study.PROGRESS_FILE, str(run.progress.path))
            if run.handle.external_url:
                run.trial.set_user_attr("sweeps:external_url", run.handle.external_url)

    def _reattach(self) -> list[int]:
        """Trials a stopped driver left RUNNING whose jobs still run (an AttachableLauncher, e.g. remote
        clusters): watch them again instead of failing them."""
        launcher = self.launcher
        if not isinstance(launcher, AttachableLauncher):
            return []
        study_id = self.storage.get_study_id_from_name(self.study_name)
        numbers = []
        for t in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            external_id, progress = t.user_attrs.get(_study.EXTERNAL_ID), t.user_attrs.get(_study.PROGRESS_FILE)
            if external_id is None or progress is None:
                continue
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, t.number)
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
            size = min(self.slots, self.opts.n_trials - self.counts.finished)
            runs = [self._new_trial() for _ in range(size)]
            for run in runs:
                self.running[run.trial.number] = run
            batch = [run.overrides + _env_overrides(self._env(run)) for run in runs]
            for run in runs:
                run.trial.set_user_attr("overrides", run.overrides)
                log.info(f"Trial {run.trial.number} queued: {' '.join(run.overrides)}")
            with self._watch(runs):
                returns = self.launcher.launch(batch, initial_job_idx=runs[0].trial.number)
            for run, ret in zip(runs, returns, strict=True):
                del self.running[run.trial.number]
                self._finish(run, ret)

    @contextmanager
    def _watch(self, runs: Sequence[Running]) -> Iterator[None]:
        """While a batch runs in launch(), read progress in a thread and flag trials to prune."""
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(self.opts.poll_interval):
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
        if self.multi or not reports:
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
        job_dir = _job_dir(ret)
        if job_dir:
            trial.set_user_attr("job_dir", job_dir)
        if run.prune_requested:
            self._tell_pruned(run)
            return
        if run.progress.last_step is not None:
            trial.set_user_attr("last_step", run.progress.last_step)
        error = _job_error(ret)
        if error is None:
            try:
                values = self._values(ret.return_value)
            except ValueError as e:
                error = str(e)
            else:
                self._tell(run, TrialState.COMPLETE, values)
                log.info(f"Trial {trial.number} finished: {values if self.multi else values[0]}")
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

    def _values(self, value: Any) -> list[float]:
        """The objective value(s) from a job's return value."""
        n = len(self.opts.directions)
        if isinstance(value, Mapping):
            if not self.opts.metric:
                raise ValueError(
                    f"the job returned a dict ({sorted(value)}); set {key('metric')} to the key(s) to optimise"
                )
            missing = [m for m in self.opts.metric if m not in value]
            if missing:
                raise ValueError(f"the job's result has no {missing} (keys: {sorted(value)})")
            value = [value[m] for m in self.opts.metric]
        raw = list(value) if isinstance(value, (list, tuple)) else [value]
        try:
            values = [float(v) for v in raw]
        except (TypeError, ValueError):
            raise ValueError(f"the job returned {value!r}; it must return {n} number(s)") from None
        if len(values) != n:
            raise ValueError(f"the job returned {len(values)} value(s) for {n} direction(s)")
        if any(math.isnan(v) for v in values):
            raise ValueError(f"the job returned NaN ({values})")
        return values

    def _interrupt(self) -> None:
        """Ctrl-C or SIGTERM: end the running jobs, mark their trials so a rerun repeats them."""
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
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
                run.trial.set_user_attr(_study.INTERRUPTED, True)
                self.study.tell(run.trial, state=TrialState.FAIL)
                _study.requeue(self.study, run.trial.params, run.trial.number)
            log.warning(
                f"Interrupted: {len(self.running)} running trial(s) stopped and queued again; "
                "rerun the same command to resume the study"
            )
            self.running.clear()
            self._end_tracking(None, status="KILLED")
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    # ---------------------------------------------------------------- results
    def _results(self) -> dict[str, Any]:
        trials = self.study.get_trials(deepcopy=False)
        states: dict[str, int] = {}
        for t in trials:
            states[t.state.name] = states.get(t.state.name, 0) + 1
        results: dict[str, Any] = {
            "name": "sweeps_optuna",
            "study_name": self.study_name,
            "storage": _study.masked(self.storage_url),
            "trials": states,
        }
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        if self.multi:
            best = self.study.best_trials if complete else []
            results["solutions"] = [{"number": t.number, "params": t.params, "values": t.values} for t in best]
            log.info(f"Pareto front: {len(best)} trial(s)")
        elif complete:
            best_trial: FrozenTrial = self.study.best_trial
            results.update(best_trial=best_trial.number, best_params=best_trial.params, best_value=best_trial.value)
            log.info(f"Best trial {best_trial.number}: value {best_trial.value}, params {best_trial.params}")
        else:
            results.update(best_trial=None, best_params=None, best_value=None)
            log.warning("No trial completed")
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        return results

    # ---------------------------------------------------------------- MLflow parent run
    def _start_tracking(self) -> None:
        from . import _tracking

        self.tracker = _tracking.ParentRun.start(self)
        self.parent_run = self.tracker.run_id if self.tracker else None

    def _end_tracking(self, results: dict[str, Any] | None, status: str = "FINISHED") -> None:
        if self.tracker is not None:
            self.tracker.end(self.study, results, status)
            self.tracker = None


def _param_line(name: str, value: Any) -> str:
    """`name=expression` for a `params` entry (a YAML number or list is a fixed value)."""
    if isinstance(value, str):
        return f"{name}={value}"
    if isinstance(value, (list, dict)):
        return f"{name}={_search_space.compact(value)}"
    return f"{name}={_search_space.format_value(value)}"


def _env_overrides(env: Mapping[str, str]) -> list[str]:
    """The trial's environment as Hydra overrides, for launchers without submit(env=...)."""
    return [f"++hydra.job.env_set.{k}={_search_space.format_value(v)}" for k, v in env.items()]


def _job_dir(ret: JobReturn) -> str | None:
    if ret.hydra_cfg is None:
        return None
    return OmegaConf.select(ret.hydra_cfg, "hydra.runtime.output_dir", default=None)


def _job_error(ret: JobReturn) -> str | None:
    if ret.status == JobStatus.COMPLETED:
        return None
    error = ret._return_value
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}".strip()
    return f"job failed: {error}"


@contextmanager
def _interrupt_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the sweep as Ctrl-C does (trials marked, jobs ended)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt("SIGTERM")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
