"""Browser-level checks of the Airflow UI (Playwright + headless Chromium)."""
