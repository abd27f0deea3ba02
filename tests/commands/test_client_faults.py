"""Faults a new user met (issue 28, items 21, 23, 24): --contrast / --target mismatches found with the tokenizer
alone, before the model loads; a text's bytes are its text however it is passed (argument, --file, stdin); titles
wrap at spaces and after a path's '/', never inside a name, at 80 columns."""

from __future__ import annotations

from pathlib import Path

TEXT = "The capital of France is Paris.\n"


def test_contrast_mismatch_is_refused_before_the_model_loads(cli, tiny_model_dir: Path) -> None:
    given = cli("attribute", "Hello world", "-m", tiny_model_dir, "--target", " a", "--contrast", " a b c d e f")
    assert given.exit_code == 2 and "error: --contrast ' a b c d e f' is" in given.stderr
    assert "loaded" not in given.stderr  # the tokenizer alone found it
    greedy = cli("attribute", "Hello world", "-m", tiny_model_dir, "-n", "2", "--contrast", " a b c d e f",
                 "--method", "occlusion")
    assert greedy.exit_code == 2 and "but the target is 2" in greedy.stderr and "loaded" not in greedy.stderr


def test_a_text_keeps_its_final_newline_however_it_is_passed(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "text.txt"
    path.write_bytes(TEXT.encode())
    runs = {"argument": cli("score", TEXT, "-m", tiny_model_dir, "--json"),
            "file": cli("score", "-f", path, "-m", tiny_model_dir, "--json"),
            "stdin": cli("score", "-", "-m", tiny_model_dir, "--json", input=TEXT)}
    documents = {how: run.json() for how, run in runs.items()}
    assert {how: d["text"] for how, d in documents.items()} == dict.fromkeys(runs, TEXT)
    assert len({tuple(d["token_ids"]) for d in documents.values()}) == 1
    tokenized = cli("tokenize", "-", "-m", tiny_model_dir, "--json", input=TEXT)
    as_argument = cli("tokenize", TEXT, "-m", tiny_model_dir, "--json")
    assert tokenized.json() == as_argument.json()
    assert "final newline" in cli("score", "--help").stdout


def test_a_long_model_path_is_not_broken_inside_a_name(cli, tiny_model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / ("models-kept-in-a-folder-whose-name-is-long-enough-to-wrap-" * 1)
    folder.mkdir()
    name = "SmolLM2-135M-Instruct.Q4_1-a-tiny-random-copy-for-the-wrapping-test"
    (folder / name).symlink_to(tiny_model_dir, target_is_directory=True)
    result = cli("score", "Hello world", "-m", folder / name, env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.stderr
    title = next(n for n, line in enumerate(result.stdout.splitlines()) if line.startswith("Score under"))
    lines = result.stdout.splitlines()[title:title + 4]
    assert name in [line.strip() for line in lines], lines  # the name whole, on its own line
    assert all(len(line) <= 80 for line in lines)


def test_compare_labels_each_side_by_its_weights(cli, tiny_model_dir: Path) -> None:
    args = ["compare", "Hello world, hello again.", "-m", tiny_model_dir, "--against-quantize", "int8"]
    document = cli(*args, "--json").json()
    assert document["weights_a"] == "float32" and document["weights_b"].startswith("int8")
    assert document["endpoint_b"] is None
    human = cli(*args, env={"COLUMNS": "200"})
    assert human.exit_code == 0, human.stderr
    assert f"B = {tiny_model_dir} ({document['weights_b']})" in human.stdout
    assert f"A = {tiny_model_dir} (float32)" in human.stdout
