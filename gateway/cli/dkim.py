"""`check dkim --domain D`: the DNS record an operator publishes for the key that signs D."""

from __future__ import annotations

import sys

from gateway.cli.common import EXIT_INVALID
from gateway.config.settings import Config
from gateway.rewrite.dkim import DkimSigner, public_key_record

TXT_STRING_LIMIT = 255  # RFC 1035 §3.3: a TXT record is a list of strings of <= 255 bytes


def print_dkim_record(config: Config, domain: str) -> int:
    key = DkimSigner(config.dkim).key_for(domain)
    if key is None:
        configured = ", ".join(k.domain for k in config.dkim) or "none"
        print(f"error: no [[dkim]] key signs mail from {domain} (configured: {configured})",
              file=sys.stderr)
        return EXIT_INVALID
    value = public_key_record(key)
    strings = " ".join(
        f'"{value[i:i + TXT_STRING_LIMIT]}"' for i in range(0, len(value), TXT_STRING_LIMIT)
    )
    print(f"; mail from {domain} is signed d={key.domain} s={key.selector}")
    print(f"{key.selector}._domainkey.{key.domain}. IN TXT {strings}")
    return 0
