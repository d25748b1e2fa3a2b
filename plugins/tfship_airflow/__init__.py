"""Airflow adapters of tfship: sensors, narrow operators and callbacks over the library."""
