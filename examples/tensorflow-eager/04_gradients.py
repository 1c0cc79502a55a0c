"""Derivatives of f(x) = x * x at x = 3: the value, the first derivative (2x) and
the second (2), with nested gradient tapes."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf


def f(x):
    return x * x


x = tf.constant(3.0)
with tf.GradientTape() as outer:
    outer.watch(x)
    with tf.GradientTape() as inner:
        inner.watch(x)
        y = f(x)
    dy_dx = inner.gradient(y, x)
d2y_dx2 = outer.gradient(dy_dx, x)

print("f(3) =", float(y))
print("f'(3) =", float(dy_dx))
print("f''(3) =", float(d2y_dx2))
