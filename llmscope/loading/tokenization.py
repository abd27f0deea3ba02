"""Tokenize text and decode ids with a model's tokenizer, returning plain results (ids, pieces, spans).
It never loads model weights and never prints; the prompt/chat-template handling here is shared by all commands."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from llmscope.core.errors import UsageError


@dataclass(frozen=True)
class TokenPiece:
    """One token: its id, the vocabulary string, the text it decodes to, and where it sits in the input."""

    position: int
    token_id: int
    piece: str  # the vocabulary entry, e.g. "Ġcapital" for byte-level BPE
    text: str  # what the token decodes to on its own, e.g. " capital"
    start: int | None  # character span in the tokenized text (None for added special tokens)
    end: int | None
    special: bool
    # Hex bytes ("F0 9F") when the token holds only part of a UTF-8 character (byte fallback, byte-level BPE);
    # then `text` is U+FFFD and the span is empty unless this token completes the character.
    partial_bytes: str | None = None


@dataclass(frozen=True)
class TokenizationResult:
    model: str
    text: str  # the text that was tokenized (after the chat template when chat=True)
    tokens: tuple[TokenPiece, ...]
    token_count: int
    characters: int
    characters_per_token: float
    special_tokens_added: tuple[str, ...]
    chat_template_applied: bool
    vocab_size: int

    @property
    def ids(self) -> list[int]:
        return [token.token_id for token in self.tokens]


@dataclass(frozen=True)
class DecodeResult:
    model: str
    ids: tuple[int, ...]
    text: str
    pieces: tuple[str, ...]


class LightTokenizer:
    """The part of a transformers tokenizer that `tokenize` needs, on the `tokenizers` library alone (no torch).

    Used only for tokenizer.json files that transformers itself wrote (the conversion cache), so that ids,
    special tokens and offsets are the ones transformers' tokenizer gives; chat templates need transformers.
    """

    is_fast = True
    chat_template = None

    def __init__(self, folder: str) -> None:
        import json
        from pathlib import Path

        from tokenizers import Tokenizer

        self._backend = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
        config_path = Path(folder) / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        self.added_tokens_decoder = {
            token.id if hasattr(token, "id") else int(index): token
            for index, token in self._backend.get_added_tokens_decoder().items()}
        declared = [config.get(name) for name in ("bos_token", "eos_token", "unk_token", "pad_token")]
        self.all_special_ids = sorted({self._backend.token_to_id(t) for t in declared if isinstance(t, str)}
                                      - {None})

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def __call__(self, text: str, add_special_tokens: bool = True, return_offsets_mapping: bool = False
                 ) -> dict[str, list]:
        encoding = self._backend.encode(text, add_special_tokens=add_special_tokens)
        result: dict[str, list] = {"input_ids": list(encoding.ids)}
        if return_offsets_mapping:
            result["offset_mapping"] = [tuple(span) for span in encoding.offsets]
        return result

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self._backend.id_to_token(int(i)) for i in ids]

    def decode(self, ids: list[int], skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool = False
               ) -> str:
        return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def vocabulary_size(tokenizer: Any) -> int:
    """Ids the tokenizer can produce, added tokens included."""
    return len(tokenizer)


def special_token_ids(tokenizer: Any) -> set[int]:
    """Ids of the declared special tokens and of added tokens marked special (e.g. <|im_start|>)."""
    ids = set(tokenizer.all_special_ids)
    for token_id, added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).items():
        if getattr(added, "special", False):
            ids.add(int(token_id))
    return ids


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def apply_chat_template(tokenizer: Any, prompt: str, system: str | None = None) -> str:
    """The prompt wrapped as one user turn (after an optional system turn), ready for the assistant's answer."""
    if not has_chat_template(tokenizer):
        raise UsageError("this tokenizer has no chat template", hint="drop --chat (or pass --no-chat)")
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    cap = MAX_TEMPLATE_CHARS + 2 * (len(prompt) + len(system or ""))
    try:
        with _capped_rendering(tokenizer, cap):
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except _TemplateTooLong:
        raise UsageError(f"the model's chat template rendered more than {cap:,} characters (the cap is "
                         f"{MAX_TEMPLATE_CHARS:,} plus twice the prompt)", hint=NO_CHAT_HINT) from None
    except (OverflowError, RecursionError, MemoryError) as error:  # range(10**9), runaway recursion in jinja
        raise UsageError(f"the model's chat template failed: {type(error).__name__}: {error}",
                         hint=NO_CHAT_HINT) from None


MAX_TEMPLATE_CHARS = 1_000_000  # what a chat template may add around the prompt and system message
NO_CHAT_HINT = "pass --no-chat to use the raw prompt"


class _TemplateTooLong(Exception):
    pass


@contextlib.contextmanager
def _capped_rendering(tokenizer: Any, cap: int) -> Iterator[None]:
    """While the template renders, stop it once its output passes `cap` characters, before it fills the memory
    (transformers joins the whole output at once). Without transformers' compiled template, no cap."""
    try:
        from transformers.utils.chat_template_utils import _compile_jinja_template

        template = tokenizer.get_chat_template()
        compiled = _compile_jinja_template(template)
    except Exception:  # another transformers, or a template that does not compile (reported by the render)
        yield
        return

    def render(*args: Any, **kwargs: Any) -> str:
        pieces, held = [], 0
        for piece in compiled.generate(*args, **kwargs):
            held += len(piece)
            if held > cap:
                raise _TemplateTooLong
            pieces.append(piece)
        return "".join(pieces)

    compiled.render = render
    try:
        yield
    finally:
        del compiled.render


def prompt_ids(tokenizer: Any, prompt: str, chat: bool = False, system: str | None = None,
               add_special_tokens: bool = True) -> tuple[str, list[int]]:
    """Encode a prompt the way generation sees it: (text actually tokenized, token ids).

    With chat=True the template already holds its special tokens, so none are added on top.
    """
    if chat:
        text = apply_chat_template(tokenizer, prompt, system)
        return text, list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return prompt, list(tokenizer(prompt, add_special_tokens=add_special_tokens)["input_ids"])


def tokenize_text(tokenizer: Any, text: str, model_name: str = "", add_special_tokens: bool = True,
                  chat: bool = False, system: str | None = None) -> TokenizationResult:
    """Split text into tokens with ids, vocabulary pieces, decoded text and character spans."""
    source, ids = prompt_ids(tokenizer, text, chat=chat, system=system, add_special_tokens=add_special_tokens)
    spans: list[tuple[int, int] | None] = [None] * len(ids)
    if getattr(tokenizer, "is_fast", False):
        encoded = tokenizer(source, add_special_tokens=add_special_tokens and not chat, return_offsets_mapping=True)
        if list(encoded["input_ids"]) == ids:
            spans = [tuple(span) for span in encoded["offset_mapping"]]
    special_ids = special_token_ids(tokenizer)
    added = _added_special_tokens(tokenizer, source, ids) if add_special_tokens and not chat else ()
    added_positions = _added_positions(tokenizer, source, ids) if added else set()
    pieces = tokenizer.convert_ids_to_tokens(ids)
    raw = [_token_bytes(tokenizer, str(piece)) for piece in pieces]
    spans = _no_overlaps(source, _split_shared_spans(source, spans, raw), [str(piece) for piece in pieces],
                         added_positions)
    tokens = []
    for position, (token_id, piece) in enumerate(zip(ids, pieces)):
        span = spans[position]
        is_added = position in added_positions
        held = raw[position]
        tokens.append(TokenPiece(
            position=position, token_id=int(token_id), piece=str(piece),
            text=tokenizer.decode([token_id], skip_special_tokens=False, clean_up_tokenization_spaces=False),
            start=None if span is None or is_added else int(span[0]),
            end=None if span is None or is_added else int(span[1]),
            special=token_id in special_ids,
            partial_bytes=held.hex(" ").upper() if held is not None and not _whole_utf8(held) else None))
    count = len(tokens)
    return TokenizationResult(
        model=model_name, text=source, tokens=tuple(tokens), token_count=count, characters=len(source),
        characters_per_token=round(len(source) / count, 3) if count else 0.0,
        special_tokens_added=added, chat_template_applied=chat, vocab_size=vocabulary_size(tokenizer))


def _byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE maps each byte to a printable character; this is the reverse map."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(char): byte for byte, char in zip(printable, chars)}


_BYTE_LEVEL = _byte_level_alphabet()
_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _is_byte_level(tokenizer: Any) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None) or getattr(tokenizer, "_backend", None)
    decoder = getattr(backend, "decoder", None)
    return decoder is not None and "ByteLevel" in type(decoder).__name__


def _token_bytes(tokenizer: Any, piece: str) -> bytes | None:
    """The bytes a vocabulary piece stands for: <0xF0> byte-fallback pieces and byte-level BPE pieces; else None."""
    match = _BYTE_PIECE.match(piece)
    if match:
        return bytes([int(match.group(1), 16)])
    if piece and all(char in _BYTE_LEVEL for char in piece) and _is_byte_level(tokenizer):
        return bytes(_BYTE_LEVEL[char] for char in piece)
    return None


def _whole_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _split_shared_spans(text: str, spans: list, raw: list[bytes | None]) -> list:
    """Tokens that share one character (its UTF-8 bytes split between them) get spans that do not overlap:
    the character belongs to the token that holds its last byte; the others get an empty span before it."""
    result = list(spans)
    position = 0
    while position < len(spans):
        span = spans[position]
        group_end = position + 1
        while group_end < len(spans) and span is not None and spans[group_end] == span:
            group_end += 1
        group = raw[position:group_end]
        if group_end - position > 1 and all(b is not None for b in group):
            start, end = int(span[0]), int(span[1])
            if b"".join(group) == text[start:end].encode("utf-8"):  # type: ignore[arg-type]
                char_ends = []  # byte offset where each character of the span ends
                consumed = 0
                for char in text[start:end]:
                    consumed += len(char.encode("utf-8"))
                    char_ends.append(consumed)
                done_bytes = 0
                done_chars = 0
                for index in range(position, group_end):
                    done_bytes += len(raw[index])  # type: ignore[arg-type]
                    completed = sum(1 for mark in char_ends if mark <= done_bytes)
                    result[index] = (start + done_chars, start + completed)
                    done_chars = completed
        position = group_end
    return result


def _no_overlaps(text: str, spans: list, pieces: list[str], skipped: set[int]) -> list:
    """Spans that never overlap, in token order: a word-boundary marker the tokenizer added ("▁" before the first
    word, which reports that word's first character) gets an empty span where it stands; any other token that
    starts inside the one before starts where that one ends."""
    result = list(spans)
    end = 0
    for position, span in enumerate(spans):
        if span is None or position in skipped:
            continue
        start, stop = int(span[0]), int(span[1])
        if not pieces[position].strip("▁Ġ") and not text[start:stop].isspace():
            start = stop = max(start, end)
        elif start < end:
            start = min(end, stop)
        result[position] = (start, max(start, stop))
        end = max(end, result[position][1])
    return result


def _added_positions(tokenizer: Any, text: str, ids: list[int]) -> set[int]:
    plain = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    for start in range(len(ids) - len(plain) + 1):
        if ids[start:start + len(plain)] == plain:
            return set(range(start)) | set(range(start + len(plain), len(ids)))
    return set()


def _added_special_tokens(tokenizer: Any, text: str, ids: list[int]) -> tuple[str, ...]:
    positions = _added_positions(tokenizer, text, ids)
    return tuple(tokenizer.convert_ids_to_tokens([ids[p] for p in sorted(positions)]))


_ID_SEPARATORS = re.compile(r"[\s,]+")
_ASCII_INTEGER = re.compile(r"-?[0-9]+")


def parse_id_list(text: str, vocab_size: int) -> list[int]:
    """Parse "504 3575,282" or "[504, 3575]" into ids, checking each is inside the vocabulary."""
    body = text.strip().removeprefix("[").removesuffix("]").strip()
    if not body:
        raise UsageError("--decode got no token ids", hint='pass ids like "504 3575 282"')
    ids = []
    for item in _ID_SEPARATORS.split(body):
        if not item:
            continue
        if not _ASCII_INTEGER.fullmatch(item):  # str.isdigit and int() take ² and ٣ too
            raise UsageError(f"--decode: {item!r} is not a token id", hint='pass integers like "504 3575 282"')
        value = int(item) if len(item) <= 20 else vocab_size  # int() refuses 4,300 digits and more
        if not 0 <= value < vocab_size:
            shown = item if len(item) <= 20 else f"{item[:8]}… ({len(item)} digits)"
            raise UsageError(f"--decode: id {shown} is outside the vocabulary (0 to {vocab_size - 1})")
        ids.append(value)
    return ids


def decode_ids(tokenizer: Any, ids: list[int], model_name: str = "", skip_special_tokens: bool = False
               ) -> DecodeResult:
    """Turn token ids back into text, with each id's vocabulary piece."""
    text = tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False)
    return DecodeResult(model=model_name, ids=tuple(ids), text=text,
                        pieces=tuple(str(p) for p in tokenizer.convert_ids_to_tokens(ids)))


def token_bytes(tokenizer: Any, token_id: int) -> tuple[int, ...]:
    """The bytes one token really holds: a byte-fallback piece (<0xF0>) or a byte-level piece may hold part of a
    UTF-8 character, which decoding it alone would turn into U+FFFD."""
    held = _token_bytes(tokenizer, str(tokenizer.convert_ids_to_tokens([token_id])[0]))
    if held is not None:
        return tuple(held)
    return tuple(tokenizer.decode([token_id], skip_special_tokens=False,
                                  clean_up_tokenization_spaces=False).encode("utf-8"))
