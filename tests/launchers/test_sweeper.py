"""The Optuna sweeper, run as real Hydra processes: scheduling, pruning, failures, resume, bad input."""

from __future__ import annotations

import signal

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra_plugins.sweeps_optuna_sweeper import _search_space
from hydra_plugins.sweeps_optuna_sweeper._options import Options
from hydra_plugins.sweeps_optuna_sweeper._study import EXTERNAL_ID
from hydra_plugins.sweeps_optuna_sweeper.optuna_sweeper import SweepsOptunaSweeper
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState
from sweep_apps import APPS, App, alive, stop, wait_for

from sweeps.compose import compose as sweeps_compose
from sweeps.errors import ConfigError


def test_discovery() -> None:
    assert SweepsOptunaSweeper.__name__ in [x.__name__ for x in Plugins.instance().discover(Sweeper)]


@pytest.mark.slow
def test_six_trials_two_workers_without_barrier(app: App) -> None:
    # trial 0 runs long; the other slot must go through several short trials meanwhile
    result = app.run("hydra.sweeper.n_trials=6", "hydra.sweeper.workers=2", "durations=[2.5,0.5]")
    assert result.returncode == 0, result.stderr
    assert app.states() == {"COMPLETE": 6}
    starts = {r["trial"]: r["time"] for r in app.records("start")}
    ends = {r["trial"]: r["time"] for r in app.records("end")}
    assert sorted(starts) == list(range(6))
    started_during_0 = [n for n, t in starts.items() if n >= 2 and starts[0] < t < ends[0]]
    assert started_during_0, f"no trial started while trial 0 ran: starts {starts}, ends {ends}"
    busy = [n for n in starts if starts[n] <= max(starts[m] for m in started_during_0) <= ends[n]]
    assert 0 in busy
    results = OmegaConf.load(app.dir / "multirun" / "optimization_results.yaml")
    best = min((t for t in app.trials() if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert results.best_value == best.value and results.best_params == best.params


@pytest.mark.slow
def test_pruning_stops_bad_trials_early(app: App) -> None:
    result = app.run(
        "hydra.sweeper.n_trials=8",
        "hydra.sweeper.pruner.name=median",
        "bad_above=0.6",
        "steps=6",
        "durations=[1.2]",
    )
    assert result.returncode == 0, result.stderr
    trials = app.trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned, app.states()
    assert len(pruned) + len(complete) == 8
    assert all(t.params["x"] > 0.6 for t in pruned)
    steps = {r["trial"]: r["step"] for r in app.records("step")}
    for t in pruned:
        assert t.user_attrs["last_step"] < 6
        assert steps[t.number] < 6, "a pruned trial ran to the end"
        assert steps[t.number] <= t.user_attrs["last_step"] + 1, "a pruned trial ran past one eval interval"
        assert t.intermediate_values
    assert all(steps[t.number] == 6 for t in complete)


@pytest.mark.slow
def test_failing_trials_are_recorded_and_the_sweep_goes_on(app: App) -> None:
    result = app.run(
        "hydra.sweeper.n_trials=5",
        "fail_trials=[1]",
        "crash_trials=[2]",
        "hydra.sweeper.max_failure_rate=0.5",
        "hydra.sweeper.max_resumes=0",  # a killed trial counts as failed, not as a lost job run again
    )
    assert result.returncode == 0, result.stderr
    assert app.states() == {"COMPLETE": 3, "FAIL": 2}
    failed = {t.number: t.user_attrs["error"] for t in app.trials() if t.state == TrialState.FAIL}
    assert set(failed) == {1, 2}
    assert "RuntimeError: deliberate failure in trial 1" in failed[1]
    assert "killed by SIGKILL" in failed[2]
    assert "deliberate failure in trial 1" in result.stderr, "the trial's traceback reaches the console"


@pytest.mark.slow
def test_a_trial_killed_from_outside_is_a_lost_job_run_again(app: App) -> None:
    result = app.run("hydra.sweeper.n_trials=4", "crash_trials=[2]")
    assert result.returncode == 0, result.stderr
    trials = app.trials()
    lost = [t for t in trials if t.state == TrialState.FAIL]
    assert [t.number for t in lost] == [2] and "lost" in lost[0].user_attrs
    (rerun,) = [t for t in trials if t.user_attrs.get("retry_of") == 2]
    assert rerun.state == TrialState.COMPLETE and rerun.params == lost[0].params
    assert app.states() == {"COMPLETE": 4, "FAIL": 1}


@pytest.mark.slow
def test_max_failure_rate_stops_the_sweep(app: App) -> None:
    result = app.run("hydra.sweeper.n_trials=8", "fail_all=true", "hydra.sweeper.max_failure_rate=0.2")
    assert result.returncode != 0
    assert "max_failure_rate" in result.stderr
    states = app.states()
    assert set(states) == {"FAIL"} and 2 <= states["FAIL"] < 8


def two_long_trials_running(app: App, job_ids: bool = False) -> bool:
    """Trials 0 and 1 are done and 2 and 3 run; with job_ids, remote job ids are stored too (a kill between
    asking a trial and submitting it leaves nothing to attach to)."""
    trials = app.trials()
    running = [t for t in trials if t.state == TrialState.RUNNING]
    complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
    return (
        complete == {0, 1} and len(running) == 2 and (not job_ids or all(EXTERNAL_ID in t.user_attrs for t in running))
    )


@pytest.mark.slow
def test_kill_9_then_resume(app: App) -> None:
    # trials 0 and 1 are short, 2 and 3 long enough to be killed mid-run, the retries (4, 5) short again
    args = ("hydra.sweeper.n_trials=4", "durations=[0.5,0.5,20.0,20.0,0.5]")
    driver = app.start(*args)
    try:
        wait_for(lambda: two_long_trials_running(app), 60, "trials 2 and 3 to run")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    running = {t.number for t in app.trials() if t.state == TrialState.RUNNING}
    complete_before = {t.number for t in app.trials() if t.state == TrialState.COMPLETE}
    assert running
    orphans = [r["pid"] for r in app.records("start") if r["trial"] in running]
    wait_for(lambda: not any(alive(pid) for pid in orphans), 10, "trial processes to end with their driver")

    result = app.run(*args)
    assert result.returncode == 0, result.stderr
    trials = app.trials()
    stale = [t for t in trials if t.state == TrialState.FAIL]
    assert {t.number for t in stale} == running
    assert all(t.user_attrs.get("stale") for t in stale)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert complete_before <= {t.number for t in complete}
    retried = {t.user_attrs.get("retry_of") for t in complete}
    assert running <= retried
    for t in stale:
        retry = next(c for c in complete if c.user_attrs.get("retry_of") == t.number)
        assert retry.params == t.params


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_resumes(app: App) -> None:
    args = ("hydra.sweeper.n_trials=4", "durations=[4.0]")
    driver = app.start(*args)
    try:
        wait_for(lambda: len(app.records("start")) >= 2, 60, "two trials to start")
        driver.send_signal(signal.SIGINT)
        output, _ = driver.communicate(timeout=30)
    finally:
        stop(driver)
    assert driver.returncode == 130, output
    assert "Traceback" not in output
    assert all(not alive(r["pid"]) for r in app.records("start"))
    states = app.states()
    assert states == {"FAIL": 2, "WAITING": 2}, states
    assert all(t.user_attrs.get("interrupted") for t in app.trials() if t.state == TrialState.FAIL)

    result = app.run(*args, "durations=[0.5]")
    assert result.returncode == 0, result.stderr
    assert app.states() == {"FAIL": 2, "COMPLETE": 4}


@pytest.mark.slow
def test_basic_launcher_runs_batches(app: App) -> None:
    result = app.run("hydra/launcher=basic", "hydra.sweeper.n_trials=4", "durations=[0.4]")
    assert result.returncode == 0, result.stderr
    assert app.states() == {"COMPLETE": 4}
    starts = {r["trial"]: r["time"] for r in app.records("start")}
    ends = {r["trial"]: r["time"] for r in app.records("end")}
    assert starts[2] >= max(ends[0], ends[1]) and starts[3] >= max(ends[0], ends[1])


@pytest.mark.slow
def test_basic_launcher_prunes_through_the_prune_file(app: App) -> None:
    result = app.run(
        "hydra/launcher=basic",
        "hydra.sweeper.workers=1",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.pruner.name=median",
        "bad_above=0.6",
        "steps=8",
        "durations=[0.8]",
    )
    assert result.returncode == 0, result.stderr
    pruned = [t for t in app.trials() if t.state == TrialState.PRUNED]
    assert pruned, app.states()
    steps = {r["trial"]: r["step"] for r in app.records("step")}
    assert all(steps[t.number] < 8 for t in pruned)


@pytest.mark.slow
def test_two_objectives_and_a_custom_search_space(app: App) -> None:
    result = app.run(
        "hydra.sweeper.n_trials=3",
        "multi=true",
        "hydra.sweeper.direction=[minimize,maximize]",
        "hydra.sweeper.custom_search_space=__main__.extra_space",
    )
    assert result.returncode == 0, result.stderr
    trials = app.trials()
    assert all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in trials)
    assert {r["trial"]: r["y"] for r in app.records("end")} == {t.number: t.params["y"] for t in trials}
    results = OmegaConf.load(app.dir / "multirun" / "optimization_results.yaml")
    assert results.solutions


@pytest.mark.slow
def test_grid_sampler_covers_the_grid_once(app: App) -> None:
    result = app.run(
        "hydra.sweeper.sampler.name=grid",
        "hydra.sweeper.n_trials=10",
        "hydra.sweeper.params.x='choice(0.1,0.2,0.3)'",
        "y=1,2",
    )
    assert result.returncode == 0, result.stderr
    trials = app.trials()
    assert sorted((t.params["x"], t.params["y"]) for t in trials) == [(x, y) for x in (0.1, 0.2, 0.3) for y in (1, 2)]


def sweeper_options(*overrides: str) -> DictConfig:
    """The `hydra.sweeper` node of the test app's config, as its sweeper receives it (`-m` and overrides)."""
    with initialize_config_dir(config_dir=str(APPS), version_base=None, job_name="trial_app"):
        return compose("trial", overrides=list(overrides), return_hydra_config=True).hydra.sweeper


def search_space(options: DictConfig, *arguments: str) -> _search_space.SearchSpace:
    """The search space of `hydra.sweeper.params` and the command line's sweeps, later lines winning."""
    params = OmegaConf.to_container(options.params) or {}
    entries = [(f"{name}={value}", f"hydra.sweeper.params.{name}") for name, value in params.items()]
    return _search_space.parse([*entries, *((a, a.split("=", 1)[0]) for a in arguments)])


def problems(call) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        call()
    return raised.value.errors


def test_the_test_app_and_the_imdb_preset_parse() -> None:
    """The base of the bad-input cases below is itself fine."""
    opts = Options.parse(sweeper_options())
    assert opts.sampler["name"] == "random" and opts.directions == ["minimize"] and opts.workers == 2
    space = search_space(sweeper_options(), "y=1,2")
    assert space.distributions == {"x": FloatDistribution(0.0, 1.0), "y": CategoricalDistribution([1, 2])}
    preset = sweeps_compose(["sweep=imdb_tpe"], with_hydra=True).hydra.sweeper
    opts = Options.parse(preset)
    assert (
        opts.directions == ["maximize"] and opts.metric == ["accuracy"] and opts.preflight == "sweeps.sweep.preflight"
    )
    assert set(search_space(preset).params) == {
        "lr",
        "batch_size",
        "optimizer.weight_decay",
        "optimizer.warmup_ratio",
        "epochs",
    }


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["hydra.sweeper.sampler.name=foo"], "hydra.sweeper.sampler.name=foo: unknown sampler"),
        (["hydra.sweeper.pruner.name=bar"], "hydra.sweeper.pruner.name=bar: unknown pruner"),
        (["hydra.sweeper.direction=up"], "hydra.sweeper.direction=up"),
        (
            ["hydra.sweeper.direction=[minimize,maximize]", "hydra.sweeper.metric=loss"],
            "hydra.sweeper.direction=['minimize', 'maximize']: 2 direction(s) for 1 objective(s)",
        ),
        (["hydra.sweeper.workers=0"], "hydra.sweeper.workers=0"),
    ],
)
def test_bad_options_name_the_key(overrides: list[str], key: str) -> None:
    errors = problems(lambda: Options.parse(sweeper_options(*overrides)))
    assert len(errors) == 1 and key in errors[0], errors


@pytest.mark.parametrize(
    "overrides, arguments, key",
    [
        (["hydra.sweeper.params.x='interval(0,'"], [], "hydra.sweeper.params.x: malformed"),
        (["hydra.sweeper.params.x='range(5,5)'"], [], "hydra.sweeper.params.x: range(5, 5, step=1) is empty"),
        (["hydra.sweeper.params.x='interval(1,0)'"], [], "hydra.sweeper.params.x: interval(1.0, 0.0) is empty"),
        ([], ["y=range(3,1)"], "y: range(3, 1, step=1) is empty"),
    ],
)
def test_bad_search_space_names_the_key(overrides: list[str], arguments: list[str], key: str) -> None:
    options = sweeper_options(*overrides)
    Options.parse(options)  # the options themselves are fine
    errors = problems(lambda: search_space(options, *arguments))
    assert len(errors) == 1 and key in errors[0], errors


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["hydra.sweeper.sampler.name=foo"], "hydra.sweeper.sampler.name=foo: unknown sampler"),
        (
            ["hydra.sweeper.storage=sqlite:////nonexistent/dir/optuna.db"],
            "hydra.sweeper.storage=sqlite:////nonexistent",
        ),
        (["preflight_rejects=true", "hydra.sweeper.preflight=__main__.preflight"], "preflight_rejects=true"),
        (["nothere=1,2"], "cannot be composed"),
    ],
)
def test_bad_input_exits_2_before_any_trial(app: App, overrides: list[str], key: str) -> None:
    result = app.run(*overrides)
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert key in errors[0]
    assert app.trial_count() == 0
    assert not app.records()


def test_direction_must_match_the_stored_study(app: App) -> None:
    stored = optuna.create_study(study_name="trial_app", storage=app.storage, direction="minimize")
    stored.tell(stored.ask({"x": FloatDistribution(0.0, 1.0)}), 0.5)
    result = app.run("hydra.sweeper.n_trials=2", "hydra.sweeper.direction=[minimize,maximize]", "multi=true")
    assert result.returncode == 2
    assert "study 'trial_app' was created with 1 objective(s)" in result.stderr
    assert app.trial_count() == 1


def test_eight_processes_share_one_sqlite_store(tmp_path) -> None:
    """Eight processes ask and tell trials on one SQLite file at once: no 'database is locked'."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="shared", storage=url)
    script = (
        "import sys, optuna\n"
        "from hydra_plugins.sweeps_optuna_sweeper._study import open_storage\n"
        "optuna.logging.set_verbosity(optuna.logging.WARNING)\n"
        "storage = open_storage(sys.argv[1], 'storage')\n"
        "study = optuna.load_study(study_name='shared', storage=storage, sampler=optuna.samplers.RandomSampler())\n"
        "for i in range(3):\n"
        "    t = study.ask()\n"
        "    x = t.suggest_float('x', 0, 1)\n"
        "    t.report(x, 1)\n"
        "    t.set_user_attr('worker', sys.argv[2])\n"
        "    study.tell(t, x)\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, url, str(i)], stderr=subprocess.PIPE, text=True)
        for i in range(8)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]  # a bound for a hang, not a speed test
    assert all(p.returncode == 0 for p in procs), errors
    assert not any("locked" in e for e in errors)
    trials = optuna.load_study(study_name="shared", storage=url).get_trials()
    assert len(trials) == 24 and all(t.state == TrialState.COMPLETE for t in trials)
    assert len({t.number for t in trials}) == 24
    by_worker = {str(i): 0 for i in range(8)}
    for t in trials:
        by_worker[t.user_attrs["worker"]] += 1
        assert t.intermediate_values == {1: t.value}, "a report was lost"
    assert by_worker == {str(i): 3 for i in range(8)}, "a worker's ask or tell was lost"


@pytest.mark.slow
def test_mlflow_parent_run_is_shared_by_trials_and_reused_on_resume(app: App) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{app.dir / 'mlflow.db'}"
    tracking = [f"+tracking.uri={uri}", "+tracking.experiment=sweeps_test", "durations=[0.1]"]
    assert app.run("hydra.sweeper.n_trials=2", *tracking).returncode == 0
    run_id = optuna.load_study(study_name="trial_app", storage=app.storage).user_attrs["sweeps:mlflow_parent_run_id"]
    assert {r["parent_run"] for r in app.records("start")} == {run_id}

    result = app.run("hydra.sweeper.n_trials=3", *tracking)
    assert result.returncode == 0, result.stderr
    assert {r["parent_run"] for r in app.records("start")} == {run_id}
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sweeps.study"] == "trial_app"
    assert run.data.tags["sweeps.sampler"] == "random"
    assert run.data.params["space.x"].startswith("FloatDistribution")
    best = optuna.load_study(study_name="trial_app", storage=app.storage).best_trial
    assert run.data.metrics["best_value"] == pytest.approx(best.value)
    assert run.data.metrics["trials_complete"] == 3
    assert run.data.tags["best.x"] == str(best.params["x"])
    artifacts = {a.path for a in client.list_artifacts(run_id, "optuna")}
    assert "optuna/optimization_history.png" in artifacts
    assert len(client.search_runs([run.info.experiment_id])) == 1
    assert len({t.params["x"] for t in app.trials()}) == 3, "the resumed sampler repeated a suggestion"


@pytest.mark.slow
def test_timeout_stops_starting_trials(app: App) -> None:
    result = app.run("hydra.sweeper.n_trials=20", "hydra.sweeper.timeout=1.5", "durations=[1.0]")
    assert result.returncode == 0, result.stderr
    states = app.states()
    assert set(states) == {"COMPLETE"} and 2 <= states["COMPLETE"] < 20
    assert "timeout of 1.5 s reached" in result.stdout + result.stderr


@pytest.mark.slow
def test_resume_attaches_to_jobs_that_still_run(app: App) -> None:
    """With a launcher that has attach() (remote runs), a resumed sweep watches a stopped sweep's jobs
    again instead of failing and repeating them."""
    registry = app.with_fake_remote_launcher()
    args = ("hydra/launcher=fake_remote", "hydra.sweeper.n_trials=4", "durations=[0.5,0.5,6.0]")
    driver = app.start(*args)
    try:
        wait_for(lambda: two_long_trials_running(app, job_ids=True), 60, "trials 2 and 3 to run as jobs")
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    running = {t.number for t in app.trials() if t.state == TrialState.RUNNING}
    assert running

    result = app.run(*args)
    assert result.returncode == 0, result.stderr
    assert app.states() == {"COMPLETE": 4}
    attached = set((registry / "attached.txt").read_text().split())
    assert attached == {f"fake-{n}" for n in running}
    assert {t.number for t in app.trials()} == {0, 1, 2, 3}
