"""Log training metrics per epoch with DVCLive, without TensorFlow.

``dvclive.keras`` imports TensorFlow; this callback wraps `dvclive.Live`
directly and names the metrics as that integration does (``train/loss``,
``eval/loss``, ...), so ``dvc plots`` reads the TSV files under
``DIR/plots/metrics/``.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from celestial_models.backend import keras
from celestial_models.errors import ModelError

__all__ = ["LiveLogger", "metric_name"]


def metric_name(key: str) -> str:
    """DVCLive's name for a Keras log key: ``val_loss`` -> ``eval/loss``, else ``train/...``."""
    return f"eval/{key[4:]}" if key.startswith("val_") else f"train/{key}"


def _open_live(directory: Path) -> Any:
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        # The stage's own dvc.yaml declares the outputs; no report, no experiment commit.
        return Live(str(directory), save_dvc_exp=False, dvcyaml=None, report=None)
    except SCMError as error:  # DVCLive reads the git revision, which a new repository lacks
        raise ModelError(
            f"DVCLive cannot log to {directory}: the git repository has no commit yet "
            f"({error}). Make a first commit (git add . && git commit), then train again."
        ) from error


class LiveLogger(keras.callbacks.Callback):
    """A Keras callback that logs each epoch's metrics to a `dvclive.Live` in ``directory``.

    Importing DVCLive and opening `Live` (which looks up the DVC repository)
    takes a couple of seconds of Python. It starts on a background thread when
    training begins, so it runs while XLA compiles the training step (which
    releases the interpreter) rather than competing with building the model.

    Args:
        directory: DVCLive's output folder (emptied of earlier logs).
        keys: The Keras log keys to record, in order.
    """

    def __init__(self, directory: str | Path, keys: tuple[str, ...]):
        super().__init__()
        self.directory = Path(directory)
        self.keys = keys
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dvclive")
        self._live: Future | None = None

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Open `Live` in the background."""
        self._live = self._executor.submit(_open_live, self.directory)

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Record one step per epoch."""
        assert self._live is not None
        live = self._live.result()
        for key in self.keys:
            if logs and key in logs:
                live.log_metric(metric_name(key), float(logs[key]))
        live.next_step()

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Write the summary and release the thread."""
        if self._live is not None:
            self._live.result().end()
        self._executor.shutdown()
