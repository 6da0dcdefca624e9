"""The machinery around the lesson in model_batchnorm.py, one job per module.

errors          the error classes (one line, an exit code); imports nothing of ours
quiet           keeps TensorFlow's start-up lines off the screen
flags           the flags: each one's type, default and help
cli             the command line: the flags checked, one-line errors and exit codes
startup         before anything slow: the output folder, devices, seeds
folder          the output folder: one run at a time, only its own files touched
datasets        facts about the data sets: file names, class counts and names
npz             reading .npz archives safely: headers first, nothing unpickled
data            loading, checking and cutting the arrays (Keras cache or --data-dir)
keras_datasets  MNIST and Fashion-MNIST through Keras' own loaders and cache
own_data        --dataset own: data.npz and class_names.txt from --data-dir
backup          the backup after each epoch: variables, metadata, SHA-256
resume          resuming from the backup, the full history, Ctrl-C and SIGTERM
outputs         the files a run writes and the record of the run
painter         the pictures drawn beside the run, in a process of their own
batchnorm_stats BatchNormalization's moving against batch statistics
compare         --compare: the network with and without BatchNormalization
learning_rates  --learning-rate: several under --compare, divergence, both clocks
layer_inputs    --track-layer-inputs: a layer's input percentiles during training
fast            --fast: the same computation, executed faster
distribute      --distribute: tf.distribute strategies, Slurm, lost workers, --sync-bn
keras_internals the only use of Keras' and TensorFlow's internals, each checked at run time
images          the one preparation of an image file, for the converter and --predict
predict         --predict: a trained model on your own image files, read-only

Data for the tests and the benchmark lives apart, in testdata/. Importing the
package runs nothing; model_batchnorm.py imports from it, never the other way round.
"""
