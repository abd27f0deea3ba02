"""Many prompts through one model load: reading a --batch file (plain lines or JSON Lines) into items, and running
them in chunks with a per-item error instead of a stop. It yields results in input order and never prints."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from llmscope.errors import EXIT_USAGE, LlmscopeError, UsageError
from llmscope.settings import BatchSettings, utf8_text

Result = TypeVar("Result")


@dataclass(frozen=True)
class BatchItem:
    """One prompt of a batch: its place in the input, the caller's id (JSON Lines only), and the prompt."""

    index: int
    prompt: str
    id: Any = None
    problem: str | None = None  # why this record cannot run (bad JSON, no "prompt"), found while reading


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
        data = sys.stdin.buffer.read() if settings.path == "-" else Path(settings.path).read_bytes()
    except OSError as error:
        raise UsageError(f"--batch: cannot read {settings.path}: {error.strerror or error}") from None
    return utf8_text(data, "--batch input")


def detect_format(lines: Sequence[str]) -> str:
    """jsonl when every non-blank line is a JSON object, else lines."""
    filled = [line.strip() for line in lines if line.strip()]
    return "jsonl" if filled and all(line.startswith("{") and line.endswith("}") for line in filled) else "lines"


def parse_items(text: str, input_format: str = "auto") -> list[BatchItem]:
    """Items from the input text: one prompt per line, or JSON objects with "prompt" and an optional "id"."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line starts no record
    lines = [line.removesuffix("\r") for line in lines]
    chosen = detect_format(lines) if input_format == "auto" else input_format
    if chosen == "lines":
        return [BatchItem(index=i, prompt=line) for i, line in enumerate(lines)]
    items = []
    for index, line in enumerate(lines):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            items.append(BatchItem(index, "", problem=f"line {index + 1} is not JSON: {error.msg}"))
            continue
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str):
            items.append(BatchItem(index, "", record.get("id") if isinstance(record, dict) else None,
                                   problem=f'line {index + 1} has no "prompt" string'))
            continue
        items.append(BatchItem(index, record["prompt"], record.get("id")))
    return items


def read_items(settings: BatchSettings) -> list[BatchItem]:
    """Read and parse the --batch input; an input with no prompt at all is a usage error."""
    items = parse_items(read_input(settings), settings.input_format)
    if not items:
        raise UsageError(f"--batch {settings.path} holds no prompts", hint="one prompt per line, or JSON Lines")
    return items


Prepare = Callable[[BatchItem], Any]
RunChunk = Callable[[list[Any]], list[Result]]


def run_batch(items: Sequence[BatchItem], batch_size: int, prepare: Prepare, run_chunk: RunChunk
              ) -> Iterator[BatchOutcome[Result]]:
    """Run items in chunks of batch_size and yield one outcome per item, in input order.

    prepare(item) checks and encodes one item (an LlmscopeError makes that item an error record); run_chunk runs
    the prepared items of one chunk together and returns their results in the same order.
    """
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        prepared: list[tuple[BatchItem, Any]] = []
        failed: dict[int, BatchOutcome[Result]] = {}
        for item in chunk:
            if item.problem is not None:
                failed[item.index] = BatchOutcome(item, error=item.problem, exit_code=EXIT_USAGE)
                continue
            try:
                prepared.append((item, prepare(item)))
            except LlmscopeError as error:
                failed[item.index] = BatchOutcome(item, error=str(error), exit_code=error.exit_code)
        try:
            results = run_chunk([encoded for _, encoded in prepared]) if prepared else []
        except LlmscopeError as error:  # the whole chunk failed (out of memory, ...): its items say so
            for item, _ in prepared:
                failed[item.index] = BatchOutcome(item, error=str(error), exit_code=error.exit_code)
            prepared, results = [], []
        by_index = {item.index: BatchOutcome(item, result=result) for (item, _), result in zip(prepared, results)}
        for item in chunk:
            yield failed.get(item.index) or by_index[item.index]
