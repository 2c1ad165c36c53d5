"""Train steps of one model on one device and on two CPU replicas; print how far apart they end.

Run as a script (the two logical CPUs must be set before TensorFlow starts). Prints one JSON
line: ``{"loss_default": ..., "loss_mirrored": ..., "distance": ...}`` where ``distance`` is
the norm of the difference of the two runs' weight updates over the norm of the update.
Arguments: the optimizer (``sgd`` or ``adam``), the number of steps and the float type of the
layers (``float32`` or ``float64``; the head's softmax and the loss stay float32).
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from edgeseg.tf_env import tf_keras  # noqa: E402

tf, keras = tf_keras()
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from edgeseg.models import build_model  # noqa: E402
from edgeseg.training.distribute import Replicas, place_model  # noqa: E402
from edgeseg.training.losses import get_loss  # noqa: E402
from edgeseg.training.stages import make_optimizers, make_train_step, set_stage  # noqa: E402

OPTIMIZER, STEPS = sys.argv[1], int(sys.argv[2])
keras.backend.set_floatx(sys.argv[3] if len(sys.argv) > 3 else "float32")
rng = np.random.default_rng(0)
images = rng.uniform(-1, 1, (STEPS, 4, 64, 64, 3)).astype(np.float32)
masks = rng.integers(0, 5, (STEPS, 4, 64, 64)).astype(np.uint8)


def train(replicas: Replicas):
    keras.utils.set_random_seed(1)
    template = build_model("mobileunet", "mobilenetv2_035", 5, input_size=(64, 64))
    model, _ = place_model(replicas, template)
    enc, head = set_stage(model, 2, "block_13", freeze_encoder_bn=True)
    start = [w.numpy() for w in model.trainable_weights]
    with replicas.scope():
        if OPTIMIZER == "adam":
            enc_opt, head_opt = make_optimizers(enc, head, 1e-3, 0.1)
        else:
            enc_opt, head_opt = keras.optimizers.SGD(0.01), keras.optimizers.SGD(0.1)
            enc_opt.build(enc)
            head_opt.build(head)
    strategy = replicas.strategy if replicas.distributed else None
    step = make_train_step(model, get_loss("ce", 5), enc, head, enc_opt, head_opt, strategy)
    losses = []
    for x, y in zip(images, masks, strict=True):
        if strategy is not None:  # replica r takes crops 2r and 2r + 1 of the global batch

            def part(a):
                def half(ctx, a=a):
                    r = ctx.replica_id_in_sync_group
                    return a[2 * r: 2 * r + 2]

                return strategy.experimental_distribute_values_from_function(half)

            x, y = part(x), part(y)
        losses.append(float(step(x, y)))
    return losses, start, [w.numpy() for w in model.trainable_weights]


loss_a, start, end_a = train(Replicas("default", None))
mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
loss_b, _, end_b = train(Replicas("mirrored", mirrored, 2))
diff = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(end_a, end_b, strict=True)))
update = np.sqrt(sum(((a - s) ** 2).sum() for a, s in zip(end_a, start, strict=True)))
print(json.dumps({"loss_default": loss_a, "loss_mirrored": loss_b, "distance": float(diff / update)}))
