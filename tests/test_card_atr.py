"""ATR → card name and PKCS#11 module: qsign's table, the [cards] config and pcsc-tools' list."""

from __future__ import annotations

import pytest

from qsign.errors import ConfigError
from qsign.i18n import translate
from token_drivers.atr import SMARTCARD_LIST, format_atr, load_catalog
from token_drivers.card_wait import TokenWaitTimedOut
from token_drivers.hotplug import CardLoginFailed
from token_drivers.relay import RELAY_SERVICE_TYPE, relay_service_info

LIBCACARD_ATR = bytes.fromhex("3B7A18000073667465206364313434")


def test_format_atr_spaced_upper_hex():
    assert format_atr(bytes.fromhex("3b7a18")) == "3B 7A 18"
    assert format_atr(b"") == ""


def test_shipped_table_maps_libcacard_to_opensc():
    identity = load_catalog().identify(LIBCACARD_ATR)

    assert identity.card_type == "libcacard_cac"
    assert identity.name == "Virtual CAC card (libcacard)"
    assert identity.known == (identity.module is not None)
    assert identity.to_dict()["atr"] == "3B 7A 18 00 00 73 66 74 65 20 63 64 31 34 34"


def test_config_row_overrides_shipped_row(tmp_path):
    module = tmp_path / "vendor-pkcs11.so"
    raw = {"cards": {"libcacard_cac": {"name": "Bureau card", "atr": "3B 7A 18 .. 00 73 .*", "module": str(module)}}}

    identity = load_catalog(raw).identify(LIBCACARD_ATR)

    assert identity.name == "Bureau card"
    assert identity.module == str(module)
    assert identity.card_type == "libcacard_cac"


def test_config_row_for_new_card(tmp_path):
    raw = {"cards": {"bureau_token": {"name": "Bureau token", "atr": "3B 9F .. 81 31 .*", "module": "/opt/t.so"}}}
    catalog = load_catalog(raw)

    new_card = catalog.identify(bytes.fromhex("3B9F958131FE9F00"))
    shipped = catalog.identify(LIBCACARD_ATR)

    assert new_card.name == "Bureau token"
    assert new_card.module == "/opt/t.so"
    assert shipped.card_type == "libcacard_cac"


@pytest.mark.parametrize(("row", "fragment"), [
    ({"name": "x"}, "string key 'atr'"),
    ({"atr": "3B (", "module": "/x.so"}, "not a valid pattern"),
    ({"atr": "3B .*", "module": "relative.so"}, "absolute path"),
    ({"atr": "3B .*", "driver": "/x.so"}, "unknown keys ['driver']"),
], ids=["no-atr", "bad-pattern", "relative-module", "unknown-key"])
def test_config_row_errors_name_the_key(row, fragment):
    with pytest.raises(ConfigError) as raised:
        load_catalog({"cards": {"broken": row}})

    assert "cards.broken" in str(raised.value)
    assert fragment in str(raised.value)


@pytest.mark.skipif(not SMARTCARD_LIST.exists(), reason="pcsc-tools' smartcard_list.txt is not installed")
def test_unlisted_card_named_from_pcsc_tools():
    identity = load_catalog().identify(bytes.fromhex("3B8F8001804F0CA000000306030001000000006A"))

    assert identity.name == "MIFARE Classic 1K (as per PCSC std part3)"
    assert identity.module is None
    assert not identity.known


def test_unknown_atr_has_no_name(tmp_path):
    catalog = load_catalog(smartcard_list=tmp_path / "missing.txt")

    identity = catalog.identify(bytes.fromhex("3B8880017173696E6774737418"))

    assert identity.name is None
    assert identity.module is None


def test_card_errors_in_chinese():
    login = CardLoginFailed(reader="Virtual PCD 00 00", ckr="GeneralError")
    timeout = TokenWaitTimedOut(seconds="30")

    assert login.code == "card_login_failed"
    assert "Virtual PCD 00 00" in login.message("zh_CN")
    assert "PIN" in login.message("zh_CN")
    assert login.message("zh_CN") != login.message("en")
    assert timeout.message("zh_CN") == "30 秒内没有出现载有签名证书的卡片。请贴卡或插卡后重试。"
    assert translate("reader added: {reader}", "zh_CN", reader="R") == "读卡器已接入：R"


def test_relay_zeroconf_record():
    info = relay_service_info("officer-pc", "127.0.0.1", 8443, "ab" * 32)

    assert info.type == RELAY_SERVICE_TYPE
    assert info.name == f"officer-pc.{RELAY_SERVICE_TYPE}"
    assert info.port == 8443
    assert info.properties[b"fp"] == ("ab" * 32).encode()
    assert info.parsed_addresses() == ["127.0.0.1"]
