"""The config package's shared pieces: its two error types and the base of every section."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


class DataError(ValueError):
    """Bad or missing data; the message says where (file, line, field) and what to do."""


class Section(BaseModel):
    # Each field's docstring becomes its description: `rlvr <stage> --help` and `--print-config` show it.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)

