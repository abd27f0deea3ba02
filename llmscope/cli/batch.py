"""Many prompts through one model load: reading a --batch file (plain lines or JSON Lines) into items, and running
them in chunks with a per-item error instead of a stop. It yields results in input order and never prints."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from llmscope.core.command_settings import BatchSettings, read_bytes, utf8_text
from llmscope.core.errors import EXIT_RUNTIME, EXIT_USAGE, LlmscopeError, UsageError, translate

Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchItem:
    """One prompt of a batch: its place in the input, the caller's id (JSON Lines only), and the prompt."""

    index: int
    prompt: str
    id: Any = None
    problem: str | None = None  # why this record cannot run (bad JSON, no "prompt"), found while reading
    fields: dict[str, Any] | None = None  # a JSON Lines record's keys (commands such as patch read more than prompt)


@dataclass(frozen=True)
class BatchOutcome(Generic[Result]):
    """What one item gave: a result, or the error that stopped it (the rest of the batch goes on)."""

    item: BatchItem
    result: Result | None = None
    error: str | None = None
    exit_code: int = 0

    def keys(self) -> dict[str, Any]:
        """The keys every record of this item starts with: index, and id when the input gave one."""
        return {"index": self.item.index, **({"id": self.item.id} if self.item.id is not None else {})}


def read_input(settings: BatchSettings) -> str:
    """The whole --batch input as text (stdin for '-')."""
    try:
        data = read_bytes(settings.path, "--batch input")
    except OSError as error:
        raise UsageError(f"--batch: cannot read {settings.path}: {error.strerror or error}") from None
    return utf8_text(data, "--batch input")


def detect_format(lines: Sequence[str]) -> str:
    """jsonl when the first non-blank line starts like a JSON object, else lines: one broken line later on makes
    that record an error instead of turning every record into raw JSON text."""
    first = next((line.strip() for line in lines if line.strip()), "")
    return "jsonl" if first.startswith("{") else "lines"


def _writable_id(value: Any) -> bool:
    """An id that goes back out as JSON unchanged: a string, a whole number or a finite number (or none)."""
    if value is None or isinstance(value, (str, int)):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _json_record(line: str, number: int) -> tuple[str, Any, str | None, dict[str, Any] | None]:
    """(prompt, id, problem, the record) of one JSON Lines record; any line that is not a usable record names its
    line."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        return "", None, f"line {number} is not JSON: {error.msg}", None
    except (ValueError, RecursionError) as error:  # a 5000-digit number, nesting past Python's recursion limit
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error).split(";")[0]
        return "", None, f"line {number} cannot be read: {reason}", None
    if not isinstance(record, dict):
        return "", None, f"line {number} is not a JSON object", None
    record_id = record.get("id")
    if not _writable_id(record_id):
        return "", None, f'line {number}: "id" must be a string or a finite number', None
    if not isinstance(record.get("prompt"), str):
        return "", record_id, f'line {number} has no "prompt" string', record
    return record["prompt"], record_id, None, record


def parse_items(text: str, input_format: str = "auto") -> list[BatchItem]:
    """Items from the input text: one prompt per line, or JSON objects with "prompt" and an optional "id".

    A UTF-8 byte-order mark is dropped; in JSON Lines blank lines are skipped and every other line that is not a
    usable record becomes that record's error."""
    lines = text.removeprefix("\ufeff").split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no record
    lines = [line.removesuffix("\r") for line in lines]
    chosen = detect_format(lines) if input_format == "auto" else input_format
    if chosen == "lines":
        while lines and not lines[-1].strip():
            lines.pop()  # blank lines at the end start no record
        return [BatchItem(index=i, prompt=line, problem=None if line.strip() else
                          f"line {i + 1} is blank: a plain-text batch reads one prompt per line")
                for i, line in enumerate(lines)]
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        prompt, record_id, problem, record = _json_record(line, number)
        items.append(BatchItem(len(items), prompt, record_id, problem, record))
    return items


def read_items(settings: BatchSettings) -> list[BatchItem]:
    """Read and parse the --batch input; an input with no prompt at all is a usage error."""
    items = parse_items(read_input(settings), settings.input_format)
    if not items:
        raise UsageError(f"--batch {settings.path} holds no prompts", hint="one prompt per line, or JSON Lines")
    return items


Prepare = Callable[[BatchItem], Any]
RunChunk = Callable[[list[Any]], list[Result]]


def failure(error: Exception) -> tuple[str, int]:
    """(message, exit code) of an error record: an LlmscopeError as it reads, a library error as errors.py
    translates it, anything else as its type and first line."""
    if isinstance(error, LlmscopeError):
        return str(error), error.exit_code
    known = translate(error)
    if known is not None:
        return str(known), known.exit_code
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__, EXIT_RUNTIME


def run_batch(items: Sequence[BatchItem], batch_size: int, prepare: Prepare, run_chunk: RunChunk
              ) -> Iterator[BatchOutcome[Result]]:
    """Run items in chunks of batch_size and yield one outcome per item, in input order.

    prepare(item) checks and encodes one item (any error makes that item an error record); run_chunk runs the
    prepared items of one chunk together and returns their results in the same order. When a chunk fails, its
    items run one at a time, so that one bad record fails alone and the batch goes on.
    """
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        prepared: list[tuple[BatchItem, Any]] = []
        outcomes: dict[int, BatchOutcome[Result]] = {}
        for item in chunk:
            if item.problem is not None:
                outcomes[item.index] = BatchOutcome(item, error=item.problem, exit_code=EXIT_USAGE)
                continue
            try:
                prepared.append((item, prepare(item)))
            except Exception as error:
                message, code = failure(error)
                outcomes[item.index] = BatchOutcome(item, error=message, exit_code=code)
        if len(prepared) > 1:
            try:
                results = run_chunk([encoded for _, encoded in prepared])
                outcomes.update({item.index: BatchOutcome(item, result=result)
                                 for (item, _), result in zip(prepared, results, strict=True)})
                prepared = []
            except Exception:  # the chunk failed as a whole: its items run alone below
                pass
        for item, encoded in prepared:
            try:
                outcomes[item.index] = BatchOutcome(item, result=run_chunk([encoded])[0])
            except Exception as error:
                message, code = failure(error)
                outcomes[item.index] = BatchOutcome(item, error=message, exit_code=code)
        for item in chunk:
            yield outcomes[item.index]
