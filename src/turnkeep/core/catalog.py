"""Model facts: limits, capabilities and prices, from the data file shipped in the package.

The shipped table is `turnkeep/data/models.toml`. A user file with the same layout overrides it field by field
(`Catalog.merged`), and `Catalog.refreshed` folds in what `GET /v1/models` reports. A model id the catalog does
not know gets conservative defaults (`ModelInfo.known` is False) rather than an error: callers at the edge warn.

Money is `Decimal` throughout: prices are parsed from TOML as decimals, so costs add up to the cent exactly.
"""

from __future__ import annotations

import datetime
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from turnkeep.errors import ConfigError, InvalidValue

__all__ = [
    "LIFECYCLES",
    "THINKING_TYPES",
    "Catalog",
    "LongContextPrices",
    "ModelInfo",
    "Prices",
    "default_catalog",
    "parse_catalog",
]

_PRICE_FIELDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
_BOOL_FIELDS = (
    "prefill",
    "system_messages",
    "thinking_binding",
    "compaction",
    "context_editing",
    "threads",
    "forced_tool_choice",
)
_INT_FIELDS = ("context_window", "max_output", "min_cache_tokens", "tokenizer")
_STR_FIELDS = ("display_name", "lifecycle", "retires_at", "deprecated_at", "replacement", "released", "prices_note")
_DATE_FIELDS = ("retires_at", "deprecated_at", "released")

#: Every `thinking.type` the API knows (SDK 2.16 `ThinkingConfigParam`; `GET /v1/models` reports each).
THINKING_TYPES = ("adaptive", "enabled", "disabled", "between_tools")
#: A model's lifecycle as `GET /v1/models` reports it.
LIFECYCLES = ("active", "deprecated", "retired")


@dataclass(frozen=True, slots=True)
class Prices:
    """USD per million tokens."""

    input: Decimal
    output: Decimal
    cache_write_5m: Decimal
    cache_write_1h: Decimal
    cache_read: Decimal


@dataclass(frozen=True, slots=True)
class LongContextPrices:
    """Prices that apply to a whole request whose input exceeds `above_input_tokens`."""

    above_input_tokens: int
    prices: Prices


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What turnkeep needs to know about one model."""

    id: str
    display_name: str
    context_window: int
    max_output: int
    min_cache_tokens: int
    prefill: bool
    system_messages: bool
    thinking_binding: bool
    tokenizer: int
    compaction: bool
    context_editing: bool
    threads: bool
    thinking: tuple[str, ...]
    """Every `thinking.type` the model accepts ("disabled" included only where it is accepted)."""
    prices: Prices
    long_context: LongContextPrices | None = None
    batch_discount: Decimal = Decimal("0.5")
    lifecycle: str = "active"
    retires_at: str | None = None
    prices_note: str | None = None
    aliases: tuple[str, ...] = ()
    known: bool = True
    forced_tool_choice: bool = True
    """Accepts `tool_choice` of type "any" or "tool"."""
    thinking_readers: tuple[str, ...] = ()
    """On a binding model: the models that can read the thinking blocks it writes."""
    deprecated_at: str | None = None
    replacement: str | None = None
    """The model to move to, for a deprecated or retired model."""
    released: str | None = None
    """Release date (YYYY-MM-DD) where it is known."""

    def prices_for(self, total_input_tokens: int) -> Prices:
        """The price list that applies to a request of that many input tokens (long-context bands)."""
        band = self.long_context
        if band is not None and total_input_tokens > band.above_input_tokens:
            return band.prices
        return self.prices


@dataclass(frozen=True, slots=True)
class Catalog:
    """An immutable table of `ModelInfo` by model id (aliases included), plus the defaults for the rest."""

    models: Mapping[str, ModelInfo]
    defaults: ModelInfo
    _raw: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False)

    def get(self, model: str) -> ModelInfo:
        """Facts for `model`; an unknown id gets the conservative defaults with `known=False`."""
        info = self.models.get(model)
        if info is not None:
            return info
        readers = (model,) if self.defaults.thinking_binding else ()
        return replace(self.defaults, id=model, display_name=model, known=False, thinking_readers=readers)

    def __contains__(self, model: object) -> bool:
        return model in self.models

    def __iter__(self) -> Iterator[str]:
        """Canonical ids (not aliases), in file order."""
        return (model_id for model_id, info in self.models.items() if info.id == model_id)

    def ids(self) -> list[str]:
        """Every id the catalog answers for, aliases included."""
        return list(self.models)

    def merged(self, text: str, *, source: str = "<override>") -> Catalog:
        """A new catalog with the TOML `text` laid over this one, field by field."""
        return parse_catalog(text, source=source, base=self)

    def refreshed(self, api_models: Iterable[Mapping[str, Any]]) -> Catalog:
        """A new catalog updated with model objects as `GET /v1/models` returns them (JSON dicts).

        Limits, lifecycle and capabilities come from the API; prices stay as the catalog has them (the API
        does not publish prices). A model the catalog lacks is added on top of the defaults.
        """
        raw = {model_id: dict(entry) for model_id, entry in self._raw.items()}
        for api in api_models:
            model_id = str(api["id"])
            entry = raw.setdefault(model_id, {"prices_note": "not in the catalog; default prices"})
            same_as = entry.pop("same_as", None)
            if same_as in self._raw:
                # A twin keeps what it inherits: only the API's facts replace the base model's.
                base = {key: value for key, value in self._raw[same_as].items() if key not in ("aliases", "same_as")}
                entry.update({**base, **entry})
            entry.update(_facts_from_api(api))
            if model_id not in self.models:
                entry.setdefault("display_name", str(api.get("display_name") or model_id))
        return _build(dict(self._raw.get("__defaults__", {})), raw)


def _facts_from_api(api: Mapping[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    if api.get("max_input_tokens"):
        facts["context_window"] = int(api["max_input_tokens"])
    if api.get("max_tokens"):
        facts["max_output"] = int(api["max_tokens"])
    if api.get("lifecycle"):
        facts["lifecycle"] = str(api["lifecycle"])
    if api.get("retires_at"):
        facts["retires_at"] = str(api["retires_at"])[:10]
    if api.get("deprecated_at"):
        facts["deprecated_at"] = str(api["deprecated_at"])[:10]
    capabilities = api.get("capabilities") or {}
    management = capabilities.get("context_management") or {}
    if management:
        facts["compaction"] = bool((management.get("compact_20260112") or {}).get("supported"))
        facts["context_editing"] = bool((management.get("clear_tool_uses_20250919") or {}).get("supported"))
    thinking_types = (capabilities.get("thinking") or {}).get("types") or {}
    if thinking_types:
        # All four types, `disabled` and `between_tools` included: each is accepted or refused on its own.
        facts["thinking"] = [name for name in THINKING_TYPES if (thinking_types.get(name) or {}).get("supported")]
    return facts


def parse_catalog(text: str, *, source: str = "<catalog>", base: Catalog | None = None) -> Catalog:
    """Build a catalog from TOML text in the layout of `data/models.toml`, optionally over a `base`."""
    try:
        data = tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: not valid TOML: {err}") from err
    unknown_sections = set(data) - {"defaults", "models"}
    if unknown_sections:
        raise ConfigError(f"{source}: unknown section(s) {sorted(unknown_sections)}; expected defaults, models")
    defaults = dict(base._raw.get("__defaults__", {})) if base else {}
    defaults.update(_table(data.get("defaults", {}), f"{source}: [defaults]"))
    raw = {model_id: dict(entry) for model_id, entry in (base._raw.items() if base else ())}
    raw.pop("__defaults__", None)
    for model_id, entry in _table(data.get("models", {}), f"{source}: [models]").items():
        merged = raw.setdefault(model_id, {})
        merged.update(_table(entry, f"{source}: [models.{model_id}]"))
    try:
        return _build(defaults, raw)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"{source}: {err}") from err


def _table(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    return value


def _build(defaults: dict[str, Any], raw: dict[str, dict[str, Any]]) -> Catalog:
    default_info = _info("__defaults__", defaults, {}, known=False)
    models: dict[str, ModelInfo] = {}
    for model_id, entry in raw.items():
        resolved = dict(entry)
        same_as = resolved.pop("same_as", None)
        if same_as is not None:
            if same_as not in raw:
                raise InvalidValue(f"[models.{model_id}] same_as names unknown model {same_as!r}")
            resolved = {**raw[same_as], **resolved}
            resolved.pop("aliases", None)
            resolved["aliases"] = entry.get("aliases", [])
        info = _info(model_id, resolved, defaults, known=True)
        models[model_id] = info
        for alias in info.aliases:
            models[alias] = info
    stored_raw: dict[str, Mapping[str, Any]] = {**raw, "__defaults__": defaults}
    return Catalog(models=models, defaults=default_info, _raw=stored_raw)


def _info(model_id: str, entry: Mapping[str, Any], defaults: Mapping[str, Any], *, known: bool) -> ModelInfo:
    merged = {**defaults, **entry}
    unknown = set(merged) - {
        *_BOOL_FIELDS,
        *_INT_FIELDS,
        *_STR_FIELDS,
        "thinking",
        "prices",
        "long_context",
        "batch_discount",
        "aliases",
        "thinking_readers",
    }
    if unknown:
        raise InvalidValue(f"[models.{model_id}] has unknown field(s) {sorted(unknown)}")
    merged.setdefault("forced_tool_choice", True)  # a later field: files written before it stay valid
    for name in _BOOL_FIELDS:
        if not isinstance(merged.get(name), bool):
            raise InvalidValue(f"[models.{model_id}] {name} must be true or false")
    for name in _INT_FIELDS:
        if not isinstance(merged.get(name), int) or isinstance(merged.get(name), bool) or merged[name] <= 0:
            raise InvalidValue(f"[models.{model_id}] {name} must be a positive integer")
    lifecycle = str(merged.get("lifecycle", "active"))
    if lifecycle not in LIFECYCLES:
        raise InvalidValue(f"[models.{model_id}] lifecycle must be one of {', '.join(LIFECYCLES)}, not {lifecycle!r}")
    thinking = tuple(str(t) for t in merged.get("thinking", ()))
    unknown_types = [t for t in thinking if t not in THINKING_TYPES]
    if unknown_types:
        raise InvalidValue(
            f"[models.{model_id}] thinking has unknown type(s) {unknown_types}; known: {', '.join(THINKING_TYPES)}"
        )
    for name in _DATE_FIELDS:
        value = merged.get(name)
        if value is not None and not _is_date(value):
            raise InvalidValue(f"[models.{model_id}] {name} must be a date written YYYY-MM-DD, not {value!r}")
    readers = tuple(str(r) for r in merged.get("thinking_readers", ()))
    if readers and not merged["thinking_binding"]:
        raise InvalidValue(f"[models.{model_id}] thinking_readers applies only to a model with thinking_binding = true")
    long_context = None
    if merged.get("long_context") is not None:
        band = dict(merged["long_context"])
        long_context = LongContextPrices(int(band.pop("above_input_tokens")), _prices(band, model_id))
    return ModelInfo(
        id=model_id,
        display_name=str(merged.get("display_name") or model_id),
        context_window=merged["context_window"],
        max_output=merged["max_output"],
        min_cache_tokens=merged["min_cache_tokens"],
        prefill=merged["prefill"],
        system_messages=merged["system_messages"],
        thinking_binding=merged["thinking_binding"],
        tokenizer=merged["tokenizer"],
        compaction=merged["compaction"],
        context_editing=merged["context_editing"],
        threads=merged["threads"],
        thinking=thinking,
        prices=_prices(merged.get("prices"), model_id),
        long_context=long_context,
        batch_discount=Decimal(str(merged.get("batch_discount", "0.5"))),
        lifecycle=lifecycle,
        retires_at=_date(merged.get("retires_at")),
        prices_note=merged.get("prices_note"),
        aliases=tuple(str(a) for a in merged.get("aliases", ())),
        known=known,
        forced_tool_choice=merged.get("forced_tool_choice", True),
        # A binding model's blocks are readable by itself alone unless the catalog names its readers.
        thinking_readers=readers or ((model_id,) if merged["thinking_binding"] else ()),
        deprecated_at=_date(merged.get("deprecated_at")),
        replacement=str(merged["replacement"]) if merged.get("replacement") else None,
        released=_date(merged.get("released")),
    )


def _is_date(value: object) -> bool:
    if isinstance(value, datetime.date):
        return True
    text = str(value)
    try:
        datetime.date.fromisoformat(text[:10])
    except ValueError:
        return False
    return len(text) >= 10


def _date(value: object) -> str | None:
    return str(value)[:10] if value else None


def _prices(value: object, model_id: str) -> Prices:
    if not isinstance(value, Mapping):
        raise InvalidValue(f"[models.{model_id}] prices must be a table of {', '.join(_PRICE_FIELDS)}")
    missing = [name for name in _PRICE_FIELDS if name not in value]
    if missing:
        raise InvalidValue(f"[models.{model_id}] prices lacks {', '.join(missing)}")
    extra = set(value) - set(_PRICE_FIELDS)
    if extra:
        raise InvalidValue(f"[models.{model_id}] prices has unknown field(s) {sorted(extra)}")
    amounts = {name: Decimal(str(value[name])) for name in _PRICE_FIELDS}
    if any(amount < 0 for amount in amounts.values()):
        raise InvalidValue(f"[models.{model_id}] prices must not be negative")
    return Prices(**amounts)


@cache
def default_catalog() -> Catalog:
    """The catalog shipped in the package (read once; package data, not user files)."""
    text = resources.files("turnkeep").joinpath("data/models.toml").read_text(encoding="utf-8")
    return parse_catalog(text, source="turnkeep/data/models.toml")
