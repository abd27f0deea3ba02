"""The server's one model worker: a thread that owns the model and a small batching queue. Requests that arrive
while a batch runs wait together and run as the next padded batch (generation and next-token share the decode
core's batched decode); score and prompt log-probabilities run one request at a time. Every job has a time
budget and stops at its next forward pass once its client is gone, its budget spent or the server stopping.
It speaks no HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any

from llmscope.server.budget import Speed
from llmscope.server.openai_shapes import ApiError


@dataclass(eq=False)  # jobs compare by identity
class Job:
    """One request's work. `key`: jobs with equal keys may run in one batch. Results and streamed items go back
    to the request's event loop; `cancelled` (a client gone, a shutdown) stops the job at its next token."""

    kind: str  # "generate", "next_token" or "call"
    key: Hashable
    payload: Any
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    events: asyncio.Queue[Any] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None  # time.monotonic() past which the job is stopped (set when it starts running)

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now > self.deadline

    def stopped(self, now: float) -> bool:
        """The job should end at its next forward pass: its client is gone or its time budget is spent."""
        return self.cancelled.is_set() or self.expired(now)

    def emit(self, item: Any) -> None:
        if self.events is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody reads the stream any more
                self.loop.call_soon_threadsafe(self.events.put_nowait, item)

    def resolve(self, result: Any = None, error: BaseException | None = None) -> None:
        def settle() -> None:
            if self.future.done():
                return
            if error is not None:
                self.future.set_exception(error)
                self.future.exception()  # a stream reads its events, not the future: no "never retrieved" warning
            else:
                self.future.set_result(result)

        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            self.loop.call_soon_threadsafe(settle)


class JobStopped(BaseException):
    """Raised inside a forward pass when every job of the running batch should stop (see Engine._watch). A
    BaseException, so that no library code's `except Exception` around a pass can swallow it."""


@dataclass
class GenerateWork:
    """A generation job's payload: the encoded prompt, the shared sampling settings and what this row wants."""

    encoded: Any  # EncodedPrompt
    settings: Any  # GenerationSettings (max_new_tokens: this row's budget)
    stop: tuple[str, ...] = ()
    alternatives: int = 0


@dataclass
class RowState:
    """What one generation row has produced so far, and why it stopped (None: still running, or the library's
    own reason)."""

    text: str = ""
    sent: int = 0
    tokens: int = 0
    reason: str | None = None
    stops: StopMatcher | None = None


@dataclass
class EngineStats:
    requests: int = 0
    batches: int = 0
    rows: int = 0
    largest_batch: int = 0
    cancelled: int = 0  # jobs cut short or dropped from the queue because their client went away
    timed_out: int = 0  # jobs stopped by their time budget (serve --job-timeout)
    refused: int = 0  # requests refused before any work because their estimated cost passes the budget


class Engine:
    """The worker thread and its queue. submit() refuses work with 503 when the queue is full or closing;
    job_timeout: seconds a job may run once started (its requests then get 504)."""

    def __init__(self, loaded: Any, max_batch: int = 8, max_queue: int = 64, job_timeout: float | None = None
                 ) -> None:
        self.loaded = loaded
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.job_timeout = job_timeout
        self.stats = EngineStats()
        self._pending: list[Job] = []
        self._running: list[Job] = []
        self._lock = threading.Condition()
        self._closing = False
        self._aborted = False
        self._thread = threading.Thread(target=self._work, name="llmscope-engine", daemon=True)
        self.speed: Speed | None = None  # measured by start()

    def start(self) -> None:
        """Measure the model's speed (for the cost estimates checked before any request runs), then start the
        worker."""
        from llmscope.server.budget import measure_speed

        if self.speed is None:
            self.speed = measure_speed(self.loaded)
        self._thread.start()

    @property
    def queued(self) -> int:
        with self._lock:
            return len(self._pending)

    def submit(self, job: Job) -> None:
        with self._lock:
            if self._closing:
                raise ApiError(503, "the server is shutting down", kind="server_error", code="shutting_down")
            if len(self._pending) >= self.max_queue:
                raise ApiError(503, f"the server is busy ({len(self._pending)} requests queued); retry shortly",
                               kind="server_error", code="busy")
            if self._aborted:
                raise ApiError(503, "the server is shutting down", kind="server_error", code="shutting_down")
            self._pending.append(job)
            self.stats.requests += 1
            self._lock.notify()

    def close(self, timeout: float, grace: float = 60.0) -> None:
        """Stop taking work, let queued and running jobs finish for up to `timeout` seconds, then abort what is
        left (its requests get 503 at once) and wait up to `grace` seconds for the worker to reach its next
        forward pass, where it stops (a process that exits while torch computes on a thread aborts)."""
        with self._lock:
            self._closing = True
            self._lock.notify()
        deadline = time.monotonic() + timeout
        while self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.05)
            with self._lock:
                if not self._pending and not self._running:
                    break
        self.abort()
        self._thread.join(timeout=grace)

    def abort(self, why: str = "the shutdown timeout cut this request short") -> None:
        """The shutdown time is over (or a second signal came): every queued and running request gets OpenAI's 503
        now (a stream its error event), and the running batch stops within one sublayer."""
        error = ApiError(503, f"the server is shutting down ({why})", kind="server_error", code="shutting_down")
        with self._lock:
            self._closing = self._aborted = True
            jobs, self._pending = self._pending + self._running, []
            self._lock.notify()
        for job in jobs:
            job.cancelled.set()
            job.emit(("error", error.message, error.code))
            job.resolve(error=error)

    # ------------------------------------------------------------------------------------------ the thread

    def _take_batch(self) -> list[Job] | None:
        """The oldest job and every later queued job with its key (up to max_batch); None when closing and idle."""
        with self._lock:
            while True:
                self._pending = [job for job in self._pending if not job.cancelled.is_set() or self._abandon(job)]
                if self._pending:
                    break
                if self._closing:
                    return None
                self._lock.wait()
            first = self._pending[0]
            batch = [job for job in self._pending if job.key == first.key][: self.max_batch]
            self._pending = [job for job in self._pending if job not in batch]
            self._running = batch
            if self.job_timeout is not None:
                for job in batch:
                    job.deadline = time.monotonic() + self.job_timeout
            self.stats.batches += 1
            self.stats.rows += len(batch)
            self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
            return batch

    def _work(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                run = {"generate": self._generate, "next_token": self._next_token}.get(batch[0].kind, _call)
                with self._watch(batch):
                    run(batch)
            except JobStopped:
                now = time.monotonic()
                for job in batch:
                    error = self._stop_error(job, now)
                    job.emit(("error", error.message, error.code))
                    job.resolve(error=error)
            except BaseException as error:  # the batch's requests get the error, the worker goes on
                for job in batch:
                    job.emit(("error", str(error) or type(error).__name__, None))
                    job.resolve(error=error)
            finally:
                with self._lock:
                    self._running = []

    def _abandon(self, job: Job) -> bool:
        """A cancelled job that never ran: tell its request, count it, drop it from the queue (always False)."""
        if not self._aborted:
            self.stats.cancelled += 1
        job.resolve(error=ApiError(499, "the request was cancelled", code="cancelled"))
        return False

    @contextlib.contextmanager
    def _watch(self, jobs: list[Job]) -> Iterator[None]:
        """While `jobs` run: before the model and before each of its blocks and sublayers (loading.stop_points),
        raise JobStopped if all of them should stop (clients gone, time budget spent, server stopping). So a long
        pass stops within one sublayer, not at its end."""
        from llmscope.loading.stop_points import checked_passes

        def check() -> None:
            now = time.monotonic()
            if all(job.stopped(now) for job in jobs):
                raise JobStopped

        with checked_passes(self.loaded.model, check):
            yield

    def _stop_error(self, job: Job, now: float) -> ApiError:
        """What a stopped job's request hears (and the counters that say why it stopped)."""
        if job.cancelled.is_set():
            self.stats.cancelled += 1
            return ApiError(499, "the request was cancelled", code="cancelled")
        self.stats.timed_out += 1
        return ApiError(504, f"the request ran past the server's time budget of {self.job_timeout:g} s per job "
                        "(serve --job-timeout); ask for less", kind="server_error", code="timeout")

    def _next_token(self, jobs: list[Job]) -> None:
        from llmscope.inspection.next_token import next_token_encoded

        results = next_token_encoded(self.loaded, [job.payload for job in jobs], jobs[0].key[1])
        for job, result in zip(jobs, results):
            job.resolve(result)

    def _generate(self, jobs: list[Job]) -> None:
        from llmscope.generation.generate import TokenDetail, generate_encoded

        works: list[GenerateWork] = [job.payload for job in jobs]
        rows = [RowState(stops=StopMatcher(work.stop)) for work in works]
        budget = max(work.settings.max_new_tokens for work in works)
        settings = dataclasses.replace(works[0].settings, max_new_tokens=budget,
                                       logprobs=max(work.alternatives for work in works))
        detail = TokenDetail(texts=True, entropy=False, alternatives=settings.logprobs)

        def on_row_token(row: int, token: Any) -> None:
            state, work = rows[row], works[row]
            state.tokens += 1
            state.text += token.delta
            assert state.stops is not None
            cut = state.stops.feed(token.delta, len(state.text) - len(token.delta))
            if cut is not None:
                state.text, state.reason = state.text[:cut], "stop"
            elif state.tokens >= work.settings.max_new_tokens:
                state.reason = "length"
            held = 0 if state.reason else state.stops.held
            if len(state.text) - held > state.sent:
                jobs[row].emit(("text", state.text[state.sent:len(state.text) - held], token))
                state.sent = len(state.text) - held
            elif state.reason != "stop":
                jobs[row].emit(("text", "", token))

        def stop_row(row: int) -> bool:
            if rows[row].reason is None and jobs[row].cancelled.is_set():
                rows[row].reason = "cancelled"
                self.stats.cancelled += 1
            elif rows[row].reason is None and jobs[row].expired(time.monotonic()):
                rows[row].reason = "timeout"
            return rows[row].reason is not None

        results = generate_encoded(self.loaded, [work.encoded for work in works], settings, detail=detail,
                                   on_row_token=on_row_token, stop_row=stop_row)
        for job, work, state, result in zip(jobs, works, rows, results):
            reason = state.reason or result.finish_reason
            if reason == "timeout":
                error = self._stop_error(job, time.monotonic())
                job.emit(("error", error.message, error.code))
                job.resolve(error=error)
                continue
            text = state.text if reason == "stop" else result.text
            kept = result.tokens[: state.tokens] if reason == "stop" else result.tokens
            if len(text) > state.sent:
                job.emit(("text", text[state.sent:], None))
            job.emit(("end", reason, None))
            job.resolve(dataclasses.replace(result, text=text, finish_reason=reason, tokens=kept,
                                            token_ids=tuple(t.token_id for t in kept), new_tokens=len(kept),
                                            settings=work.settings))


def _call(jobs: list[Job]) -> None:
    """A job whose payload is a function of nothing: run it and hand back what it returns."""
    for job in jobs:
        job.resolve(job.payload())


class StopMatcher:
    """Stop strings found in a growing text in time linear in the text (Knuth-Morris-Pratt, one state per stop
    string): each new character costs O(1) amortised whatever the lengths of the stops."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops = stops
        self.failure = [_failure_table(stop) for stop in stops]
        self.matched = [0] * len(stops)  # per stop: the longest prefix of it that the text ends with

    @property
    def held(self) -> int:
        """How many trailing characters could start a stop string (held back from a stream until they cannot)."""
        return max(self.matched, default=0)

    def feed(self, delta: str, offset: int) -> int | None:
        """Read `delta`, which starts at character `offset` of the text: where the earliest stop string found in
        it begins, or None."""
        found: int | None = None
        for index, stop in enumerate(self.stops):
            state, failure = self.matched[index], self.failure[index]
            for position, character in enumerate(delta):
                while state and stop[state] != character:
                    state = failure[state - 1]
                if stop[state] == character:
                    state += 1
                if state == len(stop):
                    begin = offset + position + 1 - len(stop)
                    found = begin if found is None else min(found, begin)
                    state = failure[state - 1]
                    break
            self.matched[index] = state
        return found


def _failure_table(pattern: str) -> list[int]:
    """KMP's table: for each prefix of `pattern`, the length of its longest proper prefix that is also a suffix."""
    table, length = [0] * len(pattern), 0
    for index in range(1, len(pattern)):
        while length and pattern[index] != pattern[length]:
            length = table[length - 1]
        if pattern[index] == pattern[length]:
            length += 1
        table[index] = length
    return table


def call_job(loop: asyncio.AbstractEventLoop, work: Callable[[], Any]) -> Job:
    """A job that runs `work` alone on the model thread (score, prompt log-probabilities)."""
    return Job(kind="call", key=object(), payload=work, loop=loop, future=loop.create_future())
