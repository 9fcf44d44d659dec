"""ID-card benchmark (SPEC §7, issue 15): each figure beside a floor measured in the same run.

* signing: cards/s on one core (``idcards.signed.sign_card``: CBOR, COSE_Sign1, Ed25519, the
  digits) against the floor of bare Ed25519 signatures over a message of the same size;
  target >= 2,000 cards/s per core;
* printing: a 10,000-card PDF through ``idcards.issue.issue`` (signing, PDF-417, reportlab,
  the issue log in SQLite) against the floor of reportlab writing the same pages of text
  only; target <= 60 s;
* verifying text: ms per barcode text (``idcards.verify.verify_text`` with the key in memory)
  against the floor of one bare Ed25519 verification; target <= 5 ms;
* decoding a 300-dpi scan: ms to get the barcode text from a Letter page scanned at 300 dpi
  (PNG and JPEG, ``idcards.decode.texts_from_bytes``) against the floor of only decoding the
  image file with Pillow; target <= 300 ms.

Both wall-clock and CPU time are printed: on a shared machine the CPU time is the figure per
core. ``python bench/idcards_bench.py [--cards 10000] [--sign 5000] [--repeat 20]``
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from PIL import Image
from reportlab.lib.pagesizes import letter
from reportlab.pdfgen.canvas import Canvas

from idcards import decode, issue, keys, pdf, signed
from idcards.card import Card
from idcards.verify import KnownKey, verify_text
from olv import db

PIN = "bench-pin-1"


def card(number: int, today: date) -> Card:
    return Card(
        template="NY",
        issuer="PC-123456",
        insurer_name="Empire Mutual Insurance Company",
        naic="12345",
        policy_number=f"NYA-{number:010d}",
        effective=today - timedelta(days=30),
        expires=today + timedelta(days=335),
        issued=today,
        names=("JANE Q PUBLIC", "JOHN PUBLIC"),
        year=2021,
        make="TOYOTA",
        vin=f"1HGCM8263{number:08d}",
    )


def timed(call: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return time.perf_counter() - wall, time.process_time() - cpu


def per_call_ms(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median wall ms and median CPU ms of ``repeat`` calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        wall, cpu = timed(call)
        walls.append(wall * 1000)
        cpus.append(cpu * 1000)
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cards", type=int, default=10_000)
    parser.add_argument("--sign", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    today = date.today()
    with tempfile.TemporaryDirectory(prefix="olv-cards-bench-") as folder_name:
        folder = Path(folder_name)
        key, _ = keys.generate("PC-123456", PIN, folder / "bench.key")
        cards = [card(i, today) for i in range(max(args.cards, args.sign))]

        # 1. Signing, one core.
        texts: list[str] = []
        wall, cpu = timed(
            lambda: texts.extend(signed.sign_card(c, key) for c in cards[: args.sign])
        )
        message = b"x" * 170  # the size of a card's Sig_structure
        f_wall, f_cpu = timed(lambda: [key.private.sign(message) for _ in range(args.sign)])
        print(f"signing: {args.sign / cpu:,.0f} cards/s per core (CPU; "
              f"wall {args.sign / wall:,.0f}/s); floor bare Ed25519 {args.sign / f_cpu:,.0f}/s"
              f" -> {f_cpu / cpu:.2f} of the floor; target >= 2,000")  # fmt: skip

        # 2. A 10,000-card PDF, the whole issue path (with its SQLite log).
        url = f"sqlite:///{folder / 'bench.db'}"
        db.upgrade(url)
        engine = db.make_engine(url)
        out = folder / "cards.pdf"
        wall, cpu = timed(lambda: issue.issue(engine, cards[: args.cards], key, out))
        engine.dispose()

        def text_only() -> None:
            canvas = Canvas(str(folder / "floor.pdf"), pagesize=letter, pageCompression=1)
            for number, each in enumerate(cards[: args.cards]):
                for label, value in each.as_dict().items():
                    canvas.drawString(40, 700 - 12 * len(label), f"{label}: {value}")
                if number % 2:
                    canvas.showPage()
            canvas.save()

        f_wall, f_cpu = timed(text_only)
        size = out.stat().st_size / 2**20
        print(f"printing {args.cards:,} cards: {wall:.1f} s wall, {cpu:.1f} s CPU, {size:.1f} MiB"
              f"; floor reportlab text only {f_wall:.1f} s wall, {f_cpu:.1f} s CPU"
              f" -> {cpu / f_cpu:.1f}x the floor; target <= 60 s")  # fmt: skip

        # 3. Verifying a barcode's text.
        known = KnownKey(key.key_id_text, key.issuer, "Bench", key.private.public_key())
        text = texts[0]
        v_wall, v_cpu = per_call_ms(lambda: verify_text(text, lambda kid: known, today), 200)
        signature = key.private.sign(message)
        public = key.private.public_key()
        f_wall, f_cpu = per_call_ms(lambda: public.verify(signature, message), 200)
        print(f"verify text: {v_wall:.3f} ms wall, {v_cpu:.3f} ms CPU (median)"
              f"; floor bare Ed25519 verify {f_wall:.3f} ms; target <= 5 ms")  # fmt: skip

        # 4. Decoding a 300-dpi scan of one printed page.
        one = folder / "one.pdf"
        pdf.write(one, [(cards[0], texts[0]), (cards[1], texts[1])])
        subprocess.run(["pdftoppm", "-r", "300", "-gray", "-png", "-singlefile", str(one),
                        str(folder / "scan")], check=True)  # fmt: skip
        png = (folder / "scan.png").read_bytes()
        buffer = io.BytesIO()
        Image.open(io.BytesIO(png)).save(buffer, "JPEG", quality=90)
        jpeg = buffer.getvalue()
        for name, data in (("PNG", png), ("JPEG", jpeg)):
            assert decode.texts_from_bytes(data)[0] in texts[:2]
            d_wall, d_cpu = per_call_ms(lambda d=data: decode.texts_from_bytes(d), args.repeat)
            f_wall, f_cpu = per_call_ms(
                lambda d=data: Image.open(io.BytesIO(d)).load(), args.repeat
            )
            print(f"decode 300-dpi scan ({name}, 2550x3300, {len(data) / 1024:.0f} KiB): "
                  f"{d_wall:.0f} ms wall, {d_cpu:.0f} ms CPU (median); floor Pillow "
                  f"decoding the file alone {f_wall:.0f} ms wall, {f_cpu:.0f} ms CPU; "
                  "target <= 300 ms")  # fmt: skip
    print(f"python {sys.version.split()[0]}; one process, one thread")


if __name__ == "__main__":
    main()
