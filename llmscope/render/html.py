"""--html: one self-contained page per result, the command's --json document inline (attention weights packed as
float32) with the explore page's own views and stylesheet inlined. No network, no computation, no printing."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from llmscope.core.errors import UsageError
from llmscope.core.model_info import ModelInfo

# Nothing may leave the file: no fetch, no image, no font, no frame; only its own inline script and style run.
POLICY = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:"
VIEW_SCRIPTS = ("views.js", "whatif.js")  # inlined in order: whatif.js adds its view to views.js's documents


def asset_text(name: str) -> str:
    """One of the explore page's files, as shipped in the package (llmscope/server/page)."""
    from importlib import resources

    return resources.files("llmscope.server").joinpath("page", name).read_text(encoding="utf-8")


def html_document(command: str, info: ModelInfo | None, payload: Any, **extra: Any) -> dict[str, Any]:
    """The --json document of a result (json_document), with the keys a view needs beyond it."""
    from llmscope.render.display import json_document

    document = json_document(command, info, payload)
    document.update(extra)
    return document


def html_page(document: dict[str, Any]) -> str:
    """The page: inline stylesheet, inline data (JSON in a script element, '<' escaped) and the inline views."""
    data = json.dumps(document, ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    title = html.escape(f"llmscope {document.get('command', '')} · {document.get('model') or ''}")
    return (f'<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta http-equiv="Content-Security-Policy" content="{POLICY}">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{title}</title>\n'
            f'<link rel="icon" href="data:,">\n<style>\n{asset_text("style.css")}</style>\n</head>\n<body>\n'
            f'<div id="app"></div>\n<script type="application/json" id="llmscope-data">{data}</script>\n'
            + "".join(f"<script>\n{asset_text(name)}</script>\n" for name in VIEW_SCRIPTS)
            + "</body>\n</html>\n")


def record_file(folder: Path, keys: dict[str, Any]) -> Path:
    """A --batch record's page in the folder: its index, and its id when it has one ('0003-my-id.html')."""
    name = f"{int(keys.get('index', 0)):04d}"
    if keys.get("id") is not None:
        name += "-" + re.sub(r"[^A-Za-z0-9._-]+", "_", str(keys["id"]))[:80]
    return folder / f"{name}.html"


def write_html(display: Any, target: Path, document: dict[str, Any], keys: dict[str, Any] | None = None) -> Path:
    """Write the page to `target` (with --batch keys: a page in the folder `target`) and say where on stderr."""
    if keys:
        target.mkdir(parents=True, exist_ok=True)
        path = record_file(target, keys)
        document = {**{k: v for k, v in keys.items()}, **document}
    else:
        path = target
    try:
        path.write_text(html_page(document), encoding="utf-8")
    except OSError as error:
        raise UsageError(f"cannot write --html {path}: {error.strerror or error}") from None
    if not keys:
        display.status(f"wrote {path}")
    return path


def result_document(command: str, info: ModelInfo | None, result: Any, show_probs: str | None = None
                    ) -> dict[str, Any]:
    """The document a command's --html page carries: its --json payload (attention's weights packed as float32;
    generate's tokens with their probability and entropy, which --show-probs colours by)."""
    from llmscope.core.model_info import to_plain

    if command == "attention":
        from llmscope.core.floatpack import packed_attention

        return html_document(command, info, packed_attention(to_plain(result)))
    if command == "attribute":
        from llmscope.render.attribution import attribution_payload

        return html_document(command, info, attribution_payload(result))
    if command == "score":
        from llmscope.render.scoring import score_payload

        return html_document(command, info, score_payload(result))
    if command == "compare":
        from llmscope.render.scoring import compare_payload

        return html_document(command, info, compare_payload(result))
    if command == "what-if":
        from llmscope.render.whatif import whatif_payload

        return html_document(command, info, whatif_payload(result))
    if command == "generate":
        from llmscope.render.generation import generation_payload

        tokens = [{"index": t.index, "token_id": t.token_id, "text": t.text, "probability": t.probability,
                   "logprob": t.logprob, "entropy": t.entropy} for t in result.tokens]
        return html_document(command, info, generation_payload(result, False, False), tokens=to_plain(tokens),
                             show_probs=show_probs or "probability")
    return html_document(command, info, result)


def save_html(display: Any, target: Path | None, command: str, info: ModelInfo | None, result: Any,
              keys: dict[str, Any] | None = None, show_probs: str | None = None) -> None:
    """--html for one result (nothing without a target); with --batch keys, one page per record in the folder."""
    if target is not None:
        write_html(display, target, result_document(command, info, result, show_probs), keys)
