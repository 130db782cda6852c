"""cifar-speed: train, compile and honestly benchmark CIFAR-10 classifiers."""
__version__ = "0.1.0"
