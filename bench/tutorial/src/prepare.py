"""Read the raw images into two saved tf.data datasets, with a preview."""

import json
import sys
from pathlib import Path

import matplotlib
from common import params, seed_everything, tf

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(raw: Path, out: Path) -> None:
    settings = params("prepare")
    seed_everything(settings["seed"])
    train, val = tf.keras.utils.image_dataset_from_directory(
        raw,
        labels="inferred",
        label_mode="int",
        color_mode="grayscale" if settings["grayscale"] else "rgb",
        batch_size=32,
        image_size=tuple(settings["image_size"]),
        shuffle=True,
        seed=settings["seed"],
        validation_split=settings["split"],
        subset="both",
    )
    classes = train.class_names
    out.mkdir(parents=True, exist_ok=True)
    figure = plt.figure(figsize=(10, 5), tight_layout=True)
    for images, labels in train.take(1):
        for i in range(10):
            plt.subplot(2, 5, i + 1)
            plt.imshow(images[i].numpy().astype("uint8"), cmap="gray")
            plt.title(classes[int(labels[i])])
            plt.axis("off")
    figure.savefig(out / "preview.png")
    rescale = tf.keras.layers.Rescaling(1.0 / 255)
    (out / "labels.json").write_text(json.dumps(classes))
    tf.data.Dataset.save(train.map(lambda x, y: (rescale(x), y)), str(out / "train"))
    tf.data.Dataset.save(val.map(lambda x, y: (rescale(x), y)), str(out / "test"))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
