"""Stream a prepared split to Keras in shuffled batches of one fixed shape."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from celestial_models.backend import keras

__all__ = ["TrainingBatches"]


class TrainingBatches(keras.utils.PyDataset):
    """Shuffled batches of a memory-mapped split, each of exactly ``batch_size`` images.

    Only the images of the current batch are read, so a split larger than
    memory trains as well as a small one. Every batch has the same shape, so
    the training step is compiled once: the last batch of an epoch is topped
    up with images from the start of that epoch's order instead of being
    shorter (and a split smaller than a batch is repeated). Every image is seen
    at least once per epoch; the order is reshuffled each epoch from ``seed``.

    Args:
        images: uint8 array ``(N, size, size, channels)``, usually memory-mapped,
            or several such arrays read as one after the other (a split and
            its varied copies), none of them copied.
        labels: int32 array ``(N,)``, of all the images.
        batch_size: Images per batch.
        seed: Seed of the shuffling.
    """

    def __init__(
        self,
        images: np.ndarray | Sequence[np.ndarray],
        labels: np.ndarray,
        batch_size: int,
        seed: int,
    ):
        super().__init__(workers=1, use_multiprocessing=False)
        self.parts = [images] if isinstance(images, np.ndarray) else list(images)
        self.labels = np.asarray(labels)
        # Where each part starts in the joined order, and where the last ends.
        self._starts = np.cumsum([0, *(len(part) for part in self.parts)])
        if self._starts[-1] != len(self.labels):
            raise ValueError(
                f"TrainingBatches got {self._starts[-1]} images and {len(self.labels)} labels; "
                "give one label per image."
            )
        self.batch_size = batch_size
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._order = self._shuffle()

    @staticmethod
    def count(images: int, batch_size: int) -> int:
        """Batches per epoch for ``images`` images: enough to show every image once."""
        return -(-images // batch_size)

    @property
    def num_batches(self) -> int:
        """Batches per epoch: enough to show every image once."""
        return self.count(len(self.labels), self.batch_size)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        # Sorted indices read the memory map front to back.
        chosen = np.sort(self._order[index * self.batch_size : (index + 1) * self.batch_size])
        parts = [
            part[chosen[(chosen >= start) & (chosen < end)] - start]
            for part, start, end in zip(
                self.parts, self._starts[:-1], self._starts[1:], strict=True
            )
        ]
        images = np.concatenate(parts) if len(parts) > 1 else np.asarray(parts[0])
        return images, self.labels[chosen]

    def on_epoch_end(self) -> None:
        """Draw the next epoch's order."""
        self._order = self._shuffle()

    def _shuffle(self) -> np.ndarray:
        order = self._rng.permutation(len(self.labels))
        return np.resize(order, self.num_batches * self.batch_size)
