"""Every help text of the ``qsign`` command line has a zh_CN translation, and ``--help`` uses it."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from qsign.cli import build_parser
from qsign.i18n import gettext_for

_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "extract_cli_help.py"
_CJK = re.compile(r"[\u4e00-\u9fff]")


def _load_extractor():
    spec = importlib.util.spec_from_file_location("extract_cli_help", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while the script runs
    spec.loader.exec_module(module)
    return module


extract_cli_help = _load_extractor()


def _help_texts() -> list:
    return list(extract_cli_help.iter_help_texts(build_parser("en")))


def test_parser_walk_reaches_subcommands():
    commands = {help_text.command for help_text in _help_texts()}

    assert "qsign" in commands
    assert "qsign sign" in commands
    assert any(command.count(" ") >= 2 for command in commands), commands


@pytest.mark.parametrize("text", extract_cli_help.unique_texts(build_parser("en")))
def test_help_text_has_zh_cn_translation(text):
    translated = gettext_for("zh_CN")(text)

    assert translated != text, f"no zh_CN translation for {text!r}"
    assert _CJK.search(translated), f"zh_CN translation of {text!r} has no Chinese: {translated!r}"
    assert re.findall(r"%\(\w+\)\w", translated) == re.findall(r"%\(\w+\)\w", text)


def _sign_help(language: str) -> str:
    environment = {**os.environ, "QSIGN_LANG": "", "LC_ALL": "", "LANG": ""}
    result = subprocess.run(
        [sys.executable, "-m", "qsign.cli", "--lang", language, "sign", "--help"],
        capture_output=True, text=True, env=environment, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_sign_help_in_chinese():
    output = _sign_help("zh_CN")

    assert output.startswith("用法：qsign sign")
    assert "选项" in output
    assert "显示此帮助信息并退出" in output
    assert "要签名的文件" in output
    assert "show this help message and exit" not in output
    assert "file to sign" not in output


def test_sign_help_in_english():
    output = _sign_help("en")

    assert output.startswith("usage: qsign sign")
    assert "options:" in output
    assert "file to sign" in output
    assert not _CJK.search(output), output


def test_help_language_from_environment():
    environment = {**os.environ, "QSIGN_LANG": "en", "LC_ALL": "", "LANG": "zh_CN.UTF-8"}
    result = subprocess.run(
        [sys.executable, "-m", "qsign.cli", "sign", "--help"],
        capture_output=True, text=True, env=environment, timeout=60, check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: qsign sign")


def test_chinese_help_fits_terminal_width():
    environment = {**os.environ, "QSIGN_LANG": "", "LC_ALL": "", "LANG": "", "COLUMNS": "80"}
    result = subprocess.run(
        [sys.executable, "-m", "qsign.cli", "--lang", "zh_CN", "verify", "--help"],
        capture_output=True, text=True, env=environment, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr

    # The usage block is skipped: argparse counts the wide "用法：" prefix as three columns.
    body = result.stdout.split("\n\n", 1)[1]
    for line in body.splitlines():
        width = sum(2 if unicodedata.east_asian_width(character) in "WF" else 1 for character in line)
        assert width <= 80, f"{width} columns: {line!r}"


@pytest.mark.parametrize(("arguments", "chinese", "english"), [
    (["sign", "in.pdf", "-o", "out.pdf", "--level", "X"], "参数 --level：无效的选择：'X'",
     "argument --level: invalid choice: 'X'"),
    (["sign"], "缺少以下必需参数：FILE, -o/--output", "the following arguments are required: FILE, -o/--output"),
    (["sign", "in.pdf", "-o", "out.pdf", "--page", "x"], "参数 --page：无效的 int 值：'x'",
     "argument --page: invalid int value: 'x'"),
    (["sign", "in.pdf", "-o", "out.pdf", "--bogus"], "无法识别的参数：--bogus", "unrecognized arguments: --bogus"),
    (["nosuch"], "参数 COMMAND：无效的选择：'nosuch'", "argument COMMAND: invalid choice: 'nosuch'"),
])
def test_usage_errors_in_both_languages(arguments, chinese, english):
    """argparse's own error lines come from the qsign catalogs, like the help texts."""
    outputs = {}
    for language in ("zh_CN", "en"):
        result = subprocess.run([sys.executable, "-m", "qsign.cli", *arguments, "--lang", language],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, result.stderr
        outputs[language] = result.stderr.splitlines()[-1]

    assert "：错误：" in outputs["zh_CN"]
    assert chinese in outputs["zh_CN"]
    assert ": error: " in outputs["en"]
    assert english in outputs["en"]
    assert not _CJK.search(outputs["en"])
