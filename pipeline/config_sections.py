"""The config's plain sections: input, output, download, images, Ray, heads, concepts.

`config.WinnowConfig` composes them with the models and the filters and checks
them against each other. Heads (small trained layers) and concepts (zero-shot
prompts) each add one float32 column, named by the entry, computed from one
model alias's L2-normalised embeddings: in the model actor during `winnow run`,
or afterwards from the stored embeddings by `winnow filter`.
"""

from __future__ import annotations

import re
from typing import Any, Literal

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


class InputConfig(Section):
    path: str | list[str] = Field(
        description="A directory, a glob or a file, or a list of them; any fsspec URL."
    )
    format: Literal["parquet", "webdataset"] = Field(
        default="parquet", description="img2dataset Parquet shards, or WebDataset tars."
    )
    image_column: str = "jpg"
    caption_column: str = "caption"
    id_column: str | None = "key"
    upstream_status_column: str | None = Field(
        default="status",
        description="img2dataset's per-row status; rows not 'success' are carried, not scored.",
    )
    upstream_error_column: str | None = "error_message"
    storage_options: dict[str, Any] = Field(default_factory=dict)

    def paths(self) -> list[str]:
        return [self.path] if isinstance(self.path, str) else list(self.path)


class OutputConfig(Section):
    path: str
    embedding_dtype: Literal["float16", "float32"] = "float16"
    keep_image_bytes: bool = False
    status_column: str = "winnow_status"
    error_column: str = "winnow_error"
    write_rejected: bool = Field(
        default=True,
        description="Write rejected/<shard>.parquet: the rows no policy kept, with why.",
    )
    filtered_embeddings: bool = Field(
        default=False, description="Carry the embedding columns into filtered/ and rejected/."
    )
    report: bool = Field(
        default=True,
        description="Write report/index.html (plots, examples, counts) after each run.",
    )
    rejected_by_column: str = "winnow_rejected_by"
    reject_reason_column: str = "winnow_reject_reason"
    storage_options: dict[str, Any] = Field(default_factory=dict)


class DownloadConfig(Section):
    """`winnow download`: a URL list to img2dataset Parquet shards, read by `winnow run` next."""

    url_list: str = Field(description="A file or folder of URL lists; any fsspec URL.")
    input_format: Literal["csv", "tsv", "parquet", "jsonl", "json", "txt"] = "csv"
    url_col: str = "url"
    caption_col: str | None = "caption"
    output_path: str = Field(description="Where the shards go: point input.path here.")
    extra_columns: list[str] = Field(default_factory=list, description="Other columns to keep.")
    image_size: int = Field(default=256, gt=0, description="Shorter side after resizing.")
    resize_mode: Literal["keep_ratio", "center_crop", "border", "no"] = "keep_ratio"
    resize_only_if_bigger: bool = True
    processes: int = Field(default=1, gt=0)
    threads: int = Field(default=32, gt=0)
    rows_per_shard: int = Field(default=10_000, gt=0)
    timeout_s: int = Field(default=10, gt=0)
    retries: int = Field(default=0, ge=0)


# How a model actor decodes and preprocesses images (`images.decode`).
DecodePath = Literal["auto", "pil", "tensor"]


class ImagesConfig(Section):
    max_pixels: int = Field(
        default=89_478_485,
        gt=0,
        description="Images whose header declares more pixels are refused before decoding.",
    )
    decode: DecodePath = Field(
        default="auto",
        description="auto: nvJPEG + tensor preprocessing on GPU actors, PIL on CPU actors.",
    )
    max_decoded_pixels: int = Field(
        default=2**29,
        gt=0,
        description="Decoded pixels a batch holds at once (3 bytes each; on the GPU for "
        "nvJPEG): a batch whose headers declare more is decoded and preprocessed a part at "
        "a time. Lower it for a small GPU or large photos; an image over it goes alone. "
        "The PIL path preprocesses each image as it decodes it, so holds far less.",
    )
    decode_threads: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Threads each model actor decodes with PIL on (PIL works without the "
        "GIL). null: a CPU actor its own threads; a GPU actor the cores its readers leave, "
        "shared among the actors, at least 4 (the rows nvJPEG does not take, and every row "
        "with decode: pil).",
    )


class RayConfig(Section):
    address: str | None = Field(
        default=None,
        description="null: the cluster a submitted job runs on, else a new local Ray; "
        "'auto', host:port or ray://host:port joins that cluster.",
    )
    num_actors: int | None = Field(
        default=None, gt=0, description="Model actors; null = one per GPU, or sized to the CPUs."
    )
    num_cpus: int | None = Field(
        default=None, gt=0, description="CPUs for a local Ray (null = all of this machine's)."
    )
    batches_in_flight: int = Field(
        default=2,
        ge=1,
        le=8,
        description="Batches each GPU actor holds at once: one in the model while the "
        "next is decoded. 1 = strictly one after the other. CPU actors always take one: "
        "their decoding and towers share the same cores.",
    )
    stall_timeout_s: float = Field(
        default=300.0,
        gt=0,
        description="Seconds a run waits with no rows back while Ray has actors or tasks "
        "it cannot place on any node; then it ends with exit code 1, keeping the shards "
        "committed. Raise it where an autoscaler or other jobs free room slowly.",
    )


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
