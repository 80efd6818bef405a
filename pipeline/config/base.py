"""The config package's shared pieces: its two error types and the base of every section."""

from __future__ import annotations

from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class DataError(ValueError):
    """Bad or missing data; the message says where (file, line, field) and what to do."""


def _names(annotation: Any, kind: type) -> bool:
    """Whether a field's type names `kind`, looking into unions, Optional and Annotated."""
    return annotation is kind or any(_names(arg, kind) for arg in get_args(annotation))


class Section(BaseModel):
    # Each field's docstring becomes its description: `rlvr <stage> --help` and `--print-config` show it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """YAML's `true`/`false` given to a number key is an error, not 1/0 (pydantic's lax mode would
        accept `rl.max_staleness=true` as 1)."""
        if isinstance(value, bool) and info.field_name is not None:
            annotation = cls.model_fields[info.field_name].annotation
            if not _names(annotation, bool) and (_names(annotation, int) or _names(annotation, float)):
                raise ValueError("expects a number, not a boolean")
        return value
