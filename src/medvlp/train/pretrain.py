"""A pretraining run: data + backbone + method + engine, saved as a model folder.

This is the glue behind ``medvlp pretrain``; it only wires lower layers together. Everything a run
decides is in ``PretrainConfig``, saved resolved beside the outputs.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from medvlp.config import StrictConfig, save_config
from medvlp.methods.registry import BuildContext, get_method_builder
from medvlp.train.engine import TrainConfig, TrainResult, fit

log = logging.getLogger(__name__)


class DataConfig(StrictConfig):
    dataset: str = "nih1000"
    root: str | None = None
    split: Literal["train", "train+val"] = "train"
    # Quarantine unreadable items (listed in the run's output) instead of failing on the first.
    skip_bad: bool = False
    # Extra reader options, e.g. {"limit": 2000} for ham10000 or {"label_cols": [...]} for a manifest.
    options: dict[str, Any] = Field(default_factory=dict)


class ModelConfig(StrictConfig):
    name: str = "vit_tiny_p4_28"
    pretrained: str | None = None
    in_chans: int | None = None
    img_size: int | None = None
    drop_path_rate: float = 0.0


class AugmentConfig(StrictConfig):
    enabled: bool = True
    scale: tuple[float, float] = (0.7, 1.0)
    # Off by default: chest radiographs carry laterality (heart on the left), a flip changes meaning.
    hflip: bool = False
    rotate_deg: float = 0.0


class MethodConfig(StrictConfig):
    name: str = "supervised"
    options: dict[str, Any] = Field(default_factory=dict)


class PretrainConfig(StrictConfig):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    out_dir: str = "runs/pretrain"


def run_pretrain(cfg: PretrainConfig, *, resume: bool = False, on_log=None) -> tuple[Path, TrainResult]:
    """Train and save. Returns (model folder, training result)."""
    import numpy as np

    from medvlp.data import load_dataset
    from medvlp.data.transforms import Preprocess, TrainAugment
    from medvlp.models import create_model, save_pretrained

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    reader_kw = dict(cfg.data.options, **({"skip_bad": True} if cfg.data.skip_bad else {}))
    data = load_dataset(cfg.data.dataset, root=cfg.data.root, **reader_kw)
    if data.quarantined:
        log.warning("%d items quarantined from %s: %s", len(data.quarantined), data.name,
                    ", ".join(str(q["item"]) for q in data.quarantined[:10]))
    keep = np.isin(data.split, ["train", "val"] if cfg.data.split == "train+val" else ["train"])
    train_set = data.subset(keep)

    from medvlp.utils import seed_everything

    # Initial weights depend on the seed alone, so a resumed run rebuilds the same model first.
    seed_everything(cfg.train.seed)
    backbone = create_model(cfg.model.name, pretrained=cfg.model.pretrained, in_chans=cfg.model.in_chans,
                            img_size=cfg.model.img_size, drop_path_rate=cfg.model.drop_path_rate)
    pp = backbone.preprocess
    if cfg.augment.enabled:
        transform = TrainAugment(pp["img_size"], pp["in_chans"], pp["mean"], pp["std"], scale=cfg.augment.scale,
                                 hflip=cfg.augment.hflip, rotate_deg=cfg.augment.rotate_deg)
    else:
        transform = Preprocess.from_dict(pp)
    built = get_method_builder(cfg.method.name)(BuildContext(
        backbone=backbone, train_set=train_set, transform=transform, options=dict(cfg.method.options),
        seed=cfg.train.seed, data_root=cfg.data.root, out_dir=out))
    method = built.method
    result = fit(method, built.dataset, cfg.train, out, resume=resume, collate_fn=built.collate_fn, on_log=on_log)

    model_dir = out / "model"
    metadata = {
        "method": cfg.method.name,
        "pretrain_data": {"dataset": data.name, "split": cfg.data.split, "n_images": len(train_set),
                          "source": data.source},
        "train": {"steps": result.steps, "epochs": result.epochs, "final": result.final},
        "parts_used": {"image_backbone": f"{cfg.model.name} ({cfg.model.pretrained or 'random init'})",
                       **built.parts_used},
        **built.metadata,
    }
    save_pretrained(method.backbone, model_dir, metadata=metadata)
    if built.save_extra is not None:
        built.save_extra(model_dir)
    (out / "train_result.json").write_text(json.dumps({"steps": result.steps, "epochs": result.epochs,
                                                       "final": result.final}, indent=2))
    return model_dir, result
