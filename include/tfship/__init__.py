"""tfship: retrain, publish and serve TensorFlow models from raw data on HDFS, every day.

The library layer: no Airflow imports here, so every piece is testable on its own.
"""
