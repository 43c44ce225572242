#!/usr/bin/env python3
"""Independent dm-crypt decryptor for the tests: aes-xts-plain64 with
Python's `cryptography`, sharing no code with confsum.

usage: xts_decrypt.py IMAGE OFFSET SECTOR_SIZE KEY_HEX OUT

Decrypts IMAGE from byte OFFSET to its end into OUT. The IV of each sector
is plain64 of (byte offset inside the segment / 512), little-endian, also
for 4096-byte sectors, as dm-crypt does.
"""
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def main() -> None:
    image, offset, sector, key_hex, out = sys.argv[1:6]
    offset, sector, key = int(offset), int(sector), bytes.fromhex(key_hex)
    with open(image, "rb") as src, open(out, "wb") as dst:
        src.seek(offset)
        position = 0
        while True:
            block = src.read(sector * 256)
            if not block:
                break
            if len(block) % sector:
                sys.exit(f"segment ends inside a sector at {offset + position + len(block)}")
            plain = bytearray()
            for i in range(0, len(block), sector):
                iv = ((position + i) // 512).to_bytes(16, "little")
                dec = Cipher(algorithms.AES(key), modes.XTS(iv)).decryptor()
                plain += dec.update(block[i : i + sector]) + dec.finalize()
            dst.write(plain)
            position += len(block)


if __name__ == "__main__":
    main()
