"""A GGUF file's tensor table (names, shapes, GGML types, bytes) read straight from its header in milliseconds,
skipping the metadata values. It reads no tensor data, imports no torch and never prints.

gguf's own reader parses every metadata value into Python objects (a 49,152-token vocabulary takes seconds);
deciding how to load a file and counting its bytes need only the tensor table that follows them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

MAGIC = b"GGUF"
# Fixed-size metadata value types of the GGUF format: uint8, int8, uint16, int16, uint32, int32, float32, bool,
# (8 is string, 9 is array), uint64, int64, float64.
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY = 8, 9


@dataclass(frozen=True)
class TensorEntry:
    """One tensor of the file: its GGUF name, shape (rows first, as transformers sees it), type and size."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    nbytes: int


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        length = self.take("<Q")
        text = self.data[self.at:self.at + length].decode("utf-8", errors="replace")
        self.at += length
        return text

    def skip_value(self, kind: int) -> None:
        if kind in _SCALAR_SIZES:
            self.at += _SCALAR_SIZES[kind]
        elif kind == _STRING:
            self.at += 8 + struct.unpack_from("<Q", self.data, self.at)[0]
        elif kind == _ARRAY:
            element, count = self.take("<I"), self.take("<Q")
            if element in _SCALAR_SIZES:
                self.at += _SCALAR_SIZES[element] * count
            elif element == _STRING:  # a vocabulary: tens of thousands of strings, skipped in a tight loop
                at, data, length_of = self.at, self.data, struct.Struct("<Q").unpack_from
                for _ in range(count):
                    at += 8 + length_of(data, at)[0]
                self.at = at
            else:
                for _ in range(count):
                    self.skip_value(element)
        else:
            raise ValueError(f"unknown GGUF value type {kind}")


def read_tensor_table(path: Path) -> list[TensorEntry]:
    """The tensors a GGUF file holds, in file order. Raises ValueError for a file that is not GGUF v2/v3."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb") as handle:
        head = handle.read(24)
        if len(head) < 24 or head[:4] != MAGIC:
            raise ValueError(f"{path.name} is not a GGUF file")
        version, tensors, values = struct.unpack_from("<IQQ", head, 4)
        if version not in (2, 3):
            raise ValueError(f"{path.name} is GGUF version {version}; versions 2 and 3 are read")
        size = 1 << 20
        while True:  # the header is usually a few MB (the vocabulary); read more until it parses
            handle.seek(0)
            data = handle.read(size)
            try:
                return _parse(data, tensors, values, GGML_QUANT_SIZES, GGMLQuantizationType)
            except (struct.error, IndexError):
                if len(data) < size:
                    raise ValueError(f"{path.name}: the GGUF header is cut short") from None
                size *= 4


def _parse(data: bytes, tensors: int, values: int, sizes: dict, types: type) -> list[TensorEntry]:
    cursor = _Cursor(data)
    cursor.at = 24
    for _ in range(values):
        cursor.string()
        cursor.skip_value(cursor.take("<I"))
    table = []
    for _ in range(tensors):
        name = cursor.string()
        dims = [cursor.take("<Q") for _ in range(cursor.take("<I"))]
        kind = types(cursor.take("<I"))
        cursor.take("<Q")  # offset in the data section
        block, block_bytes = sizes[kind]
        count = 1
        for dim in dims:
            count *= dim
        if cursor.at > len(data):
            raise IndexError("past the end")
        table.append(TensorEntry(name, tuple(reversed(dims)), kind.name, count // block * block_bytes))
    return table


def quantized_matrices(path: Path, table: list[TensorEntry] | None = None) -> int:
    """How many 2-D tensors of the file are stored in a quantized (block) type (`table`: read_tensor_table(path)
    when the caller has it already)."""
    return sum(1 for entry in (table if table is not None else read_tensor_table(path)) if len(entry.shape) == 2
               and entry.ggml_type not in ("F32", "F16", "BF16", "F64"))
