"""Search space in hydra-optuna-sweeper's syntax, as Optuna distributions.

    interval(a, b)             float in [a, b]                 FloatDistribution(a, b)
    int(interval(a, b))        int in [a, b]                   IntDistribution(a, b)
    tag(log, interval(a, b))   log scale (int or float)        ...(a, b, log=True)
    choice(a, b, c) / a,b,c    categorical                     CategoricalDistribution
    range(a, b[, step])        a, a+step, ... below b          Int/FloatDistribution(..., step=step)
    shuffle(range(...))        those values as categorical     CategoricalDistribution
    anything else              a fixed value for every trial

Ranges follow Hydra's `range` (b excluded). Every trial's parameters become overrides `key=value`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from sweeps.errors import ConfigError

SYNTAX = "interval(a, b), int(interval(a, b)), tag(log, interval(a, b)), choice(a, b), range(a, b)"
PLAIN = re.compile(r"[A-Za-z0-9_\-+./:@]+")


@dataclass
class Param:
    """One swept key: its Optuna distribution and how each choice is written as an override."""

    name: str
    key: str  # the override key, with its +/++ prefix
    distribution: BaseDistribution
    choice_text: dict[Any, str] = field(default_factory=dict)


@dataclass
class SearchSpace:
    params: dict[str, Param] = field(default_factory=dict)
    fixed: dict[str, str] = field(default_factory=dict)  # name -> override line

    @property
    def distributions(self) -> dict[str, BaseDistribution]:
        return {name: p.distribution for name, p in self.params.items()}

    def overrides(self, values: Mapping[str, Any]) -> list[str]:
        """Override lines for one trial: its parameter values, then the fixed values."""
        lines = []
        for name, value in values.items():
            param = self.params.get(name)
            if param is not None:
                text = param.choice_text.get(value)
                lines.append(f"{param.key}={text if text is not None else format_value(value)}")
            elif name not in self.fixed:
                lines.append(f"{name}={format_value(value)}")
        return lines + list(self.fixed.values())

    def example_values(self) -> list[dict[str, Any]]:
        """A few parameter sets that together use every choice, to check configs before trials run."""
        base = {name: _example(p.distribution) for name, p in self.params.items()}
        sets = [base]
        for name, p in self.params.items():
            if isinstance(p.distribution, CategoricalDistribution):
                sets += [{**base, name: c} for c in p.distribution.choices[1:]]
        return sets

    def grid(self, key_names: Mapping[str, str]) -> dict[str, list[Any]]:
        """Values for Optuna's GridSampler (discrete parameters only)."""
        grid = {}
        for name, p in self.params.items():
            d = p.distribution
            if isinstance(d, CategoricalDistribution):
                grid[name] = list(d.choices)
            elif isinstance(d, (IntDistribution, FloatDistribution)) and d.step is not None and not d.log:
                n = int(round((d.high - d.low) / d.step)) + 1
                grid[name] = [_tidy(d.low + i * d.step) for i in range(n)]
            else:
                raise ConfigError(
                    f"{key_names.get(name, name)}: the grid sampler needs discrete values; "
                    "use choice(...) or range(a, b, step)"
                )
        return grid


def _example(d: BaseDistribution) -> Any:
    if isinstance(d, CategoricalDistribution):
        return d.choices[0]
    if isinstance(d, IntDistribution):
        return d.low
    assert isinstance(d, FloatDistribution)
    if d.step is not None:
        return d.low
    # an inner, non-integral point: a float interval given to an integer key fails here, not in trial 7
    return d.low + 0.37 * (d.high - d.low) if d.high > d.low else d.low


def _tidy(x: float | int) -> float | int:
    return x if isinstance(x, int) else float(f"{x:.12g}")


def format_value(value: Any) -> str:
    """A value as Hydra override text that parses back to the same value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if PLAIN.fullmatch(text) and _parses_to(text, text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _parses_to(text: str, expected: Any) -> bool:
    try:
        value = OverridesParser.create().parse_override(f"k={text}").value()
    except Exception:
        return False
    return type(value) is type(expected) and value == expected


def parse(entries: Iterable[tuple[str, str]]) -> SearchSpace:
    """Parse (override line, user-facing key) pairs; later lines for the same key win."""
    parser = OverridesParser.create()
    space = SearchSpace()
    errors = []
    for line, user_key in entries:
        try:
            override = parser.parse_override(line)
        except Exception as e:
            errors.append(
                f"{user_key}: malformed search-space expression '{_rhs(line)}' ({first_line(e)}); use one of {SYNTAX}"
            )
            continue
        key = override.get_key_element()
        name = key.lstrip("+~")
        space.params.pop(name, None)
        space.fixed.pop(name, None)
        try:
            param = _to_param(override, key, name, user_key)
        except ConfigError as e:
            errors.extend(e.errors)
            continue
        if param is None:
            space.fixed[name] = line
        else:
            space.params[name] = param
    if errors:
        raise ConfigError(*errors)
    return space


def _rhs(line: str) -> str:
    return line.split("=", 1)[1] if "=" in line else line


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _to_param(override: Override, key: str, name: str, user_key: str) -> Param | None:
    if not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return _categorical(override, key, name, user_key)
    if isinstance(value, RangeSweep):
        return Param(name, key, _range(value, user_key))
    if isinstance(value, IntervalSweep):
        return Param(name, key, _interval(value, user_key))
    raise ConfigError(f"{user_key}: '{override.input_line}' is not supported by the sweeper; use one of {SYNTAX}")


def _categorical(override: Override, key: str, name: str, user_key: str) -> Param:
    choices: list[Any] = []
    text: dict[Any, str] = {}
    for raw in override.sweep_iterator():
        if isinstance(raw, (list, dict)):
            value: Any = compact(raw)
            text[value] = value
        elif raw is None or isinstance(raw, (bool, int, float, str)):
            value = raw
        else:
            raise ConfigError(f"{user_key}: choice value {raw!r} is not a str, number, bool or null")
        if value not in choices:
            choices.append(value)
    if not choices:
        raise ConfigError(f"{user_key}: empty choice; give at least one value")
    return Param(name, key, CategoricalDistribution(choices), text)


def compact(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(compact(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{compact(v)}" for k, v in value.items()) + "}"
    return format_value(value)


def _range(value: RangeSweep, user_key: str) -> BaseDistribution:
    start, stop, step = value.start, value.stop, value.step
    assert start is not None and stop is not None and step is not None
    if step == 0:
        raise ConfigError(f"{user_key}: range step is 0; use a non-zero step")
    n = math.ceil((stop - start) / step)
    if n <= 0:
        raise ConfigError(
            f"{user_key}: range({start}, {stop}, step={step}) is empty (the end is excluded); use an end beyond {start}"
        )
    last = start + (n - 1) * step
    low, high = (start, last) if step > 0 else (last, start)
    if all(isinstance(x, int) for x in (start, stop, step)):
        return IntDistribution(int(low), int(high), step=abs(int(step)))
    return FloatDistribution(float(_tidy(low)), float(_tidy(high)), step=float(abs(step)))


def _interval(value: IntervalSweep, user_key: str) -> BaseDistribution:
    low, high = value.start, value.end
    assert low is not None and high is not None
    log = "log" in value.tags
    if low > high:
        raise ConfigError(f"{user_key}: interval({low}, {high}) is empty; give the lower bound first")
    if log and low <= 0:
        raise ConfigError(f"{user_key}: tag(log, interval({low}, {high})) needs a lower bound above 0")
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)
