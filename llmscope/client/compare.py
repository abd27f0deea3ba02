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
    """Model B, and a function (ids, plan, next_token) -> B's LogprobChunks that asks the server once. vocab (model
    A's logits per row) sizes the answer's cap; B must have the same."""
    client = Client(settings)
    remote = RemoteModel(settings.base)

    def chunks(ids: tuple[int, ...], plan: list[tuple[int, int, int]], next_token: bool) -> Iterator[Any]:
        import torch

        from llmscope.client.answers import AnswerShapeError, from_plain, reading_answer
        from llmscope.inspection.scoring import LogprobChunk

        sizes = block_sizes(len(ids), plan, next_token)
        body = {"text": text, "options": asdict(score_settings), "ids": list(ids), "plan": [list(w) for w in plan],
                "next_token": next_token}
        cap = answer_bytes(sum(sizes), vocab) if vocab else MAX_ANSWER_BYTES
        try:
            document = client.call(LOGPROBS_ROUTE, body, max_bytes=max(cap, MAX_ANSWER_BYTES))
        except NoSuchRoute:
            raise _not_llmscope() from None
        with reading_answer(settings.base, LOGPROBS_ROUTE):
            if "model_info" not in document or not isinstance(document.get("result"), dict):
                raise AnswerShapeError("no 'model_info' and 'result' object in the answer")
            remote.info = replace(from_plain(ModelInfo, document["model_info"], "model_info"), endpoint=settings.base,
                                  server=LLMSCOPE_SERVER)
            result = document["result"]
            targets = from_plain(tuple[int, ...], result.get("targets"), "result.targets")
            contexts = from_plain(tuple[int, ...], result.get("contexts"), "result.contexts")
            width = from_plain(int, result.get("vocab"), "result.vocab")
            packed = base64.b64decode(from_plain(str, result.get("rows_base64"), "result.rows_base64"), validate=True)
            if len(targets) != sum(sizes) or len(contexts) != len(targets) or width < 1 or (
                    len(packed) != len(targets) * width * 4):
                raise AnswerShapeError(f"{len(targets)} rows of {width} log-probabilities in {len(packed):,} bytes, "
                                       f"where {sum(sizes)} rows go")
            rows = torch.frombuffer(bytearray(packed), dtype=torch.float32).view(len(targets), width)
            if bool(torch.isnan(rows).any()) or bool((rows > FIGURE_SLACK).any()):
                raise AnswerShapeError("an impossible log-probability in result.rows_base64 (NaN or above 0)")
        targets_list, contexts_list, at = list(targets), list(contexts), 0
        for size in sizes:
            yield LogprobChunk(targets=targets_list[at:at + size], contexts=contexts_list[at:at + size],
                               logprobs=rows[at:at + size])
            at += size

    return remote, chunks
