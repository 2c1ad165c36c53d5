"""Self-supervised pretraining of an encoder on unlabelled imagery (denoising autoencoder).

The route when no pretrained weights exist for a sensor. Random crops of the images are
corrupted, and a light decoder on the encoder's deep features (strides 32, 16 and 8 only, no
shallow skips, so the network cannot copy pixels through) reconstructs the clean crop;
the loss is the mean squared error in the normalised range. Corruption per crop:

* Gaussian noise of standard deviation ``noise`` (in the normalised ``[-1, 1]`` range);
* masking: each ``patch x patch`` cell is set to 0 (mid-grey) with probability ``mask_ratio``.

After the last step, the batch-norm running statistics are re-estimated as the exact mean over
a few batches of clean crops (:func:`edgeseg.training.stages.recalibrate_batchnorm`). Keras's
MobileNet batch-norm layers average with momentum 0.999: after the few hundred steps of a short
pretraining their running statistics are still mostly the initial 0 and 1, the encoder's
deep features at inference are then a near-constant of +-0.01 whatever the image, a model
trained on them learns from its shallow skips only, and int8 quantization cannot keep the
little that varies.

Output: ``OUT/encoder.h5``, the backbone's weights in the layout of a Keras-applications
no-top file (``edgeseg train --encoder-weights OUT`` or ``OUT/encoder.h5``), and
``OUT/pretrain.json`` (settings and loss per epoch).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeseg.data.dataset import Sample
from edgeseg.data.pipeline import Augment, CropSampler
from edgeseg.models import layers as blocks
from edgeseg.models.backbones import build_backbone, get_backbone_spec
from edgeseg.tf_env import tf_keras
from edgeseg.training.runs import PRETRAINED_ENCODER, copy_weights, write_json
from edgeseg.training.stages import recalibrate_batchnorm
from firmware_bridge.errors import EdgesegError
from firmware_bridge.fsutil import atomic_path
from firmware_bridge.io.images import read_image
from firmware_bridge.io.pairs import IMAGE_SUFFIXES


@dataclass
class PretrainConfig:
    """Settings of a denoising-autoencoder pretraining."""

    backbone: str = "mobilenetv2_035"
    crop: int = 128
    batch: int = 16
    epochs: int = 10
    steps_per_epoch: int = 100
    lr: float = 1e-3
    noise: float = 0.2
    mask_ratio: float = 0.4
    patch: int = 16
    encoder_weights: str | None = None
    seed: int = 0
    time_budget_s: float | None = None
    bn_batches: int = 8


@dataclass
class PretrainResult:
    """Where the encoder went, and the mean loss of each epoch."""

    encoder_path: str
    losses: list[float]
    elapsed_s: float


def corrupt(images: np.ndarray, rng: np.random.Generator, noise: float, mask_ratio: float,
            patch: int) -> np.ndarray:
    """Add Gaussian noise and blank random patches of a normalised ``NxHxWx3`` batch."""
    n, h, w, _ = images.shape
    out = images + rng.normal(0.0, noise, images.shape).astype(np.float32)
    keep = rng.random((n, -(-h // patch), -(-w // patch))) >= mask_ratio
    keep = np.repeat(np.repeat(keep, patch, axis=1), patch, axis=2)[:, :h, :w]
    return np.clip(out * keep[..., None], -1.0, 1.0).astype(np.float32)


def build_autoencoder(backbone: str, crop: int, encoder_weights=None):
    """The encoder flat on a ``crop x crop`` input and a light reconstruction decoder.

    Returns:
        The autoencoder; its encoder layers keep the Keras-applications names.
    """
    _, keras = tf_keras()
    inputs = keras.Input((crop, crop, 3), name="image")
    features = build_backbone(backbone, inputs, encoder_weights)
    x = blocks.conv_bn_relu(features[32], 128, "ae_bottom")
    for stride, filters in ((16, 64), (8, 48), (4, 32), (2, 24)):
        x = keras.layers.UpSampling2D(2, interpolation="bilinear", name=f"ae_up{stride}")(x)
        if stride in (16, 8):
            x = keras.layers.Concatenate(name=f"ae_cat{stride}")([x, features[stride]])
        x = blocks.sep_conv_bn_relu(x, filters, f"ae_s{stride}")
    x = keras.layers.UpSampling2D(2, interpolation="bilinear", name="ae_up1")(x)
    outputs = keras.layers.Conv2D(3, 3, padding="same", name="ae_out")(x)
    return keras.Model(inputs, outputs, name=f"dae_{backbone}")


def save_encoder(model, backbone: str, path) -> None:
    """Write the encoder of ``model`` as a Keras-applications no-top weights file.

    The weights are copied by layer name into the backbone's own ``keras.applications``
    model, whose ``save_weights`` writes exactly the layout that ``weights=<file>`` loads
    (by layer order), whatever order the flat copy inside ``model`` has.
    """
    _, keras = tf_keras()
    spec = get_backbone_spec(backbone)
    constructor = getattr(keras.applications, spec["constructor"])
    app = constructor(input_shape=tuple(model.input_shape[1:]), include_top=False, weights=None,
                      **spec["params"])
    copy_weights(model, app)
    with atomic_path(path) as tmp:
        app.save_weights(str(tmp))


def pretrain(config: PretrainConfig, images: list[np.ndarray], out_dir, verbose: bool = True
             ) -> PretrainResult:
    """Pretrain an encoder as a denoising autoencoder and save its weights.

    Args:
        config: Settings.
        images: Unlabelled 8-bit RGB images (any sizes).
        out_dir: Output directory (created).
        verbose: One line per epoch.

    Returns:
        The result; the encoder is at ``result.encoder_path``.

    Raises:
        EdgesegError: With no images or images that are not 8-bit RGB.
    """
    started = time.monotonic()
    tf, keras = tf_keras()
    if not images:
        raise EdgesegError("no images to pretrain on")
    keras.utils.set_random_seed(config.seed)
    samples = [Sample(str(i), im, np.zeros(im.shape[:2], np.uint8)) for i, im in enumerate(images)]
    sampler = CropSampler(samples, 1, config.crop, 0.0, Augment())
    model = build_autoencoder(config.backbone, config.crop, config.encoder_weights)
    opt = keras.optimizers.Adam(config.lr)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables, strict=True))
        return loss

    losses: list[float] = []
    for epoch in range(config.epochs):
        rng = np.random.default_rng([config.seed, epoch, 1])
        epoch_losses = []
        for clean, _ in sampler.dataset(config.seed, epoch, config.steps_per_epoch, config.batch):
            noisy = corrupt(clean.numpy(), rng, config.noise, config.mask_ratio, config.patch)
            epoch_losses.append(float(step(noisy, clean)))
            if config.time_budget_s and time.monotonic() - started >= config.time_budget_s:
                break
        losses.append(float(np.mean(epoch_losses)))
        if verbose:
            print(f"pretrain epoch {epoch + 1}/{config.epochs}: reconstruction MSE {losses[-1]:.4f}, "
                  f"{time.monotonic() - started:.0f} s", flush=True)
        if config.time_budget_s and time.monotonic() - started >= config.time_budget_s:
            break
    recal = sampler.dataset(config.seed + 1, 0, config.bn_batches, config.batch)
    recalibrate_batchnorm(model, (clean for clean, _ in recal))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / PRETRAINED_ENCODER
    save_encoder(model, config.backbone, path)
    elapsed = time.monotonic() - started
    write_json(out / "pretrain.json", {"config": dataclasses.asdict(config), "losses": losses,
                                        "elapsed_s": round(elapsed, 1), "images": len(images)})
    return PretrainResult(str(path), losses, elapsed)


def pretrain_folder(images_dir, out_dir, config: PretrainConfig | None = None,
                    verbose: bool = True) -> PretrainResult:
    """Pretrain on every image of a folder (``edgeseg pretrain --images DIR``).

    Args:
        images_dir: Folder of unlabelled images (PNG, JPEG, TIFF).
        out_dir: Output folder; ``--encoder-weights`` of a training takes it.
        config: Settings (``None``: the defaults).
        verbose: One line per epoch.

    Returns:
        The result (the encoder weights file).

    Raises:
        EdgesegError: For a missing folder or one without images.
    """
    folder = Path(images_dir)
    if not folder.is_dir():
        raise EdgesegError(f"{folder}: not a folder of images")
    files = [p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise EdgesegError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return pretrain(config or PretrainConfig(), [read_image(p) for p in files], out_dir, verbose)
