"""Benchmark of the virtual smart card: tap to ``token_present``, and signing over PC/SC.

    sudo python benchmarks/card.py [--taps 10] [--signatures 20] [--documents 10]

Starts the card rig (pcscd and vpcd in the network namespace ``qsign-card-bench``, root only) in a
temporary state dir, runs the libcacard card in this process, and measures side by side:

- tap: from the bridge's TCP connect to vpcd to the ``token_present`` step of ``wait_for_token``
  (pcscd noticing the card, the ATR, OpenSC reading the certificate);
- raw RSA-2048 PKCS#1 v1.5 signatures through OpenSC, with TCP_QUICKACK set on the bridge socket
  before each read, and without it;
- ``signing.pades.sign_pdf`` of ``tests/data/real/xtu.pdf`` over the card (from the sign call to the
  signed PDF on disk), with TCP_QUICKACK.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NAMESPACE = "qsign-card-bench"
STATE_DIR = Path(tempfile.mkdtemp(prefix="qsign-card-bench-"))
# pcsc-lite reads the socket name once, at the first PC/SC call of the process.
os.environ["PCSCLITE_CSOCK_NAME"] = str(STATE_DIR / "card" / "run" / "pcscd.comm")

from cryptography import x509  # noqa: E402

from qsign.config import load_config  # noqa: E402
from signing.pades import PadesOptions, async_sign_pdf  # noqa: E402
from signing.pkcs11_signer import TokenSigner, load_chain  # noqa: E402
from softhsm_setup.cacard_bridge import CacardEmulator, VpcdBridge  # noqa: E402
from softhsm_setup.card_rig import CARD_PIN, CARDS, VPCD_BASE_PORT, CardRig, netns_socket  # noqa: E402
from token_drivers.atr import load_catalog  # noqa: E402
from token_drivers.card_wait import WaitEventKind, wait_for_token  # noqa: E402
from token_drivers.hotplug import open_card_key  # noqa: E402
from token_drivers.pcsc import CardEventKind, CardEventSource  # noqa: E402

XTU = ROOT / "tests" / "data" / "real" / "xtu.pdf"


class InProcessCard:
    """The officer's libcacard card, connected to vpcd reader 0 from a thread of this process."""

    def __init__(self, rig: CardRig) -> None:
        card = CARDS["officer"]
        self.emulator = CacardEmulator(rig.nss_db(card), [card.nickname])
        self.namespace = rig.namespace
        self.connection = None
        self.thread: threading.Thread | None = None
        self.quick_ack = True

    def tap(self) -> float:
        """Connect to vpcd; return ``time.monotonic()`` right after the TCP connect."""
        self.connection = netns_socket(self.namespace)
        self.connection.connect(("127.0.0.1", VPCD_BASE_PORT))
        connected = time.monotonic()
        bridge = VpcdBridge(self.emulator, quick_ack=self.quick_ack)
        self.thread = threading.Thread(target=bridge.serve, args=(self.connection,), daemon=True)
        self.thread.start()
        return connected

    def remove(self) -> None:
        self.connection.shutdown(2)
        self.thread.join()
        self.connection.close()


def summary(label: str, seconds: list[float], rows: list[tuple[str, float]]) -> float:
    median = statistics.median(seconds)
    rows.append((label, median))
    print(f"  {label:<58} median {median * 1000:8.1f} ms  min {min(seconds) * 1000:8.1f} ms  "
          f"max {max(seconds) * 1000:8.1f} ms  (n={len(seconds)})", flush=True)
    return median


async def bench_taps(card: InProcessCard, source: CardEventSource, certificate, taps: int) -> list[float]:
    durations = []
    queue = source.subscribe()
    for _ in range(taps):
        connected = card.tap()
        async for step in wait_for_token(source, certificate, timeout=20):
            if step.kind is WaitEventKind.TOKEN_PRESENT:
                durations.append(step.monotonic - connected)
                present = step
        await asyncio.to_thread(card.remove)
        while (await queue.get()).kind is not CardEventKind.CARD_REMOVED:
            pass
    source.unsubscribe(queue)
    return durations, present


async def main_async(arguments: argparse.Namespace) -> None:
    rig = CardRig(STATE_DIR, namespace=NAMESPACE)
    rig.up()
    rows: list[tuple[str, float]] = []
    try:
        card = InProcessCard(rig)
        certificate = x509.load_pem_x509_certificate(rig.certificate_path(CARDS["officer"]).read_bytes())
        async with CardEventSource(load_catalog()) as source:
            taps, present = await bench_taps(card, source, certificate, arguments.taps)
            summary("tap: bridge connect -> token_present", taps, rows)

            for quick_ack in (True, False):
                card.quick_ack = quick_ack
                card.tap()
                async for step in wait_for_token(source, certificate, timeout=20):
                    present = step
                key = await asyncio.to_thread(open_card_key, present.module, present.token, CARD_PIN)
                durations = []
                for number in range(arguments.signatures):
                    started = time.perf_counter()
                    await key.asign(b"benchmark %d" % number)
                    durations.append(time.perf_counter() - started)
                label = f"raw RSA-2048 signature, TCP_QUICKACK {'on' if quick_ack else 'off'}"
                summary(label, durations, rows)

                if quick_ack:
                    signer = TokenSigner(key, chain=load_chain(load_config(STATE_DIR)))
                    output_dir = Path(tempfile.mkdtemp(prefix="qsign-card-bench-pdf-"))
                    durations = []
                    for number in range(arguments.documents):
                        started = time.perf_counter()
                        await async_sign_pdf(signer, XTU, output_dir / f"signed-{number}.pdf",
                                             PadesOptions(reason="benchmark"))
                        durations.append(time.perf_counter() - started)
                    summary("sign_pdf xtu.pdf over the card (call -> signed file)", durations, rows)
                await asyncio.to_thread(key.close)
                await asyncio.to_thread(card.remove)
                await asyncio.sleep(1.0)
    finally:
        rig.down()

    medians = dict(rows)
    quick = medians["raw RSA-2048 signature, TCP_QUICKACK on"]
    slow = medians["raw RSA-2048 signature, TCP_QUICKACK off"]
    print(f"\nTCP_QUICKACK off / on, raw signature: {slow / quick:.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--taps", type=int, default=10, help="taps to time (default 10)")
    parser.add_argument("--signatures", type=int, default=20, help="raw signatures per setting (default 20)")
    parser.add_argument("--documents", type=int, default=10, help="PDFs to sign (default 10)")
    arguments = parser.parse_args()
    print(f"python {platform.python_version()}, {os.cpu_count()} CPUs, state dir {STATE_DIR}", flush=True)
    asyncio.run(main_async(arguments))


if __name__ == "__main__":
    main()
