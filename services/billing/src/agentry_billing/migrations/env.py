from agentry_billing import payments_models  # its tables join Base.metadata
import agentry_billing.spend_models
from agentry_billing.models import SCHEMA, Base
from agentry_common.db import run_alembic_env

run_alembic_env(Base.metadata, SCHEMA)
