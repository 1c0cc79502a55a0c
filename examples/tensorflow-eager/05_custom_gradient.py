"""log(1 + e^x): its gradient is e^x / (1 + e^x), which is 0.5 at 0 and should be 1.0
at 100, but computed naively e^100 overflows and the gradient is nan. A custom gradient
written in a stable form fixes it."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf


def log1pexp(x):
    return tf.math.log(1 + tf.exp(x))


@tf.custom_gradient
def log1pexp_stable(x):
    e = tf.exp(x)

    def grad(upstream):
        return upstream * (1 - 1 / (1 + e))

    return tf.math.log(1 + e), grad


def gradient_at(fn, value):
    x = tf.constant(value)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x)
    return float(tape.gradient(y, x))


print("naive  gradient at 0:", gradient_at(log1pexp, 0.0))
print("naive  gradient at 100:", gradient_at(log1pexp, 100.0))
print("custom gradient at 0:", gradient_at(log1pexp_stable, 0.0))
print("custom gradient at 100:", gradient_at(log1pexp_stable, 100.0))
