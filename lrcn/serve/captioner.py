"""The model side of `lrcn serve`: a checkpoint loaded once, uploads turned into model inputs, and
one batched decode for many callers' inputs.

Nothing here knows HTTP. `ServedModel.prepare` runs per request (in a thread pool: decoding an
image is CPU work that must not hold the event loop); `ServedModel.caption` runs one gathered
batch in the single model thread. Captions are decoded as `lrcn caption` decodes them (the same
`lrcn.decoding_controls.decode_with` call and settings, decoding controls included): batched beam search gives the captions one-at-a-time
decoding would, which the load test checks on every response.

Activity checkpoints (frames -> label) are refused with one sentence that points at
`lrcn classify`; so is any other checkpoint that does not caption.
"""

from __future__ import annotations

import base64
import io
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from lrcn import build
from lrcn.data.media import frames_to_tensor, image_to_tensor
from lrcn.decoding_controls import Controls, decode_with
from lrcn.engine.evaluation import caption_strips
from lrcn.errors import LrcnError
from lrcn.predict import load_model
from lrcn.serve.uploads import BadUpload, Limits, decode_image, read_video_upload
from lrcn.task import get_task
from lrcn.text.vocab import Vocabulary
from lrcn.visualize import denormalise


@dataclass(frozen=True)
class Job:
    """One caller's prepared input: the model's pixels, (3, S, S) or (T, 3, S, S), and options."""

    pixels: torch.Tensor
    beam_size: int
    attention: bool


@dataclass(frozen=True)
class Outcome:
    """One caption, its words, and the attention strip as PNG bytes when asked for."""

    caption: str
    words: list[str]
    attention_png: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON fields of a ``POST /caption`` answer."""
        data: dict[str, Any] = {"caption": self.caption, "words": self.words}
        if self.attention_png is not None:
            encoded = base64.b64encode(self.attention_png).decode("ascii")
            data["attention_png"] = f"data:image/png;base64,{encoded}"
        return data


class ServedModel:
    """A captioning checkpoint ready to serve (see the module docstring).

    Raises:
        LrcnError: the checkpoint cannot be loaded, or does not caption (activity: a label model).
    """

    def __init__(self, checkpoint: str | Path, overrides: list[str] | None = None) -> None:
        self.model, self.cfg, payload = load_model(checkpoint, overrides=overrides)
        task = get_task(self.cfg.task)
        if not task.captions:
            raise LrcnError(
                f"{payload['path']}: a {task.name} checkpoint {task.cannot_caption}; lrcn serve "
                "serves captioning checkpoints (task caption or video_caption)."
            )
        self.path = payload["path"]
        self.task, self.video = task.name, task.video
        self.attends: str | None = self.model.attends
        self.vocab = Vocabulary.from_dict(payload["vocab"])
        self.device = next(self.model.parameters()).device
        self.mean, self.std = build.normalisation(self.cfg)
        self.default_beam = self.cfg.eval.beam_size
        self.controls = Controls.from_config(self.cfg.eval)
        self.batch_size = max(self.cfg.eval.batch_size, 1)

    def info(self) -> dict[str, Any]:
        """What the page and scripts need to know: inputs, beam default, attention maps."""
        return {
            "checkpoint": self.path,
            "task": self.task,
            "input": "video" if self.video else "image",
            "attention": self.attends is not None,
            "beam_size": self.default_beam,
            "batch_size": self.batch_size,
        }

    def prepare(
        self, data: bytes, name: str, beam_size: int, attention: bool, limits: Limits
    ) -> Job:
        """Decode one upload into the model's input (CPU work: run it off the event loop).

        Raises:
            BadUpload: the upload cannot be read, or attention maps asked of a model without them.
        """
        if attention and self.attends is None:
            raise BadUpload(
                f"{self.path}: decoder.variant {self.cfg.decoder.variant} does not attend, so it "
                "has no attention maps; leave out attention=1."
            )
        if beam_size % self.controls.beam_groups:
            raise BadUpload(
                f"beam_size {beam_size} is not a multiple of the server's eval.beam_groups "
                f"{self.controls.beam_groups} (diverse beam search); send a multiple of it."
            )
        size = self.cfg.data.image_size
        if self.video:
            frames = read_video_upload(data, name, self.cfg.data.num_frames, limits)
            pixels = frames_to_tensor(frames, size, self.mean, self.std)  # (T, 3, S, S)
        else:
            image = decode_image(data, name, size, limits)
            pixels = image_to_tensor(image, size, self.mean, self.std)  # (3, S, S)
        return Job(pixels, beam_size, attention)

    @torch.no_grad()
    def caption(self, jobs: list[Job]) -> list[Outcome]:
        """Caption many callers' inputs: one batched decode per (beam size, attention) group."""
        groups: dict[tuple[int, bool], list[int]] = defaultdict(list)
        for index, job in enumerate(jobs):
            groups[(job.beam_size, job.attention)].append(index)
        outcomes: list[Outcome | None] = [None] * len(jobs)
        for (beam, attention), indices in groups.items():
            for index, outcome in zip(
                indices, self._decode([jobs[i] for i in indices], beam, attention)
            ):
                outcomes[index] = outcome
        return [outcome for outcome in outcomes if outcome is not None]

    def _decode(self, jobs: list[Job], beam: int, attention: bool) -> list[Outcome]:
        key = "frames" if self.video else "images"
        pixels = torch.stack([job.pixels for job in jobs]).to(
            self.device
        )  # (B, 3, S, S) / (B, T, 3, S, S)
        batch = {key: pixels}
        features = self.model.encode(batch)
        tokens = decode_with(
            self.model.decoder,
            features,
            self.vocab.start_id,
            self.vocab.end_id,
            max_length=self.cfg.eval.max_length,
            beam_size=beam,
            length_penalty=self.cfg.eval.length_penalty,
            controls=self.controls,
        )
        strips: list[bytes | None] = [None] * len(jobs)
        if attention:
            pictures = denormalise(pixels.cpu(), self.mean, self.std)
            drawn = caption_strips(self.model, self.vocab, batch, features, tokens, pictures)
            strips = [_png(strip) for strip in drawn]
        outcomes = []
        for ids, strip in zip(tokens, strips):
            words = self.vocab.decode(ids)
            outcomes.append(Outcome(" ".join(words), list(words), strip))
        return outcomes


def _png(picture: Any) -> bytes:
    """A (H, W, 3) uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()
