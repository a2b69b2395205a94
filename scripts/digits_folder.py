#!/usr/bin/env python3
"""Write scikit-learn's handwritten digits (the UCI optical digits test set: 1,797 8x8 grayscale
images, 10 classes, shipped inside the scikit-learn wheel) as a labelled image folder
OUT/<digit>/<n>.png that `launcher` trains on (labels ignored) and `launcher eval` scores.

    pip download --no-deps --only-binary=:all: scikit-learn==1.9.1 -d /tmp/sk
    python3 scripts/digits_folder.py /tmp/sk/scikit_learn-1.9.1-*.whl OUT [--size 32]

Only the standard library: the CSV is read straight from the wheel (a zip), so scikit-learn and
its dependencies need not be installed, and the PNGs are written by hand (8-bit grayscale).
Each 8x8 image (values 0..16) is scaled to 0..255 and enlarged by pixel repetition to SIZE
(a multiple of 8; 32 is the smallest image size the model takes).
"""
import argparse
import gzip
import io
import os
import struct
import zipfile
import zlib

CSV = "sklearn/datasets/data/digits.csv.gz"


def png_gray8(pixels, size):
    """An 8-bit grayscale PNG of `size` x `size` from a flat row-major list."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    rows = b"".join(b"\x00" + bytes(pixels[r * size:(r + 1) * size]) for r in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wheel")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=32)
    a = ap.parse_args()
    if a.size % 8:
        ap.error("--size must be a multiple of 8")
    k = a.size // 8
    with zipfile.ZipFile(a.wheel) as z:
        text = gzip.decompress(z.read(CSV)).decode()
    counts = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        vals = [int(float(v)) for v in line.split(",")]
        img, label = vals[:64], vals[64]
        big = [img[(r // k) * 8 + (c // k)] * 255 // 16 for r in range(a.size) for c in range(a.size)]
        n = counts.get(label, 0)
        counts[label] = n + 1
        folder = os.path.join(a.out, str(label))
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{n:04d}.png"), "wb") as f:
            f.write(png_gray8(big, a.size))
    print(f"wrote {sum(counts.values())} images in {len(counts)} classes to {a.out}: "
          + ", ".join(f"{c}: {counts[c]}" for c in sorted(counts)))


if __name__ == "__main__":
    main()
