"""compare --against-endpoint: model B's full log-probability rows from `llmscope serve` (its logprobs route), as
the chunks comparison.compare_texts reads for a local model. It imports torch (model A runs locally anyway)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

from llmscope.client.answers import FIGURE_SLACK
from llmscope.client.endpoint import (
    LLMSCOPE_SERVER,
    MAX_ANSWER_BYTES,
    Client,
    EndpointError,
    EndpointSettings,
    NoSuchRoute,
)
from llmscope.core.model_info import ModelInfo


@dataclass(frozen=True)
class RemoteName:
    name: str


class RemoteModel:
    """Model B behind an endpoint: as much of a loaded model as compare_texts names (spec.name, dtype), known once
    the server has answered."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.info: ModelInfo | None = None

    @property
    def spec(self) -> RemoteName:
        return RemoteName(self.info.model if self.info else self.url)

    @property
    def dtype(self) -> str:
        return (self.info.dtype if self.info else None) or "?"


def block_sizes(ids_length: int, plan: list[tuple[int, int, int]], next_token: bool) -> list[int]:
    """The rows of each chunk scoring.logprob_chunks yields for this plan (so that A's and B's chunks pair up)."""
    from llmscope.inspection.scoring import CHUNK_ROWS

    sizes = []
    for number, (_, end, start) in enumerate(plan):
        rows = end - start + (1 if next_token and number == len(plan) - 1 else 0)
        sizes += [min(CHUNK_ROWS, rows - offset) for offset in range(0, rows, CHUNK_ROWS)]
    return sizes


def check_ready(settings: EndpointSettings) -> None:
    """Before model A loads: the server answers, takes the key, and has the logprobs route (`llmscope serve`); an
    empty request is refused with 400 there, and 404 by a server without it."""
    from llmscope.core.errors import UsageError

    try:
        Client(settings).call(LOGPROBS_ROUTE, {})
    except NoSuchRoute:
        raise _not_llmscope() from None
    except UsageError:
        return  # the route is there: it refused the empty request
    raise EndpointError(f"the endpoint {settings.base} accepted an empty {LOGPROBS_ROUTE} request: it is not the "
                        "`llmscope serve` compare --against-endpoint needs")


def _not_llmscope() -> EndpointError:
    return EndpointError("compare --against-endpoint needs `llmscope serve`: the KL needs model B's whole "
                         "distribution at every position, which OpenAI-compatible servers do not send")


LOGPROBS_ROUTE = "/llmscope/v1/logprobs"


def answer_bytes(rows: int, vocab: int) -> int:
    """The most bytes an honest logprobs answer for these rows takes: float32 rows in base64 (4/3), the targets
    and contexts, and the model info, with room to spare."""
    return (rows * vocab * 4 * 4) // 3 + rows * 64 + 2**20


def remote_chunks(settings: EndpointSettings, text: str, score_settings: Any, vocab: int | None = None
                  ) -> tuple[RemoteModel, Any]:
    """Model B, and a function (ids, plan, next_token) -> B's LogprobChunks that asks the server once. The server
    streams the rows in JSON lines; they are all read (and checked) before the first chunk is handed on, so that a
    slow model A never holds the server's model thread. vocab (model A's logits per row) sizes the answer's cap;
    B must have the same."""
    client = Client(settings)
    remote = RemoteModel(settings.base)

    def chunks(ids: tuple[int, ...], plan: list[tuple[int, int, int]], next_token: bool) -> Iterator[Any]:
        from llmscope.inspection.scoring import LogprobChunk

        sizes = block_sizes(len(ids), plan, next_token)
        body = {"text": text, "options": asdict(score_settings), "ids": list(ids), "plan": [list(w) for w in plan],
                "next_token": next_token}
        cap = max(answer_bytes(sum(sizes), vocab) if vocab else MAX_ANSWER_BYTES, MAX_ANSWER_BYTES)
        try:
            lines = client.call_lines(LOGPROBS_ROUTE, body, max_bytes=cap, max_line_bytes=cap)
            rows, targets, contexts = _read_rows(settings, lines, remote, sum(sizes))
        except NoSuchRoute:
            raise _not_llmscope() from None
        targets_list, contexts_list, at = list(targets), list(contexts), 0
        for size in sizes:
            yield LogprobChunk(targets=targets_list[at:at + size], contexts=contexts_list[at:at + size],
                               logprobs=rows[at:at + size])
            at += size

    return remote, chunks


def _read_rows(settings: EndpointSettings, lines: Iterator[dict[str, Any]], remote: RemoteModel, wanted: int
               ) -> tuple[Any, list[int], list[int]]:
    """The logprobs stream read whole: its head (model info, vocabulary, rows), its lines of rows, its end; every
    shape and figure checked. Returns (rows [wanted, vocab] float32, targets, contexts)."""
    import torch

    from llmscope.client.answers import AnswerShapeError, from_plain, reading_answer

    with reading_answer(settings.base, LOGPROBS_ROUTE):
        head = next(lines, None)
        if head is None or "model_info" not in head or not isinstance(head.get("result"), dict):
            raise AnswerShapeError("no 'model_info' and 'result' object at the head of the answer")
        remote.info = replace(from_plain(ModelInfo, head["model_info"], "model_info"), endpoint=settings.base,
                              server=LLMSCOPE_SERVER)
        width = from_plain(int, head["result"].get("vocab"), "result.vocab")
        if width < 1 or from_plain(int, head["result"].get("rows"), "result.rows") != wanted:
            raise AnswerShapeError(f"an answer of {head['result'].get('rows')} rows of {width}, where {wanted} go")
        rows = torch.empty((wanted, width), dtype=torch.float32)
        targets: list[int] = []
        contexts: list[int] = []
        for number, line in enumerate(lines, start=1):
            if "error" in line:
                detail = line["error"] if isinstance(line["error"], dict) else {}
                raise EndpointError(f"the endpoint stopped its answer on {LOGPROBS_ROUTE}: "
                                    f"{' '.join(str(detail.get('message', line['error'])).split())[:300]}")
            if line.get("end") is True:
                break
            where = f"line {number}"
            more = from_plain(tuple[int, ...], line.get("targets"), f"{where}.targets")
            around = from_plain(tuple[int, ...], line.get("contexts"), f"{where}.contexts")
            packed = base64.b64decode(from_plain(str, line.get("rows_base64"), f"{where}.rows_base64"), validate=True)
            if len(around) != len(more) or len(packed) != len(more) * width * 4 or len(targets) + len(more) > wanted:
                raise AnswerShapeError(f"{len(more)} rows of {width} log-probabilities in {len(packed):,} bytes, "
                                       f"where {wanted - len(targets)} rows are left ({where})")
            block = torch.frombuffer(bytearray(packed), dtype=torch.float32).view(len(more), width)
            if bool(torch.isnan(block).any()) or bool((block > FIGURE_SLACK).any()):
                raise AnswerShapeError(f"an impossible log-probability at {where} (NaN or above 0)")
            rows[len(targets):len(targets) + len(more)] = block
            targets += more
            contexts += around
        else:
            raise AnswerShapeError("an answer that ends without its end line (cut short)")
        if len(targets) != wanted:
            raise AnswerShapeError(f"{len(targets)} rows where {wanted} go")
    return rows, targets, contexts
