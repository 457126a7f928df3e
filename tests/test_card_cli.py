"""``qsign softhsm card up|tap|remove|down`` and ``qsign tokens`` on the card, as a user runs them.

The commands run in subprocesses with their own state dir and network namespace, next to the
session's rig, because each namespace has its own vpcd ports and each rig its own pcscd socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from helpers.card_rig import OPENSC
from softhsm_setup.card_rig import card_rig_unavailable_reason

# "thread" because a hang inside a PC/SC or PKCS#11 call never returns to Python for "signal".
pytestmark = pytest.mark.timeout(120, method="thread")


@pytest.fixture(scope="module")
def cli_rig(tmp_path_factory):
    """Run ``qsign`` commands against one CLI-made rig for the whole module; tests run in file order."""
    reason = card_rig_unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    state_dir = tmp_path_factory.mktemp("card-cli") / "state"
    namespace = f"qsign-card-cli-{os.getpid()}"
    # Without the session's socket variable, qsign reads [pcsc] socket from this state dir's qsign.toml.
    environment = {key: value for key, value in os.environ.items() if key != "PCSCLITE_CSOCK_NAME"}

    def qsign(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "qsign.cli", *args, "--state-dir", str(state_dir)]
        return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=60)

    def card(*args: str) -> subprocess.CompletedProcess[str]:
        return qsign("softhsm", "card", *args, "--namespace", namespace)

    yield state_dir, card, qsign
    card("down")


def test_card_up_reports_each_step(cli_rig):
    state_dir, card, _ = cli_rig

    up = card("up", "--lang", "en")
    again = card("up", "--lang", "zh_CN")

    assert up.returncode == 0, up.stderr
    assert "card officer: created" in up.stdout
    assert "network namespace: created" in up.stdout
    assert "pcscd: started" in up.stdout
    assert str(state_dir / "card" / "run" / "pcscd.comm") in up.stdout
    assert again.returncode == 0, again.stderr
    assert "卡片 officer：已存在" in again.stdout
    assert "pcscd：已在运行" in again.stdout


def test_tokens_lists_the_cards_through_opensc(cli_rig):
    _, card, qsign = cli_rig
    if OPENSC is None:
        pytest.skip("OpenSC's opensc-pkcs11.so is not installed")

    tap = card("tap", "--lang", "zh_CN")
    tap_other = card("tap", "--card", "other", "--reader", "1", "--lang", "en")
    assert tap.returncode == 0, tap.stderr
    assert tap.stdout.strip() == "卡片 officer（赵敏）已放在读卡器 Virtual PCD 00 00 上。"
    assert tap_other.stdout.strip() == "Card other (刘洋) is on reader Virtual PCD 00 01."

    # pcscd looks at vpcd's readers every 400 ms, which is usually less than qsign takes to start.
    for _ in range(5):
        listing = qsign("tokens", "--json", "--module", OPENSC)
        assert listing.returncode == 0, listing.stderr
        by_reader = {token["slot_description"]: token for token in json.loads(listing.stdout)}
        if len(by_reader) == 2:
            break
    assert set(by_reader) == {"Virtual PCD 00 00", "Virtual PCD 00 01"}
    assert by_reader["Virtual PCD 00 00"]["label"] == "赵敏"
    assert by_reader["Virtual PCD 00 01"]["label"] == "刘洋"
    assert by_reader["Virtual PCD 00 00"]["model"] == "PKCS#15 emulated"
    (key,) = by_reader["Virtual PCD 00 00"]["keys"]
    assert key["type"] == "rsa"
    assert key["bits"] == 2048
    assert "赵敏" in key["certificate"]["subject"]


def test_tokens_watch_prints_events(cli_rig):
    _, card, qsign = cli_rig

    watch = qsign("tokens", "--watch", "--watch-seconds", "1", "--lang", "zh_CN")
    watch_json = qsign("tokens", "--watch", "--watch-seconds", "1", "--json")

    assert watch.returncode == 0, watch.stderr
    lines = watch.stdout.splitlines()
    assert lines[0] == "正在监视 PC/SC 读卡器；按 Ctrl+C 停止。"
    assert any(line.endswith("读卡器已接入：Virtual PCD 00 00") for line in lines)
    assert any("Virtual PCD 00 00 中插入了卡片：Virtual CAC card (libcacard)，ATR 3B 7A 18" in line for line in lines)
    events = [json.loads(line) for line in watch_json.stdout.splitlines()]
    assert {"event": "reader_added", "reader": "Virtual PCD 00 01"} in events
    inserted = {event["reader"]: event for event in events if event["event"] == "card_inserted"}
    assert set(inserted) == {"Virtual PCD 00 00", "Virtual PCD 00 01"}
    assert inserted["Virtual PCD 00 00"]["atr"] == "3B 7A 18 00 00 73 66 74 65 20 63 64 31 34 34"


def test_card_remove_and_down(cli_rig):
    _, card, _ = cli_rig

    remove = card("remove", "--reader", "1", "--lang", "en")
    down = card("down", "--json")

    assert remove.returncode == 0, remove.stderr
    assert remove.stdout.strip() == "The card was taken off reader Virtual PCD 00 01."
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["steps"] == {"bridge 0": "stopped", "bridge 1": "not_running",
                                                "pcscd": "stopped", "namespace": "deleted"}
