"""ImgAE-Dx: unsupervised anomaly detection on chest X-rays with autoencoders."""

__version__ = "0.1.0"
