"""LLM provider adapters over plain HTTP (aiohttp, no vendor SDKs), by the endpoint's `llm_provider` name."""

from __future__ import annotations

from .anthropic import Anthropic
from .base import ChatRequest, Completion, Connection, Message, Provider, ProviderFailed, ToolRequest, ToolSpec
from .gemini import Gemini
from .mock import Mock
from .openai import OpenAICompatible

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAICompatible("openai", max_tokens_field="max_completion_tokens", json_response_format=True),
    "groq": OpenAICompatible("groq", json_response_format=True),
    "custom": OpenAICompatible("custom"),
    "anthropic": Anthropic(),
    "gemini": Gemini(),
    "mock": Mock(),
}

__all__ = [
    "PROVIDERS",
    "ChatRequest",
    "Completion",
    "Connection",
    "Message",
    "Provider",
    "ProviderFailed",
    "ToolRequest",
    "ToolSpec",
]
