from agentry_common.db import run_alembic_env
from agentry_webhooks.models import SCHEMA, Base

run_alembic_env(Base.metadata, SCHEMA)
