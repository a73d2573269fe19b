"""Checks that the built book renders: a headless-Chromium screenshot of the first chapter must
show its charts (pixels in the charts' first bar colour), and the rendered page must contain KaTeX
output and the generated tables. Usage: python3 scripts/check-book.py BOOK_DIR OUT_PNG"""

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

CHART_BLUE = (0x4E, 0x79, 0xA7)  # PALETTE[0] in src/report/chart.rs
CHAPTER = "01-why-one-billion.html"


def chromium(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run(
            [
                "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--hide-scrollbars",
                f"--user-data-dir={profile}", "--virtual-time-budget=5000", *args,
            ],
            capture_output=True, text=True, timeout=120, check=True,
        )


def main() -> None:
    book, png = Path(sys.argv[1]), Path(sys.argv[2])
    page = (book / CHAPTER).resolve().as_uri()
    chromium("--window-size=1280,5200", f"--screenshot={png}", page)
    image = Image.open(png).convert("RGB")
    pixels = image.tobytes()
    blue = sum(
        1
        for i in range(0, len(pixels), 3)
        if all(abs(pixels[i + k] - CHART_BLUE[k]) <= 6 for k in range(3))
    )
    problems = []
    if blue < 5000:
        problems.append(f"the charts did not render: {blue} chart-coloured pixels in {png}")
    dom = chromium("--dump-dom", page).stdout
    if 'class="katex' not in dom:
        problems.append("no KaTeX output: the formula was not rendered (is mdbook/src/katex there?)")
    if dom.count("<table") < 3:
        problems.append("the generated tables are missing from the chapter")
    if problems:
        sys.exit("book check failed:\n  " + "\n  ".join(problems))
    print(f"book renders: {blue} chart pixels, KaTeX and tables present ({png})")


if __name__ == "__main__":
    main()
