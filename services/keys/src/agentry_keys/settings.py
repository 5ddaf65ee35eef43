from __future__ import annotations

import base64

from pydantic import Field, model_validator

from agentry_common.settings import ServiceSettings

DEV_PEPPER = "agentry-development-key-pepper-not-for-production"
# 32 zero-ish bytes, base64: a development master key that production refuses.
DEV_MASTER_KEYS = "dev:" + base64.b64encode(b"agentry-dev-master-key-32-bytes!").decode()


class Settings(ServiceSettings):
    key_pepper: str = Field(DEV_PEPPER, description="Server-side pepper for the HMAC-SHA256 of API keys.")
    master_keys: str = Field(
        DEV_MASTER_KEYS,
        description="Secrets key ring `id:base64key[,id:base64key…]` (AES-256); the first key encrypts.",
    )
    key_expiry_sweep_s: float = Field(
        60.0,
        ge=0,
        description="How often to look for caller keys expiring within the week (`key.expiring`); 0: this "
        "replica never does (another one does it).",
    )

    @model_validator(mode="after")
    def _no_default_secrets(self) -> Settings:
        self.refuse_default("KEY_PEPPER", self.key_pepper, DEV_PEPPER)
        self.refuse_default("MASTER_KEYS", self.master_keys, DEV_MASTER_KEYS)
        return self


settings = Settings()
