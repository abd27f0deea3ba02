"""--batch input read by the library: the format decided by the first line, bad lines and unwritable ids as
error records, and one failing record that does not abort the rest."""

from __future__ import annotations

from helpers.cli import RUNTIME


def test_batch_format_is_decided_by_the_first_line_and_bad_json_lines_are_errors() -> None:
    from llmscope.cli.batch import parse_items

    truncated = '{"id": 1, "prompt": "The capital of France is"}\n{"id": 2, "prompt": "The capital of It'
    items = parse_items(truncated)
    assert [(item.id, item.prompt, item.problem is None) for item in items] == [
        (1, "The capital of France is", True), (None, "", False)]
    assert "line 2" in items[1].problem and "not JSON" in items[1].problem
    mixed = parse_items('\n{"prompt": "a"}\n[1, 2]\n{"prompt": "b"\n')
    assert [item.prompt for item in mixed] == ["a", "", ""]
    assert "line 3" in mixed[1].problem and "line 4" in mixed[2].problem
    with_bom = parse_items('\ufeff{"id": "x", "prompt": "Hello"}\n')
    assert [(item.id, item.prompt, item.problem) for item in with_bom] == [("x", "Hello", None)]
    plain = parse_items('\ufeffHello\n{"prompt": "not json here"}\n')
    assert [item.prompt for item in plain] == ["Hello", '{"prompt": "not json here"}']


def test_records_whose_id_cannot_be_written_are_errors_not_aborts() -> None:
    from llmscope.cli.batch import parse_items

    nested = '{"prompt": "a", "id": ' + "[" * 100_000 + "]" * 100_000 + "}"
    lines = ['{"prompt": "a", "id": 1e400}', '{"prompt": "a", "id": ' + "7" * 5000 + "}", nested,
             '{"prompt": "a", "id": {"x": 1}}', '{"prompt": "ok", "id": 12345678901234567890}']
    items = parse_items("\n".join(lines) + "\n")
    assert [item.problem is None for item in items] == [False, False, False, False, True]
    assert all(f"line {i + 1}" in item.problem for i, item in enumerate(items[:4]))
    assert items[4].id == 12345678901234567890


def test_one_failing_record_does_not_abort_the_batch() -> None:
    from llmscope.cli.batch import BatchItem, run_batch

    items = [BatchItem(i, p) for i, p in enumerate(["a", "bad", "c", "d"])]

    def run_chunk(prompts: list[str]) -> list[str]:
        if "bad" in prompts:
            raise IndexError("index out of range in self")
        return [p.upper() for p in prompts]

    outcomes = list(run_batch(items, 4, prepare=lambda item: item.prompt, run_chunk=run_chunk))
    assert [o.result for o in outcomes] == ["A", None, "C", "D"]
    assert outcomes[1].error is not None and "IndexError" in outcomes[1].error and outcomes[1].exit_code == RUNTIME
