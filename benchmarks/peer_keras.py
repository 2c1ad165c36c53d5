"""A plain tf-keras segmentation recipe, written as a user would write it in an afternoon.

The peer that ``edgeseg train`` is measured against (``benchmarks/train_vs_peer.py``): no
edgeseg imports. MobileNetV2-0.35 ImageNet encoder, U-Net decoder, cross-entropy + soft Dice, random
256 px crops with flips in batches of 16, Adam 1e-3 with the encoder frozen for the first 40 %
of the time budget, then 1e-4 with the encoder trainable (its batch-norm layers frozen);
validation every two epochs on every validation image (whole, padded to a multiple of 32);
the best epoch is kept.

Usage: ``python benchmarks/peer_keras.py --data TRAIN_DIR --val VAL_DIR --classes CSV
--weights NO_TOP.h5 --minutes 15 --out peer.keras``
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras as keras  # noqa: E402
from PIL import Image  # noqa: E402

SKIPS = ["block_1_expand_relu", "block_3_expand_relu", "block_6_expand_relu", "block_13_expand_relu"]


def load_classes(path):
    """Class colours and ignore colours from a name,colour,ignore CSV."""
    classes, ignore = [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            rgb = tuple(int(row["colour"][i : i + 2], 16) for i in (1, 3, 5))
            (ignore if row["ignore"].strip() == "1" else classes).append(rgb)
    return classes, ignore


def load_folder(folder, classes):
    """Images and class-index masks (255: not a class) of a folder with images/ and masks/."""
    images, masks = [], []
    for image_path in sorted((Path(folder) / "images").iterdir()):
        mask_path = next((Path(folder) / "masks").glob(image_path.stem + ".*"))
        image = np.asarray(Image.open(image_path).convert("RGB"))
        rgb = np.asarray(Image.open(mask_path).convert("RGB")).astype(np.int32)
        packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
        mask = np.full(packed.shape, 255, np.uint8)
        for i, (r, g, b) in enumerate(classes):
            mask[packed == (r << 16) | (g << 8) | b] = i
        images.append(image)
        masks.append(mask)
    return images, masks


def build(num_classes, weights):
    """MobileNetV2-0.35 encoder with ImageNet weights and a U-Net decoder; returns (model, encoder)."""
    base = keras.applications.MobileNetV2(input_shape=(None, None, 3), alpha=0.35,
                                          include_top=False, weights=None)
    base.load_weights(weights, by_name=True, skip_mismatch=True)
    x = base.get_layer("block_16_project").output
    for name, filters in zip(reversed(SKIPS), (96, 64, 32, 24), strict=True):
        x = keras.layers.UpSampling2D(interpolation="bilinear")(x)
        x = keras.layers.Concatenate()([x, base.get_layer(name).output])
        for _ in range(2):
            x = keras.layers.SeparableConv2D(filters, 3, padding="same", use_bias=False)(x)
            x = keras.layers.BatchNormalization()(x)
            x = keras.layers.ReLU()(x)
    x = keras.layers.UpSampling2D(interpolation="bilinear")(x)
    out = keras.layers.Conv2D(num_classes, 1, activation="softmax")(x)
    return keras.Model(base.input, out), base


def loss_fn(num_classes):
    """Cross-entropy plus soft Dice over the batch, ignoring pixels labelled 255."""
    def loss(y_true, y_pred):
        y = tf.cast(y_true[..., 0], tf.int32)
        valid = tf.cast(y != 255, tf.float32)
        onehot = tf.one_hot(tf.where(y == 255, 0, y), num_classes) * valid[..., None]
        ce = -tf.reduce_sum(onehot * tf.math.log(y_pred + 1e-7), -1)
        ce = tf.reduce_sum(ce) / (tf.reduce_sum(valid) + 1e-6)
        p = y_pred * valid[..., None]
        inter = tf.reduce_sum(p * onehot, [0, 1, 2])
        dice = 1 - tf.reduce_mean((2 * inter + 1) / (tf.reduce_sum(p + onehot, [0, 1, 2]) + 1))
        return ce + dice
    return loss


def crops(images, masks, size, batch, rng):
    """Endless batches of random crops, flipped at random, normalised to [-1, 1]."""
    while True:
        xs, ys = [], []
        for _ in range(batch):
            i = rng.integers(len(images))
            h, w = masks[i].shape
            y0, x0 = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            x = images[i][y0 : y0 + size, x0 : x0 + size]
            y = masks[i][y0 : y0 + size, x0 : x0 + size]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(x)
            ys.append(y)
        yield (np.stack(xs).astype(np.float32) / 127.5 - 1), np.stack(ys)[..., None]


def miou(model, images, masks, num_classes):
    """Mean IoU over whole images, each padded to a multiple of 32."""
    cm = np.zeros((num_classes, num_classes), np.int64)
    for image, mask in zip(images, masks, strict=True):
        h, w = mask.shape
        ph, pw = -h % 32, -w % 32
        x = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect").astype(np.float32) / 127.5 - 1
        pred = model.predict(x[None], verbose=0)[0, :h, :w].argmax(-1)
        keep = mask != 255
        cm += np.bincount(mask[keep].astype(np.int64) * num_classes + pred[keep],
                          minlength=num_classes**2).reshape(num_classes, num_classes)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean())


def main():
    """Train within the time budget, keep the best validation epoch."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--val", required=True)
    parser.add_argument("--classes", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--minutes", type=float, default=15)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.monotonic()
    keras.utils.set_random_seed(args.seed)
    classes, _ = load_classes(args.classes)
    k = len(classes)
    train_x, train_y = load_folder(args.data, classes)
    val_x, val_y = load_folder(args.val, classes)
    model, base = build(k, args.weights)
    batches = crops(train_x, train_y, 256, 16, np.random.default_rng(args.seed))
    budget, steps, best, epoch = args.minutes * 60, 50, -1.0, 0
    stage = 0
    while time.monotonic() - start < budget:
        wanted = 1 if time.monotonic() - start < 0.4 * budget else 2
        if wanted != stage:
            stage = wanted
            base.trainable = stage == 2
            for layer in base.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.trainable = False
            model.compile(keras.optimizers.Adam(1e-3 if stage == 1 else 1e-4), loss_fn(k))
        model.fit(batches, steps_per_epoch=steps, epochs=1, verbose=0)
        epoch += 1
        if epoch % 2 == 0 or time.monotonic() - start >= budget:
            score = miou(model, val_x, val_y, k)
            print(f"epoch {epoch} stage {stage}: val mIoU {score:.4f}", flush=True)
            if score > best:
                best = score
                model.save(args.out)
    print(f"best val mIoU {best:.4f} after {epoch} epochs, {time.monotonic() - start:.0f} s")


if __name__ == "__main__":
    main()
