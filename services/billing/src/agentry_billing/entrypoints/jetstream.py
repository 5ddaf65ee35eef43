"""The batch publisher now lives in `agentry_common.batch_publish`; these names remain for the importers not
yet moved to it (`entrypoints/broker.py`)."""

from agentry_common.batch_publish import MAX_ATOMIC, BatchPublisher, PublishFailed

__all__ = ["MAX_ATOMIC", "BatchPublisher", "PublishFailed"]
