"""JAX set up for every process of this package, with or without Keras.

Importing this module keeps every compiled program on disk for the next
process (see `compilation_cache_dir`); `synchronous_dispatch` suits a server.
It imports JAX but not Keras: a process that only runs a model's exported
inference program (`celestial_models.program`) never pays for Keras.
"""

from __future__ import annotations

import hashlib
import os
import platform
import warnings
from pathlib import Path

__all__ = [
    "CACHE_ENV",
    "CACHE_MAX_BYTES",
    "compilation_cache_dir",
    "synchronous_dispatch",
]

#: The environment variable that moves (a folder) or turns off (``off``) the compilation cache.
CACHE_ENV = "CELESTIAL_COMPILATION_CACHE"
#: Largest size of the compilation cache; the least recently used programs go first.
CACHE_MAX_BYTES = 512 * 2**20


def _cpu_fingerprint() -> str:
    """A short digest of this CPU's model and instruction set.

    A compiled program runs only on a CPU with the instructions it was
    compiled for, and JAX's cache key does not include them: a cache folder
    shared by several machines (a network home) keeps one sub-folder per CPU.
    """
    try:
        described = "\n".join(
            line
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith(("model name", "flags"))
        )
    except OSError:
        described = ""
    text = f"{platform.machine()}\n{platform.processor()}\n{described}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def compilation_cache_dir() -> Path | None:
    """The folder of the persistent compilation cache, or None when it is off.

    ``$CELESTIAL_COMPILATION_CACHE`` names it (``off`` turns it off); by
    default it is ``celestial/xla`` in the user's cache folder
    (``$XDG_CACHE_HOME``, else ``~/.cache``), one sub-folder per CPU.
    """
    chosen = os.environ.get(CACHE_ENV, "").strip()
    if chosen.lower() in ("off", "0", "false", "no"):
        return None
    if chosen:
        root = Path(chosen).expanduser()
    else:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        root = Path(base) / "celestial" / "xla"
    return root / _cpu_fingerprint()


def _use_compilation_cache() -> None:
    """Keep every compiled program on disk, so the next process loads it instead.

    On two CPU cores XLA compiles a training step in about 1.6 s, more than
    training the reference model takes; loading it back takes milliseconds.
    Every ``dvc repro`` or ``dvc exp run`` after the first, and every test,
    reuses the programs of the same shapes (the learning rate and its schedule
    are inputs of the training step, not constants, see
    `celestial_models.train.LearningRate`). A loaded program is the one
    compiled, so the outputs are bit for bit those of a fresh compilation.
    JAX's own ``JAX_COMPILATION_CACHE_DIR``, when set, wins.
    """
    import jax

    if getattr(jax.config, "jax_compilation_cache_dir", None):  # set by the user, through JAX
        return
    folder = compilation_cache_dir()
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        warnings.warn(
            f"The compilation cache {folder} cannot be created ({error.strerror}), so this "
            f"process compiles every program. Set {CACHE_ENV} to a writable folder, or to "
            "'off'.",
            stacklevel=2,
        )
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    # A size limit makes JAX evict the least recently used programs and take a
    # file lock around every read and write, so processes running side by side
    # (test workers, parallel experiments) never read a half-written program.
    # JAX locks with filelock and refuses a size limit without it: imported
    # here so that a missing install fails now, naming it.
    import filelock  # noqa: F401

    jax.config.update("jax_compilation_cache_max_size", CACHE_MAX_BYTES)
    # JAX keeps only programs that took a second or more to compile by
    # default; the small ones (initialisers, metrics) add up to as much.
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


_use_compilation_cache()


def synchronous_dispatch() -> None:
    """Run every JAX computation on the CPU in the thread that calls it.

    By default JAX hands each CPU computation to a thread pool and returns at
    once, which pays off while Python has other work to do meanwhile
    (training). A server predicting small batches waits for every result
    instead: the hand-off then costs about a tenth of a millisecond per call,
    as much as predicting a few images, and gains nothing. Call it before the
    first computation of the process; it applies to the whole process.
    """
    import jax

    jax.config.update("jax_cpu_enable_async_dispatch", False)
