"""Errors arrive at the line that caused them, not later when a graph runs: the
index is checked as the operation executes."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

try:
    tf.gather([0, 1, 2], 7)
except tf.errors.InvalidArgumentError as error:
    print(f"{type(error).__name__}: {error.message}")
