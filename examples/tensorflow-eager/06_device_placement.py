"""Explicit device placement: the same code on the CPU, and on a GPU where the
session has one (``cuda.device`` in its resources)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

with tf.device("/cpu:0"):
    x = tf.random.normal([100, 100])
    y = tf.matmul(x, x)
print("CPU:", y.device, y.shape)

gpus = tf.config.list_logical_devices("GPU")
if gpus:
    with tf.device(gpus[0].name):
        z = tf.matmul(x, x)
    print("GPU:", z.device, z.shape)
else:
    print("GPU: none in this session")
