"""Re-encrypt every secret under the key ring's first (newest) master key.

Rotation: put the new key first in MASTER_KEYS (`new:…,old:…`) and restart the keys service — new secrets
are encrypted under it, old ones still decrypt. Then run `python -m agentry_keys.rotate` (or
`make rotate-secrets`); when it reports nothing left, the old key can leave the ring.
"""

from __future__ import annotations

import asyncio
import sys

from agentry_common.db import make_engine, make_sessionmaker

from .repository import KeysRepository
from .service import KeyRing, KeysService
from .settings import settings


async def rotate(batch: int = 500) -> int:
    engine = make_engine(settings.database_url, pool_size=1)
    sessions = make_sessionmaker(engine)
    keys = KeysService(settings.key_pepper, KeyRing(settings.master_keys))
    total = 0
    try:
        while True:
            async with sessions() as session, session.begin():
                done = await keys.reencrypt(KeysRepository(session), batch)
            total += done
            if done < batch:
                return total
    finally:
        await engine.dispose()


def main() -> None:
    ring = KeyRing(settings.master_keys)
    total = asyncio.run(rotate())
    print(f"re-encrypted {total} secret(s) under master key {ring.active_id!r}; none left under older keys")
    sys.exit(0)


if __name__ == "__main__":
    main()
