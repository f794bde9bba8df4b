"""The sweep's results: its trials' states and the best trial (or the Pareto front), saved beside the sweep as
optimization_results.yaml."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import OmegaConf
from optuna.trial import FrozenTrial, TrialState

from . import _study

if TYPE_CHECKING:
    from ._prepare import Plan

log = logging.getLogger(__name__)


def results(study: optuna.Study, plan: Plan) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    found: dict[str, Any] = {
        "name": "sweeps_optuna",
        "study_name": plan.study_name,
        "storage": _study.masked(plan.storage_url),
        "trials": states,
    }
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if plan.multi:
        best = study.best_trials if complete else []
        found["solutions"] = [{"number": t.number, "params": t.params, "values": t.values} for t in best]
        log.info(f"Pareto front: {len(best)} trial(s)")
    elif complete:
        best_trial: FrozenTrial = study.best_trial
        found.update(best_trial=best_trial.number, best_params=best_trial.params, best_value=best_trial.value)
        log.info(f"Best trial {best_trial.number}: value {best_trial.value}, params {best_trial.params}")
    else:
        found.update(best_trial=None, best_params=None, best_value=None)
        log.warning("No trial completed")
    OmegaConf.save(OmegaConf.create(found), plan.sweep_dir / "optimization_results.yaml")
    return found
