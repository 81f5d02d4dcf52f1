"""Counting a huge text: chunked at places where tiktoken cuts anyway (so exactly the whole
text's tokens), in memory bounded by the input's size, refused above a configurable limit;
and ``count`` says when it waits on a terminal's standard input."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from contextwindow.cli import main
from contextwindow.tokens import get_encoding, text_chunks

# Letters (with accents, marks, CJK), digits, apostrophes and punctuation, every kind of
# whitespace the pre-tokenizers treat apart: where chunk joins could go wrong.
ALPHABET = st.sampled_from(list("aZé\u0301中1 9'’s.!,-_\n\r\t\u00a0 ") + ["  ", "\n\n", "'ll"])
TEXTS = st.lists(ALPHABET, max_size=300).map("".join)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(text=TEXTS, size=st.integers(1, 40), encoding=st.sampled_from(["o200k_base",
                                                                        "cl100k_base"]))
@example(text="ab.\n\ncd  ef 12345 x's\n y", size=1, encoding="o200k_base")
@example(text="ab.\n\ncd  ef 12345 x's\n y", size=1, encoding="cl100k_base")
def test_chunked_tokens_are_the_whole_texts(text: str, size: int, encoding: str) -> None:
    enc = get_encoding(encoding)
    chunks = list(text_chunks(text, size))
    assert "".join(chunks) == text
    assert [t for chunk in chunks for t in enc.encode_ordinary(chunk)] == enc.encode_ordinary(
        text)


def test_chunks_are_cut_near_the_size() -> None:
    text = "word " * 100_000
    chunks = list(text_chunks(text, 10_000))
    assert [len(c) for c in chunks[:3]] == [10_004, 10_005, 10_005]  # cut after a word
    assert "".join(chunks) == text and len(chunks) == 50
    assert list(text_chunks("x" * 50_000, 1_000)) == ["x" * 50_000]  # nowhere to cut


MEASURE = """
import resource, sys
from contextwindow.cli import main
main(["count", sys.argv[2], "--encoding", "o200k_base"])  # warm: imports, the BPE file
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
main(["count", sys.argv[1], "--encoding", "o200k_base"])
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) * 1024, file=sys.stderr)
"""


def test_a_huge_text_counts_in_memory_bounded_by_its_size(tmp_path: Path) -> None:
    line = "It is a truth universally acknowledged, that a single man in possession 1811\n"
    big = tmp_path / "big.txt"
    big.write_text(line * (30_000_000 // len(line)))
    small = tmp_path / "small.txt"
    small.write_text(line)
    result = subprocess.run([sys.executable, "-c", MEASURE, str(big), str(small)],
                            capture_output=True, text=True, check=True)
    per_line = len(get_encoding("o200k_base").encode_ordinary(line))
    assert result.stdout.splitlines() == [str(per_line),
                                          str(per_line * (30_000_000 // len(line)))]
    assert int(result.stderr.split()[-1]) <= 3 * big.stat().st_size


def test_input_above_the_limit_is_refused(tmp_path: Path, capsys, monkeypatch) -> None:
    path = tmp_path / "t.txt"
    path.write_text("x " * 600_000)
    monkeypatch.setenv("CONTEXTWINDOW_MAX_INPUT_MB", "1")
    assert main(["count", str(path)]) == 2
    err = capsys.readouterr().err
    assert "larger than the input limit of 1 MB" in err
    assert "CONTEXTWINDOW_MAX_INPUT_MB" in err
    monkeypatch.setattr(sys, "stdin", io.StringIO("x " * 600_000))
    assert main(["count", "-"]) == 2
    assert "standard input is larger than the input limit" in capsys.readouterr().err
    monkeypatch.setenv("CONTEXTWINDOW_MAX_INPUT_MB", "2")
    assert main(["count", str(path)]) == 0
    assert capsys.readouterr().out == "600001\n"  # "x", then " x" each, then " "


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("command", ["count", "trim"])
def test_waiting_on_a_terminal_says_so(command: str, capsys, monkeypatch) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal(json.dumps([{"role": "user", "content": "hi"}])))
    assert main([command]) == 0
    out = capsys.readouterr()
    assert out.err.startswith("reading from stdin… (end with Ctrl-D, or pass a file)\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi"))  # a pipe: nothing said
    assert main(["count"]) == 0
    assert capsys.readouterr() == ("1\n", "")
