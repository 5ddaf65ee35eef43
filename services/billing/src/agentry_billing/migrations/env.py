import agentry_billing.spend_models
from agentry_billing.models import SCHEMA, Base
from agentry_common.db import run_alembic_env

run_alembic_env(Base.metadata, SCHEMA)
