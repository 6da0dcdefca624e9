"""The floor for bench/smoke.py: the smoke run's training in the fewest lines Keras
allows. Import, load the first N images, build the lesson's network, fit with its
configuration, evaluate, print; seeded as `model_batchnorm.py --seed` seeds.

    python bench/floor.py TRAIN_IMGS TRAIN_LABELS TEST_IMGS TEST_LABELS N EPOCHS SEED
"""
import sys

import keras
import numpy as np
import tensorflow as tf
from keras import layers

*files, n, epochs, seed = sys.argv[1:]
x_train, y_train, x_test, y_test = (np.load(f)["arr_0"][: int(n)] for f in files)
keras.utils.set_random_seed(int(seed))
tf.config.experimental.enable_op_determinism()
x_train, x_test = (x.reshape(-1, 28, 28, 1).astype("float32") / 255 for x in (x_train, x_test))
model = keras.Sequential([
    keras.Input(shape=(28, 28, 1)),
    layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
    layers.BatchNormalization(),
    layers.MaxPooling2D(pool_size=(2, 2)),
    layers.BatchNormalization(),
    layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
    layers.BatchNormalization(),
    layers.MaxPooling2D(pool_size=(2, 2)),
    layers.BatchNormalization(),
    layers.Flatten(),
    layers.Dense(256, activation="relu"),
    layers.BatchNormalization(),
    layers.Dense(10, activation="softmax"),
])
model.compile(loss=keras.losses.sparse_categorical_crossentropy,
              optimizer=keras.optimizers.Adam(), metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=250, epochs=int(epochs), verbose=1,
          validation_split=0.2)
test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"Test loss: {test_loss} / Test accuracy: {test_accuracy}")
