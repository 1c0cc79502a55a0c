"""Eager execution: an operation runs when it is called and its result is a value.

In the 2017 talk, TensorFlow 1 needed a graph and a session to compute this; with
eager execution (the default since TensorFlow 2) it is one line, printed at once."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up notices, not the demo

import tensorflow as tf

x = [[2.0]]
m = tf.matmul(x, x)
print(m)
