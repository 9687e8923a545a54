"""Stream a prepared split to Keras in shuffled batches of one fixed shape."""

from __future__ import annotations

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
        images: uint8 array ``(N, size, size, channels)``, usually memory-mapped.
        labels: int32 array ``(N,)``.
        batch_size: Images per batch.
        seed: Seed of the shuffling.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int):
        super().__init__(workers=1, use_multiprocessing=False)
        self.images = images
        self.labels = np.asarray(labels)
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
        return np.asarray(self.images[chosen]), self.labels[chosen]

    def on_epoch_end(self) -> None:
        """Draw the next epoch's order."""
        self._order = self._shuffle()

    def _shuffle(self) -> np.ndarray:
        order = self._rng.permutation(len(self.labels))
        return np.resize(order, self.num_batches * self.batch_size)
