"""The machinery around the lesson in model_batchnorm.py, one job per module; the map of
the modules, one line each, is docs/development.md's table. Importing the package runs
nothing; model_batchnorm.py imports from it, never the other way round. Data for the
tests and the benchmark lives apart, in testdata/."""
