"""Fit the guide's small CNN on the prepared datasets and save it with its history."""

import sys
from pathlib import Path

import numpy as np
from common import params, seed_everything, tf


def main(prepared: Path, out: Path) -> None:
    prepare, settings = params("prepare"), params("train")
    seed_everything(settings["seed"])
    shape = (*prepare["image_size"], 1 if prepare["grayscale"] else 3)
    model = tf.keras.Sequential(
        [
            tf.keras.Input(shape=shape),
            tf.keras.layers.Conv2D(settings["conv_size"], (3, 3), activation="relu"),
            tf.keras.layers.MaxPooling2D((3, 3)),
            tf.keras.layers.Flatten(),
            tf.keras.layers.Dense(settings["dense_size"], activation="relu"),
            tf.keras.layers.Dense(settings["output_classes"]),
        ]
    )
    model.compile(
        optimizer=tf.keras.optimizers.Adam(settings["lr"]),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[tf.keras.metrics.SparseCategoricalAccuracy()],
    )
    train = tf.data.Dataset.load(str(prepared / "train"))
    val = tf.data.Dataset.load(str(prepared / "test"))
    history = model.fit(train, epochs=settings["epochs"], validation_data=val, verbose=2)
    out.mkdir(parents=True, exist_ok=True)
    model.save(out / "model.keras")
    np.save(out / "history.npy", history.history)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
