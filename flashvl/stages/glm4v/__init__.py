"""In-process GLM-4.6V-Flash (transformers) and the pieces around it.

Nothing here imports torch or transformers at module level: the offline default
never pays for them. ``output`` (parsing GLM's answer format) is pure Python.
"""
