"""The review queue: answers arbitration flagged for a person (base: the item and the interface)."""

from flashvl.pipeline.review.base import ReviewItem, ReviewQueue

__all__ = ["ReviewItem", "ReviewQueue"]
