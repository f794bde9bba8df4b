"""Progress files: a trial appends {"step": int, "value": float} lines; the driver reads new ones."""

from __future__ import annotations

import json
from pathlib import Path


class ProgressReader:
    """Reads the complete lines appended to one trial's progress file since the last read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.last_step: int | None = None

    def read(self) -> list[tuple[int, float]]:
        """New (step, value) reports, in order; malformed lines and repeated steps are skipped."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        reports = []
        for line in data[: end + 1].splitlines():
            try:
                record = json.loads(line)
                step, value = int(record["step"]), float(record["value"])
            except (ValueError, KeyError, TypeError):
                continue
            if self.last_step is not None and step <= self.last_step:
                continue
            self.last_step = step
            reports.append((step, value))
        return reports
