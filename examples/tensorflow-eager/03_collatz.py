"""Python control flow over tensors: a while loop and an if on tensor values,
no tf.while_loop or tf.cond needed. The Collatz sequence from 3."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

a = tf.constant(3)
print(int(a))
while a > 1:
    if a % 2 == 0:
        a = a // 2
    else:
        a = 3 * a + 1
    print(int(a))
