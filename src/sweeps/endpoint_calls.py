"""Sending many chat completions to an endpoint within its rate limits: throttled requests (429) wait out the
service's retry-after (all workers pause together), failed ones (5xx, no answer) are retried a few times, a prompt
the content filter refuses (400, code content_filter) is an unanswered example, and progress is shown as it goes
(a bar on a terminal, plain lines otherwise)."""

from __future__ import annotations

import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TextIO

# Tokens a rate limiter counts for a prompt: about one per 4 characters.
CHARS_PER_TOKEN = 4


class Throttled(Exception):
    """The endpoint kept throttling past the deadline."""


def retry_after(exc: Exception) -> float | None:
    """Seconds the service asks to wait (retry-after-ms, else retry-after), from an openai APIStatusError."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for header, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers[header]) / scale
        except (KeyError, TypeError, ValueError):
            continue
    return None


def error_code(exc: Exception) -> str | None:
    body = getattr(exc, "body", None)
    inner = body.get("error", body) if isinstance(body, dict) else None
    return inner.get("code") if isinstance(inner, dict) else None


def prompt_tokens(texts: list[str], system: str | None, max_tokens: int) -> int:
    """What a rate limiter counts for sending `texts`: prompt characters / 4 plus max_tokens, per request."""
    extra = len(system or "") + 16  # the system message and the chat format around the messages
    return sum((len(t) + extra) // CHARS_PER_TOKEN + max_tokens for t in texts)


class Progress:
    """`done/total` as a bar on a terminal, as a line every tenth (or every 30 seconds) otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None, label: str = "evaluated") -> None:
        self.total, self.label = total, label
        self.stream = stream or sys.stdout
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.step = max(1, total // 10)
        self.last_line = time.monotonic()
        self.lock = threading.Lock()
        self.done = self.filtered = self.throttled = 0

    def _text(self) -> str:
        notes = [f"{n} {what}" for n, what in ((self.filtered, "filtered"), (self.throttled, "throttled")) if n]
        return f"{self.done}/{self.total}" + (f" ({', '.join(notes)})" if notes else "")

    def add(self, done: int = 0, filtered: int = 0, throttled: int = 0) -> None:
        with self.lock:
            self.done += done
            self.filtered += filtered
            self.throttled += throttled
            if not done:
                return
            if self.tty:
                width = 30
                filled = width * self.done // max(1, self.total)
                self.stream.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {self._text()}")
                if self.done == self.total:
                    self.stream.write("\n")
            elif self.done % self.step == 0 or self.done == self.total or time.monotonic() - self.last_line > 30:
                self.stream.write(f"  {self.label} {self._text()}\n")
                self.last_line = time.monotonic()
            self.stream.flush()


class _Gate:
    """A pause every worker waits out: set when the service answers 429 with its retry-after."""

    def __init__(self) -> None:
        self.until = 0.0
        self.lock = threading.Lock()

    def pause(self, seconds: float) -> None:
        with self.lock:
            self.until = max(self.until, time.monotonic() + seconds)

    def wait(self) -> None:
        while True:
            with self.lock:
                left = self.until - time.monotonic()
            if left <= 0:
                return
            time.sleep(left)


def ask_all(
    client: Any,
    model: str,
    texts: list[str],
    system: str | None,
    concurrency: int,
    *,
    max_retries: int,
    max_tokens: int = 8,
    deadline: float | None = None,
    progress: Progress | None = None,
) -> list[str | None]:
    """Each text as one chat completion (temperature 0); None where the content filter refused it.

    `client` is an `openai.OpenAI` or `openai.AzureOpenAI`; errors other than throttling, content filtering and
    failures within `max_retries` propagate. Throttling past `deadline` (time.monotonic()) raises Throttled.
    """
    import openai

    calls = client.with_options(max_retries=0)
    gate = _Gate()
    progress = progress or Progress(len(texts))

    def ask(text: str) -> str | None:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": text}]
        failures = 0
        while True:
            gate.wait()
            try:
                reply = calls.chat.completions.create(
                    model=model, messages=messages, temperature=0, max_tokens=max_tokens
                )
            except openai.RateLimitError as exc:
                wait = retry_after(exc) or 1.0
                if deadline is not None and time.monotonic() + wait > deadline:
                    raise Throttled(str(exc)) from None
                gate.pause(wait)
                progress.add(throttled=1)
                continue
            except openai.BadRequestError as exc:
                if error_code(exc) == "content_filter":
                    progress.add(done=1, filtered=1)
                    return None
                raise
            except (openai.InternalServerError, openai.APIConnectionError):
                failures += 1
                if failures > max_retries:
                    raise
                time.sleep(min(8.0, 0.5 * 2**failures) * (1 - 0.25 * random.random()))
                continue
            choice = reply.choices[0]
            if choice.finish_reason == "content_filter":  # the answer was filtered
                progress.add(done=1, filtered=1)
                return None
            progress.add(done=1)
            return choice.message.content or ""

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(ask, texts))
