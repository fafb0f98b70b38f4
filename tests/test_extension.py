"""One plug-in of each kind, registered from this file alone (no edit under lrcn/): an encoder, a
decoder wiring, a metric and a dataset reader, used end to end through the config and the CLI:
prepare -> train -> evaluate -> score."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from conftest import REPO
from PIL import Image
from torch import nn

from lrcn.cli import main
from lrcn.data.readers import register_reader
from lrcn.errors import LrcnError
from lrcn.metrics import register_metric
from lrcn.models import Wiring, register_encoder, register_wiring

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


@register_encoder("ext_colour_mean", mean=(0.5,) * 3, std=(0.25,) * 3)
def colour_mean(weights: str, feature_dim: int = 8, **_: object) -> tuple[nn.Module, int]:
    """The image's mean colour through a linear layer: all a one-colour picture needs."""
    if weights not in ("none", ""):
        raise LrcnError("ext_colour_mean has no pretrained weights; set encoder.weights=none.")
    return nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, feature_dim)
    ), feature_dim


@register_wiring("ext_gru")
class GRUShowTell(Wiring):
    """Show and Tell with a GRU core: the projected image is the first input."""

    def __init__(self, embed_dim: int, hidden_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__(embed_dim, hidden_dim, num_layers, dropout)
        self.gru = nn.GRU(embed_dim, hidden_dim, num_layers, batch_first=True)

    def init_state(self, visual: torch.Tensor) -> dict[str, torch.Tensor]:
        _, h = self.gru(visual.unsqueeze(1))  # (layers, B, H)
        return {"h": h}

    def step(self, word, state, dropout=lambda x: x):  # noqa: ANN001
        out, h = self.gru(word, state["h"])  # (B, 1, H)
        return out[:, 0], {"h": h}


@register_metric("ext_colour")
class ColourNamed:
    """Share of captions whose colour word is one of the references' colour words."""

    keys = ("ColourNamed",)

    def compute_score(self, gts, res):  # noqa: ANN001
        per_item = np.array(
            [
                float(bool({w for r in gts[k] for w in r} & set(res[k][0]) & set(COLOURS)))
                for k in res
            ]
        )
        return float(per_item.mean()), per_item


@register_reader("ext_swatches")
def read_swatches(root: str, check_files: bool = False) -> list[dict]:
    """Every ``<split>-<colour>-<n>.png`` under ``root``: one colour swatch, two captions."""
    records = []
    for path in sorted(Path(root).glob("*.png")):
        split, colour, _ = path.stem.split("-")
        captions = [f"a {colour} square", f"a square that is {colour}"]
        records.append({"id": path.stem, "path": str(path), "split": split, "captions": captions})
    return records


def _swatches(root: Path) -> None:
    root.mkdir()
    for split, count in (("train", 8), ("val", 2), ("test", 2)):
        for colour, rgb in COLOURS.items():
            for n in range(count):
                pixels = np.full((16, 16, 3), rgb, dtype=np.uint8)
                Image.fromarray(pixels).save(root / f"{split}-{colour}-{n}.png")


def test_plugins_of_every_kind_work_through_the_config_and_the_cli(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    root, manifest, run = tmp_path / "swatches", tmp_path / "manifest", tmp_path / "run"
    _swatches(root)
    assert main(["prepare", "ext_swatches", "--root", str(root), "--out", str(manifest)]) == 0

    plugin = [
        "task=caption", "data.dataset=manifest", f"data.manifest={manifest}", "data.image_size=16",
        "encoder.name=ext_colour_mean", "encoder.feature_dim=8", "decoder.variant=ext_gru",
        "decoder.embed_dim=16", "decoder.hidden_dim=32", "train.epochs=3", "train.batch_size=8",
        "train.lr=0.01", "train.progress=false", "eval.metrics=bleu,ext_colour",
        "eval.tokenizer=python",
    ]  # fmt: skip
    shapes = str(REPO / "configs" / "shapes.yaml")
    assert main(["train", "-c", shapes, "--run-dir", str(run), "--no-test", *plugin]) == 0
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert any(key.startswith("decoder.gru.") for key in state)  # the plug-in wiring was trained

    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((run / "eval" / "test_metrics.json").read_text())
    assert "ColourNamed" in printed and 0.0 <= metrics["ColourNamed"] <= 1.0
    assert "Bleu_4" in metrics and metrics["items"] == 6

    # the same results through `lrcn score`, with the plug-in metric named on the command line
    references = json.loads((run / "eval" / "test_references.json").read_text())
    ids = {item_id: n for n, item_id in enumerate(sorted(references))}
    annotations = tmp_path / "annotations.json"
    annotations.write_text(json.dumps({
        "images": [{"id": n} for n in ids.values()],
        "annotations": [{"image_id": ids[k], "id": i, "caption": c}
                        for i, (k, c) in enumerate((k, c) for k, cs in references.items() for c in cs)],
    }))  # fmt: skip
    captions = json.loads((run / "eval" / "test_captions.json").read_text())
    results = tmp_path / "results.json"
    results.write_text(
        json.dumps([{"image_id": ids[r["image_id"]], "caption": r["caption"]} for r in captions])
    )
    capsys.readouterr()
    assert main(["score", "--annotations", str(annotations), "--results", str(results),
                 "--metrics", "bleu,ext_colour", "--tokenizer", "python"]) == 0  # fmt: skip
    scored = json.loads(capsys.readouterr().out)
    assert scored["ColourNamed"] == metrics["ColourNamed"]
    assert scored["Bleu_4"] == metrics["Bleu_4"]
