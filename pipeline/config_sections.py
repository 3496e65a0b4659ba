"""The base of every config section, and the sections of columns made from embeddings.

Heads (small trained layers) and concepts (zero-shot prompts) each add one
float32 column, named by the entry, computed from one model alias's
L2-normalised embeddings: in the model actor during `winnow run`, or afterwards
from the stored embeddings by `winnow filter`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_identifier(value: str, *, what: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{what} must start with a letter and hold only letters, digits and '_' "
            f"(it names columns), got {value!r}"
        )
    return value


class HeadConfig(Section):
    """A linear layer or an MLP over an alias's image or text embedding, from a state dict."""

    name: str = Field(description="The column it writes.")
    alias: str = "clip"
    input: Literal["image", "text"] = "image"
    weights: str = Field(
        description="A .safetensors file, or a .pth/.pt state dict (loaded weights-only); "
        "a local path or any fsspec URL."
    )
    activation: Literal["none", "sigmoid", "softmax"] = Field(
        default="none", description="Applied to the last layer's outputs."
    )
    hidden_activation: Literal["none", "relu"] = Field(
        default="none",
        description="Between layers; the LAION aesthetic predictors have none.",
    )
    output: int = Field(default=0, ge=0, description="Which output of the last layer to write.")

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        return check_identifier(value, what="a head's name")


class ConceptConfig(Section):
    """A zero-shot concept: CLIP's softmax over `prompts` + `against`, summed over `prompts`."""

    name: str = Field(description="The column it writes.")
    alias: str = "clip"
    prompts: list[str] = Field(min_length=1, description="Texts that describe the concept.")
    against: list[str] = Field(min_length=1, description="Texts that describe its absence.")

    @field_validator("name")
    @classmethod
    def _name_is_identifier(cls, value: str) -> str:
        return check_identifier(value, what="a concept's name")


ColumnConfig = HeadConfig | ConceptConfig
