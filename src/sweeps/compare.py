"""`python -m sweeps compare [--sweep NAME] [--format table|csv|json] [--storage URL]`

The trials of a sweep (the study with the latest activity, or NAME), best first: number, state,
objective value(s), parameters, steps reached (reported eval steps), duration, and why a trial failed.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

STATE_ORDER = {"COMPLETE": 0, "PRUNED": 1, "RUNNING": 2, "WAITING": 3, "FAIL": 4}


def default_storage() -> str:
    """The sweeper's default study storage: optuna.db in $SWEEPS_OUTPUTS or ./outputs."""
    outputs = Path(os.environ.get("SWEEPS_OUTPUTS") or Path.cwd() / "outputs").resolve()
    return f"sqlite:///{outputs / 'optuna.db'}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sweeps compare", description=__doc__.splitlines()[2])
    parser.add_argument("--sweep", metavar="NAME", help="study name (default: the most recent sweep)")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table")
    parser.add_argument(
        "--storage", metavar="URL", help="Optuna storage URL (default: optuna.db in $SWEEPS_OUTPUTS or ./outputs)"
    )
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    url = args.storage or default_storage()
    try:
        storage = _open(url, "--storage" if args.storage else "default storage")
        name = _pick_study(storage, args.sweep, url)
    except LookupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import optuna

    study = optuna.load_study(study_name=name, storage=storage)
    rows = [_row(t) for t in _sorted(study)]
    directions = [d.name.lower() for d in study.directions]
    if args.format == "json":
        print(json.dumps({"study": name, "directions": directions, "trials": rows}, indent=2, default=str))
    elif args.format == "csv":
        print(_csv(rows), end="")
    else:
        _table(name, directions, rows)
    return 0


def _open(url: str, option: str) -> optuna.storages.RDBStorage:
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            raise LookupError(
                f"{option} {url}: no such database; run a sweep first (python -m sweeps train -m sweep=...)"
            )
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LookupError(f"{option} {_masked(url)}: cannot be opened ({reason}); give an Optuna storage URL") from e


def _engine_kwargs(url: str) -> dict[str, Any]:
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def _masked(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _pick_study(storage: optuna.storages.RDBStorage, name: str | None, url: str) -> str:
    """NAME when the storage has it, else the study with the latest trial activity."""
    studies = storage.get_all_studies()
    names = [s.study_name for s in studies]
    if name is not None:
        if name not in names:
            available = ", ".join(sorted(names)) or "none"
            raise LookupError(f"--sweep {name}: no such sweep in {_masked(url)}; available: {available}")
        return name
    if not names:
        raise LookupError(f"no sweeps in {_masked(url)}; run one first (python -m sweeps train -m sweep=...)")

    def last_activity(study_name: str) -> datetime:
        trials = storage.get_all_trials(storage.get_study_id_from_name(study_name), deepcopy=False)
        stamps = [s for t in trials for s in (t.datetime_start, t.datetime_complete) if s is not None]
        return max(stamps, default=datetime.min)

    return max(names, key=last_activity)


def _sorted(study: optuna.Study) -> list[FrozenTrial]:
    """Complete trials best first, then pruned ones by their last value, then the rest by number."""
    sign = 1.0 if study.directions[0].name.lower() == "minimize" else -1.0

    def key(t: FrozenTrial) -> tuple[int, float, int]:
        value = t.values[0] if t.values else None
        order = STATE_ORDER.get(t.state.name, 5)
        return (order, sign * value if value is not None and order < 2 else 0.0, t.number)

    return sorted(study.get_trials(deepcopy=False), key=key)


def _row(t: FrozenTrial) -> dict[str, Any]:
    duration = None
    if t.datetime_start and t.datetime_complete:
        duration = round((t.datetime_complete - t.datetime_start).total_seconds(), 1)
    steps = t.user_attrs.get("last_step")
    if steps is None and t.intermediate_values:
        steps = max(t.intermediate_values)
    note = t.user_attrs.get("error") or ""
    if t.user_attrs.get("stale"):
        note = "stale (its sweep stopped); run again" + (f": {note}" if note else "")
    elif t.user_attrs.get("interrupted"):
        note = "interrupted; run again"
    elif t.user_attrs.get("retry_of") is not None:
        note = f"re-run of trial {t.user_attrs['retry_of']}"
    return {
        "number": t.number,
        "state": t.state.name,
        "values": list(t.values) if t.values else None,
        "params": dict(t.params),
        "steps": steps,
        "duration_s": duration,
        "note": note,
    }


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _param_names(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({name for row in rows for name in row["params"]})


def _value_names(rows: list[dict[str, Any]], directions: list[str]) -> list[str]:
    return ["value"] if len(directions) == 1 else [f"value_{i}" for i in range(len(directions))]


def _csv(rows: list[dict[str, Any]]) -> str:
    params = _param_names(rows)
    width = max((len(r["values"] or []) for r in rows), default=1) or 1
    values = ["value"] if width == 1 else [f"value_{i}" for i in range(width)]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["number", "state", *values, *params, "steps", "duration_s", "note"])
    for r in rows:
        vals = (r["values"] or []) + [None] * (width - len(r["values"] or []))
        writer.writerow(
            [
                r["number"],
                r["state"],
                *vals,
                *(r["params"].get(p) for p in params),
                r["steps"],
                r["duration_s"],
                r["note"],
            ]
        )
    return out.getvalue()


def _table(name: str, directions: list[str], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    params = _param_names(rows)
    values = _value_names(rows, directions)
    table = Table(title=f"sweep {name} ({', '.join(directions)})")
    table.add_column("#", justify="right")
    table.add_column("state")
    for v in values:
        table.add_column(v, justify="right")
    for p in params:
        table.add_column(p, justify="right")
    table.add_column("steps", justify="right")
    table.add_column("duration s", justify="right")
    table.add_column("note", overflow="fold", max_width=60)
    for r in rows:
        vals = (r["values"] or []) + [None] * (len(values) - len(r["values"] or []))
        table.add_row(
            str(r["number"]),
            r["state"],
            *(_fmt(v) for v in vals),
            *(_fmt(r["params"].get(p)) for p in params),
            _fmt(r["steps"]),
            _fmt(r["duration_s"]),
            r["note"],
        )
    Console().print(table)
