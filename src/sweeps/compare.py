"""`python -m sweeps compare [--sweep NAME] [--format table|csv|json] [--storage URL]`

The trials of a sweep or grid (the study with the latest activity, or NAME), best first: number, state,
objective value(s), parameters, steps reached (reported eval steps), duration, MLflow run, and why a trial failed.
The table fits the terminal (80 columns and up: headers and notes wrap); csv and json hold every field whole.
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
        "run_id": t.user_attrs.get("mlflow_run_id"),
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
    writer.writerow(["number", "state", *values, *params, "steps", "duration_s", "run_id", "note"])
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
                r["run_id"],
                r["note"],
            ]
        )
    return out.getvalue()


def _table(name: str, directions: list[str], rows: list[dict[str, Any]]) -> None:
    """The trials as a table that fits the terminal: a column per parameter where they fit, else one column of
    `name=value` pairs that wraps; notes below it."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console()
    params = _param_names(rows)
    values = _value_names(rows, directions)
    headers = ["#", "state", *values, *_short_names(params), "steps", "secs", "run"]
    cells = [_cells(r, values, params) for r in rows]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(headers)]
    wide = sum(widths) + len(widths) <= console.width
    table = Table(title=f"sweep {name} ({', '.join(directions)})", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0))
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    for header in values:
        table.add_column(header, justify="right", no_wrap=True)
    if wide:
        for header in _short_names(params):
            table.add_column(header, justify="right", no_wrap=True)
    else:
        table.add_column("params", overflow="fold", ratio=1)
    for header in ("steps", "secs", "run"):
        table.add_column(header, justify="right" if header != "run" else "left", no_wrap=True)
    notes = []
    for r, row in zip(rows, cells, strict=True):
        head, tail = row[: 2 + len(values)], row[2 + len(values) + len(params) :]
        middle = row[2 + len(values) : 2 + len(values) + len(params)]
        shown = middle if wide else [" ".join(f"{n}={v}" for n, v in zip(_short_names(params), middle, strict=True))]
        table.add_row(*head, *shown, *tail)
        if r["note"]:
            notes.append(f"#{r['number']}: {r['note']}")
    console.print(table)
    for note in notes:
        console.print(note, overflow="fold", highlight=False)


def _cells(r: dict[str, Any], values: list[str], params: list[str]) -> list[str]:
    vals = (r["values"] or []) + [None] * (len(values) - len(r["values"] or []))
    return [
        str(r["number"]),
        r["state"],
        *(_short(v) for v in vals),
        *(_short(r["params"].get(p)) for p in params),
        _fmt(r["steps"]),
        _fmt(r["duration_s"]),
        (r["run_id"] or "")[:8],
    ]


def _short(value: Any) -> str:
    """A value in few characters (4 significant digits), for the table."""
    return f"{value:.4g}" if isinstance(value, float) else _fmt(value)


def _short_names(params: list[str]) -> list[str]:
    """Column headers: a parameter's last part where that is unique (weight_decay for optimizer.weight_decay)."""
    last = [p.rsplit(".", 1)[-1] for p in params]
    return [short if last.count(short) == 1 else full for short, full in zip(last, params, strict=True)]
