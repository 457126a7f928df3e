"""Messages of the tokens page's readers section when PC/SC cannot list readers."""

from __future__ import annotations

import pytest

from agent.web.readers import NO_PCSC_SERVICE, NO_PYSCARD, READERS_NOT_LISTED, problem_message
from qsign.i18n import translate

pcsc_exceptions = pytest.importorskip("smartcard.pcsc.PCSCExceptions")

SCARD_E_NO_SERVICE = 0x8010001D
SCARD_E_NO_READERS_AVAILABLE = 0x8010002E


def test_no_service_maps_to_pcscd_message() -> None:
    error = pcsc_exceptions.EstablishContextException(SCARD_E_NO_SERVICE)

    assert problem_message(error) == NO_PCSC_SERVICE


def test_other_pcsc_error_maps_to_generic_message() -> None:
    error = pcsc_exceptions.ListReadersException(SCARD_E_NO_READERS_AVAILABLE)

    assert problem_message(error) == READERS_NOT_LISTED


@pytest.mark.parametrize("message", [NO_PYSCARD, NO_PCSC_SERVICE, READERS_NOT_LISTED])
def test_reader_messages_translated(message: str) -> None:
    chinese = translate(message, "zh_CN")

    assert chinese != message
    assert "读卡器" in chinese
    assert translate(message, "en") == message
