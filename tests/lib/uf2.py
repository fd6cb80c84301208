"""A small RP2350 UF2 image (family RP2350_ARM_S) the worker accepts for a flash:
BLOCKS blocks of 256 bytes at the start of flash, each byte (block + offset) & 0xFF.
The same bytes everywhere, so a test can compute its SHA-256 and size (8 blocks:
4096 bytes).

    uf2.py OUT [BLOCKS]        writes the image to OUT
    from uf2 import image      image(blocks=8) -> bytes
"""
import struct
import sys


def image(blocks=8):
    out = b""
    for i in range(blocks):
        data = bytes([(i + j) & 0xFF for j in range(256)]).ljust(476, b"\0")
        out += struct.pack("<IIIIIIII", 0x0A324655, 0x9E5D5157, 0x2000, 0x10000000 + 256 * i, 256, i, blocks,
                           0xE48BFF59) + data + struct.pack("<I", 0x0AB16F30)
    return out


if __name__ == "__main__":
    with open(sys.argv[1], "wb") as f:
        f.write(image(int(sys.argv[2]) if len(sys.argv) > 2 else 8))
