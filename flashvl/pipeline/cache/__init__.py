"""Cache of vision-stage outputs, keyed by image content + stage + model + task + parameters."""

from flashvl.pipeline.cache.base import CacheStats, VisionCache, vision_cache_key

__all__ = ["CacheStats", "VisionCache", "vision_cache_key"]
