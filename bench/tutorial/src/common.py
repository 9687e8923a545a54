"""What the three scripts share: the params, the seed and the backend."""

import os
import random

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
import yaml


def params(section: str) -> dict:
    with open("params.yaml") as stream:
        return yaml.safe_load(stream)[section]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    tf.random.set_seed(seed)
    tf.config.experimental.enable_op_determinism()
