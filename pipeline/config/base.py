"""What every config section shares: closed and frozen, nan/inf refused, and which keys stay out of cache keys."""

from __future__ import annotations

import difflib
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

MAX_IMAGE_SIZE = 1024  # a larger square is a typo (a 10⁶ side asked numpy for terabytes), not a model input
NonNegative = Annotated[int, Field(ge=0)]


class Section(BaseModel):
    # nan/inf refused for every float key: a nan learning rate or momentum trains to nan without a word
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
    # keys that decide where or how fast a stage runs, not what it computes: kept out of cache keys
    not_in_cache_key: ClassVar[frozenset[str]] = frozenset()

    def cache_fields(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=set(self.not_in_cache_key))


def unknown_name(value: str, known) -> str:
    """A name that is not one of ``known``, in words, with the closest known one if any."""
    names = sorted(known)
    close = difflib.get_close_matches(value, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown '{value}' (known: {', '.join(names)}){hint}"
