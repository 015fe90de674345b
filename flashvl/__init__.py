"""flashvl: serving stack for lightweight vision-language models."""

__version__ = "0.1.0"
