"""Model strings to model objects: ``openai:gpt-4.1``, ``anthropic:claude-sonnet-4-5``,
``ollama:NAME``, ``vllm:NAME``, ``llamacpp:NAME``, ``lmstudio:NAME`` or ``offline``."""

from __future__ import annotations

from loopwright.llm.anthropic import AnthropicModel
from loopwright.llm.errors import ModelConfigError
from loopwright.llm.openai import OpenAIChatModel
from loopwright.llm.types import Model
from loopwright.settings import SecretStr, Settings

DEFAULT_ANTHROPIC = "anthropic:claude-sonnet-4-5"
DEFAULT_OPENAI = "openai:gpt-4.1"
OFFLINE = "offline"

# OpenAI-compatible local servers: the settings field holding each one's base URL.
_LOCAL_BASE_URLS = {
    "ollama": "ollama_base_url",
    "vllm": "vllm_base_url",
    "llamacpp": "llamacpp_base_url",
    "lmstudio": "lmstudio_base_url",
}

_VALID_FORMS = (
    "openai:MODEL, anthropic:MODEL, ollama:MODEL, vllm:MODEL, llamacpp:MODEL, "
    "lmstudio:MODEL or offline"
)


def default_model_spec(settings: Settings) -> str:
    """``settings.model`` if set; else Anthropic when its key is set, else OpenAI when its key
    is set, else the offline model."""
    if settings.model:
        return settings.model
    if _has(settings.anthropic_api_key):
        return DEFAULT_ANTHROPIC
    if _has(settings.openai_api_key):
        return DEFAULT_OPENAI
    return OFFLINE


def make_model(spec: str | None, settings: Settings) -> Model:
    """The model for ``spec`` (``None``: :func:`default_model_spec`); its ``name`` is the spec.

    Raises :class:`ModelConfigError` for an unknown form or a missing API key.
    """
    spec = (spec if spec is not None else default_model_spec(settings)).strip()
    if spec == OFFLINE:
        # Imported on use: the offline model (and its templates) is only needed when no
        # provider is configured.
        from loopwright.llm.offline import OfflineModel

        return OfflineModel(settings)
    provider, sep, model_id = spec.partition(":")
    model_id = model_id.strip()
    if not sep or not model_id:
        raise ModelConfigError(f"model {spec!r} is not a model string; use {_VALID_FORMS}")
    if provider == "openai":
        return OpenAIChatModel(
            spec,
            model_id,
            settings,
            base_url=settings.openai_base_url,
            api_key=_key(settings.openai_api_key, spec, "LOOPWRIGHT_OPENAI_API_KEY"),
        )
    if provider == "anthropic":
        return AnthropicModel(
            spec,
            model_id,
            settings,
            api_key=_key(settings.anthropic_api_key, spec, "LOOPWRIGHT_ANTHROPIC_API_KEY"),
            base_url=settings.anthropic_base_url,
        )
    field = _LOCAL_BASE_URLS.get(provider)
    if field is None:
        raise ModelConfigError(
            f"unknown model provider {provider!r} in {spec!r}; use {_VALID_FORMS}"
        )
    base_url = str(getattr(settings, field))
    if not base_url:
        raise ModelConfigError(f"{spec} needs a server URL: set LOOPWRIGHT_{field.upper()}")
    return OpenAIChatModel(
        spec,
        model_id,
        settings,
        base_url=base_url,
        provider=provider,
        auth_hint=f"Loopwright sends no API key to {provider}; check that "
        f"LOOPWRIGHT_{field.upper()} points at the server you mean",
    )


def _key(secret: SecretStr | None, spec: str, env: str) -> str:
    value = secret.get_secret_value() if secret is not None else ""
    if not value:
        raise ModelConfigError(
            f"{spec} needs an API key: set {env}, or choose another model with LOOPWRIGHT_MODEL "
            f"(e.g. ollama:qwen2.5-coder or offline)"
        )
    return value


def _has(secret: SecretStr | None) -> bool:
    return secret is not None and bool(secret.get_secret_value())
