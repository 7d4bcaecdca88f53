"""chester's EC2 backend: runs on EC2 instances, code and results through S3."""

__version__ = "0.3.0"
