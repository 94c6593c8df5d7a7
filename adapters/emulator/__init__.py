"""A local emulator of the OpenAI, Anthropic and Gemini Batch APIs, strict and fault-injecting."""

from .faults import FaultSet
from .server import Emulator, serve

__all__ = ["Emulator", "FaultSet", "serve"]
