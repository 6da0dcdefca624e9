"""The machinery around the lesson in model_batchnorm.py, one job per module.

errors     the error classes (one line, an exit code); imports nothing of ours
quiet      keeps TensorFlow's start-up lines off the screen
datasets   facts about the data sets: file names, class counts and names
data       loading, checking and cutting the arrays (Keras cache or --data-dir)
synthetic  KMNIST-shaped synthetic data for the tests and the benchmark (never KMNIST)
cli        the command line: flags, the output folder, seeding, one-line errors
resume     the backup after every epoch, and resuming from it
outputs    the files a run writes and the record of the run
compare    --compare: the network with and without BatchNormalization
fast       --fast: the same computation, executed faster
distribute --distribute: tf.distribute strategies (the only use of Keras internals)

Importing the package runs nothing; model_batchnorm.py imports from it, never
the other way round.
"""
