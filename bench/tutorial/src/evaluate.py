"""Validation metrics, the training history, a preview of predictions, the confusion matrix."""

import json
import sys
from pathlib import Path

import matplotlib
import numpy as np
from common import tf

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def main(model_dir: Path, prepared: Path) -> None:
    model = tf.keras.models.load_model(model_dir / "model.keras")
    history = np.load(model_dir / "history.npy", allow_pickle=True).item()
    val = tf.data.Dataset.load(str(prepared / "test"))
    classes = json.loads((prepared / "labels.json").read_text())
    plots = Path("evaluation/plots")
    plots.mkdir(parents=True, exist_ok=True)
    loss, accuracy = model.evaluate(val, verbose=0)
    Path("evaluation/metrics.json").write_text(
        json.dumps({"val_loss": loss, "val_acc": accuracy}, indent=2) + "\n"
    )

    epochs = range(1, len(history["loss"]) + 1)
    figure = plt.figure(figsize=(10, 4))
    plt.plot(epochs, history["loss"], label="Training loss")
    plt.plot(epochs, history["val_loss"], label="Validation loss")
    plt.xlabel("Epochs")
    plt.legend()
    figure.savefig(plots / "training_history.png")

    figure = plt.figure(figsize=(10, 5), tight_layout=True)
    for images, labels in val.take(1):
        predicted = model.predict(images, verbose=0).argmax(axis=1)
        for i in range(10):
            plt.subplot(2, 5, i + 1)
            plt.imshow(images[i].numpy().squeeze(), cmap="gray")
            plt.title(f"True: {classes[int(labels[i])]}\nPred: {classes[predicted[i]]}")
            plt.axis("off")
    figure.savefig(plots / "pred_preview.png")

    predicted = model.predict(val, verbose=0).argmax(axis=1)
    actual = np.concatenate([labels.numpy() for _, labels in val])
    matrix = tf.math.confusion_matrix(actual, predicted, num_classes=len(classes)).numpy()
    figure = plt.figure(figsize=(6, 6), tight_layout=True)
    plt.imshow(matrix, cmap="Blues")
    plt.xticks(range(len(classes)), classes, rotation=90)
    plt.yticks(range(len(classes)), classes)
    figure.savefig(plots / "confusion_matrix.png")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
