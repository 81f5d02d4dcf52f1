"""The text side (tokens, messages, trim, memory, stores, text CLI) never imports torch."""

from __future__ import annotations

import subprocess
import sys


def test_text_side_does_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import contextwindow, contextwindow.tokens, contextwindow.messages, contextwindow.trim\n"
        "import contextwindow.memory, contextwindow.stores, contextwindow.samples\n"
        "from contextwindow.cli import main\n"
        "main(['count', '--text', '-'])\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], input="hello", capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout


def test_top_level_exports_summary_memories_without_torch_or_openai() -> None:
    code = (
        "import sys\n"
        "import contextwindow\n"
        "from contextwindow import (SummaryBufferMemory, SummaryMemory, Summarizer,\n"
        "    KeyFactsSummarizer, CombinedSummarizer, FunctionSummarizer, OpenAISummarizer,\n"
        "    TransformersSummarizer)\n"
        "assert all(hasattr(contextwindow, name) for name in contextwindow.__all__)\n"
        "assert {'SummaryBufferMemory', 'SummaryMemory', 'KeyFactsSummarizer'} <= "
        "set(contextwindow.__all__)\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'openai') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout
