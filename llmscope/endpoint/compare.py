"""compare --against-endpoint: model B's full log-probability rows from `llmscope serve` (its logprobs route), as
the chunks comparison.compare_texts reads for a local model. It imports torch (model A runs locally anyway)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from llmscope.core.results import ModelInfo
from llmscope.endpoint.client import Client, EndpointError, EndpointSettings, NoSuchRoute


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


def remote_chunks(settings: EndpointSettings, text: str, score_settings: Any) -> tuple[RemoteModel, Any]:
    """Model B, and a function (ids, plan, next_token) -> B's LogprobChunks that asks the server once."""
    client = Client(settings)
    remote = RemoteModel(settings.base)

    def chunks(ids: tuple[int, ...], plan: list[tuple[int, int, int]], next_token: bool) -> Iterator[Any]:
        import torch

        from llmscope.endpoint.results import from_plain
        from llmscope.inspection.scoring import LogprobChunk

        body = {"text": text, "options": asdict(score_settings), "ids": list(ids), "plan": [list(w) for w in plan],
                "next_token": next_token}
        try:
            document = client.call("/llmscope/v1/logprobs", body)
        except NoSuchRoute:
            raise EndpointError("compare --against-endpoint needs `llmscope serve`: the KL needs model B's whole "
                                "distribution at every position, which OpenAI-compatible servers do not send") from None
        remote.info = from_plain(ModelInfo, document["model_info"])
        result = document["result"]
        rows = torch.frombuffer(bytearray(base64.b64decode(result["rows_base64"])), dtype=torch.float32)
        rows = rows.view(len(result["targets"]), result["vocab"])
        targets, contexts, at = list(result["targets"]), list(result["contexts"]), 0
        for size in block_sizes(len(ids), plan, next_token):
            yield LogprobChunk(targets=targets[at:at + size], contexts=contexts[at:at + size],
                               logprobs=rows[at:at + size])
            at += size

    return remote, chunks
