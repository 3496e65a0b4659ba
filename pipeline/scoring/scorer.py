"""The model actor: images and token ids in, embeddings, scores and row status out.

Each actor loads its models once and keeps them on its device, with the heads
and concepts computed from their embeddings; Ray Data feeds it batches of image
bytes and token ids. The actor composes three parts: row checks
and decoding (`checks`), the batch made ready for the device (`prepare`), and
the towers with the columns they make (`towers`). Bad rows get a status and a
reason and never fail the batch; good rows in the same batch are scored as if
the bad ones were not there.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from pipeline.config import ImagesConfig, ModelConfig
from pipeline.config_sections import ConceptConfig, HeadConfig
from pipeline.models.encoder import Encoder, encoder_for
from pipeline.models.heads import column_scorers
from pipeline.scoring.prepare import GPU_PIL_THREADS, BatchPreparer, Prepared
from pipeline.scoring.towers import Towers


class ClipScorer:
    """Ray Data callable class: one instance per actor, models loaded once.

    On a GPU, Ray may run several calls at once on one actor
    (`ray.batches_in_flight`): preparing runs unlocked, so the next batch gets
    ready while this one is in the towers, which take one batch at a time. A CPU
    actor gets one batch at a time (see `placement`) and decodes its images on all
    of its threads; a GPU actor its PIL rows on `decode_threads`
    (`images.decode_threads` first, at least `GPU_PIL_THREADS` if neither says).
    """

    def __init__(
        self,
        *,
        models: list[dict[str, Any]],
        images: dict[str, Any],
        heads: list[dict[str, Any]],
        concepts: list[dict[str, Any]],
        embedding_dtype: str,
        device: str,
        threads: int | None = None,
        decode_threads: int | None = None,
    ) -> None:
        import torch

        if threads:
            torch.set_num_threads(threads)
        settings = ImagesConfig(**images)
        self.configs = [ModelConfig(**m) for m in models]
        self.models: list[Encoder] = [encoder_for(c).load(c, device=device) for c in self.configs]
        own = GPU_PIL_THREADS if device.startswith("cuda") else threads or torch.get_num_threads()
        self.preparer = BatchPreparer(
            encoders=self.models,
            configs=self.configs,
            images=settings,
            device=device,
            threads=settings.decode_threads or decode_threads or own,
        )
        scorers = column_scorers(
            heads=[HeadConfig(**head) for head in heads],
            concepts=[ConceptConfig(**concept) for concept in concepts],
            encoders=self.models,
            models=self.configs,
            device=device,
        )
        self.towers = Towers(
            encoders=self.models,
            configs=self.configs,
            scorers=scorers,
            device=device,
            embedding_dtype=embedding_dtype,
        )

    def prepare(self, table: pa.Table) -> Prepared:
        return self.preparer.prepare(table)

    def __call__(self, table: pa.Table) -> pa.Table:
        """A call's rows scored; a larger block than a batch (a CPU actor is handed whole
        blocks, see `build_dataset`) a batch at a time, which bounds its pixels' memory."""
        step = max(config.batch_size for config in self.configs)
        if table.num_rows <= step:
            return self._scored(table)
        return pa.concat_tables(
            [self._scored(table.slice(start, step)) for start in range(0, table.num_rows, step)]
        )

    def _scored(self, table: pa.Table) -> pa.Table:
        prepared = self.prepare(table)
        return self.towers.columns(prepared, self.towers.encode(prepared))
