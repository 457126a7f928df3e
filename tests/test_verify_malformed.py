"""Malformed and hostile input: an error code or a report, never a crash; every validation is bounded.

The files go through ``qsign verify`` (which validates in a child process) and through the HTTP service.
"""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest
import verify_malformed as malformed
from verify_pki import TestPki, real_pdf, signed_pdf, test_pki, verify_state, write_state_dir  # noqa: F401

from qsign.cli import main
from qsign.config import load_config
from verify_service.errors import ValidationMemoryExceeded, ValidationTimeout
from verify_service.sandbox import Limits, verify_isolated
from verify_service.server import start_server
from verify_service.settings import service_settings
from verify_service.trust import trust_from_config

# (name, builder, exit code of qsign verify, error code of the answer or of the report)
MALFORMED = [
    ("broken_xref", lambda: malformed.broken_xref(real_pdf("xtu.pdf").read_bytes()), 2, "pdf_malformed"),
    ("object_stream_loop", malformed.object_stream_loop, 2, "pdf_malformed"),
    ("reference_loop", malformed.reference_loop, 2, "pdf_malformed"),
    ("circular_field_tree", malformed.circular_field_tree, 2, "pdf_malformed"),
    ("circular_page_tree", malformed.circular_page_tree, 1, "no_signatures"),
]


def _code(output: dict) -> str:
    return output["error"]["code"] if "error" in output else output["errors"][0]


@pytest.mark.parametrize(("name", "build", "exit_code", "code"), MALFORMED, ids=[case[0] for case in MALFORMED])
def test_malformed_cli(capsys, name: str, build, exit_code: int, code: str, verify_state: Path,
                       tmp_path: Path) -> None:
    path = tmp_path / f"{name}.pdf"
    path.write_bytes(build())

    result = main(["verify", str(path), "--state-dir", str(verify_state), "--json"])

    captured = capsys.readouterr()
    assert result == exit_code
    assert _code(json.loads(captured.out)) == code
    assert "Traceback" not in captured.err


def test_several_files_table_and_json(capsys, signed_pdf: Path, verify_state: Path, tmp_path: Path) -> None:
    """Several files at once: one answer per file, exit code 2 because one file is unreadable."""
    broken = tmp_path / "loop.pdf"
    broken.write_bytes(malformed.reference_loop())
    files = [str(signed_pdf), str(broken)]

    table_exit = main(["verify", *files, "--state-dir", str(verify_state), "--lang", "en"])
    table = capsys.readouterr().out
    json_exit = main(["verify", *files, "--state-dir", str(verify_state), "--json"])
    output = json.loads(capsys.readouterr().out)

    assert table_exit == json_exit == 2
    assert "TOTAL_PASSED (passed)" in table
    assert "error [pdf_malformed]" in table
    assert output["verdict"] == "INDETERMINATE"
    assert output["files"][0]["report"]["verdict"] == "TOTAL_PASSED"
    assert output["files"][1]["error"]["code"] == "pdf_malformed"


def test_several_valid_files_exit_zero(capsys, signed_pdf: Path, verify_state: Path) -> None:
    exit_code = main(["verify", str(signed_pdf), str(signed_pdf), "--state-dir", str(verify_state), "--json"])

    output = json.loads(capsys.readouterr().out)
    assert exit_code == 0
    assert output["verdict"] == "TOTAL_PASSED"
    assert [item["report"]["verdict"] for item in output["files"]] == ["TOTAL_PASSED", "TOTAL_PASSED"]


def test_time_limit_stops_validation(signed_pdf: Path) -> None:
    with pytest.raises(ValidationTimeout) as caught:
        verify_isolated(signed_pdf, limits=Limits(timeout_seconds=0.001, memory_mb=1024))

    assert caught.value.code == "validation_timeout"


def test_memory_limit_stops_validation(signed_pdf: Path) -> None:
    """64 MiB of address space is less than the forked interpreter already maps, so any allocation fails."""
    with pytest.raises(ValidationMemoryExceeded) as caught:
        verify_isolated(signed_pdf, limits=Limits(timeout_seconds=60, memory_mb=64))

    assert caught.value.code == "validation_memory_exceeded"


@pytest.mark.parametrize(("name", "build", "status", "code"), [
    ("object_stream_loop", malformed.object_stream_loop, 422, "pdf_malformed"),
    ("truncated", lambda: real_pdf("xtu.pdf").read_bytes()[:3000], 422, "pdf_malformed"),
    ("wrong_type", lambda: b"GIF89a not a document", 415, "not_a_pdf"),
])
async def test_malformed_http(name: str, build, status: int, code: str, test_pki: TestPki, tmp_path: Path) -> None:
    state = write_state_dir(tmp_path / "state", test_pki)
    config = load_config(state)
    runner, url = await start_server(service_settings(config, trust_from_config(config)), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/v1/verify", data=build(),
                                    headers={"Content-Type": "application/pdf"}) as response:
                body = await response.json()
            async with session.get(f"{url}/healthz") as health:
                assert health.status == 200
    finally:
        await runner.cleanup()

    assert (response.status, body["code"]) == (status, code)


async def test_http_timeout_answers_422(signed_pdf: Path, test_pki: TestPki, tmp_path: Path) -> None:
    state = write_state_dir(tmp_path / "state", test_pki, "\n[verify_service]\ntimeout_seconds = 0.001\n")
    config = load_config(state)
    runner, url = await start_server(service_settings(config, trust_from_config(config)), "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.post(f"{url}/api/v1/verify", data=signed_pdf.read_bytes(),
                                    headers={"Content-Type": "application/pdf", "Accept-Language": "en"}) as response:
                body = await response.json()
    finally:
        await runner.cleanup()

    assert (response.status, body["code"]) == (422, "validation_timeout")
