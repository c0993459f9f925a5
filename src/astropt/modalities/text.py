"""Text of a record: a caption column, or a catalogue line rendered from its labels.

:class:`TextRenderer` turns Observation records into the strings of ``model.text`` (see
:class:`astropt.config.TextConfig`); the loader puts them in a batch as ``batch["text"]``.
The strings stay strings here: only the LLM backbone's own tokenizer, which travels with
its weights, turns them into ids (see :meth:`astropt.model.backbones.LLMBackbone.text_ids`).
"""

from __future__ import annotations

import math
from typing import Any

from astropt.config import TextConfig
from astropt.errors import TokenizationError


class TextRenderer:
    """Records -> one string each, by ``config.column`` or ``config.template``."""

    def __init__(self, config: TextConfig):
        if not config.enabled:
            raise ValueError("TextRenderer needs model.text.column or model.text.template")
        self.config = config

    def render(self, record: dict[str, Any]) -> str:
        """The text of one record; a named error when a label it needs is absent."""
        values = {**{k: v for k, v in record.items() if k != "labels"}, **record.get("labels", {})}
        if self.config.column:
            value = self._value(values, self.config.column, record)
            return "" if value is None or _is_nan(value) else str(value)
        try:
            return self.config.template.format(**values)
        except KeyError as exc:
            self._value(values, str(exc.args[0]), record)  # raises the named error
            raise
        except (ValueError, TypeError) as exc:
            raise TokenizationError(
                f"object {record.get('id')!r}: model.text.template {self.config.template!r} does not "
                f"fit its labels ({exc})"
            ) from None

    def render_records(self, records: list[dict[str, Any]]) -> list[str]:
        return [self.render(r) for r in records]

    @staticmethod
    def _value(values: dict[str, Any], name: str, record: dict[str, Any]) -> Any:
        if name not in values:
            raise TokenizationError(
                f"object {record.get('id')!r} has no label {name!r} for model.text; it has "
                f"{sorted(values)[:20]}"
            )
        return values[name]


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)
