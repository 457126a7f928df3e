"""PAdES signatures over the virtual card: OpenSC, pcscd and vpcd, libcacard, checked by pyHanko's validator."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from helpers.card_rig import (OFFICER_READER, card_certificate, card_pin, card_rig, empty_readers,  # noqa: F401
                              new_source)
from helpers.signing_checks import validate_pdf
from qsign.config import load_config
from signing.pades import PadesOptions, async_sign_pdf
from signing.pkcs11_signer import TokenSigner, load_chain
from token_drivers.card_wait import WaitEvent, WaitEventKind, wait_for_token
from token_drivers.errors import DeviceRemoved
from token_drivers.hotplug import CardKey, CardLoginFailed, open_card_key
from token_drivers.module import load_module

# "thread" because a hang inside a PC/SC or PKCS#11 call never returns to Python for "signal".
pytestmark = pytest.mark.timeout(120, method="thread")

XTU = Path(__file__).parent / "data" / "real" / "xtu.pdf"


async def wait_for_officer_card(rig, tap_card: bool = True) -> WaitEvent:
    """Wait for the officer's card, tapping it on reader 0 once the wait has started."""
    async with new_source() as source:
        async for step in wait_for_token(source, card_certificate(rig), timeout=20):
            if step.kind is WaitEventKind.WAITING_FOR_TOKEN and tap_card:
                await asyncio.to_thread(rig.tap, "officer", 0)
            last = step
    return last


async def sign_with(rig, key, output: Path) -> None:
    signer = TokenSigner(key, chain=load_chain(load_config(rig.state_dir)))
    await async_sign_pdf(signer, XTU, output, PadesOptions(reason="审批通过", location="示例市"))


async def assert_validates(output: Path, rig) -> None:
    (status,) = await asyncio.to_thread(validate_pdf, output, rig.state_dir)
    assert status.intact, status.pretty_print_details()
    assert status.valid, status.pretty_print_details()
    assert status.trusted, status.pretty_print_details()
    assert status.signing_cert.subject.native["common_name"] == "赵敏"


class PullCardOnSign:
    """A token key that takes the card off its reader just before the token signs, once."""

    def __init__(self, key, rig) -> None:
        self._key = key
        self._rig = rig
        self.pulled = False

    def __getattr__(self, name):
        return getattr(self._key, name)

    def sign(self, data, **options):
        if not self.pulled:
            self.pulled = True
            self._rig.remove(0)
        return self._key.sign(data, **options)


async def test_tap_while_waiting_then_pdf_validates(empty_readers, tmp_path):
    rig = empty_readers
    present = await wait_for_officer_card(rig)

    assert present.kind is WaitEventKind.TOKEN_PRESENT
    assert present.reader == OFFICER_READER
    output = tmp_path / "signed.pdf"
    with open_card_key(present.module, present.token, card_pin()) as key:
        assert key.key_type == "rsa"
        assert key.bits == 2048
        await sign_with(rig, key, output)

    await assert_validates(output, rig)


async def test_removal_mid_signature_then_tap_again(empty_readers, tmp_path):
    rig = empty_readers
    present = await wait_for_officer_card(rig)
    key = open_card_key(present.module, present.token, card_pin())
    pulling = CardKey(PullCardOnSign(key, rig), load_module(present.module), present.token)

    failed_output = tmp_path / "failed.pdf"
    with pytest.raises(DeviceRemoved) as raised:
        await sign_with(rig, pulling, failed_output)
    key.close()

    assert raised.value.code == "device_removed"
    assert raised.value.ids["reader"] == OFFICER_READER
    assert not failed_output.exists()

    # Same process, same loaded OpenSC module: the next tap signs.
    again = await wait_for_officer_card(rig)
    assert again.kind is WaitEventKind.TOKEN_PRESENT
    output = tmp_path / "signed.pdf"
    with open_card_key(again.module, again.token, card_pin()) as key:
        await sign_with(rig, key, output)
    await assert_validates(output, rig)


async def test_wrong_pin_is_reported_once(empty_readers):
    rig = empty_readers
    present = await wait_for_officer_card(rig)

    with pytest.raises(CardLoginFailed) as raised:
        open_card_key(present.module, present.token, "00000000")
    assert raised.value.code == "card_login_failed"
    assert raised.value.ids["reader"] == OFFICER_READER
    assert "00000000" not in raised.value.message("en")
    assert "00000000" not in raised.value.message("zh_CN")

    # The emulated card has no retry counter and does not lock; the right PIN still signs.
    with open_card_key(present.module, present.token, card_pin()) as key:
        assert len(key.sign(b"after a wrong PIN")) == 256


@pytest.mark.parametrize("card", ["officer", "other"])
def test_card_certificate_from_certomancer(card_rig, card: str) -> None:
    """certomancer issues the card certificates from the rendered template, with the OCSP responder."""
    import yaml
    from cryptography import x509

    config = yaml.safe_load(card_rig.layout.certomancer_config.read_text(encoding="utf-8"))
    specification = config["pki-architectures"]["qsign-test"]["certs"][f"card-{card}"]
    certificate = card_certificate(card_rig, card)
    access = certificate.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value

    assert certificate.serial_number == specification["serial"]
    assert [description.access_location.value for description in access
            if description.access_method == x509.oid.AuthorityInformationAccessOID.OCSP] == \
        [f"{config['external-url-prefix']}/qsign-test/ocsp/intermediate"]
