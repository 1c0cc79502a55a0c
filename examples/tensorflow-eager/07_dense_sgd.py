"""A Dense layer trained with plain SGD on y = 3x + 2: the loss falls step by step,
each step an ordinary Python loop iteration."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

tf.random.set_seed(0)
x = tf.random.uniform([256, 1], -1.0, 1.0)
y = 3.0 * x + 2.0

layer = tf.keras.layers.Dense(1)
optimizer = tf.keras.optimizers.SGD(learning_rate=0.1)

for step in range(101):
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(layer(x) - y))
    grads = tape.gradient(loss, layer.trainable_variables)
    optimizer.apply_gradients(zip(grads, layer.trainable_variables, strict=True))
    if step % 20 == 0:
        print(f"step {step:3d}  loss {float(loss):.6f}")

weight, bias = (float(v.numpy().ravel()[0]) for v in layer.trainable_variables)
print(f"learned y = {weight:.2f}x + {bias:.2f}")
