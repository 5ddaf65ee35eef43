"""Re-encrypt every secret under the key ring's first (newest) master key.

Rotation: put the new key first in MASTER_KEYS (`new:…,old:…`) and restart the keys service — new secrets
are encrypted under it, old ones still decrypt. Then run `python -m agentry_keys.rotate` (or
`make rotate-secrets`); when it reports nothing left, the old key can leave the ring.
"""

from __future__ import annotations

import asyncio
import sys

from agentry_common.container import SqlDatabase

from .repository import KeysRepository
from .service import KeyRing, KeysService
from .settings import settings


async def rotate(batch: int = 500) -> tuple[int, dict[str, int]]:
    """Re-encrypt what the ring can read; return that count and the secrets under keys it does not hold."""
    database = SqlDatabase(settings.database_url, pool_size=1)
    unit_of_work = database.unit_of_work(KeysRepository)
    keys = KeysService(settings.key_pepper, KeyRing(settings.master_keys))
    total = 0
    try:
        while True:
            async with unit_of_work() as repo:
                done = await keys.reencrypt(repo, batch)
            total += done
            if done < batch:
                break
        async with database.sessions() as session:
            unknown = await KeysRepository(session).count_not_under(list(keys.ring.keys))
        return total, unknown
    finally:
        await database.close()


def main() -> None:
    ring = KeyRing(settings.master_keys)
    total, unknown = asyncio.run(rotate())
    print(f"re-encrypted {total} secret(s) under master key {ring.active_id!r}; none left under the ring's older keys")
    if unknown:
        held = ", ".join(f"{key_id!r}: {count}" for key_id, count in sorted(unknown.items()))
        print(f"secrets under master keys missing from MASTER_KEYS (unreadable until added): {held}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
