"""Generate lease renewal codes (vendor side).

    python tools/lease_token.py --master-key-file master.key --serial SN-000123 --counter 4 --days 30
    python tools/lease_token.py --secret HEX --serial SN-000123 --counter 4 --days 0   # unlock for good

The per-device secret is HMAC-SHA256(master key, serial) unless given with
--secret; provision the same bytes into the device (``/data/lease.key``).
Counters must increase per device: keep a record of the last one issued.
"""
import argparse
import sys

import tools  # noqa: F401  (firmware on sys.path)
from bms.digest import hmac_sha256
from bms.lease import make_token


def device_secret(master, serial):
    return hmac_sha256(master, serial.encode())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--secret", help="per-device secret, hex")
    g.add_argument("--master-key-file", help="file holding the vendor master key (raw bytes)")
    ap.add_argument("--serial", required=True)
    ap.add_argument("--counter", type=int, required=True, help="1..65535, above the last one used")
    ap.add_argument("--days", type=int, required=True, help="operating days to add; 0 removes the lease")
    a = ap.parse_args(argv)
    if a.secret:
        secret = bytes.fromhex(a.secret)
    else:
        with open(a.master_key_file, "rb") as f:
            secret = device_secret(f.read(), a.serial)
    try:
        print(make_token(secret, a.serial, a.counter, a.days))
    except ValueError as e:
        sys.exit(str(e))


if __name__ == "__main__":
    main()
